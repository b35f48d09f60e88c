//! Unexpected VMM exits (`docs/reference/lifecycle.md` §4): a RUNNING VM whose VMM dies without a
//! stop or destroy in progress becomes STOPPED with `lastError`; its runtime resources (run
//! directory, helpers, TAP, host rules) are removed. An exit during another operation (a snapshot
//! capture) is handled once that operation has let go of the VM. Internal VMs are marked the same
//! way; the warm pool then replaces them.

use super::VmService;
use crate::model::VmState;
use rds_vmm::VmRuntime;

impl VmService {
    async fn running_on(&self, rt: &VmRuntime) -> bool {
        matches!(self.inner.db.get_any_vm(&rt.vm_id).await,
            Ok(Some(vm)) if vm.state == VmState::Running && vm.vmm_pid == Some(rt.pid))
    }

    pub(super) fn watch(&self, rt: VmRuntime) {
        let svc = self.clone();
        tokio::spawn(async move {
            let status = svc.inner.backend.wait_exit(&rt).await;
            // A stop or destroy in progress owns the cleanup; anything else is waited for.
            let owners = ["stop", "destroy"];
            if svc
                .begin_op_after(&rt.vm_id, "exit", &owners)
                .await
                .is_none()
            {
                return;
            }
            // An exit the manager caused (a pause) was recorded by the operation that caused it:
            // only a VM still RUNNING on this VMM needs the lock, and holding it needlessly would
            // make a resume sent right after the pause answer 409 busy.
            if !svc.running_on(&rt).await {
                return;
            }
            let Some(_guard) = svc.begin_op_after(&rt.vm_id, "exit", &owners).await else {
                return;
            };
            let vm = match svc.inner.db.get_any_vm(&rt.vm_id).await {
                Ok(Some(vm)) if vm.state == VmState::Running && vm.vmm_pid == Some(rt.pid) => vm,
                _ => return,
            };
            let reason = format!("VMM exited unexpectedly ({status})");
            tracing::warn!(vm_id = %rt.vm_id, %status, "vm.exited");
            let meta = serde_json::json!({"exitStatus": status.to_string()});
            svc.vm_event(&vm, crate::activity::EventType::VmExited, meta);
            if let Err(e) = svc.inner.backend.cleanup(&rt).await {
                tracing::warn!(vm_id = %rt.vm_id, error = %e, "cleanup after exit");
            }
            svc.detach_network_logged(&vm, "unexpected exit").await;
            let db = &svc.inner.db;
            let moved = db.transition(
                &rt.vm_id,
                &[VmState::Running],
                VmState::Stopped,
                Some(&reason),
            );
            if let Err(e) = moved.await {
                tracing::error!(vm_id = %rt.vm_id, error = %e, "recording VMM exit");
            }
            let _ = db.clear_runtime(&rt.vm_id).await;
            if vm.pool_role.is_some() {
                svc.pool_wanted();
            }
        });
    }
}
