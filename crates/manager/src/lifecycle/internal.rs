//! Internal VMs (`docs/snapshots.md` Templates, Warm pool): the VMs templates are captured from and
//! the warm pool's, at the template shape with no egress, of an image the caller chose. They take
//! an address like any VM but count against no quota and never appear in the API; reconciliation
//! removes any it finds.

use super::ops::OpGuard;
use super::{LifecycleError, VmService};
use crate::db::{CreateVmError, NewVm, PoolRole};
use crate::model::{ImageRecord, SnapshotRecord, VmRecord, VmState};

impl VmService {
    /// Inserts an internal VM of `role` and brings it to RUNNING: from `template`'s memory when
    /// given (cold boot if that fails), else by a boot. On failure nothing of it is left.
    pub(super) async fn start_internal(
        &self,
        role: PoolRole,
        image: &ImageRecord,
        template: Option<&SnapshotRecord>,
    ) -> Result<VmRecord, LifecycleError> {
        let p = &self.inner.settings.provision;
        let new = NewVm {
            id: uuid::Uuid::new_v4().to_string(),
            cpu: p.template_cpu,
            mem_mb: p.template_mem_mb,
            disk_size_mb: self.inner.settings.default_disk_mb,
            outbound_internet: false,
            allow_ips: Vec::new(),
            image_id: image.id.clone(),
            source_snapshot_id: template.map(|t| t.id.clone()),
            backend: self.inner.backend.capabilities().kind.as_str().to_string(),
            pool_role: Some(role),
            timeout_sec: None,
            timeout_action: Default::default(),
            metadata: Default::default(),
            secret_env: None,
            peer_links: Vec::new(),
        };
        let vm = {
            let _serial = self.inner.create_lock.lock().await;
            let s = &self.inner.settings;
            self.inner
                .db
                .create_vm(&new, s.max_vms, &s.subnet)
                .await
                .map_err(|e| match e {
                    CreateVmError::NoAddress => LifecycleError::NoAddress,
                    CreateVmError::Quota(n) => LifecycleError::Quota(n),
                    CreateVmError::Db(e) => LifecycleError::Db(e),
                })?
        };
        let guard = self.begin_op(&vm.id, "create")?;
        let started = self.provision_internal(&vm, image, template, &guard).await;
        drop(guard);
        if let Err(e) = started {
            self.remove_internal(&vm).await;
            return Err(e);
        }
        self.inner
            .db
            .get_any_vm(&vm.id)
            .await?
            .ok_or_else(|| LifecycleError::Internal(format!("internal VM {} vanished", vm.id)))
    }

    async fn provision_internal(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        template: Option<&SnapshotRecord>,
        guard: &OpGuard,
    ) -> Result<(), LifecycleError> {
        let restored = match template {
            Some(t) => self.memory_restore(vm, image, t, guard).await?,
            None => false,
        };
        if !restored {
            // A template's memory, never its disk: a boot starts from the blank disk.
            self.boot_vm(vm, image, None, guard, VmState::Error).await?;
        }
        Ok(())
    }

    /// Kills and removes an internal VM and deletes its row and address, under the VM's lock and
    /// only if it is still internal (a create may have taken a pool VM meanwhile). Failures are
    /// logged; reconciliation removes what is left.
    pub(super) async fn remove_internal(&self, vm: &VmRecord) {
        let _guard = self.begin_destroy(&vm.id).await;
        let vm = match self.inner.db.get_any_vm(&vm.id).await {
            Ok(Some(now)) if now.pool_role.is_some() => now,
            Ok(_) => return,
            Err(e) => return tracing::warn!(vm_id = %vm.id, error = %e, "internal VM lookup"),
        };
        let warnings = self.teardown(&vm).await;
        if let Err(e) = self.inner.db.delete_internal_vm(&vm.id).await {
            tracing::warn!(vm_id = %vm.id, error = %e, "internal VM row left for reconciliation");
        }
        tracing::debug!(vm_id = %vm.id, role = ?vm.pool_role, ?warnings, "internal VM removed");
    }
}
