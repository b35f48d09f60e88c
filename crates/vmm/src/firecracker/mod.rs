//! Firecracker backend (`docs/reference/vmm-backends.md` §4), always launched through the jailer.
//!
//! `prepare` builds the VM's jail: `<JAILER_CHROOT_BASE_DIR>/firecracker/<vmId>/root/` with hard links
//! to the kernel, initramfs, base rootfs and writable disk, and FIFOs for Firecracker's log, metrics and
//! serial output, which drain tasks append to `logs/`. The VM's run directory `vms/<id>/run` becomes a
//! symlink to the jail root, so the hybrid-vsock socket keeps its backend-neutral name `<run>/v.sock`.
//! `boot` runs the jailer (which copies the binary in, makes `dev/kvm` and `dev/net/tun`, joins the
//! cgroup, pivots, drops to `JAILER_UID`, and spawns Firecracker as PID 1 of a new PID namespace, writing
//! its host pid to `firecracker.pid`), then configures the VM through the API in the order of
//! `docs/reference/vmm-backends.md` §4.2. Nothing per VM is kept in memory but the drain tasks:
//! every operation works from the [`VmRuntime`] and the jail.

mod api;
pub mod args;
pub mod cgroup;
mod drain;
pub mod jail;
mod launcher;

pub use cgroup::CgroupV2;
pub use jail::Jail;
pub use launcher::{JailerLauncher, LaunchPlan, Launcher};

use crate::transcript::Transcript;
use crate::{
    process, Accel, BackendKind, Capabilities, ExitStatus, KernelFormat, VmRuntime, VmSpec,
    VmmBackend, VmmError, LOG_CONSOLE, LOG_VMM, LOG_VMM_STDERR,
};
use api::{ApiClient, CALL_TIMEOUT, SNAPSHOT_TIMEOUT};
use args::Call;
use async_trait::async_trait;
use drain::DrainSet;
use jail::Input;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Firecracker's metrics (one JSON object a minute), drained from `metrics.fifo`.
pub const LOG_METRICS: &str = "metrics.log";

/// Log levels Firecracker's logger accepts (`FIRECRACKER_LOG_LEVEL`).
pub const LOG_LEVELS: [&str; 6] = ["Error", "Warning", "Info", "Debug", "Trace", "Off"];

#[derive(Debug, Clone)]
pub struct FirecrackerConfig {
    /// Absolute; the jailer copies it into each jail and names the jail directory after it.
    pub firecracker_bin: PathBuf,
    pub jailer_bin: PathBuf,
    /// `JAILER_CHROOT_BASE_DIR`: absolute, on the filesystem of `STORAGE_ROOT`.
    pub chroot_base_dir: PathBuf,
    /// `JAILER_UID`, `JAILER_GID`: Firecracker runs as these (never 0).
    pub runas: (u32, u32),
    /// `FIRECRACKER_LOG_LEVEL`.
    pub log_level: String,
}

impl FirecrackerConfig {
    /// The last component of `firecracker_bin` (the jailer's `exec_file_name`).
    pub fn exec_name(&self) -> String {
        self.firecracker_bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "firecracker".into())
    }

    /// Startup checks that need no process: absolute paths, the binary's name, the log level, and that
    /// the longest socket of a UUID-named VM fits in `sun_path`. Errors name the variable at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (var, p) in [
            ("FIRECRACKER_BIN", &self.firecracker_bin),
            ("JAILER_BIN", &self.jailer_bin),
            ("JAILER_CHROOT_BASE_DIR", &self.chroot_base_dir),
        ] {
            if !p.is_absolute() {
                return Err((var, format!("{} is not an absolute path", p.display())));
            }
        }
        if !self.exec_name().contains("firecracker") {
            // The jailer refuses other names.
            return Err((
                "FIRECRACKER_BIN",
                format!(
                    "the file name of {} must contain \"firecracker\" (a jailer rule)",
                    self.firecracker_bin.display()
                ),
            ));
        }
        if !LOG_LEVELS.contains(&self.log_level.as_str()) {
            return Err((
                "FIRECRACKER_LOG_LEVEL",
                format!("{:?} is not one of {LOG_LEVELS:?}", self.log_level),
            ));
        }
        if self.runas.0 == 0 || self.runas.1 == 0 {
            return Err((
                "JAILER_UID",
                "Firecracker never runs as uid or gid 0".into(),
            ));
        }
        let sample = args::jail_of(self, "00000000-0000-0000-0000-000000000000");
        sample
            .check_socket_paths()
            .map_err(|e| ("JAILER_CHROOT_BASE_DIR", e.to_string()))
    }
}

/// Both binaries are executable files and statically linked (the jailer execs Firecracker in a
/// chroot without a loader): the selection's verdict and `/readyz`'s check.
pub fn check_binaries(firecracker: &Path, jailer: &Path) -> Result<(), String> {
    let programs = [("FIRECRACKER_BIN", firecracker), ("JAILER_BIN", jailer)];
    crate::select::check_executables(&programs)?;
    crate::elf::check_static(&programs)
}

/// How long Firecracker may take to create its API socket after the launcher returned.
const API_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);
/// Bytes of a log quoted in errors (`lastError` holds 2 KiB).
const LOG_TAIL: usize = 600;
const STDERR_TAIL: u64 = 1536;

pub struct FirecrackerBackend {
    cfg: FirecrackerConfig,
    caps: Capabilities,
    launcher: Arc<dyn Launcher>,
    cgroup: Option<CgroupV2>,
    drains: DrainSet,
}

impl FirecrackerBackend {
    /// The production backend: validates the configuration, runs `<firecracker_bin> --version` (the
    /// version recorded in snapshots), sets up cgroup `rds` where the host offers cgroup v2 controllers
    /// (else warns), and launches through the jailer (making this process a child subreaper).
    pub fn new(cfg: FirecrackerConfig) -> Result<FirecrackerBackend, VmmError> {
        if let Err((var, reason)) = cfg.validate() {
            return Err(VmmError::Spawn {
                program: cfg.firecracker_bin.display().to_string(),
                source: std::io::Error::other(format!("{var}: {reason}")),
            });
        }
        let version = firecracker_version(&cfg.firecracker_bin)?;
        let cgroup = match CgroupV2::detect().and_then(|cg| cg.ensure_parent().map(|()| cg)) {
            Ok(cg) => Some(cg),
            Err(reason) => {
                tracing::warn!(%reason, "no cgroup v2 limits for Firecracker VMs");
                None
            }
        };
        let launcher = Arc::new(JailerLauncher::new(cfg.jailer_bin.clone()));
        Ok(Self::with_launcher(cfg, launcher, version, cgroup))
    }

    /// A backend with its own launcher and no probing (contract tests use this with a fake API).
    pub fn with_launcher(
        cfg: FirecrackerConfig,
        launcher: Arc<dyn Launcher>,
        vmm_version: String,
        cgroup: Option<CgroupV2>,
    ) -> FirecrackerBackend {
        let caps = Capabilities {
            kind: BackendKind::Firecracker,
            vmm_version,
            accel: Accel::Kvm,
            supports_memory_snapshots: true,
            supports_graceful_shutdown: true,
            kernel_formats: vec![KernelFormat::Elf],
        };
        FirecrackerBackend {
            cfg,
            caps,
            launcher,
            cgroup,
            drains: DrainSet::default(),
        }
    }

    pub fn config(&self) -> &FirecrackerConfig {
        &self.cfg
    }

    /// The jail of `vm_id`.
    pub fn jail(&self, vm_id: &str) -> Jail {
        args::jail_of(&self.cfg, vm_id)
    }

    /// The jailer's arguments for `spec`, as `boot` runs them (without the binary).
    pub fn jailer_args(&self, spec: &VmSpec) -> Vec<std::ffi::OsString> {
        args::jailer_args(&self.cfg, spec, self.cgroup.as_ref())
    }

    fn check_paths(&self, spec_id: &str, run_dir: &Path) -> Result<Jail, VmmError> {
        check_vm_id(spec_id)?;
        let jail = self.jail(spec_id);
        jail.check_socket_paths()?;
        crate::fsutil::check_socket_path(&jail::listener(&crate::agent_socket(run_dir)))?;
        Ok(jail)
    }

    fn fifo_pairs(jail: &Jail, logs: &Path) -> Vec<(PathBuf, PathBuf)> {
        vec![
            (jail.host(jail::LOG_FIFO), logs.join(LOG_VMM)),
            (jail.host(jail::METRICS_FIFO), logs.join(LOG_METRICS)),
            (jail.host(jail::CONSOLE_FIFO), logs.join(LOG_CONSOLE)),
        ]
    }

    /// The API client of a live VM.
    fn client(&self, vm: &VmRuntime) -> Result<ApiClient, VmmError> {
        if !self.is_alive(vm) {
            return Err(VmmError::Gone);
        }
        Ok(self.client_unchecked(&vm.vm_id, &vm.logs_dir))
    }

    fn client_unchecked(&self, vm_id: &str, logs: &Path) -> ApiClient {
        ApiClient::new(&self.jail(vm_id).api_sock(), logs.join(LOG_VMM))
    }

    /// Sends one call; a rejection gets the tail of Firecracker's log attached.
    async fn call(
        &self,
        client: &ApiClient,
        vm_id: &str,
        logs: &Path,
        call: &Call,
        limit: Duration,
    ) -> Result<api::Answer, VmmError> {
        let mut r = client.send(call, limit).await;
        if let Err(VmmError::Api { log_tail, .. }) = &mut r {
            *log_tail = self.log_tail(vm_id, logs);
        }
        r
    }

    /// Firecracker's latest log lines (drained right now), else the tail of `vmm.stderr.log`.
    fn log_tail(&self, vm_id: &str, logs: &Path) -> String {
        let jail = self.jail(vm_id);
        drain::drain_now(&jail.host(jail::LOG_FIFO), &logs.join(LOG_VMM));
        let text = process::tail_file(&logs.join(LOG_VMM), 16 * 1024);
        // Our own transcript lines (`<ts> -> …`, `<ts> <- …`, `<ts> -- …`) are not Firecracker's log.
        let fc: Vec<&str> = text
            .lines()
            .filter(|l| {
                let dir = l.split_whitespace().nth(1).unwrap_or("");
                !l.trim().is_empty() && !matches!(dir, "->" | "<-" | "--")
            })
            .collect();
        let mut tail = String::new();
        for line in fc.iter().rev() {
            if tail.len() + line.len() + 3 > LOG_TAIL {
                break;
            }
            tail = if tail.is_empty() {
                line.trim().to_string()
            } else {
                format!("{} | {tail}", line.trim())
            };
        }
        if tail.is_empty() {
            let err = process::tail_file(&logs.join(LOG_VMM_STDERR), LOG_TAIL as u64);
            tail = err.trim().replace('\n', " | ");
        }
        tail
    }

    /// Launches the VMM into a prepared jail, runs `calls`, and returns the running VM. On any failure
    /// the VMM is killed and the jail removed (logs kept), so nothing is left behind.
    async fn start(
        &self,
        spec: &VmSpec,
        jail: &Jail,
        calls: &[Call],
    ) -> Result<VmRuntime, VmmError> {
        let transcript = Transcript::new(spec.logs_dir.join(LOG_VMM));
        self.drains
            .ensure(&spec.vm_id, &Self::fifo_pairs(jail, &spec.logs_dir));
        let vm = match self.launch(spec, jail, &transcript).await {
            Ok(vm) => vm,
            Err(e) => {
                transcript.record("--", &format!("launch failed: {e}"));
                self.discard(&spec.vm_id, &spec.run_dir).await;
                return Err(e);
            }
        };
        let client = self.client_unchecked(&spec.vm_id, &spec.logs_dir);
        for call in calls {
            let limit = if call.path.starts_with("/snapshot") {
                SNAPSHOT_TIMEOUT
            } else {
                CALL_TIMEOUT
            };
            if let Err(e) = self
                .call(&client, &spec.vm_id, &spec.logs_dir, call, limit)
                .await
            {
                transcript.record("--", &format!("{e}; killing pid {}", vm.pid));
                process::signal(vm.pid, libc::SIGKILL);
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), process::wait_exit(vm.pid)).await;
                self.discard(&spec.vm_id, &spec.run_dir).await;
                return Err(e);
            }
        }
        Ok(vm)
    }

    async fn launch(
        &self,
        spec: &VmSpec,
        jail: &Jail,
        transcript: &Transcript,
    ) -> Result<VmRuntime, VmmError> {
        let plan = LaunchPlan {
            vm_id: spec.vm_id.clone(),
            jail_root: jail.root.clone(),
            api_sock: jail.api_sock(),
            pid_file: jail.pid_file(),
            stderr_log: spec.logs_dir.join(LOG_VMM_STDERR),
            jailer_args: self.jailer_args(spec),
        };
        let started = Instant::now();
        let pid = self.launcher.launch(&plan).await?;
        // Read now: a process that already died keeps its stat entry until reaped.
        let start_time = process::start_time(pid).unwrap_or(0);
        let vm = VmRuntime {
            vm_id: spec.vm_id.clone(),
            run_dir: spec.run_dir.clone(),
            logs_dir: spec.logs_dir.clone(),
            pid,
            start_time,
            boot_id: process::boot_id().unwrap_or_default(),
        };
        transcript.record(
            "--",
            &format!("firecracker pid {pid} launched for {}", spec.vm_id),
        );
        let ready = tokio::select! {
            status = process::wait_exit(pid) => Err(VmmError::DiedDuringLaunch {
                status,
                stderr_tail: process::tail_file(&plan.stderr_log, STDERR_TAIL).trim().to_string(),
            }),
            r = wait_api(&plan.api_sock) => r,
        };
        if let Err(e) = ready {
            process::signal(pid, libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(2), process::wait_exit(pid)).await;
            return Err(e);
        }
        tracing::debug!(
            vm_id = %spec.vm_id,
            ms = started.elapsed().as_millis() as u64,
            "firecracker API socket answers"
        );
        Ok(vm)
    }

    /// Removes the jail, the run-directory link and the cgroup, after the drains moved what they hold.
    async fn discard(&self, vm_id: &str, run_dir: &Path) -> Vec<VmmError> {
        self.drains.stop(vm_id).await;
        let mut errors = Vec::new();
        let jail = self.jail(vm_id);
        if let Err(e) = crate::fsutil::remove_dir(&jail.dir).await {
            errors.push(e);
        }
        if let Err(e) = remove_run_dir(run_dir).await {
            errors.push(e);
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.remove_vm(vm_id).await {
                errors.push(VmmError::io("remove cgroup", cg.vm_dir(vm_id), e));
            }
        }
        errors
    }

    /// The pid still has the start time and boot we recorded (a zombie qualifies, unlike `is_alive`).
    fn same_start(vm: &VmRuntime) -> bool {
        vm.pid != 0
            && process::boot_id().ok().as_deref() == Some(vm.boot_id.as_str())
            && process::start_time(vm.pid).ok() == Some(vm.start_time)
    }

    /// SIGKILLs a Firecracker left from an earlier run of this VM id (found through the old pid file,
    /// checked by its command line) before its jail is rebuilt.
    async fn kill_leftover(&self, jail: &Jail, vm_id: &str) {
        let Ok(text) = std::fs::read_to_string(jail.pid_file()) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return;
        };
        let names_vm = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter().any(|a| a.contains(&self.cfg.exec_name()))
                && args.iter().any(|a| a.contains(vm_id))
        });
        if names_vm && pid > 1 {
            process::signal(pid, libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(2), process::wait_exit(pid)).await;
        }
    }
}

/// Firecracker requires ids of 1–64 ASCII letters, digits and hyphens; they also name host paths.
fn check_vm_id(id: &str) -> Result<(), VmmError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(VmmError::io(
            "invalid VM id for the jailer (1-64 letters, digits, hyphens)",
            id,
            std::io::ErrorKind::InvalidInput.into(),
        ))
    }
}

/// Polls until the API socket accepts a connection (no request is sent).
async fn wait_api(sock: &Path) -> Result<(), VmmError> {
    let deadline = Instant::now() + API_WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        match tokio::net::UnixStream::connect(sock).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(POLL).await;
    }
    Err(VmmError::Timeout {
        what: match last {
            Some(e) => format!("firecracker API socket {} ({e})", sock.display()),
            None => format!("firecracker API socket {}", sock.display()),
        },
        ms: API_WAIT.as_millis() as u64,
    })
}

/// `Firecracker v1.16.1` → `1.16.1`.
fn parse_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("Firecracker v"))?;
    let v = line.trim_start_matches("Firecracker v").trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn firecracker_version(bin: &Path) -> Result<String, VmmError> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|source| VmmError::Spawn {
            program: bin.display().to_string(),
            source,
        })?;
    parse_version(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| VmmError::Spawn {
        program: bin.display().to_string(),
        source: std::io::Error::other(format!(
            "--version printed no Firecracker version ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    })
}

fn touch(path: &Path) -> Result<(), VmmError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .map_err(|e| VmmError::io("create", path, e))
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<(), VmmError> {
    std::fs::create_dir_all(path).map_err(|e| VmmError::io("create", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VmmError::io("chmod", path, e))
}

/// `vms/<id>/run`: the link to the jail (or a QEMU run directory left from an earlier backend).
async fn remove_run_dir(run_dir: &Path) -> Result<(), VmmError> {
    match std::fs::symlink_metadata(run_dir) {
        Ok(m) if m.is_dir() => crate::fsutil::remove_dir(run_dir).await,
        Ok(_) => jail::remove_file(run_dir),
        Err(_) => Ok(()),
    }
}

/// Builds the jail of `spec` from nothing (blocking file work).
fn build_jail(jail: &Jail, spec: &VmSpec, owner: (u32, u32)) -> Result<(), VmmError> {
    // `<base>/<exec>/<id>` is root's (0700); the jailer chowns the root below it to the VMM uid.
    if let Some(parent) = jail.dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| VmmError::io("create", parent, e))?;
    }
    mkdir_mode(&jail.dir, 0o700)?;
    mkdir_mode(&jail.root, 0o700)?;
    std::os::unix::fs::chown(&jail.root, Some(owner.0), Some(owner.1))
        .map_err(|e| VmmError::io("chown", &jail.root, e))?;
    jail::link_in(
        &spec.kernel,
        &jail.host(jail::KERNEL),
        Input::ReadOnly,
        owner,
    )?;
    if let Some(initrd) = &spec.initrd {
        jail::link_in(initrd, &jail.host(jail::INITRD), Input::ReadOnly, owner)?;
    }
    jail::link_in(
        &spec.rootfs,
        &jail.host(jail::ROOTFS),
        Input::ReadOnly,
        owner,
    )?;
    let disk = jail.host(jail::DISK);
    jail::link_in(&spec.disk, &disk, Input::Writable, owner)?;
    // The VM's own disk: 0600, owned by the VMM uid (`docs/reference/lifecycle.md` §6); the link
    // shares the inode.
    std::os::unix::fs::chown(&disk, Some(owner.0), Some(owner.1))
        .map_err(|e| VmmError::io("chown", &disk, e))?;
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| VmmError::io("chmod", &disk, e))?;
    for fifo in [jail::LOG_FIFO, jail::METRICS_FIFO, jail::CONSOLE_FIFO] {
        jail::make_fifo(&jail.host(fifo), owner)?;
    }
    Ok(())
}

/// Moves a file Firecracker wrote in the jail to `dst`, read-only and root's, so no VMM (all share one
/// uid) can change it later (`mem.snap` is mapped privately by every restore).
fn take_out(src: &Path, dst: &Path) -> Result<(), VmmError> {
    match std::fs::rename(src, dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(src, dst).map_err(|e| VmmError::io("copy snapshot file", src, e))?;
            jail::remove_file(src)?;
        }
        Err(e) => return Err(VmmError::io("move snapshot file", src, e)),
    }
    std::fs::File::open(dst)
        .and_then(|f| f.sync_all())
        .map_err(|e| VmmError::io("sync", dst, e))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| VmmError::io("chmod", dst, e))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(dst, Some(0), Some(0))
            .map_err(|e| VmmError::io("chown", dst, e))?;
    }
    Ok(())
}

#[async_trait]
impl VmmBackend for FirecrackerBackend {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn check(&self) -> Result<(), String> {
        check_binaries(&self.cfg.firecracker_bin, &self.cfg.jailer_bin)
    }

    fn owner_of(&self, process: &crate::process::HostProcess, _vms_dir: &Path) -> Option<String> {
        // Its command line holds only jail paths; its root says which jail it runs in.
        let root = std::fs::read_link(format!("/proc/{}/root", process.pid)).ok()?;
        let base = &self.cfg.chroot_base_dir;
        jail::owner(
            process.arg_after("--id"),
            &root,
            base,
            &self.cfg.exec_name(),
        )
    }

    /// Clears leftovers (an old Firecracker of this id, its jail, cgroup and drains), builds the jail,
    /// makes the log files and links `run_dir` to the jail root. Starts nothing.
    async fn prepare(&self, spec: &VmSpec) -> Result<(), VmmError> {
        let jail = self.check_paths(&spec.vm_id, &spec.run_dir)?;
        for input in [&spec.kernel, &spec.rootfs, &spec.disk]
            .into_iter()
            .chain(spec.initrd.as_ref())
        {
            match std::fs::metadata(input) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(VmmError::io(
                        "missing input (not a file)",
                        input,
                        std::io::ErrorKind::InvalidInput.into(),
                    ))
                }
                Err(e) => return Err(VmmError::io("missing input", input, e)),
            }
        }
        self.kill_leftover(&jail, &spec.vm_id).await;
        if let Some(e) = self
            .discard(&spec.vm_id, &spec.run_dir)
            .await
            .into_iter()
            .next()
        {
            return Err(e);
        }
        let (j, s, owner) = (jail.clone(), spec.clone(), self.cfg.runas);
        let built = tokio::task::spawn_blocking(move || build_jail(&j, &s, owner))
            .await
            .unwrap_or_else(|e| {
                Err(VmmError::io(
                    "build jail",
                    &jail.dir,
                    std::io::Error::other(e),
                ))
            });
        if let Err(e) = built {
            let _ = crate::fsutil::remove_dir(&jail.dir).await;
            return Err(e);
        }
        std::fs::create_dir_all(&spec.logs_dir)
            .map_err(|e| VmmError::io("create", &spec.logs_dir, e))?;
        for log in [LOG_VMM, LOG_CONSOLE, LOG_VMM_STDERR, LOG_METRICS] {
            touch(&spec.logs_dir.join(log))?;
        }
        if let Some(parent) = spec.run_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| VmmError::io("create", parent, e))?;
        }
        std::os::unix::fs::symlink(&jail.root, &spec.run_dir)
            .map_err(|e| VmmError::io("link run directory to jail", &spec.run_dir, e))
    }

    async fn boot(&self, spec: &VmSpec) -> Result<VmRuntime, VmmError> {
        let jail = self.check_paths(&spec.vm_id, &spec.run_dir)?;
        if !jail.host(jail::LOG_FIFO).exists() {
            return Err(VmmError::io(
                "jail not prepared",
                &jail.root,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        self.start(spec, &jail, &args::boot_calls(&self.cfg.log_level, spec))
            .await
    }

    async fn pause(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        self.set_state(vm, "Paused", "Paused").await
    }

    async fn resume(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        self.set_state(vm, "Resumed", "Running").await
    }

    /// Ctrl-Alt-Del: guest init gets SIGINT and powers off; Firecracker exits on the reset. Firecracker
    /// itself never gets SIGTERM (PID 1 of its namespace without a handler): the stop that follows a
    /// timeout is [`VmmBackend::kill`].
    async fn request_shutdown(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        let client = self.client(vm)?;
        self.call(
            &client,
            &vm.vm_id,
            &vm.logs_dir,
            &args::action("SendCtrlAltDel"),
            CALL_TIMEOUT,
        )
        .await
        .map(drop)
    }

    async fn kill(&self, vm: &VmRuntime) {
        if self.is_alive(vm) {
            process::signal(vm.pid, libc::SIGKILL);
            Transcript::new(vm.logs_dir.join(LOG_VMM))
                .record("--", &format!("SIGKILL firecracker pid {}", vm.pid));
        }
    }

    async fn wait_exit(&self, vm: &VmRuntime) -> ExitStatus {
        if !Self::same_start(vm) {
            return ExitStatus::Unknown;
        }
        process::wait_exit(vm.pid).await
    }

    /// Pid, start time and boot id as recorded, and the command line names the VM (the jailer passes
    /// `--id <vmId>` to Firecracker).
    fn is_alive(&self, vm: &VmRuntime) -> bool {
        process::is_same_process(vm.pid, vm.start_time, &vm.boot_id, &vm.vm_id)
    }

    /// Removes the jail (links, FIFOs, sockets, the binary copy, `dev/`), the run-directory link and
    /// `rds/<vmId>`; keeps `logs/`. Idempotent.
    async fn cleanup(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        match self
            .discard(&vm.vm_id, &vm.run_dir)
            .await
            .into_iter()
            .next()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `PUT /snapshot/create` into the jail, then both files moved to `dir` (0444). The VM must be
    /// paused and stays paused.
    async fn snapshot_create(&self, vm: &VmRuntime, dir: &Path) -> Result<(), VmmError> {
        let client = self.client(vm)?;
        let jail = self.jail(&vm.vm_id);
        let files = [
            (jail.host(jail::VMSTATE_SNAP), dir.join("vmstate.snap")),
            (jail.host(jail::MEM_SNAP), dir.join("mem.snap")),
        ];
        for (src, _) in &files {
            jail::remove_file(src)?;
        }
        let r = self
            .call(
                &client,
                &vm.vm_id,
                &vm.logs_dir,
                &args::snapshot_create(),
                SNAPSHOT_TIMEOUT,
            )
            .await;
        if let Err(e) = r {
            for (src, _) in &files {
                let _ = jail::remove_file(src);
            }
            return Err(e);
        }
        tokio::task::spawn_blocking(move || {
            files.iter().try_for_each(|(src, dst)| take_out(src, dst))
        })
        .await
        .unwrap_or_else(|e| Err(VmmError::io("move snapshot", dir, std::io::Error::other(e))))
    }

    /// Links `mem.snap` and `vmstate.snap` into the prepared jail, deletes a stale `v.sock` (Firecracker
    /// refuses the load while it exists), then the log calls and `PUT /snapshot/load` with this VM's
    /// TAP and socket. A rejected load leaves nothing behind.
    async fn restore(&self, spec: &VmSpec, snapshot_dir: &Path) -> Result<VmRuntime, VmmError> {
        let jail = self.check_paths(&spec.vm_id, &spec.run_dir)?;
        if !jail.host(jail::LOG_FIFO).exists() {
            return Err(VmmError::io(
                "jail not prepared",
                &jail.root,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        let owner = self.cfg.runas;
        for (name, in_jail) in [
            ("mem.snap", jail::MEM_SNAP),
            ("vmstate.snap", jail::VMSTATE_SNAP),
        ] {
            let dst = jail.host(in_jail);
            jail::remove_file(&dst)?;
            if let Err(e) = jail::link_in(&snapshot_dir.join(name), &dst, Input::ReadOnly, owner) {
                self.discard(&spec.vm_id, &spec.run_dir).await;
                return Err(e);
            }
        }
        if let Err(e) = jail::remove_file(&jail.agent_sock()) {
            self.discard(&spec.vm_id, &spec.run_dir).await;
            return Err(e);
        }
        self.start(spec, &jail, &args::restore_calls(&self.cfg.log_level, spec))
            .await
    }

    async fn adopt(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        if !self.is_alive(vm) {
            return Err(VmmError::Gone);
        }
        let jail = self.jail(&vm.vm_id);
        self.drains
            .ensure(&vm.vm_id, &Self::fifo_pairs(&jail, &vm.logs_dir));
        Ok(())
    }
}

impl FirecrackerBackend {
    /// `PATCH /vm`; a repeat is no error: when Firecracker refuses, `GET /` decides whether the VM is
    /// already in the wanted state.
    async fn set_state(&self, vm: &VmRuntime, state: &str, want: &str) -> Result<(), VmmError> {
        let client = self.client(vm)?;
        let err = match self
            .call(
                &client,
                &vm.vm_id,
                &vm.logs_dir,
                &args::vm_state(state),
                CALL_TIMEOUT,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e @ VmmError::Api { .. }) => e,
            Err(e) => return Err(e),
        };
        let info = client.send(&args::instance_info(), CALL_TIMEOUT).await;
        let now = info.ok().and_then(|a| {
            serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()?
                .get("state")?
                .as_str()
                .map(str::to_string)
        });
        if now.as_deref() == Some(want) {
            return Ok(());
        }
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line() {
        let out = "Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0\n";
        assert_eq!(parse_version(out).as_deref(), Some("1.16.1"));
        assert_eq!(parse_version("nope"), None);
    }

    #[test]
    fn ids_the_jailer_accepts() {
        check_vm_id("6f1d2c1e-8f0a-4b8e-9a57-0c2f7d3b9e11").unwrap();
        for bad in ["", "a/b", "../x", "a_b", &"a".repeat(65)] {
            assert!(check_vm_id(bad).is_err(), "{bad}");
        }
    }

    fn cfg(base: &str) -> FirecrackerConfig {
        FirecrackerConfig {
            firecracker_bin: "/usr/local/bin/firecracker".into(),
            jailer_bin: "/usr/local/bin/jailer".into(),
            chroot_base_dir: base.into(),
            runas: (1234, 1234),
            log_level: "Warning".into(),
        }
    }

    #[test]
    fn validate_names_the_variable() {
        cfg("/var/lib/run-dat-sheesh/jailer").validate().unwrap();
        assert_eq!(
            cfg("jailer").validate().unwrap_err().0,
            "JAILER_CHROOT_BASE_DIR"
        );
        let long = format!("/{}", "d".repeat(41));
        let (var, why) = cfg(&long).validate().unwrap_err();
        assert_eq!(var, "JAILER_CHROOT_BASE_DIR");
        assert!(why.contains("socket path too long"), "{why}");
        let mut c = cfg("/j");
        c.log_level = "Verbose".into();
        assert_eq!(c.validate().unwrap_err().0, "FIRECRACKER_LOG_LEVEL");
        let mut c = cfg("/j");
        c.firecracker_bin = "/usr/bin/fc".into();
        assert_eq!(c.validate().unwrap_err().0, "FIRECRACKER_BIN");
        let mut c = cfg("/j");
        c.runas = (0, 0);
        assert_eq!(c.validate().unwrap_err().0, "JAILER_UID");
    }
}
