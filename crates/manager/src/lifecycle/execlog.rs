//! Exec-log entries for user calls (never for the manager's own agent calls).

use super::exec::{RunReply, Runtime};
use super::VmService;
use crate::activity::scrub;
use crate::execlog::{self, Kind};
use crate::secret_env::{self, Entries};
use rds_protocol::{ExecRequest, ExecResult, RunRequest};
use serde_json::{json, Value};

impl VmService {
    pub(super) async fn log_exec(
        &self,
        id: &str,
        req: &ExecRequest,
        r: &ExecResult,
        secrets: &Entries,
    ) {
        let env: Vec<String> = req
            .env
            .iter()
            .filter(|(k, _)| !secret_env::has_key(secrets, k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let input =
            json!({"cmd": req.cmd, "cwd": req.cwd, "env": env, "timeoutMs": req.timeout_ms});
        let result = json!({
            "exitCode": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
            "stdoutTruncated": r.stdout_truncated, "stderrTruncated": r.stderr_truncated, "timedOut": r.timed_out,
        });
        self.append_log(id, Kind::Exec, input, result, r.duration_ms, secrets)
            .await;
    }

    pub(super) async fn log_run(
        &self,
        id: &str,
        runtime: Runtime,
        req: &RunRequest,
        r: &RunReply,
        secrets: &Entries,
    ) {
        let (kind, flags_key, flags) = match runtime {
            Runtime::Deno => (Kind::RunTs, "denoFlags", &req.deno_flags),
            Runtime::Node => (Kind::RunJs, "nodeFlags", &req.node_flags),
        };
        let env: Vec<&String> = req
            .env
            .iter()
            .filter(|e| !secret_env::sets_key(secrets, e))
            .collect();
        let mut input = json!({
            "code": req.code, "path": req.path, "args": req.args, "env": env, "timeoutMs": req.timeout_ms,
        });
        input[flags_key] = json!(flags);
        let raw = |v: &Option<Box<serde_json::value::RawValue>>| -> Option<Value> {
            v.as_ref()
                .map(|r| serde_json::from_str(r.get()).unwrap_or(Value::Null))
        };
        let mut result = json!({
            "exitCode": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
            "stdoutTruncated": r.stdout_truncated, "stderrTruncated": r.stderr_truncated, "timedOut": r.timed_out,
        });
        if let Some(v) = raw(&r.result) {
            result["result"] = v;
        }
        if let Some(v) = raw(&r.error) {
            result["error"] = v;
        }
        self.append_log(id, kind, input, result, r.duration_ms, secrets)
            .await;
    }

    /// Secret keys are already out of `env`; every secret value left anywhere becomes
    /// `[REDACTED]` before `execlog::entry` cuts the text fields (`docs/secret-env.md`).
    async fn append_log(
        &self,
        id: &str,
        kind: Kind,
        input: Value,
        result: Value,
        duration_ms: u64,
        secrets: &Entries,
    ) {
        let values = secret_env::values(secrets);
        let input = scrub::scrub_value(input, &values);
        let result = scrub::scrub_value(result, &values);
        let entry = execlog::entry(kind, input, result, duration_ms);
        let dir = self.inner.storage.logs_dir(id);
        let written = tokio::task::spawn_blocking(move || execlog::append(&dir, &entry)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(vm_id = %id, error = %e, "exec log append failed");
        }
    }

    /// `GET /v1/vms/:id/exec-logs` (any state).
    pub async fn exec_logs(
        &self,
        id: &str,
        kind: Option<Kind>,
        before: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Value>, bool), super::LifecycleError> {
        self.get(id).await?;
        let dir = self.inner.storage.logs_dir(id);
        Ok(
            tokio::task::spawn_blocking(move || {
                execlog::read(&dir, kind, before.as_deref(), limit)
            })
            .await
            .unwrap_or_default(),
        )
    }
}
