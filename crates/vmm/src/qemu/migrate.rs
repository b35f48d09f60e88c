//! Memory snapshots as QEMU migrations to and from a file (`docs/reference/vmm-backends.md` §5.3):
//! the state file's descriptor goes to QEMU over QMP (`getfd`), so neither the chroot nor the
//! dropped uid matter, and `spawn=deny` (which kills `exec:` URIs) is no obstacle. With
//! `x-ignore-shared` the stream, in `vmstate.snap`, holds device state only: guest memory travels
//! as `mem.snap` (memory.rs).

use super::qmp::Qmp;
use crate::VmmError;
use serde_json::{json, Value};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) const STATE_FILE: &str = "vmstate.snap";
/// The name the descriptor gets inside QEMU.
const FD_NAME: &str = "rds-state";
/// Bound on writing or reading the state (a 512 MiB guest writes ~110 MB in under a second here).
const LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(10);
/// QEMU caps migration at 128 MiB/s by default, a setting for live migration over a network; a file
/// written while the guest is paused should go as fast as the disk takes it.
const UNLIMITED_BANDWIDTH: u64 = 1 << 40;

/// Writes the state of the paused VM to `dir/vmstate.snap` (0444, fsynced). The VM stays paused
/// (`postmigrate`); `cont` resumes it with its disks usable again.
pub(crate) async fn save(qmp: &mut Qmp, dir: &Path) -> Result<(), VmmError> {
    let path = dir.join(STATE_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| VmmError::io("create", &path, e))?;
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": UNLIMITED_BANDWIDTH })),
    )
    .await?;
    skip_shared_memory(qmp).await?;
    qmp.execute_with_fd("getfd", Some(json!({ "fdname": FD_NAME })), file.as_fd())
        .await?;
    qmp.execute("migrate", Some(json!({ "uri": format!("fd:{FD_NAME}") })))
        .await?;
    let deadline = Instant::now() + LIMIT;
    loop {
        let st = qmp.execute("query-migrate", None).await?;
        match st.get("status").and_then(Value::as_str) {
            Some("completed") => break,
            Some(s @ ("failed" | "cancelled")) => {
                let why = st.get("error-desc").and_then(Value::as_str).unwrap_or(s);
                return Err(rejected("migrate", why));
            }
            _ if Instant::now() > deadline => {
                let _ = qmp.execute("migrate_cancel", None).await;
                return Err(VmmError::Timeout {
                    what: "completion of the state file".into(),
                    ms: LIMIT.as_millis() as u64,
                });
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
    let synced = path.clone();
    tokio::task::spawn_blocking(move || {
        file.sync_all()?;
        std::fs::set_permissions(&synced, std::fs::Permissions::from_mode(0o444))
    })
    .await
    .map_err(|e| VmmError::io("fsync", &path, std::io::Error::other(e)))?
    .map_err(|e| VmmError::io("fsync", &path, e))
}

/// Loads `dir/vmstate.snap` into a QEMU started with `-incoming defer`; returns once the state is in
/// and the VM left `inmigrate`. QEMU 7.2 exits when a load fails, so the caller races this with the
/// process's exit.
pub(crate) async fn load(qmp: &mut Qmp, dir: &Path) -> Result<(), VmmError> {
    let path = dir.join(STATE_FILE);
    let file = File::open(&path).map_err(|e| VmmError::io("open", &path, e))?;
    skip_shared_memory(qmp).await?;
    qmp.execute_with_fd("getfd", Some(json!({ "fdname": FD_NAME })), file.as_fd())
        .await?;
    drop(file);
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("fd:{FD_NAME}") })),
    )
    .await?;
    let deadline = Instant::now() + LIMIT;
    loop {
        let st = qmp.execute("query-status", None).await?;
        if st.get("status").and_then(Value::as_str) != Some("inmigrate") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(VmmError::Timeout {
                what: "the end of the state load".into(),
                ms: LIMIT.as_millis() as u64,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Leaves the shared guest memory out of the stream, on both sides (QEMU 7.2 counts any shared RAM
/// block, our memfd included).
async fn skip_shared_memory(qmp: &mut Qmp) -> Result<(), VmmError> {
    let caps = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] });
    qmp.execute("migrate-set-capabilities", Some(caps))
        .await
        .map(drop)
}

fn rejected(command: &str, message: &str) -> VmmError {
    VmmError::Rejected {
        command: command.into(),
        message: message.into(),
    }
}
