//! Pause and resume (`docs/lifetimes.md`). Pause writes the guest's memory and device state into
//! `vms/<id>/paused/` (the disk stays where it is: the VMM is stopped with it flushed), then ends
//! the VMM and frees the TAP and host rules; the row keeps id, address and MAC, state PAUSED. The
//! marker file is written last, so a pause cut short is recognised (reconciliation makes it a
//! STOPPED VM). Resume restores that memory with the VM's own disk and identity, so the guest
//! carries on where it was; clock and entropy are refreshed and the egress rules applied again.
//! A backend without memory snapshots pauses by powering off and resumes by booting the disk.

use super::create::Failed;
use super::ops::OpGuard;
use super::{LifecycleError, VmService};
use crate::activity::EventType;
use crate::model::{ImageRecord, VmRecord, VmState};
use crate::storage::PAUSED_MARKER;
use rds_vmm::VmRuntime;
use serde_json::json;
use std::time::Instant;
use tracing::{info_span, Instrument};

const MIB: u64 = 1024 * 1024;
/// Room beyond the memory image: device state, filesystem metadata, other writers.
const FREE_SPACE_MARGIN: u64 = 16 * MIB;

impl VmService {
    #[tracing::instrument(name = "vm.pause", skip_all, fields(vm_id = %id))]
    pub async fn pause(&self, id: &str) -> Result<VmRecord, LifecycleError> {
        let _guard = self.begin_op(id, "pause")?;
        let vm = self.get(id).await?;
        if vm.state != VmState::Running {
            return Err(LifecycleError::WrongState {
                action: "pause",
                required: VmState::Running,
                state: vm.state,
            });
        }
        self.pause_locked(&vm).await?;
        self.get(id).await
    }

    /// Pauses `vm` (RUNNING, its lock held by the caller). On an error before the memory is
    /// complete the VM runs on as before.
    pub(super) async fn pause_locked(&self, vm: &VmRecord) -> Result<(), LifecycleError> {
        let started = Instant::now();
        let rt = self
            .runtime_of(vm)
            .ok_or_else(|| LifecycleError::PauseFailed("no VMM recorded".into()))?;
        let memory = self.inner.backend.capabilities().supports_memory_snapshots;
        self.sync_guest_fs(&vm.id).await;
        if memory {
            self.save_memory(vm, &rt).await?;
            // The guest is stopped and its state saved: nothing to shut down gracefully.
            self.inner.backend.kill(&rt).await;
            let exited = self.inner.backend.wait_exit(&rt);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), exited).await;
        } else {
            self.shut_down(&rt).await;
        }
        self.release_runtime(&vm.id).await;
        self.detach_network_logged(vm, "pause").await;
        self.move_state(&vm.id, &[VmState::Running], VmState::Paused, None)
            .await?;
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(vm_id = %vm.id, has_memory = memory, duration_ms = ms, "vm.paused");
        self.vm_event(
            vm,
            EventType::VmPaused,
            json!({"hasMemory": memory, "durationMs": ms}),
        );
        Ok(())
    }

    /// Stops the vCPUs and writes memory and device state into `paused/`; on failure the VM is
    /// resumed and the directory removed.
    async fn save_memory(&self, vm: &VmRecord, rt: &VmRuntime) -> Result<(), LifecycleError> {
        let storage = &self.inner.storage;
        let need = u64::from(vm.mem_mb) * MIB + FREE_SPACE_MARGIN;
        let free = storage.free_bytes().await.map_err(pause_failure)?;
        if free < need {
            tracing::warn!(vm_id = %vm.id, need, free, "not enough free space to pause");
            return Err(LifecycleError::NoSpace);
        }
        let dir = storage.paused_dir(&vm.id);
        storage.remove_paused(&vm.id).await.map_err(pause_failure)?;
        let backend = &self.inner.backend;
        let saved = async {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(pause_failure)?;
            backend
                .pause_for_snapshot(rt)
                .await
                .map_err(pause_failure)?;
            backend
                .snapshot_create(rt, &dir)
                .await
                .map_err(pause_failure)?;
            write_marker(&dir).await.map_err(pause_failure)
        }
        .await;
        if let Err(e) = saved {
            if let Err(r) = backend.resume(rt).await {
                tracing::warn!(vm_id = %vm.id, error = %r, "resuming after a failed pause");
            }
            if let Err(r) = storage.remove_paused(&vm.id).await {
                tracing::warn!(vm_id = %vm.id, error = %r, "removing a failed pause's files");
            }
            return Err(e);
        }
        Ok(())
    }

    #[tracing::instrument(name = "vm.resume", skip_all, fields(vm_id = %id))]
    pub async fn resume(&self, id: &str) -> Result<VmRecord, LifecycleError> {
        let guard = self.begin_op(id, "resume")?;
        let vm = self.get(id).await?;
        if vm.state != VmState::Paused {
            return Err(LifecycleError::WrongState {
                action: "resume",
                required: VmState::Paused,
                state: vm.state,
            });
        }
        let image = self.resolve_image(Some(&vm.image_id)).await?;
        let memory = self.inner.backend.capabilities().supports_memory_snapshots
            && self.inner.storage.paused_complete(id);
        if memory {
            self.resume_memory(&vm, &image, &guard).await?;
        } else {
            // A power-off pause (or memory this backend cannot load): boot the disk.
            self.boot_vm(&vm, &image, None, &guard, VmState::Stopped)
                .await?;
        }
        self.after_resume(&vm, memory).await;
        self.get(id).await
    }

    /// Memory restore of the paused VM; a failure leaves it PAUSED (memory kept) with `lastError`.
    async fn resume_memory(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        guard: &OpGuard,
    ) -> Result<(), LifecycleError> {
        let mut launched = None;
        let Err(failed) = self.try_resume(vm, image, guard, &mut launched).await else {
            return Ok(());
        };
        self.abandon_launch(vm, launched, "failed resume").await?;
        if failed.cancelled {
            return Err(LifecycleError::NoLongerRunning(vm.id.clone()));
        }
        tracing::error!(vm_id = %vm.id, reason = %failed.reason, "resume failed");
        self.move_state(
            &vm.id,
            &[VmState::Paused, VmState::Starting],
            VmState::Paused,
            Some(&failed.reason),
        )
        .await?;
        Err(LifecycleError::BootFailed {
            id: vm.id.clone(),
            reason: failed.reason,
            cause: failed.cause,
        })
    }

    async fn try_resume(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        guard: &OpGuard,
        launched: &mut Option<VmRuntime>,
    ) -> Result<(), Failed> {
        let started = Instant::now();
        let db = &self.inner.db;
        self.mark_starting(&vm.id, VmState::Paused).await?;
        // Host rules before the VMM exists; the TAP stays down until the guest is current.
        self.attach_network(vm)
            .instrument(info_span!("net.attach"))
            .await?;
        self.set_tap_up(vm, false).await?;
        let spec = self.spec_for(vm, image, self.inner.storage.disk_path(&vm.id));
        let backend = &self.inner.backend;
        let dir = self.inner.storage.paused_dir(&vm.id);
        let rt = async {
            backend.prepare(&spec).await?;
            backend.restore(&spec, &dir).await
        }
        .instrument(info_span!("vmm.restore"))
        .await
        .map_err(Failed::host)?;
        *launched = Some(rt.clone());
        db.set_runtime(&vm.id, rt.pid, rt.start_time, &rt.boot_id)
            .await
            .map_err(Failed::host)?;
        self.wait_ready(&rt, &guard.cancel)
            .instrument(info_span!("agent.wait_ready"))
            .await?;
        // Same address and MAC as before the pause: only time, randomness and rules are stale.
        let (clock, entropy, ()) = tokio::join!(
            self.sync_clock(&vm.id),
            self.reseed_entropy(&vm.id),
            self.guest_firewall(vm),
        );
        clock?;
        entropy?;
        self.set_tap_up(vm, true).await?;
        self.mark_running(&vm.id, "snapshot").await?;
        self.watch(rt);
        tracing::info!(vm_id = %vm.id, ms = started.elapsed().as_millis() as u64, "vm.resumed");
        Ok(())
    }

    /// The memory is no longer needed once the guest runs; the lifetime starts again.
    async fn after_resume(&self, vm: &VmRecord, memory: bool) {
        if let Err(e) = self.inner.storage.remove_paused(&vm.id).await {
            tracing::warn!(vm_id = %vm.id, error = %e, "removing the resumed VM's memory files");
        }
        if let Some(secs) = vm.timeout_sec {
            if let Err(e) = self.inner.db.rearm_deadline(&vm.id, secs).await {
                tracing::warn!(vm_id = %vm.id, error = %e, "re-arming the lifetime after resume");
            }
        }
        self.vm_event(vm, EventType::VmResumed, json!({"hasMemory": memory}));
    }
}

fn pause_failure(e: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::PauseFailed(e.to_string())
}

/// The marker, fsynced with its directory, after every other file of the pause.
async fn write_marker(dir: &std::path::Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        for entry in std::fs::read_dir(&dir)? {
            std::fs::File::open(entry?.path())?.sync_all()?;
        }
        std::fs::write(dir.join(PAUSED_MARKER), b"")?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}
