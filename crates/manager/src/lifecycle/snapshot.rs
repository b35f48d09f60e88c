//! Capture (`docs/snapshots.md` Capture): a RUNNING VM is flushed, paused, its memory (when the
//! backend can) and disk are written into `snapshots/.tmp-<uuid>/`, and it is resumed whatever
//! happened; only then is the directory committed and the row inserted. Any failure removes the
//! capture directory and registers nothing. The VM's own lifecycle lock is held throughout, so stop
//! and start wait and an unexpected VMM exit is handled once the capture let go (`watch.rs`).

use super::{LifecycleError, VmService};
use crate::activity::{Draft, EventType};
use crate::model::{now_rfc3339, ImageRecord, SnapshotKind, SnapshotRecord, VmRecord, VmState};
use crate::storage::{allocated_bytes, StorageError};
use rds_vmm::VmRuntime;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;
/// Room beyond the disk and memory estimate: `meta.json`, filesystem metadata, other writers.
const FREE_SPACE_MARGIN: u64 = 16 * MIB;

impl VmService {
    #[tracing::instrument(name = "vm.snapshot", skip_all, fields(vm_id = %id))]
    pub async fn snapshot(&self, id: &str) -> Result<SnapshotRecord, LifecycleError> {
        let _guard = self.begin_op(id, "snapshot")?;
        let vm = self.get(id).await?;
        if vm.state != VmState::Running {
            return Err(LifecycleError::WrongState {
                action: "snapshot",
                required: VmState::Running,
                state: vm.state,
            });
        }
        self.capture(&vm, SnapshotKind::UserOverlay).await
    }

    /// Captures `vm` (RUNNING, its lifecycle lock held by the caller) as a snapshot of `kind` and
    /// registers it. Templates use it with their internal VM.
    pub(crate) async fn capture(
        &self,
        vm: &VmRecord,
        kind: SnapshotKind,
    ) -> Result<SnapshotRecord, LifecycleError> {
        let rt = self
            .runtime_of(vm)
            .ok_or_else(|| LifecycleError::SnapshotFailed("no VMM recorded".into()))?;
        let image = self
            .inner
            .db
            .get_image(&vm.image_id)
            .await?
            .ok_or_else(|| LifecycleError::SnapshotFailed("the VM's image is gone".into()))?;
        let memory = self.inner.backend.capabilities().supports_memory_snapshots;
        self.check_free_space(vm, memory).await?;
        let storage = &self.inner.storage;
        let tmp = storage
            .snapshot_tmp_dir()
            .map_err(|e| storage_failure("capture directory", e))?;
        let captured = async {
            self.capture_into(vm, &rt, &tmp, memory).await?;
            let size = allocated_bytes(&tmp).await;
            let size = size.map_err(|e| storage_failure("size", e))?;
            self.snapshot_record(vm, image, kind, memory, size).await
        };
        let record = match captured.await {
            Ok(record) => record,
            Err(e) => {
                self.discard_capture(&tmp).await;
                return Err(e);
            }
        };
        let dir = match storage.commit_snapshot(&tmp, &record).await {
            Ok(dir) => dir,
            Err(e) => {
                self.discard_capture(&tmp).await;
                return Err(storage_failure("commit", e));
            }
        };
        if let Err(e) = self.inner.db.insert_snapshot(&record).await {
            self.discard_capture(&dir).await;
            return Err(LifecycleError::SnapshotFailed(format!("registering: {e}")));
        }
        tracing::info!(snapshot_id = %record.id, vm_id = %vm.id, kind = kind.as_str(),
            has_memory = memory, size_bytes = record.size_bytes, "snapshot.created");
        if kind == SnapshotKind::UserOverlay {
            self.event(
                Draft::new(
                    EventType::SnapshotCreated,
                    Some(&record.id),
                    format!("Snapshot {} of VM {} created", record.id, vm.id),
                )
                .meta(json!({"vmId": vm.id, "hasMemory": memory, "sizeBytes": record.size_bytes})),
            );
        }
        Ok(record)
    }

    /// The row and `meta.json` of a capture of `vm`: its shape, the backend and image now.
    async fn snapshot_record(
        &self,
        vm: &VmRecord,
        image: ImageRecord,
        kind: SnapshotKind,
        has_memory: bool,
        size_bytes: u64,
    ) -> Result<SnapshotRecord, LifecycleError> {
        let source = match &vm.source_snapshot_id {
            Some(id) => self.inner.db.get_snapshot(id).await?,
            None => None,
        };
        let caps = self.inner.backend.capabilities();
        Ok(SnapshotRecord {
            id: format!("snap-{}", uuid::Uuid::new_v4()),
            kind,
            image_id: image.id,
            source_vm_id: (kind == SnapshotKind::UserOverlay).then(|| vm.id.clone()),
            base_seed_snapshot_id: source
                .filter(|s| s.kind == SnapshotKind::Template)
                .map(|s| s.id),
            cpu: vm.cpu,
            mem_mb: vm.mem_mb,
            disk_size_mb: vm.disk_size_mb,
            has_memory,
            size_bytes,
            backend: caps.kind.as_str().to_string(),
            vmm_version: caps.vmm_version.clone(),
            agent_port: self.inner.settings.agent.port,
            kernel_sha256: image.kernel.map(|f| f.sha256),
            initrd_sha256: image.initrd.map(|f| f.sha256),
            rootfs_sha256: image.rootfs.map(|f| f.sha256),
            created_at: now_rfc3339(),
        })
    }

    /// Flush, pause, memory and disk, resume (always), agent back.
    async fn capture_into(
        &self,
        vm: &VmRecord,
        rt: &VmRuntime,
        dir: &Path,
        memory: bool,
    ) -> Result<(), LifecycleError> {
        let backend = &self.inner.backend;
        self.sync_guest_fs(&vm.id).await;
        let paused = match memory {
            true => backend.pause_for_snapshot(rt).await,
            false => backend.pause(rt).await,
        };
        let files = async {
            paused.as_ref().map_err(|e| vmm_failure("pause", e))?;
            if memory {
                let written = backend.snapshot_create(rt, dir).await;
                written.map_err(|e| vmm_failure("memory", &e))?;
            }
            let disk = self.inner.storage.capture_disk(&vm.id, dir).await;
            disk.map_err(|e| storage_failure("disk", e))
        }
        .await;
        // Whatever happened above, the VM runs again.
        let resumed = backend.resume(rt).await;
        files?;
        resumed.map_err(|e| vmm_failure("resume", &e))?;
        self.agent_back(rt).await
    }

    /// After a capture the VMM has reset the agent's connections: wait for `/health` again (bounded
    /// by `VSOCK_HEALTH_TIMEOUT_MS`, a warning if it stays silent). A VMM that dies meanwhile fails
    /// the capture: it was not a capture of a running VM.
    async fn agent_back(&self, rt: &VmRuntime) -> Result<(), LifecycleError> {
        let s = &self.inner.settings;
        let agent = self.agent_for(&rt.vm_id);
        let health = async {
            loop {
                if agent.health_once().await.is_ok() {
                    return;
                }
                tokio::time::sleep(s.agent.retry_delay).await;
            }
        };
        tokio::select! {
            status = self.inner.backend.wait_exit(rt) => Err(LifecycleError::SnapshotFailed(
                format!("VMM exited during the capture ({status})"),
            )),
            answered = tokio::time::timeout(s.health_timeout, health) => {
                if answered.is_err() {
                    tracing::warn!(vm_id = %rt.vm_id, "agent not answering after the capture");
                }
                Ok(())
            }
        }
    }

    /// The disk's allocated bytes, plus memory when it is captured, plus a margin, must be free.
    async fn check_free_space(&self, vm: &VmRecord, memory: bool) -> Result<(), LifecycleError> {
        let storage = &self.inner.storage;
        let disk = allocated_bytes(&storage.disk_path(&vm.id))
            .await
            .map_err(|e| storage_failure("disk size", e))?;
        let need = disk + u64::from(memory) * u64::from(vm.mem_mb) * MIB + FREE_SPACE_MARGIN;
        let free = storage
            .free_bytes()
            .await
            .map_err(|e| storage_failure("free space", e))?;
        if free < need {
            tracing::warn!(vm_id = %vm.id, free, need, "snapshot refused: not enough free space");
            return Err(LifecycleError::NoSpace);
        }
        Ok(())
    }

    async fn discard_capture(&self, dir: &Path) {
        if let Err(e) = self.inner.storage.remove_snapshot_dir(dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "capture directory left for reconciliation");
        }
    }

    /// `/fs/sync` in the guest, best effort and bounded (before stop and capture).
    pub(super) async fn sync_guest_fs(&self, id: &str) {
        const SYNC_BOUND: Duration = Duration::from_secs(5);
        let agent = self.agent_for(id);
        let sync = agent.call_no_content::<()>(rds_protocol::paths::FS_SYNC, None);
        if let Err(e) = tokio::time::timeout(SYNC_BOUND, sync)
            .await
            .unwrap_or(Ok(()))
        {
            tracing::warn!(vm_id = %id, error = %e, "fs sync");
        }
    }
}

fn storage_failure(what: &str, e: StorageError) -> LifecycleError {
    match e {
        StorageError::NoSpace { .. } => LifecycleError::NoSpace,
        e => LifecycleError::SnapshotFailed(format!("{what}: {}", crate::error_chain(&e))),
    }
}

/// A backend failure; ENOSPC anywhere in its chain is a full `STORAGE_ROOT`.
fn vmm_failure(what: &str, e: &rds_vmm::VmmError) -> LifecycleError {
    let text = crate::error_chain(e);
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        let enospc = s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC));
        if enospc {
            return LifecycleError::NoSpace;
        }
        src = s.source();
    }
    if text.contains("No space left on device") {
        return LifecycleError::NoSpace;
    }
    LifecycleError::SnapshotFailed(format!("{what}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rds_vmm::VmmError;

    #[test]
    fn a_full_disk_under_the_backend_is_507_anything_else_500() {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let io = VmmError::io("write", "/s/snapshots/.tmp-x/vmstate.snap", enospc);
        assert!(matches!(
            vmm_failure("memory", &io),
            LifecycleError::NoSpace
        ));
        let qemu = VmmError::Rejected {
            command: "migrate".into(),
            message: "failed to write: No space left on device".into(),
        };
        assert!(matches!(
            vmm_failure("memory", &qemu),
            LifecycleError::NoSpace
        ));
        match vmm_failure("pause", &VmmError::Gone) {
            LifecycleError::SnapshotFailed(m) => assert_eq!(m, "pause: VMM is not running"),
            other => panic!("{other:?}"),
        }
        let full = StorageError::NoSpace {
            what: "clone",
            path: "/s/vms/x/disk.ext4".into(),
        };
        assert!(matches!(
            storage_failure("disk", full),
            LifecycleError::NoSpace
        ));
        assert_eq!(
            LifecycleError::SnapshotFailed("pause: VMM is not running".into()).to_string(),
            "Snapshot failed: pause: VMM is not running"
        );
    }
}
