//! Internal VMs (templates being built, the warm pool) and image templates' state
//! (`docs/snapshots.md` Templates, Warm pool).

use super::vms::check_quota;
use super::{Db, DbError, PoolRole};
use crate::db::CreateVmError;
use crate::model::{now_rfc3339, VmRecord};

impl Db {
    /// Internal VMs of `role` that are not DELETED, oldest first.
    pub async fn internal_vms(&self, role: PoolRole) -> Result<Vec<VmRecord>, DbError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM vms WHERE pool_role = $1 AND state <> $2 \
             ORDER BY created_at, id",
        )
        .bind(role.as_str())
        .bind(crate::model::VmState::Deleted.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(vm) = self.get_any_vm(&id).await? {
                out.push(vm);
            }
        }
        Ok(out)
    }

    /// Turns the RUNNING pool VM `id` into a user VM with the caller's egress policy and
    /// `createdAt` now, after the quota check, in one transaction. None when it is no longer a
    /// RUNNING pool VM.
    pub async fn claim_pool_vm(
        &self,
        id: &str,
        max_vms: u64,
        outbound_internet: bool,
        allow_ips: &[String],
    ) -> Result<Option<VmRecord>, CreateVmError> {
        let mut tx = self.begin_allocation().await.map_err(DbError::from)?;
        check_quota(&mut tx, max_vms).await?;
        let now = now_rfc3339();
        let allow = serde_json::to_string(allow_ips).unwrap_or_else(|_| "[]".into());
        let claimed = sqlx::query(
            "UPDATE vms SET pool_role = NULL, outbound_internet = $1, allow_ips = $2, \
             created_at = $3, updated_at = $3 \
             WHERE id = $4 AND pool_role = $5 AND state = $6",
        )
        .bind(super::flag(outbound_internet))
        .bind(allow)
        .bind(&now)
        .bind(id)
        .bind(PoolRole::Pool.as_str())
        .bind(crate::model::VmState::Running.as_str())
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        if claimed != 1 {
            tx.rollback().await.map_err(DbError::from)?;
            return Ok(None);
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(self.get_vm(id).await?)
    }

    /// Sets the template state of an image: `pending`, `failed` (with `error`) or, with status
    /// None, no template at all. A ready template goes through `set_image_seed_ready`.
    pub async fn set_image_seed(
        &self,
        id: &str,
        status: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        let updated = status.map(|_| now_rfc3339());
        sqlx::query(
            "UPDATE guest_images SET seed_status = $1, seed_error = $2, seed_updated_at = $3, \
             seed_snapshot_id = CASE WHEN $1 IS NULL THEN NULL ELSE seed_snapshot_id END \
             WHERE id = $4",
        )
        .bind(status)
        .bind(error)
        .bind(updated)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A create that meant to resume a template cold-booted instead: it comes from no snapshot.
    pub async fn clear_source_snapshot(&self, vm_id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE vms SET source_snapshot_id = NULL WHERE id = $1")
            .bind(vm_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
