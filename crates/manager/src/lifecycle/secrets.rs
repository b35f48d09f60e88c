//! secretEnv in the lifecycle (`docs/secret-env.md`): sealed into the row at create, opened for
//! each exec, run-ts and run-js of the VM and merged into the call's environment (secrets win),
//! then scrubbed from what is recorded about the call.

use super::{LifecycleError, VmService};
use crate::model::VmRecord;
use crate::secret_env::{self, Entries};

impl VmService {
    /// Whether creates may carry secretEnv.
    pub fn secret_env_enabled(&self) -> bool {
        self.inner.settings.secret_key.is_some()
    }

    /// `entries` sealed for `vm_id`; None when there are none.
    pub(super) fn seal_secret_env(
        &self,
        vm_id: &str,
        entries: &Entries,
    ) -> Result<Option<String>, LifecycleError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let key = self.inner.settings.secret_key.as_ref();
        let key = key.ok_or_else(|| LifecycleError::Invalid(secret_env::NEEDS_KEY.into()))?;
        Ok(Some(key.seal(vm_id, entries)))
    }

    /// The VM's secrets in the clear, for one call.
    pub(super) fn open_secret_env(&self, vm: &VmRecord) -> Result<Entries, LifecycleError> {
        let Some(sealed) = &vm.secret_env else {
            return Ok(Vec::new());
        };
        let key = self.inner.settings.secret_key.as_ref().ok_or_else(|| {
            LifecycleError::Internal(format!(
                "VM {} has secretEnv but VM_SECRET_KEY is not configured",
                vm.id
            ))
        })?;
        key.open(&vm.id, sealed)
            .map_err(|e| LifecycleError::Internal(e.to_string()))
    }

    /// The values to scrub from what is recorded about `vm` (`docs/reference/lifecycle.md` §8). A
    /// row that cannot be opened has nothing this manager could have injected.
    pub(super) fn secret_values(&self, vm: &VmRecord) -> Vec<String> {
        match self.open_secret_env(vm) {
            Ok(entries) => secret_env::values(&entries),
            Err(e) => {
                tracing::warn!(vm_id = %vm.id, error = %e, "secretEnv not opened for scrubbing");
                Vec::new()
            }
        }
    }
}
