//! Exec (`api.md` §3.7): needs RUNNING when it begins; runs concurrently with other calls.

use super::{LifecycleError, VmService};
use crate::agent::AgentError;
use crate::model::VmState;
use rds_protocol::{ExecRequest, ExecResult};

impl VmService {
    pub async fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        timeout_ms: u64,
    ) -> Result<ExecResult, LifecycleError> {
        let vm = self.get(id).await?;
        if vm.state != VmState::Running {
            return Err(LifecycleError::NotRunning(vm.state));
        }
        match self.agent_for(id).exec(req, timeout_ms).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.explain_agent_error(id, e).await),
        }
    }

    /// An agent call that failed because its VM stopped or vanished meanwhile is a 409, not a 502.
    async fn explain_agent_error(&self, id: &str, e: AgentError) -> LifecycleError {
        if matches!(e, AgentError::Status { .. }) {
            return e.into();
        }
        match self.inner.db.get_vm(id).await {
            Ok(Some(vm)) if vm.state == VmState::Running => e.into(),
            _ => LifecycleError::NoLongerRunning(id.to_string()),
        }
    }
}
