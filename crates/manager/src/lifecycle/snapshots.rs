//! Snapshot listing, lookup and deletion (`docs/snapshots.md` Delete, `docs/reference/api.md` §4),
//! and the count of restores in flight per snapshot that deletion must respect. VMs restored from a
//! snapshot own a clone of its disk, so deleting it never disturbs them.

use super::{Inner, LifecycleError, VmService};
use crate::activity::{Draft, EventType};
use crate::db::SnapshotScope;
use crate::model::SnapshotRecord;
use crate::storage::snapshots::TMP_PREFIX;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Per snapshot id: restores reading it, or a delete removing it (never both).
#[derive(Default)]
pub(super) struct RestoreTable {
    held: Mutex<HashMap<String, Use>>,
}

enum Use {
    Restoring(usize),
    Deleting,
}

/// Keeps a snapshot from being deleted while a restore reads it.
pub(super) struct RestoreHold {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for RestoreHold {
    fn drop(&mut self) {
        let mut held = self.inner.restores.held.lock().expect("restore table");
        if let Some(Use::Restoring(n)) = held.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.id);
            }
        }
    }
}

/// Marks a snapshot as being deleted until dropped.
struct DeleteMark {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for DeleteMark {
    fn drop(&mut self) {
        self.inner
            .restores
            .held
            .lock()
            .expect("restore table")
            .remove(&self.id);
    }
}

impl VmService {
    pub async fn list_snapshots(
        &self,
        scope: SnapshotScope,
    ) -> Result<Vec<SnapshotRecord>, LifecycleError> {
        Ok(self.inner.db.list_snapshots(scope).await?)
    }

    /// A snapshot of any kind.
    pub async fn get_snapshot(&self, id: &str) -> Result<SnapshotRecord, LifecycleError> {
        self.inner
            .db
            .get_snapshot(id)
            .await?
            .ok_or(LifecycleError::SnapshotNotFound)
    }

    /// Snapshot rows per kind (`rds_snapshots{kind}`).
    pub async fn snapshot_counts(&self) -> Result<Vec<(String, u64)>, LifecycleError> {
        Ok(self.inner.db.count_snapshots().await?)
    }

    /// A user snapshot to restore, held against deletion until the hold is dropped. A snapshot
    /// being deleted counts as gone.
    pub(super) async fn hold_overlay(
        &self,
        id: &str,
    ) -> Result<(SnapshotRecord, RestoreHold), LifecycleError> {
        {
            let mut held = self.inner.restores.held.lock().expect("restore table");
            match held.entry(id.to_string()).or_insert(Use::Restoring(0)) {
                Use::Deleting => return Err(LifecycleError::OverlayNotFound),
                Use::Restoring(n) => *n += 1,
            }
        }
        let hold = RestoreHold {
            inner: self.inner.clone(),
            id: id.to_string(),
        };
        let snap = self
            .inner
            .db
            .get_snapshot(id)
            .await?
            .ok_or(LifecycleError::OverlayNotFound)?;
        Ok((snap, hold))
    }

    /// Removes the files and the row. The directory is first renamed to a capture name, so a crash
    /// half-way leaves either the whole snapshot or something reconciliation deletes.
    #[tracing::instrument(name = "snapshot.delete", skip_all, fields(snapshot_id = %id))]
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), LifecycleError> {
        let snap = self.get_snapshot(id).await?;
        if let Some(image_id) = self.inner.db.image_seeded_by(id).await? {
            return Err(LifecycleError::ActiveTemplate {
                id: id.to_string(),
                image_id,
            });
        }
        let _mark = self.mark_deleting(id)?;
        let storage = &self.inner.storage;
        let dir = storage.snapshot_dir(id);
        let doomed = storage
            .snapshots_dir()
            .join(format!("{TMP_PREFIX}deleted-{}", uuid::Uuid::new_v4()));
        let moved = match tokio::fs::rename(&dir, &doomed).await {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(LifecycleError::Internal(format!(
                    "moving {} aside: {e}",
                    dir.display()
                )))
            }
        };
        if let Err(e) = self.inner.db.delete_snapshot(id).await {
            if moved {
                let _ = tokio::fs::rename(&doomed, &dir).await;
            }
            return Err(e.into());
        }
        if let Err(e) = storage.remove_snapshot_dir(&doomed).await {
            tracing::warn!(snapshot_id = %id, error = %e, "snapshot files left for reconciliation");
        }
        tracing::info!(snapshot_id = %id, kind = snap.kind.as_str(), "snapshot.deleted");
        self.event(
            Draft::new(
                EventType::SnapshotDeleted,
                Some(id),
                format!("Snapshot {id} deleted"),
            )
            .meta(json!({"kind": snap.kind.as_str(), "imageId": snap.image_id})),
        );
        Ok(())
    }

    fn mark_deleting(&self, id: &str) -> Result<DeleteMark, LifecycleError> {
        let mut held = self.inner.restores.held.lock().expect("restore table");
        match held.get(id) {
            Some(Use::Restoring(n)) if *n > 0 => {
                return Err(LifecycleError::BeingRestored(id.to_string()))
            }
            Some(Use::Deleting) => return Err(LifecycleError::SnapshotNotFound),
            _ => {}
        }
        held.insert(id.to_string(), Use::Deleting);
        Ok(DeleteMark {
            inner: self.inner.clone(),
            id: id.to_string(),
        })
    }
}
