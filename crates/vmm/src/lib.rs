//! VMM backends (`docs/reference/vmm-backends.md`).
//!
//! The manager drives every VM through [`VmmBackend`]. A backend keeps no state of its own beyond the
//! VM's run directory and the [`VmRuntime`] the manager stores in its DB row, so a restarted manager can
//! take over any VM. The backend is chosen once at startup by [`select`]; nothing else asks which one it
//! got. This crate cannot see the manager's HTTP, DB or config types: its `Cargo.toml` is the import rule.

pub mod elf;
mod error;
pub mod firecracker;
mod fsutil;
pub mod probe;
pub mod process;
pub mod qemu;
pub mod select;
mod transcript;

pub use error::VmmError;
pub use select::{select, BackendChoice, Selection};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Firecracker,
    Qemu,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Firecracker => "firecracker",
            BackendKind::Qemu => "qemu",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelFormat {
    Elf,
    Bzimage,
}

#[derive(Debug, Clone)]
pub struct Capabilities {
    pub kind: BackendKind,
    /// Recorded in snapshots; a memory restore needs the same version.
    pub vmm_version: String,
    pub accel: Accel,
    pub supports_memory_snapshots: bool,
    pub supports_graceful_shutdown: bool,
    pub kernel_formats: Vec<KernelFormat>,
}

/// Everything a backend needs to launch one VM. Paths are absolute host paths.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub vm_id: String,
    pub cpu: u32,
    pub mem_mb: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Base root filesystem, attached read-only as `vda`.
    pub rootfs: PathBuf,
    /// The VM's writable disk, attached read-write as `vdb`.
    pub disk: PathBuf,
    /// Per-run directory (sockets, pid files); made by `prepare`, removed by `cleanup`.
    pub run_dir: PathBuf,
    /// `vmm.log`, `console.log`, `vmm.stderr.log` live here for the VM's whole life.
    pub logs_dir: PathBuf,
    pub vsock_cid: u32,
    /// The backend-neutral kernel command line (`docs/reference/agent-protocol.md` §1); backends
    /// add or drop their own parts.
    pub cmdline: String,
    pub net: Option<NetSpec>,
}

#[derive(Debug, Clone)]
pub struct NetSpec {
    pub tap: String,
    pub mac: String,
}

/// What identifies a launched VM across manager restarts; stored in the VM's DB row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRuntime {
    pub vm_id: String,
    pub run_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`, guards against pid reuse.
    pub start_time: u64,
    /// The host's boot id when the VMM was started.
    pub boot_id: String,
}

impl VmRuntime {
    /// The hybrid-vsock Unix socket of this VM (same name on every backend).
    pub fn agent_socket(&self) -> PathBuf {
        agent_socket(&self.run_dir)
    }
}

/// `<run_dir>/v.sock`.
pub fn agent_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("v.sock")
}

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// The process was not our child (re-adopted), so its status cannot be read.
    Unknown,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => write!(f, "unknown status"),
        }
    }
}

pub const LOG_VMM: &str = "vmm.log";
pub const LOG_CONSOLE: &str = "console.log";
pub const LOG_VMM_STDERR: &str = "vmm.stderr.log";

#[async_trait]
pub trait VmmBackend: Send + Sync + 'static {
    fn capabilities(&self) -> &Capabilities;

    /// Whether the programs this backend starts are still executable files (`/readyz`): a stat per
    /// program, no process.
    fn check(&self) -> Result<(), String>;

    /// Make the run directory (clearing leftovers first) and log files. Starts nothing.
    async fn prepare(&self, spec: &VmSpec) -> Result<(), VmmError>;

    /// Start the VMM and its helpers and the guest; returns once the VMM accepted the configuration.
    /// Readiness of the agent is the caller's loop.
    async fn boot(&self, spec: &VmSpec) -> Result<VmRuntime, VmmError>;

    async fn pause(&self, vm: &VmRuntime) -> Result<(), VmmError>;

    /// As [`VmmBackend::pause`], for a [`VmmBackend::snapshot_create`] that follows. QEMU also unplugs
    /// the vsock device here, which it cannot migrate; [`VmmBackend::resume`] plugs it back. Either
    /// way the capture resets the agent's connections (guest listeners stay).
    async fn pause_for_snapshot(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        self.pause(vm).await
    }

    /// Runs the vCPUs again; after a snapshot, also brings the agent channel back.
    async fn resume(&self, vm: &VmRuntime) -> Result<(), VmmError>;

    /// Ask the guest to shut down; returns at once.
    async fn request_shutdown(&self, vm: &VmRuntime) -> Result<(), VmmError>;

    /// SIGKILL the VMM and its helpers. Idempotent.
    async fn kill(&self, vm: &VmRuntime);

    /// Resolves when the VMM process has exited.
    async fn wait_exit(&self, vm: &VmRuntime) -> ExitStatus;

    /// True if the stored pid still names this VM's VMM (pid, start time, boot id, command line).
    fn is_alive(&self, vm: &VmRuntime) -> bool;

    /// After exit: remove the run directory and helpers; keep `logs/`. Idempotent.
    async fn cleanup(&self, vm: &VmRuntime) -> Result<(), VmmError>;

    /// Writes the memory (`mem.snap`) and device/vCPU state (`vmstate.snap`) of a **paused** VM into
    /// `dir` (an existing directory on the storage filesystem); the VM stays paused. On failure the
    /// caller deletes partial files. Backends without memory snapshots return `Unsupported`.
    async fn snapshot_create(&self, vm: &VmRuntime, dir: &Path) -> Result<(), VmmError> {
        let _ = (vm, dir);
        Err(VmmError::Unsupported("memory snapshots"))
    }

    /// As [`VmmBackend::boot`] after [`VmmBackend::prepare`], but resumes the memory snapshot in
    /// `snapshot_dir` (`mem.snap`, `vmstate.snap`) with this VM's disk, TAP and agent socket. A rejected
    /// load leaves nothing running; the manager then cold-boots.
    async fn restore(&self, spec: &VmSpec, snapshot_dir: &Path) -> Result<VmRuntime, VmmError> {
        let _ = (spec, snapshot_dir);
        Err(VmmError::Unsupported("memory snapshots"))
    }

    /// Brings a silent agent channel back: the readiness loop calls it when connection requests to
    /// a booted guest get no answer at all (QEMU: the vsock device is unplugged and a new one is
    /// plugged into a fresh helper, as after a restore). Connections through the old channel are
    /// reset; guest listeners stay. The default does nothing.
    async fn repair_agent_channel(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        let _ = vm;
        Ok(())
    }

    /// The VM a host process belongs to, when it is a VMM or helper this backend starts for a VM
    /// whose files live under `vms_dir` (a manager's `STORAGE_ROOT/vms`): reconciliation kills the
    /// ones of VMs that are not live. Processes of other managers (other storage roots or jail
    /// bases) are never claimed.
    fn owner_of(&self, process: &process::HostProcess, vms_dir: &Path) -> Option<String>;

    /// Re-attaches what the backend runs beside a live VMM after a manager restart (Firecracker: the
    /// log FIFO drains). Call it for every VM that [`VmmBackend::is_alive`] confirmed. Idempotent.
    async fn adopt(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        let _ = vm;
        Ok(())
    }
}
