//! Create (`docs/reference/lifecycle.md` §2): resolve image and snapshot before anything is
//! allocated, row + address, then a memory restore (`restore.rs`) or a boot: disk, VMM, readiness,
//! RUNNING.

use super::error::BootFailure;
use super::ops::OpGuard;
use super::snapshots::RestoreHold;
use super::{LifecycleError, VmService};
use crate::activity::EventType;
use crate::agent::AgentError;
use crate::db::{CreateVmError, NewVm};
use crate::model::{ImageRecord, SnapshotKind, SnapshotRecord, TimeoutAction, VmRecord, VmState};
use rds_vmm::{VmRuntime, VmSpec};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tracing::{info_span, Instrument};

/// A validated create request.
#[derive(Debug, Clone)]
pub struct CreateVm {
    pub cpu: u32,
    pub mem_mb: u32,
    pub disk_size_mb: Option<u64>,
    pub outbound_internet: bool,
    pub allow_ips: Vec<String>,
    pub image_id: Option<String>,
    /// `userOverlaySnapshotId` (or its alias `snapshotId`): the user snapshot to restore.
    pub snapshot_id: Option<String>,
    /// The lifetime (`timeoutSec`, or `DEFAULT_VM_TIMEOUT_SEC`); None: no deadline.
    pub timeout_sec: Option<u64>,
    pub timeout_action: TimeoutAction,
    pub metadata: BTreeMap<String, String>,
    /// Plain secretEnv entries: sealed for the VM's id before they are stored.
    pub secret_env: crate::secret_env::Entries,
    /// Checked against their providers before anything is allocated.
    pub peer_links: Vec<crate::peers::PeerLink>,
}

/// What a create resolved before allocating anything.
struct Plan {
    image: ImageRecord,
    disk_size_mb: u64,
    /// The snapshot to restore, held against deletion for the whole create.
    source: Option<(SnapshotRecord, RestoreHold)>,
}

/// Space `STORAGE_ROOT` must have left for a create: a guest's first boot writes its journal,
/// logs and the files it is given.
pub const CREATE_FREE_FLOOR: u64 = 64 * 1024 * 1024;

/// A failed provisioning step, with what was launched so far for the cleanup.
pub(super) struct Failed {
    pub reason: String,
    pub cause: BootFailure,
    pub cancelled: bool,
}

impl Failed {
    pub fn host(reason: impl std::fmt::Display) -> Self {
        Failed {
            reason: reason.to_string(),
            cause: BootFailure::Host,
            cancelled: false,
        }
    }

    /// The VM left the state the operation expected: a destroy cancelled it.
    pub fn cancelled() -> Self {
        Failed {
            reason: "cancelled".into(),
            cause: BootFailure::Host,
            cancelled: true,
        }
    }
}

impl VmService {
    /// STARTING from `from` at the start of a boot, restore or resume; a row found in another
    /// state was destroyed meanwhile, which cancels the boot.
    pub(super) async fn mark_starting(&self, id: &str, from: VmState) -> Result<(), Failed> {
        let db = &self.inner.db;
        match db.transition(id, &[from], VmState::Starting, None).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failed::cancelled()),
            Err(e) => Err(Failed::host(e)),
        }
    }

    /// RUNNING with its provision mode at the end of a boot, restore or resume; cancelled as in
    /// [`Self::mark_starting`].
    pub(super) async fn mark_running(&self, id: &str, mode: &str) -> Result<(), Failed> {
        match self.inner.db.set_running(id, mode).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failed::cancelled()),
            Err(e) => Err(Failed::host(e)),
        }
    }

    #[tracing::instrument(name = "vm.create", skip_all, fields(vm_id = tracing::field::Empty))]
    pub async fn create(&self, req: CreateVm) -> Result<VmRecord, LifecycleError> {
        let plan = self.plan_create(&req).await?;
        self.check_create_space().await?;
        if plan.source.is_none() {
            let taken = self.take_from_pool(&req, &plan.image, plan.disk_size_mb);
            if let Some(vm) = taken.await? {
                tracing::Span::current().record("vm_id", vm.id.as_str());
                return Ok(vm);
            }
        }
        // A user snapshot's memory and disk, or the image's template's memory on a blank disk.
        let template = match plan.source {
            None => {
                let (cpu, mem) = (req.cpu, req.mem_mb);
                self.usable_template(&plan.image, cpu, mem, plan.disk_size_mb)
                    .await?
            }
            Some(_) => None,
        };
        let overlay = plan.source.as_ref().map(|(snap, _)| snap);
        let resume_from = overlay.or(template.as_ref().map(|(t, _)| t));
        let id = uuid::Uuid::new_v4().to_string();
        let secret_env = self.seal_secret_env(&id, &req.secret_env)?;
        let new = NewVm {
            id,
            cpu: req.cpu,
            mem_mb: req.mem_mb,
            disk_size_mb: plan.disk_size_mb,
            outbound_internet: req.outbound_internet,
            allow_ips: req.allow_ips,
            image_id: plan.image.id.clone(),
            source_snapshot_id: resume_from.map(|s| s.id.clone()),
            backend: self.inner.backend.capabilities().kind.as_str().to_string(),
            pool_role: None,
            timeout_sec: req.timeout_sec,
            timeout_action: req.timeout_action,
            metadata: req.metadata,
            secret_env,
            peer_links: req.peer_links,
        };
        let vm = {
            let _serial = self.inner.create_lock.lock().await;
            let s = &self.inner.settings;
            self.inner
                .db
                .create_vm(&new, s.max_vms, &s.subnet)
                .await
                .map_err(|e| match e {
                    CreateVmError::Quota(n) => LifecycleError::Quota(n),
                    CreateVmError::NoAddress => LifecycleError::NoAddress,
                    CreateVmError::Db(e) => LifecycleError::Db(e),
                })?
        };
        tracing::Span::current().record("vm_id", vm.id.as_str());
        tracing::info!(vm_id = %vm.id, cpu = vm.cpu, mem_mb = vm.mem_mb, "vm.created");
        self.created_event(&vm, false);
        let guard = self.begin_op(&vm.id, "create")?;
        let restored = match resume_from {
            Some(snap) => self.memory_restore(&vm, &plan.image, snap, &guard).await?,
            None => false,
        };
        if !restored {
            if overlay.is_none() && template.is_some() {
                self.inner.db.clear_source_snapshot(&vm.id).await?;
            }
            self.boot_vm(&vm, &plan.image, overlay, &guard, VmState::Error)
                .await?;
        }
        self.pool_wanted();
        self.get(&vm.id).await
    }

    /// 507 before anything is made when `STORAGE_ROOT` has less than [`CREATE_FREE_FLOOR`] left:
    /// disks are sparse, so a create would succeed on a full host and its guest would meet write
    /// errors from its first boot on.
    async fn check_create_space(&self) -> Result<(), LifecycleError> {
        let free = self.inner.storage.free_bytes().await;
        match free {
            Ok(free) if free < CREATE_FREE_FLOOR => {
                tracing::warn!(
                    free,
                    floor = CREATE_FREE_FLOOR,
                    "create refused: STORAGE_ROOT full"
                );
                Err(LifecycleError::NoSpace)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(LifecycleError::Internal(format!(
                "free space of STORAGE_ROOT: {e}"
            ))),
        }
    }

    /// Image, snapshot and disk size, checked in the order of `docs/reference/api.md` §3.3: lookups
    /// (404) before rules (400).
    async fn plan_create(&self, req: &CreateVm) -> Result<Plan, LifecycleError> {
        let db = &self.inner.db;
        let named = match &req.image_id {
            Some(id) => Some(
                db.get_image(id)
                    .await?
                    .ok_or(LifecycleError::ImageNotFound)?,
            ),
            None => None,
        };
        let source = match &req.snapshot_id {
            Some(id) => Some(self.hold_overlay(id).await?),
            None => None,
        };
        let image = match (named, &source) {
            (Some(image), _) => image,
            (None, Some((snap, _))) => db
                .get_image(&snap.image_id)
                .await?
                .ok_or(LifecycleError::ImageNotFound)?,
            (None, None) => db
                .default_image()
                .await?
                .ok_or(LifecycleError::NoDefaultImage)?,
        };
        let image = complete(image)?;
        self.check_links(None, &req.peer_links).await?;
        let mut disk_size_mb = req
            .disk_size_mb
            .unwrap_or(self.inner.settings.default_disk_mb);
        if let Some((snap, _)) = &source {
            if snap.kind != SnapshotKind::UserOverlay {
                return Err(LifecycleError::NotAnOverlay);
            }
            if snap.image_id != image.id {
                return Err(LifecycleError::SnapshotImageMismatch {
                    snapshot: snap.image_id.clone(),
                    vm: image.id.clone(),
                });
            }
            disk_size_mb = req.disk_size_mb.unwrap_or(snap.disk_size_mb);
            if disk_size_mb < snap.disk_size_mb {
                return Err(LifecycleError::DiskSmallerThanSnapshot(snap.disk_size_mb));
            }
        }
        Ok(Plan {
            image,
            disk_size_mb,
            source,
        })
    }

    pub(super) async fn resolve_image(
        &self,
        id: Option<&str>,
    ) -> Result<ImageRecord, LifecycleError> {
        let image = match id {
            Some(id) => self
                .inner
                .db
                .get_image(id)
                .await?
                .ok_or(LifecycleError::ImageNotFound)?,
            None => self
                .inner
                .db
                .default_image()
                .await?
                .ok_or(LifecycleError::NoDefaultImage)?,
        };
        complete(image)
    }

    /// Disk (if missing: from `source`'s disk, else blank), VMM, readiness, RUNNING. On failure the
    /// VMM and run directory are gone and the VM is in `fail_state` with `lastError`; disk and logs
    /// stay for diagnosis.
    pub(super) async fn boot_vm(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        source: Option<&SnapshotRecord>,
        guard: &OpGuard,
        fail_state: VmState,
    ) -> Result<(), LifecycleError> {
        let mut launched = None;
        let result = self.try_boot(vm, image, source, guard, &mut launched).await;
        let Err(failed) = result else {
            return Ok(());
        };
        self.abandon_launch(vm, launched, "failed boot").await?;
        if failed.cancelled {
            return Err(LifecycleError::NoLongerRunning(vm.id.clone()));
        }
        let console = rds_vmm::process::tail_file(
            &self
                .inner
                .storage
                .logs_dir(&vm.id)
                .join(rds_vmm::LOG_CONSOLE),
            4096,
        );
        tracing::error!(vm_id = %vm.id, reason = %failed.reason, console_tail = %console, "vm.error");
        self.vm_event(vm, EventType::VmError, json!({"message": failed.reason}));
        self.move_state(
            &vm.id,
            &[vm.state, VmState::Starting],
            fail_state,
            Some(&failed.reason),
        )
        .await?;
        Err(LifecycleError::BootFailed {
            id: vm.id.clone(),
            reason: failed.reason,
            cause: failed.cause,
        })
    }

    /// After a failed launch: the VMM (if any) killed and reaped, run directory, TAP and host rules
    /// removed, the recorded VMM identity cleared.
    pub(super) async fn abandon_launch(
        &self,
        vm: &VmRecord,
        launched: Option<VmRuntime>,
        when: &'static str,
    ) -> Result<(), LifecycleError> {
        let was_launched = launched.is_some();
        let rt = launched.unwrap_or_else(|| self.idle_runtime(&vm.id));
        self.inner.backend.kill(&rt).await;
        if was_launched {
            // Reap it: nothing else waits for a VMM whose launch failed.
            let reaped = self.inner.backend.wait_exit(&rt);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reaped).await;
        }
        if let Err(e) = self.inner.backend.cleanup(&rt).await {
            tracing::warn!(vm_id = %vm.id, error = %e, when, "cleanup");
        }
        self.detach_network_logged(vm, when).await;
        self.inner.db.clear_runtime(&vm.id).await?;
        Ok(())
    }

    async fn try_boot(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        source: Option<&SnapshotRecord>,
        guard: &OpGuard,
        launched: &mut Option<VmRuntime>,
    ) -> Result<(), Failed> {
        let started = std::time::Instant::now();
        let storage = &self.inner.storage;
        let disk = storage.disk_path(&vm.id);
        if !disk.exists() {
            async {
                match source {
                    Some(s) => {
                        let (from, to) = (s.disk_size_mb, vm.disk_size_mb);
                        storage.vm_disk_from_snapshot(&vm.id, &s.id, from, to).await
                    }
                    None => storage.create_vm_disk(&vm.id, vm.disk_size_mb).await,
                }
            }
            .instrument(info_span!("storage.provision_disk"))
            .await
            .map_err(Failed::host)?;
        }
        self.mark_starting(&vm.id, vm.state).await?;
        // Host rules before the VMM exists: a VM never runs with missing rules.
        self.attach_network(vm)
            .instrument(info_span!("net.attach"))
            .await?;
        let spec = self.spec_for(vm, image, disk);
        let backend = &self.inner.backend;
        let rt = async {
            backend.prepare(&spec).await?;
            backend.boot(&spec).await
        }
        .instrument(info_span!("vmm.boot"))
        .await
        .map_err(Failed::host)?;
        *launched = Some(rt.clone());
        self.inner
            .db
            .set_runtime(&vm.id, rt.pid, rt.start_time, &rt.boot_id)
            .await
            .map_err(Failed::host)?;
        self.wait_ready(&rt, &guard.cancel)
            .instrument(info_span!("agent.wait_ready"))
            .await?;
        self.provision_guest(vm, source.is_some())
            .instrument(info_span!("guest.provision"))
            .await?;
        // Before RUNNING: a VM seen RUNNING (by a client, or by a warm-pool take, which skips VMs
        // under an operation) has its peer trees already.
        self.setup_peers_at_start(vm).await;
        self.mark_running(&vm.id, "boot").await?;
        self.watch(rt);
        tracing::info!(vm_id = %vm.id, provision_mode = "boot", "vm.started");
        self.started_event(vm, "boot", started);
        Ok(())
    }

    /// Guest setup after readiness (`docs/reference/lifecycle.md` §2 step 5.5): the clock first, so
    /// everything the guest does later carries real timestamps; then the network and the guest
    /// firewall. A first boot on a snapshot's disk is reseeded too: the disk carries the source's
    /// `/etc/machine-id`, which every clone would otherwise share.
    async fn provision_guest(&self, vm: &VmRecord, from_snapshot: bool) -> Result<(), Failed> {
        self.sync_clock(&vm.id).await?;
        if from_snapshot {
            self.reseed_entropy(&vm.id).await?;
        }
        self.configure_guest_network(vm).await
    }

    /// `/time/sync` with the host's clock.
    pub(super) async fn sync_clock(&self, id: &str) -> Result<(), Failed> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let sync = rds_protocol::TimeSyncRequest {
            unix_time_ms: now.as_millis() as u64,
        };
        self.agent_for(id)
            .call_no_content(rds_protocol::paths::TIME_SYNC, Some(&sync))
            .await?;
        Ok(())
    }

    pub(super) fn spec_for(&self, vm: &VmRecord, image: &ImageRecord, disk: PathBuf) -> VmSpec {
        let s = &self.inner.settings;
        let storage = &self.inner.storage;
        let cmdline = format!(
            "console=ttyS0 reboot=k panic=1 root=/dev/vda ro rootfstype=ext4 \
             init=/usr/local/sbin/rds-init {}={} {}={} {}",
            rds_protocol::CMDLINE_AGENT_PORT,
            s.agent.port,
            rds_protocol::CMDLINE_DISK_WAIT_MS,
            s.disk_wait_ms,
            self.inner.net.cmdline_arg(vm),
        );
        VmSpec {
            vm_id: vm.id.clone(),
            cpu: vm.cpu,
            mem_mb: vm.mem_mb,
            kernel: image.kernel_path.clone().unwrap_or_default().into(),
            initrd: image.initrd_path.clone().map(Into::into),
            rootfs: image.rootfs_path.clone().unwrap_or_default().into(),
            disk,
            run_dir: storage.run_dir(&vm.id),
            logs_dir: storage.logs_dir(&vm.id),
            vsock_cid: vm.vsock_cid,
            cmdline,
            net: Some(self.inner.net.nic(vm)),
        }
    }
}

/// An image a VM can boot: kernel and rootfs present.
fn complete(image: ImageRecord) -> Result<ImageRecord, LifecycleError> {
    if image.kernel_path.is_none() || image.rootfs_path.is_none() {
        return Err(LifecycleError::ImageIncomplete);
    }
    Ok(image)
}

impl From<AgentError> for Failed {
    fn from(e: AgentError) -> Self {
        let cause = match e {
            AgentError::Timeout(_) => BootFailure::AgentTimeout,
            _ => BootFailure::AgentUnreachable,
        };
        Failed {
            reason: e.to_string(),
            cause,
            cancelled: false,
        }
    }
}
