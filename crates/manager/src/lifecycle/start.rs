//! Start (`docs/reference/lifecycle.md` §3): STOPPED only; cold boot on the VM's own disk. A failed
//! start returns the VM to STOPPED with `lastError`; the disk is untouched.

use super::{LifecycleError, VmService};
use crate::model::VmState;

impl VmService {
    #[tracing::instrument(name = "vm.start", skip_all, fields(vm_id = %id))]
    pub async fn start(&self, id: &str) -> Result<(), LifecycleError> {
        let guard = self.begin_op(id, "start")?;
        let vm = self.get(id).await?;
        if vm.state != VmState::Stopped {
            return Err(LifecycleError::WrongState {
                action: "start",
                required: VmState::Stopped,
                state: vm.state,
            });
        }
        let image = self.resolve_image(Some(&vm.image_id)).await?;
        self.boot_vm(&vm, &image, None, &guard, VmState::Stopped)
            .await
    }
}
