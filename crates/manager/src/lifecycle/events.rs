//! Activity events of the lifecycle (docs/reference/api.md §7). Internal VMs (templates, warm pool)
//! are hidden from the API, so they stay out of the feed too; a pool VM appears once it is handed
//! to a caller.

use super::VmService;
use crate::activity::{Draft, EventType};
use crate::model::VmRecord;
use serde_json::{json, Value};

impl VmService {
    /// Records `kind` about `vm` unless it is an internal VM.
    pub(super) fn vm_event(&self, vm: &VmRecord, kind: EventType, meta: Value) {
        if vm.pool_role.is_none() {
            self.vm_event_redacted(vm, kind, meta, self.secret_values(vm));
        }
    }

    /// [`Self::vm_event`] for a caller that already holds the VM's secret values (an exec or run,
    /// which opened them for the call), so they are not decrypted twice.
    pub(super) fn vm_event_redacted(
        &self,
        vm: &VmRecord,
        kind: EventType,
        meta: Value,
        secret_values: Vec<String>,
    ) {
        if vm.pool_role.is_some() {
            return;
        }
        let what = match kind {
            EventType::VmCreated => "created",
            EventType::VmStarted => "started",
            EventType::VmStopped => "stopped",
            EventType::VmExited => "exited unexpectedly",
            EventType::VmError => "failed",
            EventType::VmDeleted => "deleted",
            EventType::VmPaused => "paused",
            EventType::VmResumed => "resumed",
            EventType::VmExpired => "reached its deadline",
            EventType::ExecCommand => "ran a command",
            EventType::RunTsExecuted => "ran TypeScript",
            EventType::RunJsExecuted => "ran JavaScript",
            _ => kind.as_str(),
        };
        let draft = Draft::new(kind, Some(&vm.id), format!("VM {} {what}", vm.id));
        self.event(draft.meta(meta).redact(secret_values));
    }

    /// Records any event (snapshots, templates).
    pub(super) fn event(&self, draft: Draft) {
        self.inner.activity.record(draft);
    }

    /// `vm.created` with the VM's shape; `warmPool` when it was taken from the pool.
    pub(super) fn created_event(&self, vm: &VmRecord, warm_pool: bool) {
        let mut meta = json!({"cpu": vm.cpu, "memMb": vm.mem_mb, "diskSizeMb": vm.disk_size_mb,
            "imageId": vm.image_id, "sourceSnapshotId": vm.source_snapshot_id});
        if warm_pool {
            meta["warmPool"] = json!(true);
        }
        self.vm_event(vm, EventType::VmCreated, meta);
    }

    /// `vm.started` with how it got there and how long it took.
    pub(super) fn started_event(&self, vm: &VmRecord, mode: &str, since: std::time::Instant) {
        let ms = since.elapsed().as_millis() as u64;
        self.vm_event(
            vm,
            EventType::VmStarted,
            json!({ "provisionMode": mode, "durationMs": ms }),
        );
    }
}
