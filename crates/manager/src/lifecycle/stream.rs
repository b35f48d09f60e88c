//! Streamed exec, run-ts and run-js (`docs/api.md` "Streaming"): the agent's JSON lines are relayed
//! to the caller as they arrive, and read on the way for the exec log and the activity event,
//! which are written when the call ends. The call is tied to its connection: when the caller goes
//! away the relay drops the agent's stream, and the agent kills the process group.

use super::exec::{run_request, with_secrets, RunReply};
use super::{LifecycleError, Runtime, VmService};
use crate::agent::Download;
use crate::model::VmRecord;
use crate::secret_env::Entries;
use bytes::Bytes;
use futures::StreamExt;
use rds_protocol::stream::{ErrorEvent, ExitEvent, LineKind, OutputEvent};
use rds_protocol::{paths, ExecRequest, ExecResult, RunRequest, OUTPUT_CAP_BYTES};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// Lines buffered toward a slow caller before the relay stops reading the agent.
const DEPTH: usize = 16;

/// The caller's side of a streamed call: JSON lines, each chunk ending on a line boundary.
pub struct LineStream(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures::Stream for LineStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The longest head of `s` of at most `max` bytes that ends on a character boundary.
fn head(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// What a streamed call was, for its exec-log entry and event once it ends.
enum Call {
    Exec(ExecRequest),
    Run(Runtime, RunRequest),
}

/// Output seen so far, as the exec log keeps it.
#[derive(Default)]
struct Seen {
    stdout: String,
    stderr: String,
}

impl Seen {
    fn push(&mut self, kind: &str, data: &str) {
        let s = if kind == "stdout" {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        let room = OUTPUT_CAP_BYTES.saturating_sub(s.len());
        s.push_str(head(data, room));
    }
}

impl VmService {
    /// Starts a streamed exec; 4xx/5xx before the first line are ordinary errors.
    #[tracing::instrument(name = "vm.exec", skip_all, fields(vm_id = %id, streamed = true))]
    pub async fn exec_stream(
        &self,
        id: &str,
        req: ExecRequest,
        timeout_ms: u64,
    ) -> Result<LineStream, LifecycleError> {
        let vm = self.running(id).await?;
        let secrets = self.open_secret_env(&vm)?;
        let body = serde_json::to_vec(&*with_secrets(&req, &secrets))
            .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        let agent = self.open_stream(&vm, paths::EXEC, body, timeout_ms).await?;
        Ok(self.relay(vm, agent, Call::Exec(req), secrets, timeout_ms))
    }

    /// Starts a streamed run-ts or run-js.
    #[tracing::instrument(name = "vm.run", skip_all, fields(vm_id = %id, streamed = true))]
    pub async fn run_stream(
        &self,
        id: &str,
        runtime: Runtime,
        mut req: RunRequest,
        timeout_ms: u64,
    ) -> Result<LineStream, LifecycleError> {
        let vm = self.running(id).await?;
        let secrets = self.open_secret_env(&vm)?;
        let body = serde_json::to_vec(&*run_request(&vm, runtime, &mut req, &secrets)?)
            .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        let agent = self
            .open_stream(&vm, runtime.path(), body, timeout_ms)
            .await?;
        Ok(self.relay(vm, agent, Call::Run(runtime, req), secrets, timeout_ms))
    }

    async fn open_stream(
        &self,
        vm: &VmRecord,
        path: &str,
        body: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<Download, LifecycleError> {
        let deadline = self.run_deadline(timeout_ms);
        match self.agent_for(&vm.id).stream(path, body, deadline).await {
            Ok(d) => Ok(d),
            Err(e) => Err(self.explain_agent_error(&vm.id, e).await),
        }
    }

    /// Relays the agent's lines to the returned stream from a task of its own, then records the
    /// call. A caller that hangs up ends the relay (and so the process); what was seen is logged
    /// with exit code -1.
    fn relay(
        &self,
        vm: VmRecord,
        mut agent: Download,
        call: Call,
        secrets: Entries,
        timeout_ms: u64,
    ) -> LineStream {
        let (tx, rx) = mpsc::channel(DEPTH);
        let this = self.clone();
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut exit: Option<ExitEvent<Box<RawValue>>> = None;
            let mut pending: Vec<u8> = Vec::new();
            let mut failure: Option<String> = None;
            loop {
                // A caller that hangs up while the command is quiet is noticed here, not only at
                // the next line.
                let chunk = tokio::select! {
                    c = agent.next() => c,
                    () = tx.closed() => {
                        tracing::info!(vm_id = %vm.id, "streamed call's client went away");
                        failure = Some("the client went away".into());
                        break;
                    }
                };
                let Some(chunk) = chunk else { break };
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        failure = Some(format!("Agent stream failed: {e}"));
                        break;
                    }
                };
                pending.extend_from_slice(&chunk);
                let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                let lines: Vec<u8> = pending.drain(..=end).collect();
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    read_line(line, &mut seen, &mut exit);
                }
                if tx.send(Ok(Bytes::from(lines))).await.is_err() {
                    tracing::info!(vm_id = %vm.id, "streamed call's client went away");
                    failure = Some("the client went away".into());
                    break;
                }
            }
            drop(agent);
            if exit.is_none() {
                let message = failure.unwrap_or_else(|| "Agent stream ended early".into());
                let mut line = serde_json::to_vec(&ErrorEvent {
                    kind: "error".into(),
                    message,
                })
                .unwrap_or_default();
                line.push(b'\n');
                let _ = tx.send(Ok(Bytes::from(line))).await;
            }
            drop(tx);
            this.record_stream(&vm, call, seen, exit, &secrets, timeout_ms)
                .await;
        });
        LineStream(rx)
    }

    async fn record_stream(
        &self,
        vm: &VmRecord,
        call: Call,
        seen: Seen,
        exit: Option<ExitEvent<Box<RawValue>>>,
        secrets: &Entries,
        timeout_ms: u64,
    ) {
        let exit = exit.unwrap_or_else(|| ExitEvent {
            kind: "exit".into(),
            exit_code: -1,
            ..Default::default()
        });
        match call {
            Call::Exec(req) => {
                let result = ExecResult {
                    exit_code: exit.exit_code,
                    stdout: seen.stdout,
                    stderr: seen.stderr,
                    stdout_truncated: exit.stdout_truncated,
                    stderr_truncated: exit.stderr_truncated,
                    timed_out: exit.timed_out,
                    duration_ms: exit.duration_ms,
                };
                self.record_exec(vm, &req, &result, secrets, timeout_ms)
                    .await;
            }
            Call::Run(runtime, req) => {
                let result = RunReply {
                    exit_code: exit.exit_code,
                    stdout: seen.stdout,
                    stderr: seen.stderr,
                    result: exit.result,
                    error: exit.error,
                    stdout_truncated: exit.stdout_truncated,
                    stderr_truncated: exit.stderr_truncated,
                    timed_out: exit.timed_out,
                    duration_ms: exit.duration_ms,
                };
                self.record_run(vm, runtime, &req, &result, secrets, timeout_ms)
                    .await;
            }
        }
    }
}

/// Notes one line: output for the log, the exit event. Lines the manager does not know are relayed
/// all the same.
fn read_line(line: &[u8], seen: &mut Seen, exit: &mut Option<ExitEvent<Box<RawValue>>>) {
    let Ok(kind) = serde_json::from_slice::<LineKind>(line) else {
        return;
    };
    match &*kind.kind {
        "stdout" | "stderr" => {
            if let Ok(ev) = serde_json::from_slice::<OutputEvent>(line) {
                seen.push(&kind.kind, &ev.data);
            }
        }
        "exit" => *exit = serde_json::from_slice(line).ok(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fill_the_log_and_the_exit() {
        let (mut seen, mut exit) = (Seen::default(), None);
        read_line(br#"{"type":"stdout","data":"a\n"}"#, &mut seen, &mut exit);
        read_line(br#"{"type":"stderr","data":"b"}"#, &mut seen, &mut exit);
        read_line(br#"not json"#, &mut seen, &mut exit);
        read_line(
            br#"{"type":"exit","exitCode":2,"result":1.50,"stdoutTruncated":false,"stderrTruncated":true,"timedOut":false,"durationMs":7}"#,
            &mut seen,
            &mut exit,
        );
        assert_eq!((seen.stdout.as_str(), seen.stderr.as_str()), ("a\n", "b"));
        let exit = exit.unwrap();
        assert_eq!((exit.exit_code, exit.stderr_truncated), (2, true));
        assert_eq!(exit.result.unwrap().get(), "1.50");
    }
}
