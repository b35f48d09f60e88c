//! Readiness (`docs/reference/agent-protocol.md` §2): poll `/health` until it answers, the deadline
//! passes, the VMM exits, or a destroy cancels the boot. Then check the protocol version.

use super::create::Failed;
use super::error::BootFailure;
use super::VmService;
use rds_protocol::PROTOCOL_VERSION;
use rds_vmm::VmRuntime;
use tokio_util::sync::CancellationToken;

/// Silent connection requests (each waits `VSOCK_TIMEOUT_MS`) before the channel is repaired: a
/// booting guest answers them (a reset) well before its agent listens, so silence means a stuck
/// channel, seen about once in some hundred boots under TCG.
const SILENT_BEFORE_REPAIR: u32 = 2;
const MAX_REPAIRS: u32 = 2;

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
        // Connection requests that got no answer at all in a row, and repairs tried.
        let (mut silent, mut repairs) = (0u32, 0u32);
        loop {
            if silent >= SILENT_BEFORE_REPAIR && repairs < MAX_REPAIRS {
                repairs += 1;
                silent = 0;
                tracing::warn!(vm_id = %rt.vm_id, repairs, "agent channel silent; repairing it");
                if let Err(e) = self.inner.backend.repair_agent_channel(rt).await {
                    tracing::warn!(vm_id = %rt.vm_id, error = %e, "agent channel repair failed");
                }
            }
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
                    return Err(Failed::cancelled());
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
                    Err(e) => {
                        last_error = e.to_string();
                        silent = if e.is_silent_channel() { silent + 1 } else { 0 };
                    }
                }
            }
        }
    }
}
