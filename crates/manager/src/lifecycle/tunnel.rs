//! Byte streams into a running guest (`docs/api.md` "Ports" and "Terminals"): a tunnel to a TCP
//! port on the guest's loopback, and a terminal running the sandbox user's login shell. Both go
//! over vsock through the agent, never over the guest's network.

use super::{LifecycleError, VmService};
use crate::agent::{AgentError, AgentStream};
use rds_protocol::pty::{Frame, Kind, Open, Size, UPGRADE as PTY_UPGRADE};
use rds_protocol::{paths, TUNNEL_UPGRADE};
use tokio::io::AsyncWriteExt;

impl VmService {
    /// A raw stream to `port` on the guest's loopback (502 when nothing listens there).
    #[tracing::instrument(name = "vm.tunnel", skip_all, fields(vm_id = %id, port))]
    pub async fn open_tunnel(&self, id: &str, port: u16) -> Result<AgentStream, LifecycleError> {
        let vm = self.running(id).await?;
        let path = format!("{}?port={port}", paths::TUNNEL);
        match self.agent_for(&vm.id).upgrade(&path, TUNNEL_UPGRADE).await {
            Ok(s) => Ok(s),
            Err(e) => Err(self.guest_refusal(&vm.id, e, "port forwarding").await),
        }
    }

    /// A terminal of `size` whose first frame (sent here) carries the VM's secrets as
    /// environment; the caller relays `Input`/`Resize` frames in and `Output`/`Exit` frames out.
    #[tracing::instrument(name = "vm.terminal", skip_all, fields(vm_id = %id))]
    pub async fn open_terminal(&self, id: &str, size: Size) -> Result<AgentStream, LifecycleError> {
        let vm = self.running(id).await?;
        let secrets = self.open_secret_env(&vm)?;
        let mut stream = match self
            .agent_for(&vm.id)
            .upgrade(paths::PTY, PTY_UPGRADE)
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(self.guest_refusal(&vm.id, e, "terminals").await),
        };
        let open = Open {
            size,
            env: secrets.iter().cloned().collect(),
            cwd: None,
        };
        stream
            .write_all(&Frame::json(Kind::Open, &open).encode())
            .await
            .map_err(|e| LifecycleError::Agent(AgentError::Unreachable(e.to_string())))?;
        Ok(stream)
    }

    /// An agent refusal of an interactive call: its own status for what the guest decided, 501
    /// for an agent without the route, the usual mapping otherwise.
    pub(super) async fn guest_refusal(
        &self,
        id: &str,
        e: AgentError,
        feature: &str,
    ) -> LifecycleError {
        match refusal(id, e, feature) {
            Ok(refused) => refused,
            Err(e) => self.explain_agent_error(id, e).await,
        }
    }
}

/// What the guest decided, as the API says it: 501 for a route the agent lacks (its generic 404),
/// the agent's own status for its refusals; `Err` for failures the VM's state explains.
fn refusal(id: &str, e: AgentError, feature: &str) -> Result<LifecycleError, AgentError> {
    match e {
        AgentError::Status {
            status: 404,
            ref message,
        } if message == rds_protocol::messages::NOT_FOUND => {
            Ok(LifecycleError::Unsupported(format!(
                "The guest agent of VM {id} does not support {feature}: its image was built \
                 before them; rebuild the image"
            )))
        }
        AgentError::Status { status, message } if status != 500 => {
            Ok(LifecycleError::Refused { status, message })
        }
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, message: &str) -> AgentError {
        AgentError::Status {
            status,
            message: message.into(),
        }
    }

    #[test]
    fn an_older_agent_is_told_apart_from_a_refusal() {
        let r = refusal("v1", status(404, "Not found"), "terminals").unwrap();
        assert!(matches!(r, LifecycleError::Unsupported(_)), "{r:?}");
        assert_eq!(
            r.to_string(),
            "The guest agent of VM v1 does not support terminals: its image was built before \
             them; rebuild the image"
        );
        let r = refusal(
            "v1",
            status(502, "Nothing listens on port 9 in the guest"),
            "x",
        )
        .unwrap();
        assert!(
            matches!(r, LifecycleError::Refused { status: 502, .. }),
            "{r:?}"
        );
        let r = refusal("v1", status(404, "Process p not found"), "x").unwrap();
        assert!(
            matches!(r, LifecycleError::Refused { status: 404, .. }),
            "{r:?}"
        );
        assert!(refusal("v1", status(500, "Internal error"), "x").is_err());
        assert!(refusal("v1", AgentError::Timeout(5), "x").is_err());
    }
}
