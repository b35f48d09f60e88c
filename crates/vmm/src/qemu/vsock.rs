//! Hot-unplug and re-plug of the vsock device, the price of memory snapshots on QEMU 7.2: it refuses
//! to migrate a `vhost-user-vsock` device, so a capture detaches it (the guest acknowledges the
//! removal like any PCIe hot-unplug) and a resume or restore attaches a new one on the same root port.
//! The guest's listening sockets survive; connections through the old device are reset, as a
//! Firecracker snapshot resets them too.
//!
//! Each attach goes to a helper started for it when the recorded one is gone; `pause_for_snapshot`
//! stops the old one, since `vhost-device-vsock` serving its socket again after QEMU hung up left the
//! new device silent more often.
//!
//! A freshly plugged device sometimes never carries a packet although the guest driver reports it
//! ready (measured: about 1 in 30 restores with three at once on two cores, none after re-plugging
//! with a new helper). So an attach waits for the driver, then sends a connection request to a port
//! nobody listens on: a working channel answers at once (the guest resets it), a stuck one stays
//! silent and is plugged again with a fresh helper.

use super::cmdline::{VSOCK_CHARDEV, VSOCK_DEVICE, VSOCK_PORT};
use super::layout::Layout;
use super::qmp::Qmp;
use super::{helper, QemuConfig};
use crate::VmmError;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the guest may take to release the device (measured: 0.03–0.11 s under TCG).
const DETACH_WAIT: Duration = Duration::from_secs(5);
/// How long the helper may take to listen again after QEMU hung up on it.
const REATTACH_WAIT: Duration = Duration::from_secs(3);

/// How long the guest may take to bind its driver to a plugged device.
const DRIVER_WAIT: Duration = Duration::from_secs(10);
/// How long a working channel takes at most to answer a connection request (milliseconds here).
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Plugs tried before giving up on a channel.
const PLUGS: u32 = 3;
/// A vsock port no guest service listens on: the guest answers a request to it with a reset.
const PROBE_PORT: u32 = 1;

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

/// Plugs the device (helper restarted if it died), waits for the guest's driver and checks that the
/// channel carries packets; a stuck one is unplugged and plugged again with a fresh helper.
pub(crate) async fn attach_working(
    qmp: &mut Qmp,
    cfg: &QemuConfig,
    layout: &Layout,
) -> Result<(), VmmError> {
    for plug in 1..=PLUGS {
        helper::ensure_running(cfg, layout).await?;
        attach(qmp).await?;
        wait_driver(qmp).await?;
        if channel_answers(&layout.agent_sock()).await {
            return Ok(());
        }
        tracing::warn!(run_dir = %layout.run_dir.display(), plug, "vsock channel silent after a plug; plugging again with a new helper");
        detach(qmp).await?;
        helper::kill(layout).await;
    }
    Err(VmmError::Timeout {
        what: format!("a vsock channel that carries packets after {PLUGS} plugs"),
        ms: (PROBE_WAIT * PLUGS).as_millis() as u64,
    })
}

/// Waits until the guest driver set DRIVER_OK on the device.
async fn wait_driver(qmp: &mut Qmp) -> Result<(), VmmError> {
    let path = format!("/machine/peripheral/{VSOCK_DEVICE}/virtio-backend");
    let deadline = Instant::now() + DRIVER_WAIT;
    loop {
        let st = qmp
            .execute("x-query-virtio-status", Some(json!({ "path": path })))
            .await?;
        let ready = st["status"]["statuses"].as_array().is_some_and(|s| {
            s.iter()
                .any(|v| v.as_str().is_some_and(|v| v.contains("DRIVER_OK")))
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(VmmError::Timeout {
                what: "the guest's vsock driver".into(),
                ms: DRIVER_WAIT.as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a connection request through the hybrid socket gets any answer (`OK`, or the guest's
/// reset closing the stream) within `PROBE_WAIT`.
async fn channel_answers(sock: &Path) -> bool {
    let probe = async {
        // The helper makes the socket anew when QEMU connects: allow it a moment.
        let mut stream = loop {
            match tokio::net::UnixStream::connect(sock).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        if stream
            .write_all(format!("CONNECT {PROBE_PORT}\n").as_bytes())
            .await
            .is_err()
        {
            // Closed on us: an answer too.
            return;
        }
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf).await;
    };
    tokio::time::timeout(PROBE_WAIT, probe).await.is_ok()
}
