//! `snapshots` (`docs/reference/lifecycle.md` §9, §12): one row per committed snapshot directory.

use super::{flag, Db, DbError};
use crate::model::{SnapshotKind, SnapshotRecord};
use sqlx::any::AnyRow;
use sqlx::Row;

const COLUMNS: &str = "id, kind, image_id, source_vm_id, base_seed_snapshot_id, cpu, mem_mb, \
    disk_size_mb, has_memory, size_bytes, backend, vmm_version, agent_port, kernel_sha256, \
    initrd_sha256, rootfs_sha256, created_at";

/// Which kinds a listing returns (`GET /v1/snapshots?scope=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotScope {
    User,
    Internal,
    All,
}

fn from_row(r: &AnyRow) -> Result<SnapshotRecord, sqlx::Error> {
    let kind: String = r.try_get("kind")?;
    Ok(SnapshotRecord {
        id: r.try_get("id")?,
        kind: SnapshotKind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("snapshot kind {kind}").into()))?,
        image_id: r.try_get("image_id")?,
        source_vm_id: r.try_get("source_vm_id")?,
        base_seed_snapshot_id: r.try_get("base_seed_snapshot_id")?,
        cpu: r.try_get::<i64, _>("cpu")? as u32,
        mem_mb: r.try_get::<i64, _>("mem_mb")? as u32,
        disk_size_mb: r.try_get::<i64, _>("disk_size_mb")? as u64,
        has_memory: r.try_get::<i64, _>("has_memory")? != 0,
        size_bytes: r.try_get::<i64, _>("size_bytes")?.max(0) as u64,
        backend: r.try_get("backend")?,
        vmm_version: r.try_get("vmm_version")?,
        agent_port: r.try_get::<i64, _>("agent_port")? as u32,
        kernel_sha256: r.try_get("kernel_sha256")?,
        initrd_sha256: r.try_get("initrd_sha256")?,
        rootfs_sha256: r.try_get("rootfs_sha256")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Db {
    pub async fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<(), DbError> {
        sqlx::query(&format!(
            "INSERT INTO snapshots ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(&s.id)
        .bind(s.kind.as_str())
        .bind(&s.image_id)
        .bind(&s.source_vm_id)
        .bind(&s.base_seed_snapshot_id)
        .bind(i64::from(s.cpu))
        .bind(i64::from(s.mem_mb))
        .bind(s.disk_size_mb as i64)
        .bind(flag(s.has_memory))
        .bind(s.size_bytes as i64)
        .bind(&s.backend)
        .bind(&s.vmm_version)
        .bind(i64::from(s.agent_port))
        .bind(&s.kernel_sha256)
        .bind(&s.initrd_sha256)
        .bind(&s.rootfs_sha256)
        .bind(&s.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM snapshots WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Snapshots of `scope`, newest first.
    pub async fn list_snapshots(
        &self,
        scope: SnapshotScope,
    ) -> Result<Vec<SnapshotRecord>, DbError> {
        let filter = match scope {
            SnapshotScope::User => "WHERE kind = 'user_overlay'",
            SnapshotScope::Internal => "WHERE kind = 'template'",
            SnapshotScope::All => "",
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots {filter} ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Returns whether a row was removed.
    pub async fn delete_snapshot(&self, id: &str) -> Result<bool, DbError> {
        let r = sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The newest user snapshot made on image `image_id`, if any (image deletes refuse then).
    pub async fn user_snapshot_using_image(
        &self,
        image_id: &str,
    ) -> Result<Option<String>, DbError> {
        let row = sqlx::query(
            "SELECT id FROM snapshots WHERE image_id = $1 AND kind = 'user_overlay' \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(image_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Ids of the templates of image `image_id` (removed with the image).
    pub async fn template_snapshot_ids(&self, image_id: &str) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT id FROM snapshots WHERE image_id = $1 AND kind = 'template' ORDER BY id",
        )
        .bind(image_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// The image whose current template is `snapshot_id`, if any.
    pub async fn image_seeded_by(&self, snapshot_id: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT id FROM guest_images WHERE seed_snapshot_id = $1 LIMIT 1")
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Snapshot rows per kind, for the `rds_snapshots{kind}` gauge.
    pub async fn count_snapshots(&self) -> Result<Vec<(String, u64)>, DbError> {
        let rows =
            sqlx::query("SELECT kind, COUNT(*) AS n FROM snapshots GROUP BY kind ORDER BY kind")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get::<i64, _>("n")?.max(0) as u64)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}
