//! Exec, run-ts, run-js (`api.md` §3.7–3.8): need RUNNING when they begin, run concurrently with
//! each other, and leave one exec-log entry each.

use super::{LifecycleError, VmService};
use crate::agent::AgentError;
use crate::model::{VmRecord, VmState};
use rds_protocol::{paths, ExecRequest, ExecResult, RunRequest, RunResult};
use serde_json::value::RawValue;
use std::time::Duration;

pub type RunReply = RunResult<Box<RawValue>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Deno,
    Node,
}

impl VmService {
    #[tracing::instrument(name = "vm.exec", skip_all, fields(vm_id = %id))]
    pub async fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        timeout_ms: u64,
    ) -> Result<ExecResult, LifecycleError> {
        self.running(id).await?;
        let result = self
            .agent_for(id)
            .call_json::<_, ExecResult>(paths::EXEC, req, self.run_deadline(timeout_ms))
            .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(self.explain_agent_error(id, e).await),
        };
        self.log_exec(id, req, &result).await;
        Ok(result)
    }

    /// run-ts / run-js. `allowNet` is the manager's decision (egress policy), never the caller's.
    #[tracing::instrument(name = "vm.run", skip_all, fields(vm_id = %id))]
    pub async fn run(
        &self,
        id: &str,
        runtime: Runtime,
        mut req: RunRequest,
        timeout_ms: u64,
    ) -> Result<RunReply, LifecycleError> {
        let vm = self.running(id).await?;
        req.allow_net = runtime == Runtime::Deno && vm.outbound_internet;
        let path = match runtime {
            Runtime::Deno => paths::RUN_TS,
            Runtime::Node => paths::RUN_JS,
        };
        let result = self
            .agent_for(id)
            .call_json::<_, RunReply>(path, &req, self.run_deadline(timeout_ms))
            .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(self.explain_agent_error(id, e).await),
        };
        self.log_run(id, runtime, &req, &result).await;
        Ok(result)
    }

    /// `agent.md` §2: max(VSOCK_TIMEOUT_MS, timeoutMs + 5 s).
    fn run_deadline(&self, timeout_ms: u64) -> Duration {
        self.inner
            .settings
            .agent
            .timeout
            .max(Duration::from_millis(timeout_ms + 5000))
    }

    /// The VM, if it is RUNNING; else 404 / 409.
    pub async fn running(&self, id: &str) -> Result<VmRecord, LifecycleError> {
        let vm = self.get(id).await?;
        if vm.state != VmState::Running {
            return Err(LifecycleError::NotRunning(vm.state));
        }
        Ok(vm)
    }

    /// An agent call that failed because its VM stopped or vanished meanwhile is a 409, not a 502.
    pub(super) async fn explain_agent_error(&self, id: &str, e: AgentError) -> LifecycleError {
        if matches!(e, AgentError::Status { .. }) {
            return e.into();
        }
        match self.inner.db.get_vm(id).await {
            Ok(Some(vm)) if vm.state == VmState::Running => e.into(),
            _ => LifecycleError::NoLongerRunning(id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RunReply;

    #[test]
    fn null_result_is_kept_and_digits_are_relayed() {
        let base = r#""exitCode":0,"stdout":"","stderr":"","stdoutTruncated":false,"stderrTruncated":false,"timedOut":false,"durationMs":1"#;
        let with_null: RunReply =
            serde_json::from_str(&format!("{{{base},\"result\":null}}")).unwrap();
        assert_eq!(with_null.result.as_ref().map(|r| r.get()), Some("null"));
        let out = serde_json::to_string(&with_null).unwrap();
        assert!(out.contains("\"result\":null"), "{out}");
        let absent: RunReply = serde_json::from_str(&format!("{{{base}}}")).unwrap();
        assert!(absent.result.is_none());
        assert!(!serde_json::to_string(&absent).unwrap().contains("result"));
        let big: RunReply =
            serde_json::from_str(&format!("{{{base},\"result\":12345678901234567890.10}}"))
                .unwrap();
        assert!(serde_json::to_string(&big)
            .unwrap()
            .contains("12345678901234567890.10"));
    }
}
