//! The warm pool (`docs/snapshots.md` Warm pool, `ENABLE_WARM_POOL=true`): internal VMs of the
//! default image at the template shape, RUNNING with no egress, resumed from the template when it
//! is ready (booted otherwise). A create that asks for exactly that takes one: in one transaction
//! with the quota check the row becomes a user VM (`createdAt` now, the caller's egress policy),
//! then the policy is applied on the host and in the guest. One worker tops the pool up after every
//! create, destroy and template change, and every 30 s, replacing pool VMs that died or belong to
//! an outdated image or template.

use super::create::{CreateVm, Failed};
use super::{LifecycleError, VmService};
use crate::db::{CreateVmError, PoolRole};
use crate::model::{ImageRecord, SnapshotRecord, TimeoutAction, VmRecord, VmState};
use std::time::Duration;
use tokio::sync::Notify;

/// A top-up also runs this often, so a failed one is retried without a hot loop.
const PERIOD: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Pool {
    wake: Notify,
}

impl VmService {
    /// min(`WARM_POOL_TARGET`, `WARM_POOL_MAX_VMS`) with the pool on, else 0.
    pub fn pool_target(&self) -> u64 {
        self.inner.settings.provision.pool_target
    }

    /// Asks the pool worker for a top-up.
    pub fn pool_wanted(&self) {
        if self.pool_target() > 0 {
            self.inner.pool.wake.notify_one();
        }
    }

    /// Internal VMs per role (`template`, `pool`), for `rds_internal_vms`.
    pub async fn internal_counts(&self) -> Result<Vec<(&'static str, u64)>, LifecycleError> {
        let mut out = Vec::new();
        for role in [PoolRole::Template, PoolRole::Pool] {
            let n = self.inner.db.internal_vms(role).await?.len();
            out.push((role.as_str(), n as u64));
        }
        Ok(out)
    }

    /// Pool VMs ready to be taken and current: RUNNING, of the default image and, once the image's
    /// template is ready, made from it (`rds_warm_pool_vms`, `/readyz`). Outdated ones are still
    /// taken until replaced, but do not count here.
    pub async fn pool_ready(&self) -> Result<u64, LifecycleError> {
        let db = &self.inner.db;
        let Some(image) = db.default_image().await? else {
            return Ok(0);
        };
        let template = image
            .seed
            .as_ref()
            .filter(|s| s.status == "ready" && self.templates_on())
            .and_then(|s| s.snapshot_id.clone());
        let vms = db.internal_vms(PoolRole::Pool).await?;
        let current = vms.iter().filter(|v| {
            v.state == VmState::Running
                && v.image_id == image.id
                && (template.is_none() || v.source_snapshot_id == template)
        });
        Ok(current.count() as u64)
    }

    /// Starts the pool worker (after reconciliation removed every earlier internal VM).
    pub fn start_pool(&self) {
        if self.pool_target() == 0 {
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                svc.top_up().await;
                let _ = tokio::time::timeout(PERIOD, svc.inner.pool.wake.notified()).await;
            }
        });
    }

    async fn top_up(&self) {
        let db = &self.inner.db;
        let image = match db.default_image().await {
            Ok(Some(i)) if i.kernel_path.is_some() && i.rootfs_path.is_some() => i,
            Ok(_) => return,
            Err(e) => return tracing::warn!(error = %e, "warm pool: default image"),
        };
        let template = self.pool_template(&image).await;
        let template_id = template.as_ref().map(|(t, _)| t.id.clone());
        let vms = match db.internal_vms(PoolRole::Pool).await {
            Ok(vms) => vms,
            Err(e) => return tracing::warn!(error = %e, "warm pool: listing"),
        };
        let mut kept = 0;
        for vm in vms {
            let current = vm.image_id == image.id
                && (template_id.is_none() || vm.source_snapshot_id == template_id);
            let healthy = match vm.state {
                VmState::Running => self
                    .runtime_of(&vm)
                    .is_some_and(|rt| self.inner.backend.is_alive(&rt)),
                VmState::Created | VmState::Starting => true,
                _ => false,
            };
            if current && healthy {
                kept += 1;
            } else {
                self.replace_pool_vm(&vm).await;
            }
        }
        for _ in kept..self.pool_target() {
            let t = template.as_ref().map(|(t, _)| t);
            match self.start_internal(PoolRole::Pool, &image, t).await {
                Ok(vm) => {
                    self.warm_up(&vm.id).await;
                    tracing::info!(vm_id = %vm.id, mode = ?vm.provision_mode, "warm pool VM ready")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "warm pool VM failed to start; retrying later");
                    return;
                }
            }
        }
    }

    /// Runs one `true` in a new pool VM, off the request path: a resumed guest's first command pays
    /// for the shell's first start (under TCG, translating its code: ~270 ms instead of ~120 ms),
    /// and the caller who takes the VM should not. Not an exec of the caller's, so not in the exec
    /// log.
    async fn warm_up(&self, id: &str) {
        let req = rds_protocol::ExecRequest {
            cmd: "true".into(),
            cwd: None,
            env: Default::default(),
            timeout_ms: Some(10_000),
        };
        let agent = self.agent_for(id);
        let call = agent.call_json::<_, rds_protocol::ExecResult>(
            rds_protocol::paths::EXEC,
            &req,
            Duration::from_secs(15),
        );
        if let Err(e) = call.await {
            tracing::debug!(vm_id = %id, error = %e, "warm pool VM warm-up");
        }
    }

    /// The default image's ready template, held while pool VMs resume from it.
    async fn pool_template(
        &self,
        image: &ImageRecord,
    ) -> Option<(SnapshotRecord, super::snapshots::RestoreHold)> {
        let p = &self.inner.settings.provision;
        let disk = self.inner.settings.default_disk_mb;
        match self
            .usable_template(image, p.template_cpu, p.template_mem_mb, disk)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "warm pool: template lookup");
                None
            }
        }
    }

    /// Removes a pool VM, unless a create took it meanwhile.
    async fn replace_pool_vm(&self, vm: &VmRecord) {
        tracing::info!(vm_id = %vm.id, state = %vm.state, "warm pool VM replaced");
        self.remove_internal(vm).await;
    }

    /// A RUNNING pool VM for `req`, if the pool is on and the request is exactly what pool VMs are:
    /// no snapshot, the default image, the template shape and disk. The VM is the caller's from
    /// here.
    pub(super) async fn take_from_pool(
        &self,
        req: &CreateVm,
        image: &ImageRecord,
        disk_size_mb: u64,
    ) -> Result<Option<VmRecord>, LifecycleError> {
        let taken_at = std::time::Instant::now();
        if self.pool_target() == 0
            || req.snapshot_id.is_some()
            // A pool VM's host rules were made without the manager port links open.
            || !req.peer_links.is_empty()
            || !self.is_template_shape(req.cpu, req.mem_mb, disk_size_mb)
            || self.inner.db.default_image_id().await?.as_deref() != Some(image.id.as_str())
        {
            return Ok(None);
        }
        for candidate in self.inner.db.internal_vms(PoolRole::Pool).await? {
            if candidate.state != VmState::Running || candidate.image_id != image.id {
                continue;
            }
            // The lock first: the worker never replaces a VM a create holds.
            let Ok(guard) = self.begin_op(&candidate.id, "create") else {
                continue;
            };
            let alive = self
                .runtime_of(&candidate)
                .is_some_and(|rt| self.inner.backend.is_alive(&rt));
            if !alive {
                continue;
            }
            let claimed = {
                let _serial = self.inner.create_lock.lock().await;
                let s = &self.inner.settings;
                self.inner
                    .db
                    .claim_pool_vm(
                        &candidate.id,
                        s.max_vms,
                        req.outbound_internet,
                        &req.allow_ips,
                    )
                    .await
            };
            let vm = match claimed {
                Ok(Some(vm)) => vm,
                Ok(None) => continue,
                Err(CreateVmError::Quota(n)) => return Err(LifecycleError::Quota(n)),
                Err(CreateVmError::NoAddress) => return Err(LifecycleError::NoAddress),
                Err(CreateVmError::Db(e)) => return Err(e.into()),
            };
            tracing::info!(vm_id = %vm.id, "vm.created (warm pool)");
            self.created_event(&vm, true);
            // The caller's lifetime (counted from the take) and metadata, as a boot would have them.
            let vm = match self.label_taken(&vm, req).await {
                Ok(vm) => vm,
                Err(failed) => {
                    drop(guard);
                    return Err(self.fail_handover(&vm, failed).await);
                }
            };
            let handed = self.apply_egress(&vm, &candidate).await;
            drop(guard);
            self.pool_wanted();
            if let Err(failed) = handed {
                return Err(self.fail_handover(&vm, failed).await);
            }
            tracing::info!(vm_id = %vm.id, provision_mode = ?vm.provision_mode, "vm.started");
            let mode = vm.provision_mode.as_deref().unwrap_or("boot");
            self.started_event(&vm, mode, taken_at);
            return Ok(Some(vm));
        }
        Ok(None)
    }

    /// Gives a VM just taken from the pool the create's timeout, metadata and secrets (a pool VM
    /// has none).
    async fn label_taken(&self, vm: &VmRecord, req: &CreateVm) -> Result<VmRecord, Failed> {
        let db = &self.inner.db;
        if req.timeout_sec.is_none()
            && req.timeout_action == TimeoutAction::default()
            && req.metadata.is_empty()
            && req.secret_env.is_empty()
        {
            return Ok(vm.clone());
        }
        if !req.secret_env.is_empty() {
            let sealed = self
                .seal_secret_env(&vm.id, &req.secret_env)
                .map_err(Failed::host)?;
            db.set_vm_secret_env(&vm.id, sealed.as_deref())
                .await
                .map_err(Failed::host)?;
        }
        db.set_vm_timeout(&vm.id, req.timeout_sec, req.timeout_action)
            .await
            .map_err(Failed::host)?;
        if !req.metadata.is_empty() {
            db.set_vm_metadata(&vm.id, &req.metadata)
                .await
                .map_err(Failed::host)?;
        }
        match db.get_vm(&vm.id).await {
            Ok(Some(vm)) => Ok(vm),
            Ok(None) => Err(Failed::host(format!("VM {} vanished", vm.id))),
            Err(e) => Err(Failed::host(e)),
        }
    }

    /// A taken VM whose policy could not be applied must not run: ERROR with `lastError`.
    async fn fail_handover(&self, vm: &VmRecord, failed: Failed) -> LifecycleError {
        let _guard = self.begin_destroy(&vm.id).await;
        if let Err(e) = self
            .abandon_launch(vm, self.runtime_of(vm), "warm pool handover")
            .await
        {
            return e;
        }
        if let Err(e) = self
            .inner
            .db
            .transition(
                &vm.id,
                &[VmState::Running],
                VmState::Error,
                Some(&failed.reason),
            )
            .await
        {
            return e.into();
        }
        let meta = serde_json::json!({"message": failed.reason});
        self.vm_event(vm, crate::activity::EventType::VmError, meta);
        LifecycleError::BootFailed {
            id: vm.id.clone(),
            reason: failed.reason,
            cause: failed.cause,
        }
    }
}
