//! Background processes (`docs/api.md` "Processes"): commands that outlive the request that started
//! them, with their output kept in a bounded buffer, stdin open, and signals. The manager names
//! each one (a UUID); the agent keeps the table for as long as the guest runs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Processes running at once in one guest; one more is refused with 429.
pub const MAX_RUNNING: usize = 16;
/// Ended processes kept for reading; the oldest is forgotten past this.
pub const MAX_KEPT_ENDED: usize = 32;
/// Output bytes (stdout and stderr together) kept per process; older bytes are dropped first.
pub const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;
/// Longest stdin write in one call.
pub const MAX_STDIN_BYTES: usize = 1024 * 1024;
/// Signals a caller may send, by name.
pub const SIGNALS: [&str; 9] = [
    "TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT",
];

/// `POST /processes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    pub id: String,
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub env: BTreeMap<String, String>,
    /// Killed (process group) after this long; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What the table says about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub id: String,
    pub cmd: String,
    /// `running`, `exited`, or (manager only) `gone`: it ran in an earlier boot of the VM.
    pub state: String,
    /// The guest's process id of the shell that runs `cmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// Output bytes produced so far: the offset the next output will have.
    pub output_bytes: u64,
    /// Whether stdin is still open.
    #[serde(default)]
    pub stdin_open: bool,
}

/// One piece of output; `offset` counts stdout and stderr bytes together from the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub stream: String,
    pub offset: u64,
    pub data: String,
}

/// `GET /processes/{id}/output?offset=N` (without `follow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputReply {
    pub chunks: Vec<Chunk>,
    /// Where the next read continues.
    pub next_offset: u64,
    /// Bytes between the requested offset and the first chunk that the buffer no longer holds.
    pub dropped_bytes: u64,
    pub process: ProcessInfo,
}

/// `POST /processes/{id}/stdin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StdinRequest {
    #[serde(default)]
    pub data: String,
    /// Close stdin after writing `data`.
    #[serde(default)]
    pub eof: bool,
}

/// `POST /processes/{id}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    pub signal: String,
}

/// The signal number of a name in [`SIGNALS`] (with or without `SIG`), Linux numbering.
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => return None,
    })
}

/// Manager-assigned ids: 1–64 of `[A-Za-z0-9-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name() {
        for s in SIGNALS {
            assert!(signal_number(s).is_some(), "{s}");
        }
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("term"), None);
        assert_eq!(signal_number("SEGV"), None);
    }

    #[test]
    fn ids() {
        assert!(valid_id("0b6a5c1e-4f3b-4d8a-9a53-3b1f2f7c0d11"));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id(&"a".repeat(65)));
    }
}
