//! Queries of the startup reconciliation (`docs/reference/lifecycle.md` §5): every row, DELETED and
//! internal ones included, with just what reconciliation needs.

use super::{Db, DbError};
use crate::model::VmState;
use sqlx::any::AnyRow;
use sqlx::Row;

/// One `vms` row as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct ReconcileRow {
    pub id: String,
    pub state: VmState,
    pub guest_ip: std::net::Ipv4Addr,
    pub outbound_internet: bool,
    pub allow_ips: Vec<String>,
    /// Whether the VM has peer links (its rules open the manager port).
    pub has_peer_links: bool,
    /// Null for user VMs.
    pub pool_role: Option<String>,
    pub vmm_pid: Option<u32>,
    pub vmm_start_time: Option<u64>,
    pub vmm_boot_id: Option<String>,
}

fn corrupt(detail: String) -> sqlx::Error {
    sqlx::Error::Decode(detail.into())
}

fn from_row(r: &AnyRow) -> Result<ReconcileRow, sqlx::Error> {
    let state: String = r.try_get("state")?;
    let ip: String = r.try_get("guest_ip")?;
    let allow: String = r.try_get("allow_ips")?;
    let links: String = r.try_get("peer_links")?;
    Ok(ReconcileRow {
        id: r.try_get("id")?,
        state: VmState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?,
        guest_ip: ip.parse().map_err(|_| corrupt(format!("guest_ip {ip}")))?,
        outbound_internet: r.try_get::<i64, _>("outbound_internet")? != 0,
        allow_ips: serde_json::from_str(&allow).map_err(|e| corrupt(e.to_string()))?,
        has_peer_links: !matches!(links.trim(), "" | "[]"),
        pool_role: r.try_get("pool_role")?,
        vmm_pid: r.try_get::<Option<i64>, _>("vmm_pid")?.map(|v| v as u32),
        vmm_start_time: r
            .try_get::<Option<i64>, _>("vmm_start_time")?
            .map(|v| v as u64),
        vmm_boot_id: r.try_get("vmm_boot_id")?,
    })
}

impl Db {
    /// Every VM row, tombstones and internal VMs included.
    pub async fn reconcile_rows(&self) -> Result<Vec<ReconcileRow>, DbError> {
        let rows = sqlx::query(
            "SELECT id, state, guest_ip, outbound_internet, allow_ips, peer_links, pool_role, \
             vmm_pid, vmm_start_time, vmm_boot_id FROM vms ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Finishes an interrupted destroy: the address of a DELETED VM goes back to the pool.
    pub async fn release_address(&self, vm_id: &str) -> Result<u64, DbError> {
        let r = sqlx::query("DELETE FROM ip_allocations WHERE vm_id = $1")
            .bind(vm_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Removes an internal VM (warm pool, template build) and its address in one transaction.
    pub async fn delete_internal_vm(&self, vm_id: &str) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM ip_allocations WHERE vm_id = $1")
            .bind(vm_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM vms WHERE id = $1 AND pool_role IS NOT NULL")
            .bind(vm_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
