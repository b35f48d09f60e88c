/// Why an agent call failed; the API maps each to its status (`docs/reference/api.md` §1.6).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Connect or handshake failed after every retry; nothing was sent.
    #[error("Agent unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the deadline.
    #[error("Agent did not answer within {0} ms")]
    Timeout(u64),
    /// The agent answered with a non-2xx status.
    #[error("Agent error ({status}): {message}")]
    Status { status: u16, message: String },
    /// Malformed, oversized or unparsable reply.
    #[error("Agent response invalid: {0}")]
    Invalid(String),
}

impl AgentError {
    /// A connection request that got no answer at all (the hybrid-vsock handshake timed out), as
    /// opposed to a refusal or a reset: the channel itself may be stuck.
    pub fn is_silent_channel(&self) -> bool {
        matches!(self, AgentError::Unreachable(m) if m.contains(super::connect::SILENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_told_apart_from_refusals() {
        let silent = AgentError::Unreachable(
            super::super::connect::ConnectError::Timeout(15_000).to_string(),
        );
        assert!(silent.is_silent_channel(), "{silent}");
        let closed =
            AgentError::Unreachable(super::super::connect::ConnectError::Closed.to_string());
        assert!(!closed.is_silent_channel());
        assert!(!AgentError::Timeout(5).is_silent_channel());
    }
}
