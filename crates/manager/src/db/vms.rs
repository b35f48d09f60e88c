use super::{flag, is_unique_violation, Db, DbError, Dialect};
use crate::config::Subnet;
use crate::model::{now_rfc3339, TimeoutAction, VmRecord, VmState};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

const COLUMNS: &str = "id, state, cpu, mem_mb, disk_size_mb, guest_ip, tap_name, mac, vsock_cid, \
    outbound_internet, allow_ips, image_id, source_snapshot_id, provision_mode, vmm_pid, vmm_start_time, \
    vmm_boot_id, backend, last_error, created_at, pool_role, expires_at, timeout_sec, timeout_action, \
    metadata, secret_env, peer_links";

/// What a create stores before anything is allocated on the host.
#[derive(Debug, Clone)]
pub struct NewVm {
    pub id: String,
    pub cpu: u32,
    pub mem_mb: u32,
    pub disk_size_mb: u64,
    pub outbound_internet: bool,
    pub allow_ips: Vec<String>,
    pub image_id: String,
    /// The snapshot a restore starts from.
    pub source_snapshot_id: Option<String>,
    pub backend: String,
    /// `Some` for an internal VM (`template`, `pool`): hidden from the API, outside the quota.
    pub pool_role: Option<PoolRole>,
    /// The lifetime from create, if any (the deadline is counted from the insert).
    pub timeout_sec: Option<u64>,
    pub timeout_action: TimeoutAction,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Sealed for this VM's id.
    pub secret_env: Option<String>,
    /// Checked against their providers before the insert.
    pub peer_links: Vec<crate::peers::PeerLink>,
}

/// Why the manager runs an internal VM (`vms.pool_role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRole {
    /// Booted to capture an image's template, then torn down.
    Template,
    /// Kept RUNNING in the warm pool until a create takes it.
    Pool,
}

impl PoolRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolRole::Template => "template",
            PoolRole::Pool => "pool",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateVmError {
    #[error("VM quota exceeded (maxVms={0})")]
    Quota(u64),
    #[error("No free guest address in VM_SUBNET")]
    NoAddress,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for CreateVmError {
    fn from(e: sqlx::Error) -> Self {
        CreateVmError::Db(DbError::Sql(e))
    }
}

/// How one create transaction ended when it did not commit.
enum Attempt {
    /// The unique `ip` key rejected the address: another writer took it; worth another try.
    AddressTaken(Ipv4Addr),
    Failed(CreateVmError),
}

impl<E: Into<CreateVmError>> From<E> for Attempt {
    fn from(e: E) -> Self {
        Attempt::Failed(e.into())
    }
}

fn corrupt(detail: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Decode(detail.into().into())
}

fn from_row(r: &AnyRow) -> Result<VmRecord, sqlx::Error> {
    let state: String = r.try_get("state")?;
    let ip: String = r.try_get("guest_ip")?;
    let allow: String = r.try_get("allow_ips")?;
    let action: String = r.try_get("timeout_action")?;
    let metadata: String = r.try_get("metadata")?;
    let links: String = r.try_get("peer_links")?;
    Ok(VmRecord {
        id: r.try_get("id")?,
        state: VmState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?,
        cpu: r.try_get::<i64, _>("cpu")? as u32,
        mem_mb: r.try_get::<i64, _>("mem_mb")? as u32,
        disk_size_mb: r.try_get::<i64, _>("disk_size_mb")? as u64,
        guest_ip: ip.parse().map_err(|_| corrupt(format!("guest_ip {ip}")))?,
        tap_name: r.try_get("tap_name")?,
        mac: r.try_get("mac")?,
        vsock_cid: r.try_get::<i64, _>("vsock_cid")? as u32,
        outbound_internet: r.try_get::<i64, _>("outbound_internet")? != 0,
        allow_ips: serde_json::from_str(&allow).map_err(|e| corrupt(e.to_string()))?,
        image_id: r.try_get("image_id")?,
        source_snapshot_id: r.try_get("source_snapshot_id")?,
        provision_mode: r.try_get("provision_mode")?,
        vmm_pid: r.try_get::<Option<i64>, _>("vmm_pid")?.map(|v| v as u32),
        vmm_start_time: r
            .try_get::<Option<i64>, _>("vmm_start_time")?
            .map(|v| v as u64),
        vmm_boot_id: r.try_get("vmm_boot_id")?,
        backend: r.try_get("backend")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        pool_role: r.try_get("pool_role")?,
        expires_at: r.try_get("expires_at")?,
        timeout_sec: r
            .try_get::<Option<i64>, _>("timeout_sec")?
            .map(|v| v as u64),
        timeout_action: TimeoutAction::parse(&action)
            .ok_or_else(|| corrupt(format!("timeout_action {action}")))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt(e.to_string()))?,
        secret_env: r.try_get("secret_env")?,
        peer_links: serde_json::from_str(&links).map_err(|e| corrupt(e.to_string()))?,
    })
}

fn links_json(links: &[crate::peers::PeerLink]) -> String {
    serde_json::to_string(links).unwrap_or_else(|_| "[]".into())
}

/// RFC 3339 UTC (milliseconds, as every stored time) `secs` from now.
pub fn deadline_after(secs: u64) -> String {
    let at =
        chrono::Utc::now() + chrono::Duration::seconds(secs.min(i64::MAX as u64 / 1000) as i64);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Derived identities of host index `i` (`docs/reference/lifecycle.md` §7).
fn tap_name(i: u32) -> String {
    format!("rds-tap{i}")
}

fn mac_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// `MAX_VMS` counts user VMs that are not DELETED; internal VMs never count.
pub(super) async fn check_quota(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    max_vms: u64,
) -> Result<(), CreateVmError> {
    let count: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM vms WHERE state <> $1 AND pool_role IS NULL")
            .bind(VmState::Deleted.as_str())
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    if count as u64 >= max_vms {
        return Err(CreateVmError::Quota(max_vms));
    }
    Ok(())
}

impl Db {
    /// Quota check, lowest-free address allocation and row insert in one transaction
    /// (`docs/reference/lifecycle.md` §1–2). Besides the caller's serialisation, the database
    /// serialises creates so that two managers on one database can neither exceed the quota nor
    /// pick the same address: SQLite takes its write lock up front (`BEGIN IMMEDIATE`), Postgres
    /// locks `ip_allocations` against other writers. Should the unique `ip` key still reject the
    /// pick, the transaction is retried.
    pub async fn create_vm(
        &self,
        vm: &NewVm,
        max_vms: u64,
        subnet: &Subnet,
    ) -> Result<VmRecord, CreateVmError> {
        const ATTEMPTS: u32 = 4;
        for attempt in 1..=ATTEMPTS {
            match self.try_create_vm(vm, max_vms, subnet).await {
                Ok(()) => break,
                Err(Attempt::AddressTaken(ip)) if attempt < ATTEMPTS => {
                    tracing::debug!(%ip, attempt, "guest address taken concurrently; retrying");
                }
                Err(Attempt::AddressTaken(ip)) => {
                    return Err(DbError::Conflict(format!(
                        "guest address {ip} was taken concurrently {ATTEMPTS} times"
                    ))
                    .into())
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Ok(self
            .get_any_vm(&vm.id)
            .await?
            .ok_or_else(|| DbError::Corrupt {
                table: "vms",
                detail: format!("row {} vanished after insert", vm.id),
            })?)
    }

    /// A transaction that no other create or pool checkout runs beside, also from another manager
    /// on the same database.
    pub(super) async fn begin_allocation(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("LOCK TABLE ip_allocations IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    async fn try_create_vm(
        &self,
        vm: &NewVm,
        max_vms: u64,
        subnet: &Subnet,
    ) -> Result<(), Attempt> {
        let mut tx = self.begin_allocation().await?;
        if vm.pool_role.is_none() {
            check_quota(&mut tx, max_vms).await?;
        }
        let taken: HashSet<String> = sqlx::query("SELECT ip FROM ip_allocations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("ip"))
            .collect::<Result<_, _>>()?;
        let (index, ip) = (2..)
            .map_while(|i| subnet.guest(i).map(|ip| (i, ip)))
            .find(|(_, ip)| !taken.contains(&ip.to_string()))
            .ok_or(CreateVmError::NoAddress)?;
        let now = now_rfc3339();
        let allocated =
            sqlx::query("INSERT INTO ip_allocations (ip, vm_id, allocated_at) VALUES ($1, $2, $3)")
                .bind(ip.to_string())
                .bind(&vm.id)
                .bind(&now)
                .execute(&mut *tx)
                .await;
        match allocated {
            Err(e) if is_unique_violation(&e) => return Err(Attempt::AddressTaken(ip)),
            other => other?,
        };
        let allow = serde_json::to_string(&vm.allow_ips).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO vms (id, cpu, mem_mb, disk_size_mb, guest_ip, tap_name, mac, vsock_cid, \
             outbound_internet, allow_ips, image_id, source_snapshot_id, backend, pool_role, \
             created_at, updated_at, expires_at, timeout_sec, timeout_action, metadata, secret_env, \
             peer_links, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, \
             $16, $17, $18, $19, $20, $21, $22)",
        )
        .bind(&vm.id)
        .bind(i64::from(vm.cpu))
        .bind(i64::from(vm.mem_mb))
        .bind(vm.disk_size_mb as i64)
        .bind(ip.to_string())
        .bind(tap_name(index))
        .bind(mac_of(ip))
        .bind(i64::from(10_000 + index))
        .bind(flag(vm.outbound_internet))
        .bind(allow)
        .bind(&vm.image_id)
        .bind(&vm.source_snapshot_id)
        .bind(&vm.backend)
        .bind(vm.pool_role.map(PoolRole::as_str))
        .bind(&now)
        .bind(vm.timeout_sec.map(deadline_after))
        .bind(vm.timeout_sec.map(|t| t as i64))
        .bind(vm.timeout_action.as_str())
        .bind(serde_json::to_string(&vm.metadata).unwrap_or_else(|_| "{}".into()))
        .bind(&vm.secret_env)
        .bind(links_json(&vm.peer_links))
        .bind(VmState::Created.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A VM that is not DELETED, user or internal.
    pub async fn get_any_vm(&self, id: &str) -> Result<Option<VmRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM vms WHERE id = $1 AND state <> $2"
        ))
        .bind(id)
        .bind(VmState::Deleted.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// A user VM that is not DELETED.
    pub async fn get_vm(&self, id: &str) -> Result<Option<VmRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM vms WHERE id = $1 AND state <> $2 AND pool_role IS NULL"
        ))
        .bind(id)
        .bind(VmState::Deleted.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// User VMs that are not DELETED, newest first.
    pub async fn list_vms(&self) -> Result<Vec<VmRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM vms WHERE state <> $1 AND pool_role IS NULL \
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(VmState::Deleted.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The one way a VM's state changes (destroy's tombstone aside): from one of `from` to `to`,
    /// each allowed by the transition table ([`VmState::can_become`]; staying put only sets
    /// `lastError`), and only while the row is still in one of `from`, so a concurrent change is
    /// never overwritten. `Ok(false)` when the row was in none of them.
    pub async fn transition(
        &self,
        id: &str,
        from: &[VmState],
        to: VmState,
        last_error: Option<&str>,
    ) -> Result<bool, DbError> {
        self.transition_setting(id, from, to, last_error, None)
            .await
    }

    /// STARTING → RUNNING with its provision mode; a previous `lastError` stays for the record.
    pub async fn set_running(&self, id: &str, provision_mode: &str) -> Result<bool, DbError> {
        self.transition_setting(
            id,
            &[VmState::Starting],
            VmState::Running,
            None,
            Some(provision_mode),
        )
        .await
    }

    async fn transition_setting(
        &self,
        id: &str,
        from: &[VmState],
        to: VmState,
        last_error: Option<&str>,
        provision_mode: Option<&str>,
    ) -> Result<bool, DbError> {
        if let Some(bad) = from.iter().find(|f| **f != to && !f.can_become(to)) {
            return Err(DbError::Transition { from: *bad, to });
        }
        let mut sql = String::from("UPDATE vms SET state = $1, updated_at = $2");
        let mut n = 2;
        for (column, value) in [
            ("last_error", last_error),
            ("provision_mode", provision_mode),
        ] {
            if value.is_some() {
                n += 1;
                sql.push_str(&format!(", {column} = ${n}"));
            }
        }
        sql.push_str(&format!(" WHERE id = ${} AND state IN (", n + 1));
        let states: Vec<String> = (0..from.len()).map(|i| format!("${}", n + 2 + i)).collect();
        sql.push_str(&states.join(", "));
        sql.push(')');
        let mut q = sqlx::query(&sql).bind(to.as_str()).bind(now_rfc3339());
        for value in [last_error, provision_mode].into_iter().flatten() {
            q = q.bind(value.to_string());
        }
        q = q.bind(id);
        for f in from {
            q = q.bind(f.as_str());
        }
        Ok(q.execute(&self.pool).await?.rows_affected() > 0)
    }

    /// The launched VMM's identity, stored as soon as it exists so a restarted manager can find it.
    pub async fn set_runtime(
        &self,
        id: &str,
        pid: u32,
        start_time: u64,
        boot_id: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE vms SET vmm_pid = $1, vmm_start_time = $2, vmm_boot_id = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(i64::from(pid))
        .bind(start_time as i64)
        .bind(boot_id)
        .bind(now_rfc3339())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn clear_runtime(&self, id: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE vms SET vmm_pid = NULL, vmm_start_time = NULL, vmm_boot_id = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The lifetime of `id`: a deadline `timeout_sec` from now and that lifetime, or neither; and
    /// the action at the deadline.
    pub async fn set_vm_timeout(
        &self,
        id: &str,
        timeout_sec: Option<u64>,
        action: TimeoutAction,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE vms SET expires_at = $1, timeout_sec = $2, timeout_action = $3, updated_at = $4 \
             WHERE id = $5 AND state <> $6",
        )
        .bind(timeout_sec.map(deadline_after))
        .bind(timeout_sec.map(|t| t as i64))
        .bind(action.as_str())
        .bind(now_rfc3339())
        .bind(id)
        .bind(VmState::Deleted.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the sealed secretEnv of `id` (a warm-pool VM taken by a create); None clears it.
    pub async fn set_vm_secret_env(&self, id: &str, sealed: Option<&str>) -> Result<(), DbError> {
        sqlx::query("UPDATE vms SET secret_env = $1, updated_at = $2 WHERE id = $3")
            .bind(sealed)
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the metadata of `id`.
    pub async fn set_vm_metadata(
        &self,
        id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE vms SET metadata = $1, updated_at = $2 WHERE id = $3 AND state <> $4")
            .bind(serde_json::to_string(metadata).unwrap_or_else(|_| "{}".into()))
            .bind(now_rfc3339())
            .bind(id)
            .bind(VmState::Deleted.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A consumer's links, replaced whole (PATCH of a source mode).
    pub async fn set_peer_links(
        &self,
        id: &str,
        links: &[crate::peers::PeerLink],
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE vms SET peer_links = $1, updated_at = $2 WHERE id = $3")
            .bind(links_json(links))
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores the hash of a consumer's new bridge token (None: it has none).
    pub async fn set_bridge_token_hash(&self, id: &str, hash: Option<&str>) -> Result<(), DbError> {
        sqlx::query("UPDATE vms SET bridge_token_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user VM holding the bridge token with this hash, if it is not DELETED.
    pub async fn vm_by_bridge_token_hash(&self, hash: &str) -> Result<Option<VmRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM vms WHERE bridge_token_hash = $1 AND state <> $2 \
             AND pool_role IS NULL"
        ))
        .bind(hash)
        .bind(VmState::Deleted.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Tombstone: DELETED, address released, VMM identity and secrets cleared, in one transaction.
    pub async fn mark_deleted(&self, id: &str) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE vms SET state = $1, vmm_pid = NULL, vmm_start_time = NULL, \
             vmm_boot_id = NULL, secret_env = NULL, bridge_token_hash = NULL, updated_at = $2 \
             WHERE id = $3",
        )
        .bind(VmState::Deleted.as_str())
        .bind(now_rfc3339())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM ip_allocations WHERE vm_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_identities() {
        assert_eq!(tap_name(2), "rds-tap2");
        assert_eq!(mac_of(Ipv4Addr::new(172, 16, 0, 2)), "02:00:ac:10:00:02");
    }
}
