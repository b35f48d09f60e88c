//! The VM side of `/v1/admin/overview` (`docs/reference/api-admin.md` Overview): counts, the vCPUs
//! of running VMs, and `STORAGE_ROOT`'s filesystem.

use super::{LifecycleError, VmService};
use crate::db::PoolRole;
use crate::model::VmState;
use crate::storage::FsUsage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverviewCounts {
    /// User VMs that are not DELETED.
    pub active_vms: u64,
    /// Warm-pool VMs, whatever their state.
    pub warm_vms: u64,
    /// User snapshots.
    pub snapshots: u64,
    pub templates: u64,
    /// Sum of `cpu` over RUNNING VMs, internal ones included (they run on the same cores).
    pub used_cores: u64,
}

impl VmService {
    pub async fn overview_counts(&self) -> Result<OverviewCounts, LifecycleError> {
        let db = &self.inner.db;
        let users = db.list_vms().await?;
        let pool = db.internal_vms(PoolRole::Pool).await?;
        let builders = db.internal_vms(PoolRole::Template).await?;
        let used_cores = users
            .iter()
            .chain(&pool)
            .chain(&builders)
            .filter(|v| v.state == VmState::Running)
            .map(|v| u64::from(v.cpu))
            .sum();
        let kinds = db.count_snapshots().await?;
        let count = |kind: &str| kinds.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
        Ok(OverviewCounts {
            active_vms: users.len() as u64,
            warm_vms: pool.len() as u64,
            snapshots: count("user_overlay"),
            templates: count("template"),
            used_cores,
        })
    }

    /// Size and use of `STORAGE_ROOT`'s filesystem.
    pub async fn storage_usage(&self) -> Result<FsUsage, LifecycleError> {
        self.inner
            .storage
            .usage()
            .await
            .map_err(|e| LifecycleError::Internal(e.to_string()))
    }
}
