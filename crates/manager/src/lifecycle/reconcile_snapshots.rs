//! The snapshot half of reconciliation (`docs/reference/lifecycle.md` §5): capture directories
//! (`.tmp-*`) left by a crash are deleted; a snapshot directory with a valid `meta.json` but no row
//! is registered again (user data is never deleted silently); a row whose directory or disk is gone
//! is dropped.

use super::reconcile::{ReconcileError, ReconcileReport};
use super::VmService;
use crate::db::SnapshotScope;
use crate::storage::snapshots::{SNAPSHOT_DISK, TMP_PREFIX};
use std::collections::HashSet;

impl VmService {
    pub(super) async fn reconcile_snapshots(
        &self,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        let (db, storage) = (&self.inner.db, &self.inner.storage);
        let rows = db.list_snapshots(SnapshotScope::All).await?;
        let known: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for name in storage.snapshot_entries() {
            let dir = storage.snapshot_dir(&name);
            if name.starts_with(TMP_PREFIX) {
                match storage.remove_snapshot_dir(&dir).await {
                    Ok(()) => report.removed_dirs.push(format!("snapshots/{name}")),
                    Err(e) => {
                        tracing::warn!(dir = %name, error = %e, "removing a capture directory")
                    }
                }
                continue;
            }
            if known.contains(name.as_str()) {
                continue;
            }
            let meta = storage.read_snapshot_meta(&dir).await;
            let record = meta
                .as_ref()
                .ok()
                .filter(|m| m.id == name && dir.join(SNAPSHOT_DISK).is_file());
            match record {
                Some(rec) => {
                    db.insert_snapshot(rec).await?;
                    tracing::warn!(snapshot_id = %name, "snapshot directory without a row registered again");
                    report.registered_snapshots.push(name);
                }
                None => {
                    let why = meta.err().map(|e| e.to_string()).unwrap_or_else(|| {
                        "meta.json names another id, or disk.ext4 is missing".into()
                    });
                    tracing::warn!(dir = %name, reason = %why, "snapshot directory without a valid meta.json left alone");
                }
            }
        }
        for row in &rows {
            if storage.snapshot_dir(&row.id).join(SNAPSHOT_DISK).is_file() {
                continue;
            }
            db.delete_snapshot(&row.id).await?;
            tracing::warn!(snapshot_id = %row.id, "snapshot files missing: row dropped");
            report.dropped_snapshots.push(row.id.clone());
        }
        Ok(())
    }
}
