//! Types that exist for the OpenAPI document. `VmView` is also what the API serialises, so the VM
//! object cannot drift from its schema; the others mirror agent wire types (the protocol crate
//! stays serde-only) and request bodies validated field by field in `validate.rs`.
#![allow(dead_code)] // fields are read by the schema derive, not by code

use crate::model::VmRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A VM (`docs/reference/api.md` §3.1).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmView {
    pub id: String,
    /// CREATED, STARTING, RUNNING, STOPPING, STOPPED or ERROR.
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
            peer_links: Vec::new(),
            created_at: vm.created_at.clone(),
            last_error: vm.last_error.clone(),
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

/// `POST /v1/vms/{id}/run-ts` and `/run-js` body (`docs/reference/api.md` §3.8).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunBody {
    pub code: Option<String>,
    pub path: Option<String>,
    pub args: Option<Vec<String>>,
    /// `KEY=value` entries.
    pub env: Option<Vec<String>>,
    /// run-ts only.
    pub deno_flags: Option<Vec<String>>,
    /// run-js only.
    pub node_flags: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
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
