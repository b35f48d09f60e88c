//! Reconciliation at manager start (`docs/reference/lifecycle.md` §5), before the API serves: the
//! DB, the VMM processes, the host network and `STORAGE_ROOT/vms/` are brought back in line.
//!
//! | DB state | VMM | Action |
//! |---|---|---|
//! | RUNNING | alive | re-adopt: backend `adopt`, host rules re-applied, `/health` within `VSOCK_HEALTH_TIMEOUT_MS` (else stop, `Agent not answering after manager restart`), watched again |
//! | RUNNING | gone | STOPPED, `VMM exited while the manager was down` |
//! | STARTING, STOPPING | any | killed if alive; STOPPED, `Interrupted by manager restart` |
//! | CREATED | – | STOPPED if the disk exists, else ERROR `Creation interrupted` |
//! | STOPPED, ERROR | – | no VMM, TAP, rules or run directory left |
//! | DELETED | – | files and address released (an interrupted destroy finished) |
//! | internal VMs | any | killed, removed, row deleted |
//!
//! A VMM is alive when the backend's `is_alive` confirms the stored pid, start time, boot id and
//! command-line marker, so a reused pid is never mistaken for a VM. Orphans — `rds-tap*` links
//! without a live VM (through `HostNet::reconcile`, which also rebuilds the nftables tables from
//! the live VMs in one transaction), run directories of VMs that are not running, per-VM
//! directories without a row, and VMM processes carrying this manager's marker without a live VM —
//! are removed. Snapshots are reconciled in `reconcile_snapshots.rs`.

use super::VmService;
use crate::db::reconcile::ReconcileRow;
use crate::db::DbError;
use crate::error_chain as chain;
use crate::model::VmState;
use rds_net::VmNet;
use rds_vmm::VmRuntime;
use std::collections::HashSet;
use std::time::Duration;

pub const EXITED_WHILE_DOWN: &str = "VMM exited while the manager was down";
pub const INTERRUPTED: &str = "Interrupted by manager restart";
pub const PAUSE_INTERRUPTED: &str = "Pause interrupted by manager restart; memory discarded";
pub const CREATION_INTERRUPTED: &str = "Creation interrupted";
pub const AGENT_SILENT: &str = "Agent not answering after manager restart";

/// What reconciliation did, for the startup log and tests.
#[derive(Debug, Default, Clone)]
pub struct ReconcileReport {
    /// RUNNING VMs whose VMM survived and whose agent answered.
    pub adopted: Vec<String>,
    /// VMs moved to STOPPED or ERROR, with the reason.
    pub stopped: Vec<(String, String)>,
    /// Orphan VMM and helper processes killed (pids).
    pub killed: Vec<u32>,
    /// Orphan TAPs deleted.
    pub removed_taps: Vec<String>,
    /// Run directories, per-VM directories and snapshot capture directories removed.
    pub removed_dirs: Vec<String>,
    /// Snapshot directories with a valid `meta.json` whose lost row was inserted again.
    pub registered_snapshots: Vec<String>,
    /// Snapshot rows whose files were gone.
    pub dropped_snapshots: Vec<String>,
}

/// Failures that stop the manager from starting.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("host network: {0}")]
    Net(String),
}

impl VmService {
    /// Runs the whole reconciliation. Per-VM problems are logged and do not stop it; a DB failure
    /// or a failed rebuild of the host network does.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        let rows = self.inner.db.reconcile_rows().await?;
        let mut candidates: Vec<(ReconcileRow, VmRuntime)> = Vec::new();
        for row in &rows {
            if let Some(rt) = self.alive_runtime(row) {
                if row.pool_role.is_none() && row.state == VmState::Running {
                    candidates.push((row.clone(), rt));
                    continue;
                }
            }
            self.settle(row, &mut report).await?;
        }

        // Host network: the surviving VMs' TAPs and rules, nothing else.
        let net = &self.inner.net;
        let live: Vec<VmNet> = candidates
            .iter()
            .map(|(r, _)| {
                net.vm_net(
                    r.guest_ip,
                    r.outbound_internet,
                    &r.allow_ips,
                    r.has_peer_links,
                )
            })
            .collect();
        let host = net
            .host()
            .reconcile(&live)
            .await
            .map_err(|e| ReconcileError::Net(chain(&e)))?;
        report.removed_taps = host.removed_taps;
        if !host.recreated_taps.is_empty() {
            tracing::warn!(taps = ?host.recreated_taps, "TAPs of live VMs were missing and were recreated");
        }

        // Adopt and check every survivor at once: one health timeout bounds the whole step.
        let checks = candidates.iter().map(|(row, rt)| self.readopt(row, rt));
        let results = futures::future::join_all(checks).await;
        let mut live_ids = HashSet::new();
        for ((row, rt), ok) in candidates.into_iter().zip(results) {
            if ok {
                self.watch(rt);
                live_ids.insert(row.id.clone());
                report.adopted.push(row.id);
            } else {
                self.shut_down(&rt).await;
                self.release_runtime(&row.id).await;
                self.remove_host_net(&row).await;
                self.inner
                    .db
                    .transition(&row.id, &[row.state], VmState::Stopped, Some(AGENT_SILENT))
                    .await?;
                report.stopped.push((row.id, AGENT_SILENT.into()));
            }
        }

        let known: HashSet<&str> = rows
            .iter()
            .filter(|r| r.state != VmState::Deleted)
            .map(|r| r.id.as_str())
            .collect();
        self.kill_orphan_processes(&live_ids, &mut report).await;
        self.remove_orphan_dirs(&live_ids, &known, &mut report)
            .await;
        self.reconcile_snapshots(&mut report).await?;
        tracing::info!(
            adopted = report.adopted.len(),
            stopped = report.stopped.len(),
            killed = ?report.killed,
            removed_taps = ?report.removed_taps,
            removed_dirs = ?report.removed_dirs,
            registered_snapshots = ?report.registered_snapshots,
            dropped_snapshots = ?report.dropped_snapshots,
            "reconciliation done"
        );
        Ok(report)
    }

    /// The stored VMM identity of a row, if the process still is that VMM.
    fn alive_runtime(&self, row: &ReconcileRow) -> Option<VmRuntime> {
        let rt = VmRuntime {
            vm_id: row.id.clone(),
            run_dir: self.inner.storage.run_dir(&row.id),
            logs_dir: self.inner.storage.logs_dir(&row.id),
            pid: row.vmm_pid?,
            start_time: row.vmm_start_time?,
            boot_id: row.vmm_boot_id.clone()?,
        };
        self.inner.backend.is_alive(&rt).then_some(rt)
    }

    /// Every row that is not a surviving RUNNING VM: kill what still runs, release the runtime and
    /// set the state the table of `docs/reconciliation.md` (Per state) asks for.
    async fn settle(
        &self,
        row: &ReconcileRow,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        let db = &self.inner.db;
        let id = row.id.as_str();
        if let Some(rt) = self.alive_runtime(row) {
            tracing::warn!(vm_id = %id, state = %row.state, pid = rt.pid, "killing the VMM of a VM that is not running");
            self.inner.backend.kill(&rt).await;
            let _ = tokio::time::timeout(Duration::from_secs(3), self.inner.backend.wait_exit(&rt))
                .await;
        }
        if row.pool_role.is_some() {
            self.release_runtime(id).await;
            self.remove_host_net(row).await;
            if let Err(e) = self.inner.storage.remove_vm(id).await {
                tracing::warn!(vm_id = %id, error = %e, "removing an internal VM's files");
            }
            db.delete_internal_vm(id).await?;
            report
                .stopped
                .push((row.id.clone(), "internal VM removed".into()));
            return Ok(());
        }
        let new_state = match row.state {
            VmState::Running => Some((VmState::Stopped, Some(EXITED_WHILE_DOWN))),
            VmState::Starting | VmState::Stopping => Some((VmState::Stopped, Some(INTERRUPTED))),
            VmState::Created if self.inner.storage.disk_path(id).exists() => {
                Some((VmState::Stopped, None))
            }
            VmState::Created => Some((VmState::Error, Some(CREATION_INTERRUPTED))),
            // A pause that finished keeps its memory for a resume; one cut short leaves only the
            // disk, which a start boots.
            VmState::Paused if self.inner.storage.paused_complete(id) => None,
            VmState::Paused => Some((VmState::Stopped, Some(PAUSE_INTERRUPTED))),
            VmState::Stopped | VmState::Error | VmState::Deleted => None,
        };
        if row.state == VmState::Deleted {
            // An interrupted destroy: files and address (the TAP and rules go with the host
            // rebuild).
            if self.inner.storage.vm_dir(id).exists() {
                if let Err(e) = self.inner.storage.remove_vm(id).await {
                    tracing::warn!(vm_id = %id, error = %e, "finishing a destroy");
                } else {
                    report.removed_dirs.push(format!("vms/{id}"));
                }
            }
            if db.release_address(id).await? > 0 {
                tracing::warn!(vm_id = %id, "address of a deleted VM released");
            }
            return Ok(());
        }
        if row.vmm_pid.is_some() || self.inner.storage.run_dir(id).exists() {
            self.release_runtime(id).await;
        }
        if let Some((state, reason)) = new_state {
            tracing::warn!(vm_id = %id, from = %row.state, to = %state, reason = reason.unwrap_or(""), "vm reconciled");
            db.transition(id, &[row.state], state, reason).await?;
            report
                .stopped
                .push((row.id.clone(), reason.unwrap_or("").to_string()));
        }
        Ok(())
    }

    /// Re-attaches a surviving VMM and waits for its agent's `/health`, bounded by
    /// `VSOCK_HEALTH_TIMEOUT_MS`.
    async fn readopt(&self, row: &ReconcileRow, rt: &VmRuntime) -> bool {
        if let Err(e) = self.inner.backend.adopt(rt).await {
            tracing::warn!(vm_id = %row.id, error = %e, "re-adopting the VMM");
            return false;
        }
        // A manager killed during a capture left the VM paused (on QEMU also without its vsock
        // device); resuming a running VM changes nothing.
        if let Err(e) = self.inner.backend.resume(rt).await {
            tracing::warn!(vm_id = %row.id, error = %e, "resuming a re-adopted VM");
        }
        let agent = self.agent_for(&row.id);
        let s = &self.inner.settings;
        let answered = tokio::time::timeout(s.health_timeout, async {
            loop {
                match agent.health_once().await {
                    Ok(h) if h.protocol == rds_protocol::PROTOCOL_VERSION => return true,
                    Ok(h) => {
                        tracing::warn!(vm_id = %row.id, protocol = h.protocol, "agent speaks another protocol");
                        return false;
                    }
                    Err(_) => tokio::time::sleep(s.agent.retry_delay).await,
                }
            }
        })
        .await
        .unwrap_or(false);
        if answered {
            tracing::info!(vm_id = %row.id, pid = rt.pid, "vm re-adopted");
        } else {
            tracing::warn!(vm_id = %row.id, "agent not answering after manager restart; stopping");
        }
        answered
    }

    async fn remove_host_net(&self, row: &ReconcileRow) {
        let net = &self.inner.net;
        let vm = net.vm_net(
            row.guest_ip,
            row.outbound_internet,
            &row.allow_ips,
            row.has_peer_links,
        );
        if let Err(e) = net.host().remove_vm(&vm).await {
            tracing::warn!(vm_id = %row.id, error = %chain(&e), "removing host network");
        }
    }

    /// SIGKILLs the VMM and helper processes the backend claims for a VM that is not live
    /// ([`rds_vmm::VmmBackend::owner_of`]: only this manager's, never another storage root's).
    async fn kill_orphan_processes(&self, live: &HashSet<String>, report: &mut ReconcileReport) {
        let vms_dir = self.inner.storage.root().join("vms");
        let mut killed = Vec::new();
        for p in rds_vmm::process::list() {
            let Some(id) = self.inner.backend.owner_of(&p, &vms_dir) else {
                continue;
            };
            if live.contains(&id) {
                continue;
            }
            let cmd = p.args.first().map(String::as_str).unwrap_or("");
            tracing::warn!(pid = p.pid, vm_id = %id, cmd, "killing an orphan VMM process");
            rds_vmm::process::signal(p.pid, libc::SIGKILL);
            killed.push(p.pid);
        }
        for &pid in &killed {
            // Reaps it when it is our child (a manager restarted in-process); bounded either way.
            let _ = tokio::time::timeout(Duration::from_secs(2), rds_vmm::process::wait_exit(pid))
                .await;
        }
        report.killed.extend(killed);
    }

    /// Run directories of VMs that are not running, and per-VM directories whose VM has no row
    /// (or only a tombstone).
    async fn remove_orphan_dirs(
        &self,
        live: &HashSet<String>,
        known: &HashSet<&str>,
        report: &mut ReconcileReport,
    ) {
        let storage = &self.inner.storage;
        let Ok(entries) = std::fs::read_dir(storage.root().join("vms")) else {
            return;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if live.contains(&id) {
                continue;
            }
            if !known.contains(id.as_str()) {
                tracing::warn!(vm_id = %id, "removing a VM directory without a VM");
                if let Err(e) = self.inner.backend.cleanup(&self.idle_runtime(&id)).await {
                    tracing::warn!(vm_id = %id, error = %e, "cleanup of an orphan run directory");
                }
                match storage.remove_vm(&id).await {
                    Ok(()) => report.removed_dirs.push(format!("vms/{id}")),
                    Err(e) => {
                        tracing::warn!(vm_id = %id, error = %e, "removing an orphan VM directory")
                    }
                }
                continue;
            }
            if storage.run_dir(&id).exists() {
                match self.inner.backend.cleanup(&self.idle_runtime(&id)).await {
                    Ok(()) => report.removed_dirs.push(format!("vms/{id}/run")),
                    Err(e) => {
                        tracing::warn!(vm_id = %id, error = %e, "removing an orphan run directory")
                    }
                }
            }
        }
    }
}
