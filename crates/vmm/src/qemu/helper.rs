//! The per-VM `vhost-device-vsock` helper: it serves QEMU's vhost-user vsock device and provides the
//! hybrid-vsock socket `<run>/v.sock`. It runs as the VMM's uid in its own session and outlives a manager
//! restart; its pid, start time and guest CID are kept in `<run>/vsock.pid` (one per line), so a
//! resume after a snapshot can start it again from the run directory alone.

use super::cmdline::helper_args;
use super::layout::Layout;
use super::QemuConfig;
use crate::{process, ExitStatus, VmmError};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long the helper may take to create `vhost.sock`.
const SOCKET_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

/// Starts the helper for guest `cid` and records it in `vsock.pid`. Returns its pid.
pub(crate) fn spawn(cfg: &QemuConfig, l: &Layout, cid: u32) -> Result<u32, VmmError> {
    let mut cmd = Command::new(&cfg.vhost_vsock_bin);
    cmd.args(helper_args(l, cid)).current_dir(&l.run_dir);
    if let Some((uid, gid)) = cfg.runas {
        // std drops supplementary groups (setgroups(0)) when a root parent sets a uid.
        cmd.uid(uid).gid(gid);
    }
    let pid =
        process::spawn_detached(&mut cmd, &l.stderr_log()).map_err(|source| VmmError::Spawn {
            program: cfg.vhost_vsock_bin.display().to_string(),
            source,
        })?;
    let start = process::start_time(pid).unwrap_or(0);
    let pid_file = l.helper_pid_file();
    if let Err(e) = std::fs::write(&pid_file, format!("{pid}\n{start}\n{cid}\n")) {
        process::signal(pid, libc::SIGKILL);
        return Err(VmmError::io("write", pid_file, e));
    }
    Ok(pid)
}

/// Waits until the helper listens on `vhost.sock`; fails if it exits first or takes too long.
pub(crate) async fn wait_ready(pid: u32, layout: &Layout) -> Result<(), VmmError> {
    let sock = layout.vhost_sock();
    let appeared = async {
        while !is_socket(&sock) {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        status = process::wait_exit(pid) => Err(VmmError::DiedDuringLaunch {
            status,
            stderr_tail: format!(
                "vhost-device-vsock exited: {}",
                process::tail_file(&layout.stderr_log(), 2048)
            ),
        }),
        r = tokio::time::timeout(SOCKET_WAIT, appeared) => r.map_err(|_| VmmError::Timeout {
            what: format!("vsock helper socket {}", sock.display()),
            ms: SOCKET_WAIT.as_millis() as u64,
        }),
    }
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Starts the helper again when the one recorded in `vsock.pid` is gone, for the CID recorded there.
pub(crate) async fn ensure_running(cfg: &QemuConfig, layout: &Layout) -> Result<(), VmmError> {
    if matches!(recorded(layout), Some((_, true))) {
        return Ok(());
    }
    let pid_file = layout.helper_pid_file();
    let cid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.lines().nth(2)?.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            VmmError::io(
                "read the guest CID from",
                &pid_file,
                std::io::ErrorKind::InvalidData.into(),
            )
        })?;
    kill(layout).await;
    // A dead helper's socket file would pass `wait_ready` before the new one listens.
    let _ = std::fs::remove_file(layout.vhost_sock());
    let pid = spawn(cfg, layout, cid)?;
    if let Err(e) = wait_ready(pid, layout).await {
        kill(layout).await;
        return Err(e);
    }
    Ok(())
}

/// The helper recorded in `vsock.pid`: its pid and whether it is still running (command line intact),
/// or None when the file is absent or the pid now names another process.
fn recorded(layout: &Layout) -> Option<(u32, bool)> {
    let text = std::fs::read_to_string(layout.helper_pid_file()).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let start: u64 = lines
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if pid == 0 {
        return None;
    }
    let same_start = start != 0 && process::start_time(pid).ok() == Some(start);
    let marker = layout.vhost_sock();
    let running = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
        raw.split(|b| *b == 0)
            .any(|arg| arg == marker.as_os_str().as_encoded_bytes())
    });
    // A zombie has an empty command line but keeps its start time.
    (same_start || (start == 0 && running)).then_some((pid, running))
}

/// SIGKILLs the recorded helper if it is still running, and reaps it when it is our child.
/// Idempotent; bounded to about a second.
pub(crate) async fn kill(layout: &Layout) {
    let Some((pid, running)) = recorded(layout) else {
        return;
    };
    if running {
        process::signal(pid, libc::SIGKILL);
    }
    let _: Result<ExitStatus, _> =
        tokio::time::timeout(Duration::from_secs(1), process::wait_exit(pid)).await;
}
