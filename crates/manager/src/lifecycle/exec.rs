//! Exec, run-ts, run-js (`docs/reference/api.md` §3.7–3.8): need RUNNING when they begin, run
//! concurrently with each other, and leave one exec-log entry each.

use super::{LifecycleError, VmService};
use crate::activity::{scrub, EventType};
use crate::agent::{truncate_chars, AgentError};
use crate::model::{VmRecord, VmState};
use crate::secret_env;
use rds_protocol::{paths, ExecRequest, ExecResult, RunRequest, RunResult};
use serde_json::json;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::time::Duration;

pub type RunReply = RunResult<Box<RawValue>>;

/// `cmd` in `exec.command` events is cut to this many characters.
const MAX_EVENT_CMD: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Deno,
    Node,
}

impl Runtime {
    pub(super) fn path(self) -> &'static str {
        match self {
            Runtime::Deno => paths::RUN_TS,
            Runtime::Node => paths::RUN_JS,
        }
    }
}

/// What the agent gets for an exec: the caller's env, then the VM's secrets over it.
pub(super) fn with_secrets<'a>(
    req: &'a ExecRequest,
    secrets: &secret_env::Entries,
) -> Cow<'a, ExecRequest> {
    if secrets.is_empty() {
        return Cow::Borrowed(req);
    }
    let mut merged = req.clone();
    merged.env.extend(secrets.iter().cloned());
    Cow::Owned(merged)
}

/// What the agent gets for a run: `allowNet` set from the VM's egress policy (a consumer's peer
/// runtime calls the manager, so Deno needs the network then too), the caller's entries for other
/// keys, then the secrets.
pub(super) fn run_request<'a>(
    vm: &VmRecord,
    runtime: Runtime,
    req: &'a mut RunRequest,
    secrets: &secret_env::Entries,
) -> Result<Cow<'a, RunRequest>, LifecycleError> {
    req.allow_net = runtime == Runtime::Deno && (vm.outbound_internet || !vm.peer_links.is_empty());
    if secrets.is_empty() {
        return Ok(Cow::Borrowed(req));
    }
    let mut m = req.clone();
    m.env.retain(|e| !secret_env::sets_key(secrets, e));
    m.env
        .extend(secrets.iter().map(|(k, v)| format!("{k}={v}")));
    if m.env.len() > rds_protocol::MAX_RUN_ENV {
        return Err(LifecycleError::Invalid(format!(
            "env and secretEnv together have more than {} entries",
            rds_protocol::MAX_RUN_ENV
        )));
    }
    Ok(Cow::Owned(m))
}

impl VmService {
    #[tracing::instrument(name = "vm.exec", skip_all, fields(vm_id = %id))]
    pub async fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        timeout_ms: u64,
    ) -> Result<ExecResult, LifecycleError> {
        let vm = self.running(id).await?;
        let secrets = self.open_secret_env(&vm)?;
        let sent = with_secrets(req, &secrets);
        let result = self
            .agent_for(id)
            .call_json::<_, ExecResult>(paths::EXEC, &*sent, self.run_deadline(timeout_ms))
            .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(self.explain_agent_error(id, e).await),
        };
        self.record_exec(&vm, req, &result, &secrets, timeout_ms)
            .await;
        Ok(result)
    }

    /// The exec-log entry and the `exec.command` event of one exec, secrets scrubbed.
    pub(super) async fn record_exec(
        &self,
        vm: &VmRecord,
        req: &ExecRequest,
        result: &ExecResult,
        secrets: &secret_env::Entries,
        timeout_ms: u64,
    ) {
        self.log_exec(&vm.id, req, result, secrets).await;
        // Scrubbed (docs/reference/api.md §7) before the cut, so no fragment of a secret survives
        // it.
        let values = secret_env::values(secrets);
        let cmd = scrub::scrub_str(&req.cmd, &values);
        self.vm_event_redacted(
            vm,
            EventType::ExecCommand,
            json!({"cmd": truncate_chars(&cmd, MAX_EVENT_CMD), "cwd": req.cwd, "timeoutMs": timeout_ms,
                "exitCode": result.exit_code, "timedOut": result.timed_out}),
            values,
        );
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
        let secrets = self.open_secret_env(&vm)?;
        let result = self
            .send_run(&vm, runtime, &mut req, timeout_ms, &secrets)
            .await?;
        self.record_run(&vm, runtime, &req, &result, &secrets, timeout_ms)
            .await;
        Ok(result)
    }

    /// The exec-log entry and the `runTs.executed` / `runJs.executed` event of one run.
    pub(super) async fn record_run(
        &self,
        vm: &VmRecord,
        runtime: Runtime,
        req: &RunRequest,
        result: &RunReply,
        secrets: &secret_env::Entries,
        timeout_ms: u64,
    ) {
        self.log_run(&vm.id, runtime, req, result, secrets).await;
        let kind = match runtime {
            Runtime::Deno => EventType::RunTsExecuted,
            Runtime::Node => EventType::RunJsExecuted,
        };
        self.vm_event_redacted(
            vm,
            kind,
            json!({"path": req.path, "hasInlineCode": req.code.is_some(), "timeoutMs": timeout_ms,
                "exitCode": result.exit_code}),
            secret_env::values(secrets),
        );
    }

    /// A run the manager makes in `vm` itself (peer export checks and invokes): the VM's secrets
    /// and egress rule as for its own runs, but no exec-log entry and no activity event.
    pub(super) async fn run_internal(
        &self,
        vm: &VmRecord,
        runtime: Runtime,
        mut req: RunRequest,
        timeout_ms: u64,
    ) -> Result<RunReply, LifecycleError> {
        let secrets = self.open_secret_env(vm)?;
        self.send_run(vm, runtime, &mut req, timeout_ms, &secrets)
            .await
    }

    async fn send_run(
        &self,
        vm: &VmRecord,
        runtime: Runtime,
        req: &mut RunRequest,
        timeout_ms: u64,
        secrets: &secret_env::Entries,
    ) -> Result<RunReply, LifecycleError> {
        let sent = run_request(vm, runtime, req, secrets)?;
        let result = self
            .agent_for(&vm.id)
            .call_json::<_, RunReply>(runtime.path(), &*sent, self.run_deadline(timeout_ms))
            .await;
        match result {
            Ok(r) => Ok(r),
            Err(e) => Err(self.explain_agent_error(&vm.id, e).await),
        }
    }

    /// `docs/reference/agent-protocol.md` §2: max(VSOCK_TIMEOUT_MS, timeoutMs + 5 s).
    pub(super) fn run_deadline(&self, timeout_ms: u64) -> Duration {
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
            // The row can still say RUNNING for a moment after the VMM died (the exit watcher
            // records it): the process itself decides.
            Ok(Some(vm)) if vm.state == VmState::Running && self.vmm_alive(&vm) => e.into(),
            _ => LifecycleError::NoLongerRunning(id.to_string()),
        }
    }

    /// Whether `vm`'s recorded VMM process still runs (a zombie does not).
    fn vmm_alive(&self, vm: &VmRecord) -> bool {
        self.runtime_of(vm)
            .is_some_and(|rt| self.inner.backend.is_alive(&rt))
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
