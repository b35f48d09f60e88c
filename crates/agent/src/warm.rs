//! Warm login shells for `/exec` (`docs/decisions.md` "Warm exec shells"): `bash -lc` start-up
//! (fork, exec, reading the profile) costs ~100 ms under emulation, paid by every call. One shell
//! per guest is started ahead, with the exec sandbox and a call cgroup of its own, has read its
//! profile and waits on a private pipe (fd 3) for one job: its working directory and command, which
//! it `eval`s, so the command runs in a fresh login shell as with `bash -lc`, only started earlier.
//! Each shell serves one call; a replacement starts when that call has ended.
//!
//! Used only where it is indistinguishable from a cold start: bash, and no caller or secret
//! environment (a login profile may rewrite variables set before it runs, such as `PATH`; a warm
//! shell's profile ran before the caller's variables existed). Everything else starts cold.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rds_protocol::{Shell, WORKSPACE};
use tokio::process::Child;

use crate::cgroup::CallCgroup;
use crate::sandbox::{self, Launch, Streams};
use crate::state::AppState;

/// Read the job from fd 3 (NUL-terminated), close it, run it; the job variable is gone before
/// the command starts.
const BOOTSTRAP: &str =
    "IFS= read -r -d '' __rds_job <&3; exec 3<&-; eval \"unset __rds_job; $__rds_job\"";

/// A shell waiting for its job.
pub struct Warm {
    pub child: Child,
    job: std::fs::File,
    pub cgroup: Option<CallCgroup>,
    /// When it was started (for the age a shell may reach before it is replaced).
    born: Instant,
    /// The directory it started in (the workspace, as a real path).
    home: String,
}

/// Where an open directory is (the path policy opened it without following symlinks out).
fn real_path(dir: &OwnedFd) -> std::io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

impl Warm {
    /// Hands over the command, to run in the directory `cwd` (opened by the path policy); the
    /// shell starts it at once.
    pub fn start(
        mut self,
        cwd: &OwnedFd,
        cmd: &str,
    ) -> std::io::Result<(Child, Option<CallCgroup>)> {
        let dir = real_path(cwd)?;
        let dir = dir
            .to_str()
            .ok_or_else(|| std::io::Error::other("cwd is not UTF-8"))?;
        let mut job = String::with_capacity(cmd.len() + dir.len() + 48);
        if dir != self.home {
            job.push_str(&format!(
                "builtin cd -- {} || exit 1; unset OLDPWD\n",
                quote(dir)
            ));
        }
        job.push_str(cmd);
        job.push('\0');
        self.job.write_all(job.as_bytes())?;
        drop(self.job);
        Ok((self.child, self.cgroup))
    }
}

/// `s` in single quotes, for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[derive(Default)]
pub struct WarmShells {
    ready: Mutex<Option<Warm>>,
    filling: AtomicBool,
    used: AtomicU64,
}

impl WarmShells {
    /// The waiting shell, if there is one that is still alive; a replacement is started either way.
    pub fn take(&self, state: &Arc<AppState>) -> Option<Warm> {
        if state.shell.kind != Shell::Bash {
            return None;
        }
        let mut w = self.ready.lock().expect("warm shells").take()?;
        match w.child.try_wait() {
            Ok(None) => {
                self.used.fetch_add(1, Ordering::Relaxed);
                Some(w)
            }
            _ => {
                tracing::warn!(
                    age_ms = w.born.elapsed().as_millis() as u64,
                    "a warm shell had exited"
                );
                release(state, w.cgroup.take());
                None
            }
        }
    }

    /// Execs that got a warm shell so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Ends the waiting shell, if any; the next call starts cold and brings a new one.
    pub fn discard(&self, state: &AppState) {
        if let Some(mut w) = self.ready.lock().expect("warm shells").take() {
            let _ = w.child.start_kill();
            release(state, w.cgroup.take());
        }
    }

    /// Starts a shell to wait for the next call unless one waits or is starting. Called when a
    /// call has ended, not when it begins: under emulation a shell starting beside the call would
    /// take half the CPU the call runs on.
    pub fn refill(&self, state: &Arc<AppState>) {
        if state.shell.kind != Shell::Bash {
            return;
        }
        if self.ready.lock().expect("warm shells").is_some() {
            return;
        }
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let warm = spawn(&state);
            let shells = &state.warm;
            match warm {
                Ok(w) => {
                    let old = shells.ready.lock().expect("warm shells").replace(w);
                    if let Some(mut old) = old {
                        let _ = old.child.start_kill();
                        release(&state, old.cgroup.take());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot start a warm shell"),
            }
            shells.filling.store(false, Ordering::Release);
        });
    }
}

fn release(state: &AppState, cg: Option<CallCgroup>) {
    if let (Some(s), Some(cg)) = (&state.cgroups, cg) {
        cg.kill_all();
        s.release(cg);
    }
}

fn spawn(state: &AppState) -> std::io::Result<Warm> {
    let cwd = crate::routes::open_cwd(state, WORKSPACE)
        .map_err(|e| std::io::Error::other(e.body().message))?;
    let home = real_path(&cwd)?
        .to_str()
        .ok_or_else(|| std::io::Error::other("workspace is not UTF-8"))?
        .to_string();
    let (read, write) = pipe()?;
    let cgroup = state.cgroups.as_ref().and_then(|c| c.create().ok());
    let procs = cgroup.as_ref().map(|c| c.procs_file());
    let launch = Launch::shell(state, &["-lc", BOOTSTRAP], &[], &cwd, procs.as_deref());
    let spawned = sandbox::command_with(&launch, Streams::ExecWithJob(read.as_raw_fd()))
        .and_then(|mut c| c.spawn());
    drop(read);
    match spawned {
        Ok(child) => Ok(Warm {
            child,
            job: std::fs::File::from(write),
            cgroup,
            born: Instant::now(),
            home,
        }),
        Err(e) => {
            release(state, cgroup);
            Err(e)
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("/workspace/a b"), "'/workspace/a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
