//! Deadlines of VMs (`docs/lifetimes.md`): which ones passed, and clearing or re-arming them.

use super::{Db, DbError};
use crate::model::{now_rfc3339, VmState};
use sqlx::Row;

impl Db {
    /// User VMs (not DELETED) whose deadline is at or before `now`, earliest first.
    pub async fn expired_vm_ids(&self, now: &str) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT id FROM vms WHERE expires_at IS NOT NULL AND expires_at <= $1 \
             AND state <> $2 AND pool_role IS NULL ORDER BY expires_at, id",
        )
        .bind(now)
        .bind(VmState::Deleted.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// No deadline any more (the lifetime stays, for a resume to re-arm).
    pub async fn clear_deadline(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE vms SET expires_at = NULL, updated_at = $1 WHERE id = $2")
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A new deadline `secs` from now.
    pub async fn rearm_deadline(&self, id: &str, secs: u64) -> Result<(), DbError> {
        sqlx::query("UPDATE vms SET expires_at = $1, updated_at = $2 WHERE id = $3")
            .bind(super::vms::deadline_after(secs))
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
