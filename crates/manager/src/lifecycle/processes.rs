//! Background processes (`docs/api.md` "Processes"): started, listed and driven through the
//! agent's process table, which lives as long as the guest. The manager names each process (a
//! UUID) and remembers the ones it started, so that after a stop, a restart or a pause they are
//! listed as `gone` rather than silently missing.

use super::{LifecycleError, VmService};
use crate::agent::Download;
use rds_protocol::process::{ProcessInfo, SignalRequest, StartRequest, StdinRequest};
use rds_protocol::{paths, ExecRequest};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Processes remembered per VM; the oldest is forgotten past this.
const REMEMBERED_PER_VM: usize = 64;
/// Longest `wait` one call holds (the agent's own cap).
const MAX_WAIT_MS: u64 = 600_000;

/// What the manager remembers of the processes it started, by VM id. In memory: a restarted
/// manager lists only what the guests still run.
#[derive(Default)]
pub struct Book {
    by_vm: Mutex<HashMap<String, Vec<ProcessInfo>>>,
}

impl Book {
    fn remember(&self, vm: &str, p: ProcessInfo) {
        let mut m = self.by_vm.lock().expect("process book");
        let list = m.entry(vm.to_string()).or_default();
        list.push(p);
        if list.len() > REMEMBERED_PER_VM {
            list.remove(0);
        }
    }

    fn of(&self, vm: &str) -> Vec<ProcessInfo> {
        let m = self.by_vm.lock().expect("process book");
        m.get(vm).cloned().unwrap_or_default()
    }

    pub(super) fn forget_vm(&self, vm: &str) {
        self.by_vm.lock().expect("process book").remove(vm);
    }
}

fn gone(mut p: ProcessInfo) -> ProcessInfo {
    p.state = "gone".into();
    p.stdin_open = false;
    p
}

fn not_found(pid: &str) -> LifecycleError {
    LifecycleError::Refused {
        status: 404,
        message: format!("Process {pid} not found"),
    }
}

fn ended_with_boot(id: &str, pid: &str) -> LifecycleError {
    LifecycleError::Refused {
        status: 409,
        message: format!("Process {pid} is gone: VM {id} stopped since it started"),
    }
}

impl VmService {
    /// Starts `req.cmd` in the background with the VM's secrets, as exec would run it.
    #[tracing::instrument(name = "vm.process.start", skip_all, fields(vm_id = %id))]
    pub async fn start_process(
        &self,
        id: &str,
        req: ExecRequest,
    ) -> Result<ProcessInfo, LifecycleError> {
        let vm = self.running(id).await?;
        let secrets = self.open_secret_env(&vm)?;
        let sent = super::exec::with_secrets(&req, &secrets);
        let body = StartRequest {
            id: uuid::Uuid::new_v4().to_string(),
            cmd: sent.cmd.clone(),
            cwd: sent.cwd.clone(),
            env: sent.env.clone(),
            timeout_ms: req.timeout_ms,
        };
        let agent = self.agent_for(id);
        let timeout = agent.config().timeout;
        let info: ProcessInfo = match agent.call_json(paths::PROCESSES, &body, timeout).await {
            Ok(p) => p,
            Err(e) => return Err(self.guest_refusal(id, e, "background processes").await),
        };
        self.inner.processes.remember(id, info.clone());
        Ok(info)
    }

    /// What the guest runs now, then what it ran in an earlier boot (`gone`), in start order.
    pub async fn list_processes(&self, id: &str) -> Result<Vec<ProcessInfo>, LifecycleError> {
        let vm = self.get(id).await?;
        let live: Vec<ProcessInfo> = if vm.state == crate::model::VmState::Running {
            let agent = self.agent_for(id);
            match agent
                .get_json(paths::PROCESSES, agent.config().timeout)
                .await
            {
                Ok(l) => l,
                Err(e) => return Err(self.guest_refusal(id, e, "background processes").await),
            }
        } else {
            Vec::new()
        };
        let mut out: Vec<ProcessInfo> = self
            .inner
            .processes
            .of(id)
            .into_iter()
            .filter(|p| !live.iter().any(|l| l.id == p.id))
            .map(gone)
            .collect();
        out.extend(live);
        out.sort_by_key(|p| p.started_at_ms);
        Ok(out)
    }

    /// One process; `gone` when it ran in an earlier boot.
    pub async fn process(&self, id: &str, pid: &str) -> Result<ProcessInfo, LifecycleError> {
        let path = format!("{}/{pid}", paths::PROCESSES);
        match self
            .process_call(id, pid, |agent, t| async move {
                agent.get_json::<ProcessInfo>(&path, t).await
            })
            .await
        {
            Err(LifecycleError::Refused { status: 409, .. })
            | Err(LifecycleError::NotRunning(_))
                if self.remembered(id, pid) =>
            {
                Ok(gone(self.remembered_info(id, pid).expect("remembered")))
            }
            other => other,
        }
    }

    /// Output from `offset` as one JSON reply.
    pub async fn process_output(
        &self,
        id: &str,
        pid: &str,
        offset: u64,
    ) -> Result<serde_json::Value, LifecycleError> {
        let path = format!("{}/{pid}/output?offset={offset}", paths::PROCESSES);
        self.process_call(
            id,
            pid,
            |agent, t| async move { agent.get_json(&path, t).await },
        )
        .await
    }

    /// Output from `offset` as JSON lines until the process ends (or the binary timeout).
    pub async fn follow_process(
        &self,
        id: &str,
        pid: &str,
        offset: u64,
    ) -> Result<Download, LifecycleError> {
        let path = format!(
            "{}/{pid}/output?offset={offset}&follow=true",
            paths::PROCESSES
        );
        self.process_call(id, pid, |agent, _| async move {
            let deadline = agent.config().binary_timeout;
            agent.get_stream(&path, deadline).await
        })
        .await
    }

    pub async fn process_stdin(
        &self,
        id: &str,
        pid: &str,
        req: StdinRequest,
    ) -> Result<(), LifecycleError> {
        let path = format!("{}/{pid}/stdin", paths::PROCESSES);
        self.process_call(id, pid, |agent, _| async move {
            agent.call_no_content(&path, Some(&req)).await
        })
        .await
    }

    pub async fn process_signal(
        &self,
        id: &str,
        pid: &str,
        signal: String,
    ) -> Result<(), LifecycleError> {
        let path = format!("{}/{pid}/signal", paths::PROCESSES);
        self.process_call(id, pid, |agent, _| async move {
            agent
                .call_no_content(&path, Some(&SignalRequest { signal }))
                .await
        })
        .await
    }

    /// The process once it ended, or as it is after `timeout_ms`.
    pub async fn wait_process(
        &self,
        id: &str,
        pid: &str,
        timeout_ms: u64,
    ) -> Result<ProcessInfo, LifecycleError> {
        let ms = timeout_ms.min(MAX_WAIT_MS);
        let path = format!("{}/{pid}/wait?timeoutMs={ms}", paths::PROCESSES);
        let deadline = Duration::from_millis(ms) + Duration::from_secs(5);
        self.process_call(id, pid, |agent, _| async move {
            agent
                .call_json(&path, &serde_json::json!({}), deadline)
                .await
        })
        .await
    }

    fn remembered(&self, id: &str, pid: &str) -> bool {
        self.remembered_info(id, pid).is_some()
    }

    fn remembered_info(&self, id: &str, pid: &str) -> Option<ProcessInfo> {
        self.inner
            .processes
            .of(id)
            .into_iter()
            .find(|p| p.id == pid)
    }

    /// Runs `call` against a running VM's agent; an id the guest does not know is `gone` (409)
    /// when this manager started it in an earlier boot, else 404. A stopped VM's remembered
    /// process is `gone` too.
    async fn process_call<T, F, Fut>(
        &self,
        id: &str,
        pid: &str,
        call: F,
    ) -> Result<T, LifecycleError>
    where
        F: FnOnce(crate::agent::AgentClient, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::agent::AgentError>>,
    {
        if !rds_protocol::process::valid_id(pid) {
            return Err(not_found(pid));
        }
        let vm = self.get(id).await?;
        if vm.state != crate::model::VmState::Running {
            return Err(if self.remembered(id, pid) {
                ended_with_boot(id, pid)
            } else {
                LifecycleError::NotRunning(vm.state)
            });
        }
        let agent = self.agent_for(id);
        let timeout = agent.config().timeout;
        match call(agent, timeout).await {
            Ok(v) => Ok(v),
            Err(crate::agent::AgentError::Status {
                status: 404,
                message,
            }) if message.starts_with("Process ") => Err(if self.remembered(id, pid) {
                ended_with_boot(id, pid)
            } else {
                not_found(pid)
            }),
            Err(e) => Err(self.guest_refusal(id, e, "background processes").await),
        }
    }
}
