//! Types that exist for the OpenAPI document. `VmView` is also what the API serialises, so the VM
//! object cannot drift from its schema; the others mirror agent wire types (the protocol crate
//! stays serde-only) and request bodies validated field by field in `validate.rs`.
#![allow(dead_code)] // fields are read by the schema derive, not by code

use crate::model::VmRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
use utoipa::ToSchema;

/// A VM (`docs/reference/api.md` §3.1).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmView {
    pub id: String,
    #[schema(value_type = VmStateName)]
    pub state: &'static str,
    pub cpu: u32,
    pub mem_mb: u32,
    pub disk_size_mb: u64,
    pub guest_ip: String,
    pub outbound_internet: bool,
    pub allow_ips: Vec<String>,
    pub image_id: String,
    /// `boot` or `snapshot`; null before the first RUNNING.
    pub provision_mode: Option<String>,
    pub source_snapshot_id: Option<String>,
    pub peer_links: Vec<PeerLink>,
    pub created_at: String,
    pub last_error: Option<String>,
    /// When the VM's lifetime ends (RFC 3339 UTC, milliseconds); null: no deadline.
    pub expires_at: Option<String>,
    /// What happens at `expiresAt`.
    #[schema(value_type = TimeoutActionName)]
    pub timeout_action: &'static str,
    /// The client's labels; `{}` when none.
    #[schema(schema_with = metadata_schema)]
    pub metadata: BTreeMap<String, String>,
}

/// A VM state (`docs/reference/lifecycle.md` §1).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VmStateName {
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    Paused,
    Error,
}

/// What happens to a VM at its deadline: destroyed, or paused (memory kept; `resume` continues it).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutActionName {
    Destroy,
    Pause,
}

/// The metadata patterns of `docs/api.md` ("Lifetimes, pause and metadata").
const METADATA_KEY_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

fn metadata_object(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(METADATA_KEY_PATTERN)),
        ))
}

fn metadata_value() -> ObjectBuilder {
    use crate::lifecycle::labels::MAX_METADATA_VALUE_CHARS;
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_METADATA_VALUE_CHARS))
}

/// A VM's metadata: at most 50 keys of 1-64 characters of `A-Z a-z 0-9 _ . -`, string values of at
/// most 512 characters.
fn metadata_schema() -> Object {
    use crate::lifecycle::labels::MAX_METADATA_KEYS;
    metadata_object("String labels of the client, at most 50; never interpreted by the manager.")
        .max_properties(Some(MAX_METADATA_KEYS))
        .additional_properties(Some(metadata_value()))
        .build()
}

/// A metadata merge: a string sets the key, `null` removes it.
fn metadata_patch_schema() -> Object {
    let value = metadata_value().schema_type(SchemaType::from_iter([Type::String, Type::Null]));
    metadata_object(
        "A merge: a string sets the key, null removes it. The result may hold at most 50 keys.",
    )
    .additional_properties(Some(value))
    .build()
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerLink {
    pub alias: String,
    pub vm_id: String,
    pub source_mode: String,
}

impl From<&VmRecord> for VmView {
    fn from(vm: &VmRecord) -> Self {
        VmView {
            id: vm.id.clone(),
            state: vm.state.as_str(),
            cpu: vm.cpu,
            mem_mb: vm.mem_mb,
            disk_size_mb: vm.disk_size_mb,
            guest_ip: vm.guest_ip.to_string(),
            outbound_internet: vm.outbound_internet,
            allow_ips: vm.allow_ips.clone(),
            image_id: vm.image_id.clone(),
            provision_mode: vm.provision_mode.clone(),
            source_snapshot_id: vm.source_snapshot_id.clone(),
            peer_links: vm
                .peer_links
                .iter()
                .map(|l| PeerLink {
                    alias: l.alias.clone(),
                    vm_id: l.vm_id.clone(),
                    source_mode: l.source_mode.as_str().to_string(),
                })
                .collect(),
            created_at: vm.created_at.clone(),
            last_error: vm.last_error.clone(),
            expires_at: vm.expires_at.clone(),
            timeout_action: vm.timeout_action.as_str(),
            metadata: vm.metadata.clone(),
        }
    }
}

/// Every error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
    /// Only on 500s.
    #[serde(rename = "requestId")]
    pub request_id: Option<String>,
}

/// `POST /v1/vms` body (`docs/reference/api.md` §3.3). Unknown fields are ignored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateVmBody {
    /// 1..MAX_CPU
    pub cpu: u32,
    /// 128..MAX_MEM_MB
    pub mem_mb: u32,
    /// IPv4/IPv6 addresses or CIDRs, at most MAX_ALLOW_IPS.
    pub allow_ips: Option<Vec<String>>,
    pub outbound_internet: Option<bool>,
    /// `img-<uuid>`; default: the default image.
    pub image_id: Option<String>,
    /// 64..1048576; default: the snapshot's size when restoring, else OVERLAY_SIZE_BYTES / MiB;
    /// never below the snapshot's.
    pub disk_size_mb: Option<u64>,
    /// `snap-<uuid>`: a user snapshot to restore (memory when compatible, else its disk).
    pub user_overlay_snapshot_id: Option<String>,
    /// Deprecated alias of `userOverlaySnapshotId`; if both are given they must be equal.
    #[schema(deprecated)]
    pub snapshot_id: Option<String>,
    /// Lifetime in seconds, 1..MAX_VM_TIMEOUT_SEC: at `expiresAt` (now + timeoutSec) the VM is
    /// destroyed or paused. Absent or null: DEFAULT_VM_TIMEOUT_SEC when set, else no deadline.
    #[schema(minimum = 1)]
    pub timeout_sec: Option<u64>,
    /// Default `destroy`.
    pub timeout_action: Option<TimeoutActionName>,
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Write-only `KEY=value` secrets (`docs/secret-env.md`): at most 64, unique keys, each value
    /// empty or at least 4 bytes; sealed with VM_SECRET_KEY, injected into every exec, run-ts and
    /// run-js of this VM and never shown again. Needs VM_SECRET_KEY.
    #[schema(write_only)]
    pub secret_env: Option<Vec<String>>,
    /// At most 16 links to provider VMs (`docs/peers.md`), each RUNNING with a valid manifest.
    pub peer_links: Option<Vec<PeerLinkBody>>,
}

/// One link of `peerLinks` on create.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerLinkBody {
    /// `^[A-Za-z0-9_-]{1,64}$`, unique among the VM's links.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub alias: String,
    /// The provider: another user VM, RUNNING, with `/workspace/.rds-peer/manifest.json`.
    pub vm_id: uuid::Uuid,
    /// `hidden` (default): proxies only; `mounted`: also a copy of the provider's sources.
    pub source_mode: Option<SourceModeName>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceModeName {
    Hidden,
    Mounted,
}

/// `PATCH /v1/vms/{id}/peers/{alias}` body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerPatchBody {
    pub source_mode: SourceModeName,
}

/// `POST /internal/v1/peer/invoke` body (`docs/peers.md`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerInvokeBody {
    /// The consumer's alias of the provider.
    pub alias: String,
    /// A module of the provider's manifest, relative to /workspace (or absolute under it).
    pub module_path: String,
    /// Default `default`; `^[A-Za-z_$][A-Za-z0-9_$]*$`.
    pub export_name: Option<String>,
    /// Arguments, as JSON values. Default `[]`.
    pub args: Option<Vec<serde_json::Value>>,
    /// Default min(30000, MAX_RUNTS_TIMEOUT_MS).
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
}

/// `POST /internal/v1/peer/invoke` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeerInvokeResult {
    /// What the export returned (resolved), as JSON; null when nothing.
    pub result: serde_json::Value,
}

/// `POST /v1/vms/{id}/timeout` body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutBody {
    /// Required: a new deadline this many seconds from now (1..MAX_VM_TIMEOUT_SEC), or null to
    /// clear the deadline.
    #[schema(minimum = 1, required = true)]
    pub timeout_sec: Option<u64>,
    /// Replaces the VM's timeout action when given.
    pub timeout_action: Option<TimeoutActionName>,
}

/// `PATCH /v1/vms/{id}` body. Other fields are ignored; only metadata can change.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchVmBody {
    #[schema(schema_with = metadata_patch_schema)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
}

/// `POST /v1/vms/{id}/exec` body (`docs/reference/api.md` §3.7).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecBody {
    pub cmd: String,
    /// Under /workspace; default /workspace.
    pub cwd: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<u64>,
}

/// Exec reply.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecResultView {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// `POST /v1/vms/{id}/run-ts` body (`docs/reference/api.md` §3.8): exactly one of `code` and `path`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTsBody {
    pub code: Option<String>,
    pub path: Option<String>,
    pub args: Option<Vec<String>>,
    /// `KEY=value` entries.
    pub env: Option<Vec<String>>,
    pub deno_flags: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
}

/// `POST /v1/vms/{id}/run-js` body: as run-ts, with `nodeFlags` instead of `denoFlags`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunJsBody {
    pub code: Option<String>,
    pub path: Option<String>,
    pub args: Option<Vec<String>>,
    /// `KEY=value` entries.
    pub env: Option<Vec<String>>,
    pub node_flags: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
}

/// One line of a streamed exec, run-ts or run-js (`docs/api.md` "Streaming"): `stdout` and
/// `stderr` lines carry `data` as it arrives; the last line of a finished call is `exit` (the
/// buffered reply's fields without the output); `error` ends a call that could not finish.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamLine {
    #[serde(rename = "type")]
    #[schema(pattern = "^(stdout|stderr|exit|error)$")]
    pub kind: String,
    /// `stdout` / `stderr`: output text (whole characters).
    pub data: Option<String>,
    /// `exit`: as in the buffered reply.
    pub exit_code: Option<i32>,
    /// `exit` of a run: what `result.set` recorded.
    pub result: Option<serde_json::Value>,
    /// `exit` of a run: what `result.error` recorded; `error`: absent.
    pub error: Option<serde_json::Value>,
    pub stdout_truncated: Option<bool>,
    pub stderr_truncated: Option<bool>,
    pub timed_out: Option<bool>,
    pub duration_ms: Option<u64>,
    /// `error`: why the call could not finish.
    pub message: Option<String>,
}

/// run-ts / run-js reply: the exec fields plus `result` (any JSON value) and `error`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResultView {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// `GET /v1/vms/{id}/logs` reply.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogTailView {
    #[serde(rename = "type")]
    pub kind: String,
    pub lines: Vec<String>,
    pub truncated: bool,
    pub updated_at: Option<String>,
}

/// `GET /v1/vms/{id}/exec-logs` reply.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecLogPage {
    pub entries: Vec<serde_json::Value>,
    pub has_more: bool,
}

/// `POST /v1/vms/{id}/processes` body (`docs/api.md` "Processes"): as exec, but `timeoutMs` is
/// optional (absent: no time limit) and at most a day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStartBody {
    pub cmd: String,
    /// Under /workspace; default /workspace.
    pub cwd: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    #[schema(minimum = 1, maximum = 86400000)]
    pub timeout_ms: Option<u64>,
}

/// A background process.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessView {
    /// Process id (UUID v4), chosen by the manager.
    pub id: String,
    pub cmd: String,
    /// `running`, `exited`, or `gone` (it ran in an earlier boot of the VM).
    #[schema(pattern = "^(running|exited|gone)$")]
    pub state: String,
    /// The guest's pid of the shell running `cmd`.
    pub pid: Option<u32>,
    /// `128 + N` after signal N; -1 after `timeoutMs`.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// Output bytes (stdout and stderr together) produced so far.
    pub output_bytes: u64,
    pub stdin_open: bool,
}

/// One piece of a process's output.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessChunkView {
    #[schema(pattern = "^(stdout|stderr)$")]
    pub stream: String,
    /// Byte offset of `data` in the process's output (stdout and stderr counted together).
    pub offset: u64,
    pub data: String,
}

/// `GET /v1/vms/{id}/processes/{pid}/output` without `follow`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessOutputView {
    pub chunks: Vec<ProcessChunkView>,
    /// Where the next read continues (`offset` of the next call).
    pub next_offset: u64,
    /// Bytes from the requested offset on that the bounded buffer no longer holds.
    pub dropped_bytes: u64,
    pub process: ProcessView,
}

/// `POST /v1/vms/{id}/processes/{pid}/stdin` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessStdinBody {
    /// Text written to the process's stdin (at most 1 MiB).
    pub data: Option<String>,
    /// Close stdin after `data`.
    pub eof: Option<bool>,
}

/// `POST /v1/vms/{id}/processes/{pid}/signal` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessSignalBody {
    #[schema(pattern = "^(SIG)?(TERM|KILL|INT|HUP|QUIT|USR1|USR2|STOP|CONT)$")]
    pub signal: String,
}
