//! Memory restore (`docs/reference/lifecycle.md` §2 snapshot mode; `docs/snapshots.md` Create from
//! a snapshot): the compatibility gate, then the VMM resumes the snapshot's memory with this VM's
//! own disk clone, TAP (kept down), agent socket, and the guest gets a new identity: clock, entropy
//! (and with it a new machine-id), address, MAC, hostname, firewall. Any failure discards the
//! attempt and the create cold-boots instead.

use super::create::Failed;
use super::ops::OpGuard;
use super::{LifecycleError, VmService};
use crate::model::{ImageRecord, SnapshotRecord, VmRecord};
use base64::Engine;
use rds_vmm::VmRuntime;
use tracing::{info_span, Instrument};

/// Bytes of host randomness a restored guest mixes into its pool
/// (`docs/reference/agent-protocol.md` §10).
const RESEED_BYTES: usize = 64;

/// What the gate compares a snapshot with: the backend now, the image now, the request.
#[derive(Debug, Clone)]
pub(super) struct GateNow<'a> {
    pub memory_supported: bool,
    pub backend: &'a str,
    pub vmm_version: &'a str,
    pub agent_port: u32,
    pub kernel_sha256: Option<&'a str>,
    pub rootfs_sha256: Option<&'a str>,
    pub cpu: u32,
    pub mem_mb: u32,
    pub disk_size_mb: u64,
}

/// `Ok` when the snapshot's memory may be resumed (`docs/snapshots.md` The gate), else why the VM
/// cold-boots on a clone of its disk instead.
pub(super) fn gate(snap: &SnapshotRecord, now: &GateNow) -> Result<(), String> {
    let same_digest = |recorded: &Option<String>, current: Option<&str>| {
        recorded.is_some() && recorded.as_deref() == current
    };
    let reason = if !snap.has_memory {
        "the snapshot has no memory".to_string()
    } else if !now.memory_supported {
        "the backend has no memory snapshots".to_string()
    } else if snap.backend != now.backend {
        format!("backend {} (snapshot) vs {}", snap.backend, now.backend)
    } else if snap.vmm_version != now.vmm_version {
        format!(
            "VMM version {} (snapshot) vs {}",
            snap.vmm_version, now.vmm_version
        )
    } else if !same_digest(&snap.kernel_sha256, now.kernel_sha256) {
        "the image's kernel differs from the snapshot's".to_string()
    } else if !same_digest(&snap.rootfs_sha256, now.rootfs_sha256) {
        "the image's rootfs differs from the snapshot's".to_string()
    } else if (snap.cpu, snap.mem_mb, snap.disk_size_mb) != (now.cpu, now.mem_mb, now.disk_size_mb)
    {
        format!(
            "shape cpu={} memMb={} diskSizeMb={} differs from the snapshot's {}/{}/{}",
            now.cpu, now.mem_mb, now.disk_size_mb, snap.cpu, snap.mem_mb, snap.disk_size_mb
        )
    } else if snap.agent_port != now.agent_port {
        format!(
            "AGENT_VSOCK_PORT {} (snapshot) vs {}",
            snap.agent_port, now.agent_port
        )
    } else {
        return Ok(());
    };
    Err(reason)
}

impl VmService {
    /// Resumes `snap`'s memory as `vm` when the gate allows. `Ok(true)`: RUNNING in snapshot mode;
    /// `Ok(false)`: the caller cold-boots (gate refused, or the attempt failed and was discarded:
    /// VMM killed, TAP and rules gone, disk removed so the boot clones it afresh).
    pub(super) async fn memory_restore(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        snap: &SnapshotRecord,
        guard: &OpGuard,
    ) -> Result<bool, LifecycleError> {
        let caps = self.inner.backend.capabilities();
        let now = GateNow {
            memory_supported: caps.supports_memory_snapshots,
            backend: caps.kind.as_str(),
            vmm_version: &caps.vmm_version,
            agent_port: self.inner.settings.agent.port,
            kernel_sha256: image.kernel.as_ref().map(|f| f.sha256.as_str()),
            rootfs_sha256: image.rootfs.as_ref().map(|f| f.sha256.as_str()),
            cpu: vm.cpu,
            mem_mb: vm.mem_mb,
            disk_size_mb: vm.disk_size_mb,
        };
        if let Err(reason) = gate(snap, &now) {
            tracing::info!(vm_id = %vm.id, snapshot_id = %snap.id, %reason, "cold boot from the snapshot's disk");
            return Ok(false);
        }
        let mut launched = None;
        let Err(failed) = self
            .try_restore(vm, image, snap, guard, &mut launched)
            .await
        else {
            return Ok(true);
        };
        self.abandon_launch(vm, launched, "discarded restore")
            .await?;
        if let Err(e) = self.inner.storage.remove_vm_disk(&vm.id).await {
            tracing::warn!(vm_id = %vm.id, error = %e, "removing the discarded restore's disk");
        }
        if failed.cancelled {
            return Err(LifecycleError::NoLongerRunning(vm.id.clone()));
        }
        tracing::warn!(vm_id = %vm.id, snapshot_id = %snap.id, reason = %failed.reason,
            "memory restore failed; cold-booting instead");
        Ok(false)
    }

    async fn try_restore(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        snap: &SnapshotRecord,
        guard: &OpGuard,
        launched: &mut Option<VmRuntime>,
    ) -> Result<(), Failed> {
        let started = std::time::Instant::now();
        let storage = &self.inner.storage;
        let mut stages = Stages::start();
        let disk = storage
            .vm_disk_from_snapshot(&vm.id, &snap.id, snap.disk_size_mb, vm.disk_size_mb)
            .instrument(info_span!("storage.provision_disk"))
            .await
            .map_err(Failed::host)?;
        stages.mark("disk");
        let db = &self.inner.db;
        self.mark_starting(&vm.id, vm.state).await?;
        self.attach_network(vm)
            .instrument(info_span!("net.attach"))
            .await?;
        self.set_tap_up(vm, false).await?;
        stages.mark("net");
        let spec = self.spec_for(vm, image, disk);
        let backend = &self.inner.backend;
        let snapshot_dir = storage.snapshot_dir(&snap.id);
        let rt = async {
            backend.prepare(&spec).await?;
            backend.restore(&spec, &snapshot_dir).await
        }
        .instrument(info_span!("vmm.restore"))
        .await
        .map_err(Failed::host)?;
        stages.mark("vmm");
        *launched = Some(rt.clone());
        db.set_runtime(&vm.id, rt.pid, rt.start_time, &rt.boot_id)
            .await
            .map_err(Failed::host)?;
        self.wait_ready(&rt, &guard.cancel)
            .instrument(info_span!("agent.wait_ready"))
            .await?;
        stages.mark("ready");
        self.new_identity(vm)
            .instrument(info_span!("guest.provision"))
            .await?;
        stages.mark("identity");
        // The snapshot's trees (if any) carry its source's token: this VM gets its own, before it
        // is seen RUNNING.
        self.setup_peers_at_start(vm).await;
        self.mark_running(&vm.id, "snapshot").await?;
        self.watch(rt);
        tracing::info!(vm_id = %vm.id, snapshot_id = %snap.id, provision_mode = "snapshot",
            stages_ms = %stages, "vm.started");
        self.started_event(vm, "snapshot", started);
        Ok(())
    }

    /// Restore identity (`docs/snapshots.md` Memory restore): clock, entropy, network identity and
    /// the guest firewall of this VM's own policy, then the TAP up. The four agent calls are
    /// independent and run at once (each waits on guest I/O under emulation; one after the other
    /// they took ~400 ms); the TAP comes up only once the guest has its new address and MAC, and
    /// the host rules, the authority, were in place before the VMM started.
    async fn new_identity(&self, vm: &VmRecord) -> Result<(), Failed> {
        let (clock, entropy, net, ()) = tokio::join!(
            self.sync_clock(&vm.id),
            self.reseed_entropy(&vm.id),
            self.guest_net_config(vm),
            self.guest_firewall(vm),
        );
        clock?;
        entropy?;
        net?;
        self.set_tap_up(vm, true).await
    }

    /// `/entropy/reseed` with host randomness; the agent also writes a new `/etc/machine-id`.
    pub(super) async fn reseed_entropy(&self, id: &str) -> Result<(), Failed> {
        let seed = rds_protocol::EntropyReseedRequest {
            seed: base64::engine::general_purpose::STANDARD.encode(host_random()?),
        };
        self.agent_for(id)
            .call_no_content(rds_protocol::paths::ENTROPY_RESEED, Some(&seed))
            .await?;
        Ok(())
    }
}

/// Milliseconds per restore step, logged with `vm.started` (where restore time goes).
struct Stages {
    last: std::time::Instant,
    done: Vec<(&'static str, u128)>,
}

impl Stages {
    fn start() -> Self {
        Stages {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, stage: &'static str) {
        self.done.push((stage, self.last.elapsed().as_millis()));
        self.last = std::time::Instant::now();
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (stage, ms)) in self.done.iter().enumerate() {
            write!(f, "{}{stage}={ms}", if i > 0 { " " } else { "" })?;
        }
        Ok(())
    }
}

/// `RESEED_BYTES` from the host's CSPRNG (`getrandom(2)`, blocking only before the host's pool is
/// initialised, long past at this point).
fn host_random() -> Result<[u8; RESEED_BYTES], Failed> {
    let mut buf = [0u8; RESEED_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failed::host(format!("getrandom: {e}")));
        }
        filled += n as usize;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> SnapshotRecord {
        SnapshotRecord::sample()
    }

    fn now() -> GateNow<'static> {
        GateNow {
            memory_supported: true,
            backend: "qemu",
            vmm_version: "7.2.0",
            agent_port: 8080,
            kernel_sha256: Some("k"),
            rootfs_sha256: Some("r"),
            cpu: 1,
            mem_mb: 512,
            disk_size_mb: 256,
        }
    }

    #[test]
    fn gate_passes_only_when_everything_matches() {
        assert_eq!(gate(&snap(), &now()), Ok(()));
        let refused = |s: SnapshotRecord, n: GateNow| gate(&s, &n).unwrap_err();
        let disk_only = SnapshotRecord {
            has_memory: false,
            ..snap()
        };
        assert!(refused(disk_only, now()).contains("no memory"));
        let cases: Vec<(GateNow, &str)> = vec![
            (
                GateNow {
                    memory_supported: false,
                    ..now()
                },
                "backend has no memory",
            ),
            (
                GateNow {
                    backend: "firecracker",
                    ..now()
                },
                "backend qemu",
            ),
            (
                GateNow {
                    vmm_version: "8.0.0",
                    ..now()
                },
                "VMM version",
            ),
            (
                GateNow {
                    kernel_sha256: Some("k2"),
                    ..now()
                },
                "kernel",
            ),
            (
                GateNow {
                    kernel_sha256: None,
                    ..now()
                },
                "kernel",
            ),
            (
                GateNow {
                    rootfs_sha256: Some("r2"),
                    ..now()
                },
                "rootfs",
            ),
            (GateNow { cpu: 2, ..now() }, "shape"),
            (
                GateNow {
                    mem_mb: 1024,
                    ..now()
                },
                "shape",
            ),
            (
                GateNow {
                    disk_size_mb: 512,
                    ..now()
                },
                "shape",
            ),
            (
                GateNow {
                    agent_port: 9000,
                    ..now()
                },
                "AGENT_VSOCK_PORT",
            ),
        ];
        for (n, why) in cases {
            let reason = refused(snap(), n.clone());
            assert!(reason.contains(why), "{n:?}: {reason}");
        }
        // A snapshot taken when the image had no digests recorded never resumes memory.
        let undigested = SnapshotRecord {
            kernel_sha256: None,
            ..snap()
        };
        assert!(refused(undigested, now()).contains("kernel"));
    }

    #[test]
    fn host_randomness_differs_between_calls() {
        let (a, b) = (host_random().ok().unwrap(), host_random().ok().unwrap());
        assert_ne!(a, b);
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(a).len(),
            88
        );
    }
}
