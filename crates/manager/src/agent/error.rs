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
