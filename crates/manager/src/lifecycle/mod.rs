//! The VM lifecycle (`docs/reference/lifecycle.md` §1–5, §9): one file per operation. Knows nothing
//! of HTTP; the API turns requests into calls here and errors into statuses.

mod create;
mod destroy;
mod error;
mod events;
pub(crate) mod exec;
mod execlog;
mod expiry;
mod files;
mod internal;
pub(crate) mod invoke;
pub(crate) mod labels;
mod network;
mod ops;
mod overview;
mod pause;
mod peers;
mod pool;
pub(crate) mod processes;
mod readiness;
mod ready;
mod reconcile;
mod reconcile_snapshots;
mod restore;
mod secrets;
mod snapshot;
mod snapshots;
mod start;
mod stop;
mod stream;
mod templates;
mod tunnel;
mod watch;

pub use create::CreateVm;
pub use error::{BootFailure, LifecycleError, PeerFailure};
pub use exec::{RunReply, Runtime};
pub use invoke::InvokeRequest;
pub use network::{Network, NetworkSettings};
pub use overview::OverviewCounts;
pub use reconcile::{ReconcileError, ReconcileReport};
pub use stream::LineStream;

use crate::agent::{AgentClient, AgentConfig};
use crate::config::Subnet;
use crate::db::Db;
use crate::model::VmRecord;
use crate::storage::Storage;
use rds_vmm::{VmRuntime, VmmBackend};
use std::sync::Arc;
use std::time::Duration;

/// What the lifecycle needs from the configuration.
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub agent: AgentConfig,
    pub health_timeout: Duration,
    pub max_vms: u64,
    pub subnet: Subnet,
    pub default_disk_mb: u64,
    pub disk_wait_ms: u64,
    pub provision: ProvisionSettings,
    /// Derived once from `VM_SECRET_KEY`; None without one (creates with secretEnv are refused).
    pub secret_key: Option<Arc<crate::secret_env::SecretKey>>,
    /// `MANAGER_INTERNAL_BASE_URL`: where consumers' peer runtimes call the manager.
    pub peer_base_url: String,
    /// `MAX_RUNTS_TIMEOUT_MS`: also the bound of a peer invoke's `timeoutMs`.
    pub max_run_timeout_ms: u64,
}

/// Templates and the warm pool (`docs/snapshots.md` Templates, Warm pool).
#[derive(Debug, Clone, Default)]
pub struct ProvisionSettings {
    /// `ENABLE_SNAPSHOTS`: build per-image templates (when the backend has memory snapshots).
    pub templates: bool,
    pub template_cpu: u32,
    pub template_mem_mb: u32,
    /// min(`WARM_POOL_TARGET`, `WARM_POOL_MAX_VMS`) with `ENABLE_WARM_POOL`, else 0.
    pub pool_target: u64,
}

#[derive(Clone)]
pub struct VmService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    backend: Arc<dyn VmmBackend>,
    storage: Storage,
    settings: LifecycleSettings,
    net: Network,
    ops: ops::OpTable,
    /// Restores in flight per snapshot: a snapshot delete refuses (409) while there are any.
    restores: snapshots::RestoreTable,
    /// Serialises quota check + address allocation (SQLite cannot lock the count for us).
    create_lock: tokio::sync::Mutex<()>,
    templates: templates::TemplateBuilds,
    pool: pool::Pool,
    activity: crate::activity::Activity,
    expired: expiry::Expired,
    /// Providers whose manifest passed the callable check, by what was checked.
    peer_checks: peers::Checked,
    /// Background processes started through this manager, to list them as gone after a stop.
    processes: processes::Book,
}

impl VmService {
    pub fn new(
        db: Db,
        backend: Arc<dyn VmmBackend>,
        storage: Storage,
        settings: LifecycleSettings,
        net: Network,
        activity: crate::activity::Activity,
    ) -> Self {
        VmService {
            inner: Arc::new(Inner {
                db,
                backend,
                storage,
                settings,
                net,
                ops: ops::OpTable::default(),
                restores: snapshots::RestoreTable::default(),
                create_lock: tokio::sync::Mutex::new(()),
                templates: templates::TemplateBuilds::default(),
                pool: pool::Pool::default(),
                activity,
                expired: expiry::Expired::default(),
                peer_checks: peers::Checked::default(),
                processes: processes::Book::default(),
            }),
        }
    }

    pub fn backend(&self) -> &Arc<dyn VmmBackend> {
        &self.inner.backend
    }

    pub async fn list(&self) -> Result<Vec<VmRecord>, LifecycleError> {
        Ok(self.inner.db.list_vms().await?)
    }

    pub async fn get(&self, id: &str) -> Result<VmRecord, LifecycleError> {
        self.inner
            .db
            .get_vm(id)
            .await?
            .ok_or_else(|| LifecycleError::NotFound(id.to_string()))
    }

    fn agent_for(&self, id: &str) -> AgentClient {
        let socket = rds_vmm::agent_socket(&self.inner.storage.run_dir(id));
        AgentClient::new(socket, self.inner.settings.agent.clone())
    }

    /// The stored VMM identity of a VM, if it has one.
    fn runtime_of(&self, vm: &VmRecord) -> Option<VmRuntime> {
        Some(VmRuntime {
            vm_id: vm.id.clone(),
            run_dir: self.inner.storage.run_dir(&vm.id),
            logs_dir: self.inner.storage.logs_dir(&vm.id),
            pid: vm.vmm_pid?,
            start_time: vm.vmm_start_time?,
            boot_id: vm.vmm_boot_id.clone()?,
        })
    }

    /// A runtime with no process, so `cleanup` can clear a run directory when no VMM is recorded.
    fn idle_runtime(&self, id: &str) -> VmRuntime {
        VmRuntime {
            vm_id: id.to_string(),
            run_dir: self.inner.storage.run_dir(id),
            logs_dir: self.inner.storage.logs_dir(id),
            pid: 0,
            start_time: 0,
            boot_id: String::new(),
        }
    }
}

impl VmService {
    pub async fn ping_db(&self) -> Result<(), LifecycleError> {
        Ok(self.inner.db.ping().await?)
    }
}
