//! Runs the agent, restarts it when it exits (backoff 100 ms doubling to
//! 5 s, reset after a long run), and reaps every zombie reparented to PID 1.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::console::log;
use crate::signals;

const AGENT: &str = "/usr/local/sbin/rds-agent";
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A run this long counts as healthy: the next restart starts from the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

struct Agent {
    port: u32,
    pid: Option<Pid>,
    started: Instant,
    restart_at: Instant,
    backoff: Duration,
}

impl Agent {
    fn spawn(&mut self) {
        self.started = Instant::now();
        let mut child = Command::new(AGENT);
        child
            .env_clear()
            .env("PORT", self.port.to_string())
            .current_dir("/")
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        let child =
            unsafe { child.pre_exec(|| signals::unblock_all().map_err(Into::into)) }.spawn();
        match child {
            Ok(c) => {
                log!("agent started (pid {}, PORT={})", c.id(), self.port);
                self.pid = Some(Pid::from_raw(c.id() as i32));
            }
            Err(e) => {
                log!("cannot start {AGENT}: {e}");
                self.schedule_restart();
            }
        }
    }

    fn schedule_restart(&mut self) {
        self.pid = None;
        if self.started.elapsed() >= HEALTHY_RUN {
            self.backoff = FIRST_BACKOFF;
        }
        self.restart_at = Instant::now() + self.backoff;
        log!("restarting agent in {} ms", self.backoff.as_millis());
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Reaps every exited child; schedules a restart if the agent was one.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if status.pid().is_some() && status.pid() == self.pid {
                        log!("agent exited: {}", describe(status));
                        self.schedule_restart();
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log!("waitpid: {e}");
                    return;
                }
            }
        }
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!(
                "killed by {sig}{}",
                if core { " (core dumped)" } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}

/// Supervises the agent until a shutdown signal arrives, and returns it.
pub fn run(port: u32) -> Signal {
    let now = Instant::now();
    let mut agent = Agent {
        port,
        pid: None,
        started: now,
        restart_at: now,
        backoff: FIRST_BACKOFF,
    };
    loop {
        if agent.pid.is_none() && Instant::now() >= agent.restart_at {
            agent.spawn();
        }
        let timeout = match agent.pid {
            Some(_) => Duration::from_secs(60),
            None => agent.restart_at.saturating_duration_since(Instant::now()),
        };
        match signals::wait(timeout) {
            Some(Signal::SIGCHLD) => agent.reap(),
            Some(sig) => return sig,
            None => agent.reap(),
        }
    }
}

/// Reaps children until none is left or the deadline passes; true when none is left.
pub fn reap_all_until(deadline: Instant) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}
