//! The contract between the manager and the guest agent (`docs/reference/agent-protocol.md`).
//!
//! Both sides depend on this crate alone for the wire format, so a change here is a protocol change:
//! bump [`PROTOCOL_VERSION`] when an old peer could no longer understand a new one.

pub mod files;
pub mod handshake;
pub mod process;
pub mod pty;
mod run;
pub mod stream;
mod system;
pub mod workspace;

pub use run::{
    RunRequest, RunResult, FORBIDDEN_DENO_FLAGS, FORBIDDEN_NODE_FLAGS, MAX_RUN_ARGS, MAX_RUN_ENV,
    MAX_RUN_FLAGS, MAX_RUN_FLAG_CHARS, RESULT_CAP_BYTES,
};
pub use system::{EntropyReseedRequest, FirewallRequest, NetConfigRequest, TimeSyncRequest};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Major protocol version; the manager refuses agents that report another one.
pub const PROTOCOL_VERSION: u32 = 1;
/// Vsock port the agent listens on when the kernel command line names none.
pub const DEFAULT_AGENT_PORT: u32 = 8080;
/// The only peer CID the agent accepts connections from.
pub const HOST_CID: u32 = 2;
/// Directory sandboxed code works in; bind-mounted on the user's home.
pub const WORKSPACE: &str = "/workspace";
/// uid and gid of every sandboxed process.
pub const SANDBOX_UID: u32 = 1000;
/// First bytes of stdout and of stderr kept by exec and run calls.
pub const OUTPUT_CAP_BYTES: usize = 1_000_000;
/// Exec timeout when the caller gives none.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest JSON body the agent accepts (never below the manager's 1 MiB).
pub const MAX_JSON_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Exec/run calls the agent runs at once; one more is refused with 429.
pub const MAX_CONCURRENT_EXECS: usize = 32;
/// Longest path (bytes) the path policy accepts.
pub const MAX_PATH_BYTES: usize = 4096;
/// How long the agent keeps reading output after the main process exited.
pub const EXEC_PIPE_GRACE_MS: u64 = 500;
/// Last line of stderr when an exec or run call timed out.
pub const TIMEOUT_STDERR_LINE: &str = "Timeout exceeded";
/// Home of the sandbox user (`/workspace` is bind-mounted on it).
pub const SANDBOX_HOME: &str = "/home/user";
/// Name of the sandbox user (uid and gid [`SANDBOX_UID`]).
pub const SANDBOX_USER: &str = "user";
/// `PATH` of every sandboxed process unless the caller overrides it.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
/// Kernel command-line keys the manager sets and guest init reads.
pub const CMDLINE_AGENT_PORT: &str = "rds.agent_port";
pub const CMDLINE_DISK_WAIT_MS: &str = "rds.disk_wait_ms";

/// Response header carrying the agent's semver.
pub const HEADER_AGENT_VERSION: &str = "x-rds-agent-version";
/// Request header announcing how many body bytes the manager will accept.
pub const HEADER_MAX_RESPONSE_BYTES: &str = "x-rds-max-response-bytes";

/// Request paths served by the agent.
pub mod paths {
    pub const HEALTH: &str = "/health";
    pub const EXEC: &str = "/exec";
    pub const RUN_TS: &str = "/run-ts";
    pub const RUN_JS: &str = "/run-js";
    pub const FILES_UPLOAD: &str = "/files/upload";
    pub const FILES_DOWNLOAD: &str = "/files/download";
    pub const REPLACE_TREE: &str = "/internal/files/replace-tree";
    pub const FIREWALL_ALLOWLIST: &str = "/firewall/allowlist";
    pub const NET_CONFIG: &str = "/net/config";
    pub const TIME_SYNC: &str = "/time/sync";
    pub const ENTROPY_RESEED: &str = "/entropy/reseed";
    pub const FS_SYNC: &str = "/fs/sync";
    /// `POST ?port=N` upgraded to [`crate::TUNNEL_UPGRADE`]: a raw TCP stream to the port.
    pub const TUNNEL: &str = "/tunnel";
    /// `POST` upgraded to [`crate::pty::UPGRADE`]: a login shell on a terminal.
    pub const PTY: &str = "/pty";
    /// `POST` starts, `GET` lists; `/processes/{id}` and its `/output`, `/stdin`, `/signal`.
    pub const PROCESSES: &str = "/processes";
}

/// The `Upgrade` token of `POST /tunnel`.
pub const TUNNEL_UPGRADE: &str = "rds-tunnel";

/// What this agent serves beyond protocol 1's first routes, reported by `/health` so a manager
/// can tell an older guest image from a failure.
pub const FEATURES: [&str; 4] = ["stream", "tunnel", "pty", "processes"];

/// Fixed `message` texts of agent error replies (`docs/reference/agent-protocol.md` §3, §5).
pub mod messages {
    pub const BODY_TOO_LARGE: &str = "Body too large";
    pub const TOO_MANY_EXECS: &str = "Too many concurrent executions";
    pub const NOT_FOUND: &str = "Not found";
    pub const METHOD_NOT_ALLOWED: &str = "Method not allowed";
    pub const INVALID_JSON: &str = "Invalid JSON body";
    pub const INTERNAL: &str = "Internal error";
    pub const ONLY_WORKSPACE: &str = "Only /workspace paths are allowed";
    pub const PATH_ESCAPES: &str = "Path escapes /workspace";
    /// `Firewall update failed: <reason>` (500).
    pub const FIREWALL_FAILED_PREFIX: &str = "Firewall update failed";
    /// `Network configuration failed: <reason>` (500).
    pub const NET_CONFIG_FAILED_PREFIX: &str = "Network configuration failed";
    pub const UNIX_TIME_REQUIRED: &str = "unixTimeMs is required";
    pub const DENO_MISSING: &str = "deno is not available in this image";
    pub const NODE_MISSING: &str = "node is not available in this image";
    pub const CODE_OR_PATH_REQUIRED: &str = "code or path is required";
    pub const CODE_AND_PATH_EXCLUSIVE: &str = "code and path are mutually exclusive";
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`, the rule for environment keys everywhere.
pub fn is_valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shell {
    Bash,
    Sh,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtimes {
    pub deno: Option<String>,
    pub node: Option<String>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
    pub version: String,
    pub protocol: u32,
    pub boot_id: String,
    pub shell: Shell,
    #[serde(default)]
    pub runtimes: Runtimes,
    /// The agent's own resident memory (an addition for operators and benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_rss_kb: Option<u64>,
    /// [`FEATURES`] of this agent; absent from agents older than them.
    #[serde(default)]
    pub features: Vec<String>,
    /// Execs served by a warm shell since the agent started (`docs/decisions.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_execs: Option<u64>,
}

/// `POST /exec` body. Unknown fields are ignored; `null` means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `POST /exec` reply, also the base of run-ts/run-js replies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// Error body of every non-2xx agent reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub(crate) fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys() {
        for ok in ["A", "_", "a_1", "PATH", "_X9"] {
            assert!(is_valid_env_key(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", "A=B"] {
            assert!(!is_valid_env_key(bad), "{bad}");
        }
    }

    #[test]
    fn exec_request_accepts_nulls_and_unknown_fields() {
        let r: ExecRequest =
            serde_json::from_str(r#"{"cmd":"id","env":null,"cwd":null,"extra":1}"#).unwrap();
        assert_eq!(r.cmd, "id");
        assert!(r.env.is_empty());
        assert_eq!(r.cwd, None);
    }

    #[test]
    fn exec_result_is_camel_case() {
        let v = serde_json::to_value(ExecResult::default()).unwrap();
        for k in [
            "exitCode",
            "stdoutTruncated",
            "stderrTruncated",
            "timedOut",
            "durationMs",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
