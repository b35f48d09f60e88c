//! Readiness (`docs/reference/agent-protocol.md` §2): poll `/health` until it answers, the deadline
//! passes, the VMM exits, or a destroy cancels the boot. Then check the protocol version.

use super::create::Failed;
use super::error::BootFailure;
use super::VmService;
use rds_protocol::PROTOCOL_VERSION;
use rds_vmm::VmRuntime;
use tokio_util::sync::CancellationToken;

impl VmService {
    pub(super) async fn wait_ready(
        &self,
        rt: &VmRuntime,
        cancel: &CancellationToken,
    ) -> Result<(), Failed> {
        let s = &self.inner.settings;
        let client = self.agent_for(&rt.vm_id);
        let deadline = tokio::time::Instant::now() + s.health_timeout;
        let exited = self.inner.backend.wait_exit(rt);
        tokio::pin!(exited);
        let mut last_error = String::from("no answer yet");
        loop {
            let attempt = async {
                let health = client.health_once().await;
                if health.is_err() {
                    tokio::time::sleep(s.agent.retry_delay).await;
                }
                health
            };
            tokio::select! {
                status = &mut exited => {
                    return Err(Failed::host(format!(
                        "VMM exited during boot ({status}); see console.log"
                    )));
                }
                _ = cancel.cancelled() => {
                    return Err(Failed { reason: "cancelled".into(), cause: BootFailure::Host, cancelled: true });
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Failed {
                        reason: format!(
                            "Agent did not answer /health within {} ms ({last_error})",
                            s.health_timeout.as_millis()
                        ),
                        cause: BootFailure::AgentTimeout,
                        cancelled: false,
                    });
                }
                result = attempt => match result {
                    Ok(h) if h.protocol == PROTOCOL_VERSION => return Ok(()),
                    Ok(h) => {
                        return Err(Failed::host(format!(
                            "Agent protocol {} is not supported (expected {PROTOCOL_VERSION})",
                            h.protocol
                        )));
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
        }
    }
}
