//! Hot-unplug and re-plug of the vsock device, the price of memory snapshots on QEMU 7.2: it refuses
//! to migrate a `vhost-user-vsock` device, so a capture detaches it (the guest acknowledges the
//! removal like any PCIe hot-unplug) and a resume or restore attaches a new one on the same root port.
//! The guest's listening sockets survive; connections through the old device are reset, as a
//! Firecracker snapshot resets them too.
//!
//! The helper outlives a detach: `vhost-device-vsock` serves its socket again once QEMU hangs up, so
//! re-attaching needs no new process unless the helper died.

use super::cmdline::{VSOCK_CHARDEV, VSOCK_DEVICE, VSOCK_PORT};
use super::qmp::Qmp;
use crate::VmmError;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long the guest may take to release the device (measured: 0.03–0.11 s under TCG).
const DETACH_WAIT: Duration = Duration::from_secs(5);
/// How long the helper may take to listen again after QEMU hung up on it.
const REATTACH_WAIT: Duration = Duration::from_secs(3);

/// Where QEMU, chrooted into the run directory, finds the helper's vhost-user socket.
const VHOST_SOCK_IN_CHROOT: &str = "/vhost.sock";

/// Whether the vsock device is plugged in.
pub(crate) async fn present(qmp: &mut Qmp) -> Result<bool, VmmError> {
    let children = qmp
        .execute("qom-list", Some(json!({ "path": "/machine/peripheral" })))
        .await?;
    Ok(children.as_array().is_some_and(|c| {
        c.iter()
            .any(|p| p.get("name").and_then(Value::as_str) == Some(VSOCK_DEVICE))
    }))
}

/// Unplugs the device and drops its chardev; returns once the guest let go. Idempotent.
pub(crate) async fn detach(qmp: &mut Qmp) -> Result<(), VmmError> {
    if present(qmp).await? {
        qmp.execute("device_del", Some(json!({ "id": VSOCK_DEVICE })))
            .await?;
        let ours = |d: &Value| d.get("device").and_then(Value::as_str) == Some(VSOCK_DEVICE);
        qmp.wait_event("DEVICE_DELETED", ours, DETACH_WAIT)
            .await
            .map_err(|e| match e {
                VmmError::Timeout { ms, .. } => VmmError::Timeout {
                    what: "the guest's release of the vsock device (DEVICE_DELETED)".into(),
                    ms,
                },
                other => other,
            })?;
    }
    // Absent already when an earlier detach got this far.
    let _ = qmp
        .execute("chardev-remove", Some(json!({ "id": VSOCK_CHARDEV })))
        .await;
    Ok(())
}

/// Plugs a device connected to the helper's socket into the root port. Idempotent. The caller makes
/// sure the helper runs.
pub(crate) async fn attach(qmp: &mut Qmp) -> Result<(), VmmError> {
    if present(qmp).await? {
        return Ok(());
    }
    let _ = qmp
        .execute("chardev-remove", Some(json!({ "id": VSOCK_CHARDEV })))
        .await;
    let chardev = json!({
        "id": VSOCK_CHARDEV,
        "backend": { "type": "socket", "data": {
            "addr": { "type": "unix", "data": { "path": VHOST_SOCK_IN_CHROOT } },
            "server": false,
        }},
    });
    // Right after a detach the helper may still be setting up its next listener.
    let deadline = Instant::now() + REATTACH_WAIT;
    loop {
        match qmp.execute("chardev-add", Some(chardev.clone())).await {
            Ok(_) => break,
            Err(VmmError::Rejected { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    let device = json!({
        "driver": "vhost-user-vsock-pci",
        "chardev": VSOCK_CHARDEV,
        "id": VSOCK_DEVICE,
        "bus": VSOCK_PORT,
    });
    if let Err(e) = qmp.execute("device_add", Some(device)).await {
        let _ = qmp
            .execute("chardev-remove", Some(json!({ "id": VSOCK_CHARDEV })))
            .await;
        return Err(e);
    }
    Ok(())
}
