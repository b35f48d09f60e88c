//! `/run-ts` and `/run-js` (`docs/reference/agent-protocol.md` §6).

use serde::{Deserialize, Serialize};

/// One body for both runtimes; the agent refuses the other runtime's flags field being used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub args: Vec<String>,
    /// `KEY=value` entries.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub env: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub deno_flags: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::null_as_default"
    )]
    pub node_flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Set by the manager from the VM's egress policy (run-ts only).
    #[serde(default)]
    pub allow_net: bool,
}

/// `/run-ts` and `/run-js` reply. `J` is the JSON carrier of `result`/`error`: the manager uses
/// `Box<serde_json::value::RawValue>` so values are relayed digit for digit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "J: Deserialize<'de>"))]
pub struct RunResult<J> {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Present (even as JSON `null`) only when user code called `result.set`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub result: Option<J>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub error: Option<J>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// Flags `run-js` refuses (`docs/reference/api.md` §3.8).
pub const FORBIDDEN_NODE_FLAGS: &[&str] = &[
    "-e",
    "--eval",
    "-p",
    "--print",
    "-c",
    "--check",
    "-i",
    "--interactive",
    "--test",
];
/// Flags `run-ts` refuses (the runtime's permission layer must not be switched off wholesale).
pub const FORBIDDEN_DENO_FLAGS: &[&str] = &["-A", "--allow-all", "--allow-run"];

/// Most `args` entries a run call takes.
pub const MAX_RUN_ARGS: usize = 256;
/// Most `env` entries a run call takes.
pub const MAX_RUN_ENV: usize = 256;
/// Most `denoFlags` / `nodeFlags` entries.
pub const MAX_RUN_FLAGS: usize = 64;
/// Longest flag, in characters.
pub const MAX_RUN_FLAG_CHARS: usize = 256;
/// A result file larger than this yields `error: {name: "ResultTooLarge", ...}` and no result.
pub const RESULT_CAP_BYTES: u64 = 1_000_000;

/// A field that is present is `Some`, whatever its value: `"result": null` is a result of `null`,
/// distinct from no result at all (absent field, via `default`).
fn present<'de, D, J>(de: D) -> Result<Option<J>, D::Error>
where
    D: serde::Deserializer<'de>,
    J: Deserialize<'de>,
{
    J::deserialize(de).map(Some)
}
