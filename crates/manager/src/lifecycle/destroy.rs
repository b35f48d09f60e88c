//! Destroy (`docs/reference/lifecycle.md` §3): always accepted; cancels a create or start, kills
//! the VMM, removes the TAP, host rules and every file, then the tombstone row and the released
//! address in one transaction. Leftovers of a failed step are removed by the next reconciliation.

use super::{LifecycleError, VmService};
use crate::model::VmRecord;
use std::time::Duration;

impl VmService {
    #[tracing::instrument(name = "vm.destroy", skip_all, fields(vm_id = %id))]
    pub async fn destroy(&self, id: &str) -> Result<(), LifecycleError> {
        self.get(id).await?;
        let _guard = self.begin_destroy(id).await;
        let vm = self.get(id).await?;
        self.destroy_locked(&vm).await
    }

    /// Destroys `id` if its deadline has still passed once its lock is held (a keep-alive may
    /// have moved it meanwhile); records `vm.expired` first. Returns whether it destroyed.
    pub(super) async fn destroy_expired(&self, id: &str) -> Result<bool, LifecycleError> {
        let _guard = self.begin_destroy(id).await;
        let vm = self.get(id).await?;
        let now = crate::model::now_rfc3339();
        let Some(deadline) = vm.expires_at.clone().filter(|d| *d <= now) else {
            return Ok(false);
        };
        tracing::info!(vm_id = %id, %deadline, "vm.expired: destroying");
        self.expired_event(&vm, "destroy", &deadline);
        self.destroy_locked(&vm).await?;
        Ok(true)
    }

    async fn destroy_locked(&self, vm: &VmRecord) -> Result<(), LifecycleError> {
        let id = vm.id.as_str();
        let warnings = self.teardown(vm).await;
        self.inner.db.mark_deleted(id).await?;
        self.inner.processes.forget_vm(id);
        tracing::info!(vm_id = %id, ?warnings, "vm.deleted");
        let meta = serde_json::json!({"warnings": warnings});
        self.vm_event(vm, crate::activity::EventType::VmDeleted, meta);
        self.pool_wanted();
        Ok(())
    }

    /// Everything of a VM on the host goes: VMM (SIGKILL), run directory, TAP and rules, files.
    /// Returns the steps that failed; the caller owns the lock and the row.
    pub(super) async fn teardown(&self, vm: &VmRecord) -> Vec<String> {
        let backend = &self.inner.backend;
        let rt = self
            .runtime_of(vm)
            .unwrap_or_else(|| self.idle_runtime(&vm.id));
        if rt.pid != 0 {
            backend.kill(&rt).await;
            if tokio::time::timeout(Duration::from_secs(5), backend.wait_exit(&rt))
                .await
                .is_err()
            {
                tracing::warn!(vm_id = %vm.id, pid = rt.pid, "VMM still present 5 s after SIGKILL");
            }
        }
        let mut warnings = Vec::new();
        if let Err(e) = backend.cleanup(&rt).await {
            warnings.push(e.to_string());
        }
        if let Err(e) = self.detach_network(vm).await {
            warnings.push(crate::error_chain(&e));
        }
        if let Err(e) = self.inner.storage.remove_vm(&vm.id).await {
            warnings.push(e.to_string());
        }
        warnings
    }
}
