//! Runs one sandboxed process to completion (`docs/reference/agent-protocol.md` §5, `/exec`): both
//! pipes read concurrently, SIGKILL to the process group (and the call's cgroup) on timeout, and an
//! answer at most [`EXEC_PIPE_GRACE_MS`] after the main process ended even if descendants hold the
//! pipes.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rds_protocol::{ExecResult, EXEC_PIPE_GRACE_MS, OUTPUT_CAP_BYTES, TIMEOUT_STDERR_LINE};
use tokio::io::AsyncReadExt;
use tokio::time::sleep_until;

use crate::cgroup::CallCgroup;
use crate::output::Capture;
use crate::sandbox::{self, Launch};
pub use crate::stream::Sink;

/// Longest timeout honoured; larger values are clamped (a year is "never" for a sandbox call).
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
const READ_CHUNK: usize = 64 * 1024;

/// What happened to one run, before it is shaped into a reply.
#[derive(Debug)]
pub struct Outcome {
    pub result: ExecResult,
    /// Bytes at the end of `result.stderr` written by the agent itself (kept when trimming).
    pub stderr_note_len: usize,
}

/// `128 + N` for a death by signal N, else the exit status.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

/// Appends the agent's own line to stderr, on a line of its own; returns its length.
fn append_note(stderr: &mut String, note: &str) -> usize {
    let before = stderr.len();
    if !stderr.is_empty() && !stderr.ends_with('\n') {
        stderr.push('\n');
    }
    stderr.push_str(note);
    stderr.push('\n');
    stderr.len() - before
}

/// Runs `launch` to completion. With a `sink` (a streamed call) the kept output also goes there as
/// it arrives; when the sink's reader is gone the process group is killed at once and the outcome
/// is whatever was collected.
pub async fn run(
    launch: &Launch<'_>,
    timeout: Duration,
    cgroup: Option<&CallCgroup>,
    sink: Option<&mut Sink>,
) -> Outcome {
    let started = Instant::now();
    let spawned = sandbox::command(launch).and_then(|mut cmd| cmd.spawn());
    run_spawned(spawned, started, timeout, cgroup, sink).await
}

/// [`run`] of a process already started (a warm shell given its job), timed from `started`.
pub async fn run_spawned(
    spawned: std::io::Result<tokio::process::Child>,
    started: Instant,
    timeout: Duration,
    cgroup: Option<&CallCgroup>,
    mut sink: Option<&mut Sink>,
) -> Outcome {
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let mut result = ExecResult {
                exit_code: -1,
                ..ExecResult::default()
            };
            let stderr_note_len =
                append_note(&mut result.stderr, &format!("Failed to start process: {e}"));
            result.duration_ms = started.elapsed().as_millis() as u64;
            return Outcome {
                result,
                stderr_note_len,
            };
        }
    };
    let pgid = child.id().map(|p| p as libc::pid_t);
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both streams are piped by sandbox::command");
    };

    let deadline = started + timeout.min(MAX_TIMEOUT);
    let grace = Duration::from_millis(EXEC_PIPE_GRACE_MS);
    let (mut out, mut err) = (
        Capture::new(OUTPUT_CAP_BYTES),
        Capture::new(OUTPUT_CAP_BYTES),
    );
    let (mut out_buf, mut err_buf) = (vec![0u8; READ_CHUNK], vec![0u8; READ_CHUNK]);
    let (mut out_open, mut err_open) = (true, true);
    let mut status: Option<i32> = None;
    let mut timed_out = false;
    // Set once the main process ended or was killed: the moment we answer at the latest.
    let mut give_up: Option<tokio::time::Instant> = None;
    let kill = || {
        if let Some(pgid) = pgid {
            // SAFETY: plain kill(2) of the group the child leads (it called setsid).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        if let Some(cg) = cgroup {
            cg.kill_all();
        }
    };
    // Whether a streamed call's reader went away (the manager's client hung up).
    let mut abandoned = false;
    let gone = sink.as_deref().map(Sink::gone);
    let gone = async move {
        match gone {
            Some(f) => f.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(gone);

    loop {
        if !out_open && !err_open && status.is_some() {
            break;
        }
        let give_up_at =
            give_up.unwrap_or_else(|| tokio::time::Instant::from_std(deadline + MAX_TIMEOUT));
        tokio::select! {
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(n) if n > 0 => {
                    let kept = out.push(&out_buf[..n]);
                    if let Some(s) = sink.as_deref_mut() {
                        abandoned = !s.output(0, &out_buf[..kept]).await;
                    }
                }
                _ => out_open = false,
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(n) if n > 0 => {
                    let kept = err.push(&err_buf[..n]);
                    if let Some(s) = sink.as_deref_mut() {
                        abandoned = !s.output(1, &err_buf[..kept]).await;
                    }
                }
                _ => err_open = false,
            },
            s = child.wait(), if status.is_none() => {
                // A wait error leaves no status to report.
                status = Some(s.map(exit_code).unwrap_or(-1));
                if give_up.is_none() {
                    give_up = Some(tokio::time::Instant::now() + grace);
                }
            },
            _ = sleep_until(tokio::time::Instant::from_std(deadline)), if !timed_out && status.is_none() => {
                timed_out = true;
                kill();
                give_up = Some(tokio::time::Instant::now() + grace);
            },
            _ = sleep_until(give_up_at), if give_up.is_some() => break,
            () = &mut gone, if !abandoned => abandoned = true,
        }
        if abandoned {
            tracing::info!("the streamed call's reader went away: process group killed");
            kill();
            if status.is_none() {
                status = child.wait().await.ok().map(exit_code);
            }
            break;
        }
    }
    if let Some(s) = sink {
        s.flush().await;
    }
    // Dropping the pipe ends here closes them; descendants' later writes fail with EPIPE.
    drop((stdout, stderr));

    let (stdout_text, stdout_truncated) = out.into_text();
    let (mut stderr_text, stderr_truncated) = err.into_text();
    let mut stderr_note_len = 0;
    let exit = if timed_out {
        stderr_note_len = append_note(&mut stderr_text, TIMEOUT_STDERR_LINE);
        -1
    } else {
        status.unwrap_or(-1)
    };
    let result = ExecResult {
        exit_code: exit,
        stdout: stdout_text,
        stderr: stderr_text,
        stdout_truncated,
        stderr_truncated,
        timed_out,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    Outcome {
        result,
        stderr_note_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn notes_go_on_their_own_line() {
        let mut s = String::from("partial");
        let n = append_note(&mut s, "Timeout exceeded");
        assert_eq!(s, "partial\nTimeout exceeded\n");
        assert_eq!(n, "\nTimeout exceeded\n".len());
        let mut s = String::new();
        append_note(&mut s, "Timeout exceeded");
        assert_eq!(s, "Timeout exceeded\n");
    }
}
