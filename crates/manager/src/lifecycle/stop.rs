//! Stop (`docs/reference/lifecycle.md` §3): RUNNING, or PAUSED (its saved memory is dropped).
//! Flush, ask the guest to power off, wait a bounded time, then force; runtime resources (run
//! directory, TAP, host rules) go, disk, logs and the address stay. Nothing is copied.

use super::{LifecycleError, VmService};
use crate::activity::EventType;
use crate::model::VmState;
use std::time::Duration;

const GRACEFUL_BOUND: Duration = Duration::from_secs(10);
const KILL_BOUND: Duration = Duration::from_secs(3);

impl VmService {
    #[tracing::instrument(name = "vm.stop", skip_all, fields(vm_id = %id))]
    pub async fn stop(&self, id: &str) -> Result<(), LifecycleError> {
        let _guard = self.begin_op(id, "stop")?;
        let vm = self.get(id).await?;
        if vm.state == VmState::Paused {
            // Nothing runs: the saved memory goes, the disk stays for a start.
            let removed = self.inner.storage.remove_paused(id).await;
            removed.map_err(|e| LifecycleError::Internal(e.to_string()))?;
            self.move_state(id, &[VmState::Paused], VmState::Stopped, None)
                .await?;
            tracing::info!(vm_id = %id, "vm.stopped");
            self.vm_event(
                &vm,
                EventType::VmStopped,
                serde_json::json!({"wasPaused": true}),
            );
            return Ok(());
        }
        if vm.state != VmState::Running {
            return Err(LifecycleError::WrongState {
                action: "stop",
                required: VmState::Running,
                state: vm.state,
            });
        }
        self.move_state(id, &[VmState::Running], VmState::Stopping, None)
            .await?;
        self.sync_guest_fs(id).await;
        if let Some(rt) = self.runtime_of(&vm) {
            self.shut_down(&rt).await;
        }
        self.release_runtime(id).await;
        self.detach_network_logged(&vm, "stop").await;
        self.move_state(id, &[VmState::Stopping], VmState::Stopped, None)
            .await?;
        tracing::info!(vm_id = %id, "vm.stopped");
        self.vm_event(&vm, EventType::VmStopped, serde_json::json!({}));
        Ok(())
    }

    /// Graceful request, then SIGKILL, each bounded; returns once the VMM is gone.
    pub(super) async fn shut_down(&self, rt: &rds_vmm::VmRuntime) {
        let backend = &self.inner.backend;
        let exited = backend.wait_exit(rt);
        tokio::pin!(exited);
        if backend.capabilities().supports_graceful_shutdown
            && backend.request_shutdown(rt).await.is_ok()
        {
            if tokio::time::timeout(GRACEFUL_BOUND, &mut exited)
                .await
                .is_ok()
            {
                return;
            }
            tracing::warn!(vm_id = %rt.vm_id, "guest did not power off within 10 s");
        }
        // The spec's intermediate SIGTERM (QEMU only) adds nothing once the guest ignored the power
        // button: QEMU on SIGTERM quits exactly as on SIGKILL for a raw disk with no cache.
        backend.kill(rt).await;
        let _ = tokio::time::timeout(KILL_BOUND, &mut exited).await;
    }

    /// After the VMM exited: run directory and helpers gone, identity cleared, disk fsynced.
    pub(super) async fn release_runtime(&self, id: &str) {
        if let Err(e) = self.inner.backend.cleanup(&self.idle_runtime(id)).await {
            tracing::warn!(vm_id = %id, error = %e, "cleanup after stop");
        }
        let disk = self.inner.storage.disk_path(id);
        let _ = tokio::task::spawn_blocking(move || {
            std::fs::File::open(disk).and_then(|f| f.sync_all())
        })
        .await;
        if let Err(e) = self.inner.db.clear_runtime(id).await {
            tracing::warn!(vm_id = %id, error = %e, "clearing VMM identity");
        }
    }
}
