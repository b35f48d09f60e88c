//! QEMU backend (`docs/reference/vmm-backends.md` §5): `q35` machine, TCG or KVM, one
//! `vhost-device-vsock` helper per VM providing the hybrid-vsock socket, QMP for control, memory
//! snapshots as migrations to a file with the vsock device unplugged around them (`vsock.rs`,
//! `migrate.rs`).
//!
//! QEMU starts as root, opens its files, chroots into the VM's run directory and drops to the configured
//! uid:gid (`-runas` takes numeric `uid:gid` in 7.2). Both processes run in their own sessions with
//! output appended to `logs/vmm.stderr.log`, so they survive a manager restart. Nothing is cached in
//! memory per VM: every operation works from the [`VmRuntime`] and the run directory.

mod cmdline;
mod helper;
mod layout;
mod memory;
mod migrate;
mod owner;
mod qmp;
mod vsock;

use crate::{
    process, Accel, BackendKind, Capabilities, ExitStatus, KernelFormat, VmRuntime, VmSpec,
    VmmBackend, VmmError,
};
use async_trait::async_trait;
use cmdline::Start;
use layout::Layout;
use qmp::{Qmp, Transcript};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use cmdline::vm_name;

#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub qemu_bin: PathBuf,
    pub vhost_vsock_bin: PathBuf,
    pub accel: Accel,
    /// uid:gid QEMU and the helper drop to.
    pub runas: Option<(u32, u32)>,
    /// Host TSC in kHz, passed as `tsc_early_khz` under TCG.
    pub tsc_khz: Option<u64>,
}

/// How long QEMU may take to answer on QMP after it was started.
const QMP_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Bytes of `vmm.stderr.log` quoted in launch errors (`lastError` holds 2 KiB).
const STDERR_TAIL: u64 = 1536;

pub struct QemuBackend {
    cfg: QemuConfig,
    caps: Capabilities,
}

impl QemuBackend {
    /// Runs `<qemu_bin> --version` once; its answer is the VMM version recorded in snapshots.
    pub fn new(cfg: QemuConfig) -> Result<QemuBackend, VmmError> {
        let out = Command::new(&cfg.qemu_bin)
            .arg("--version")
            .output()
            .map_err(|source| VmmError::Spawn {
                program: cfg.qemu_bin.display().to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| VmmError::Spawn {
            program: cfg.qemu_bin.display().to_string(),
            source: std::io::Error::other(format!(
                "--version printed no QEMU version ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        })?;
        if cfg.accel == Accel::Tcg && cfg.tsc_khz.is_none() {
            tracing::warn!("host TSC frequency unknown: TCG guests may hang at TSC calibration");
        }
        let caps = Capabilities {
            kind: BackendKind::Qemu,
            vmm_version: version,
            accel: cfg.accel,
            // QEMU 7.2 cannot migrate a vhost-user-vsock device: captures unplug it (vsock.rs).
            supports_memory_snapshots: true,
            supports_graceful_shutdown: true,
            kernel_formats: vec![KernelFormat::Elf, KernelFormat::Bzimage],
        };
        Ok(QemuBackend { cfg, caps })
    }

    /// The full QEMU argument vector for `spec` (without the binary), as `boot` runs it.
    pub fn command_line(&self, spec: &VmSpec) -> Vec<std::ffi::OsString> {
        cmdline::qemu_args(&self.cfg, spec, Start::Boot)
    }

    async fn qmp(&self, vm: &VmRuntime) -> Result<Qmp, VmmError> {
        if !self.is_alive(vm) {
            return Err(VmmError::Gone);
        }
        let l = Layout::of_runtime(vm);
        Qmp::connect(&l.qmp_sock(), Transcript::new(l.vmm_log())).await
    }

    async fn command(&self, vm: &VmRuntime, command: &str) -> Result<(), VmmError> {
        let mut qmp = self.qmp(vm).await?;
        qmp.execute(command, None).await.map(drop)
    }

    /// Spawns QEMU on guest memory `ram` and waits until QMP answers. On any failure both processes
    /// are gone afterwards.
    async fn launch(
        &self,
        spec: &VmSpec,
        l: &Layout,
        start: Start,
        ram: std::os::fd::OwnedFd,
    ) -> Result<VmRuntime, VmmError> {
        let helper_pid = helper::spawn(&self.cfg, l, spec.vsock_cid)?;
        if let Err(e) = helper::wait_ready(helper_pid, l).await {
            helper::kill(l).await;
            return Err(e);
        }

        let mut cmd = Command::new(&self.cfg.qemu_bin);
        cmd.args(cmdline::qemu_args(&self.cfg, spec, start))
            .current_dir(&l.run_dir);
        process::inherit_fd(&mut cmd, ram.as_raw_fd(), memory::RAM_FD);
        let started = Instant::now();
        let pid =
            process::spawn_detached(&mut cmd, &l.stderr_log()).map_err(|source| VmmError::Spawn {
                program: self.cfg.qemu_bin.display().to_string(),
                source,
            });
        drop(ram);
        let pid = match pid {
            Ok(pid) => pid,
            Err(e) => {
                helper::kill(l).await;
                return Err(e);
            }
        };
        // Read now: a process that already died keeps its stat entry until reaped.
        let start_time = process::start_time(pid).unwrap_or(0);
        let boot_id = process::boot_id().unwrap_or_default();
        let vm = VmRuntime {
            vm_id: spec.vm_id.clone(),
            run_dir: spec.run_dir.clone(),
            logs_dir: spec.logs_dir.clone(),
            pid,
            start_time,
            boot_id,
        };
        Transcript::new(l.vmm_log()).record(
            "--",
            &format!(
                "qemu pid {pid} spawned for {}",
                cmdline::vm_name(&spec.vm_id)
            ),
        );

        let ready = tokio::select! {
            status = process::wait_exit(pid) => Err(VmmError::DiedDuringLaunch {
                status,
                stderr_tail: process::tail_file(&l.stderr_log(), STDERR_TAIL).trim().to_string(),
            }),
            r = self.wait_qmp(l) => r,
        };
        if let Err(e) = ready {
            process::signal(pid, libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(2), process::wait_exit(pid)).await;
            helper::kill(l).await;
            return Err(e);
        }
        tracing::debug!(
            vm_id = %spec.vm_id,
            ms = started.elapsed().as_millis() as u64,
            "qemu answers on QMP"
        );
        Ok(vm)
    }

    /// Polls the QMP socket until QEMU completes a handshake and reports its status.
    async fn wait_qmp(&self, l: &Layout) -> Result<(), VmmError> {
        let sock = l.qmp_sock();
        let deadline = Instant::now() + QMP_WAIT;
        let mut last: Option<VmmError> = None;
        while Instant::now() < deadline {
            if sock.exists() {
                match Qmp::connect(&sock, Transcript::new(l.vmm_log())).await {
                    Ok(mut qmp) => {
                        // Owned by root; nobody else may steer the VM.
                        let _ =
                            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
                        qmp.execute("query-status", None).await?;
                        return Ok(());
                    }
                    Err(e) => last = Some(e),
                }
            }
            tokio::time::sleep(POLL).await;
        }
        Err(VmmError::Timeout {
            what: match last {
                Some(e) => format!("QMP handshake ({e})"),
                None => format!("QMP socket {}", sock.display()),
            },
            ms: QMP_WAIT.as_millis() as u64,
        })
    }

    /// SIGKILLs a VM whose launch went wrong after QMP answered, reaps it and stops its helper.
    async fn discard(&self, vm: &VmRuntime) {
        process::signal(vm.pid, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(2), process::wait_exit(vm.pid)).await;
        helper::kill(&Layout::of_runtime(vm)).await;
    }

    /// Loads the snapshot into a QEMU waiting with `-incoming defer`, runs it and plugs the vsock
    /// device in. QEMU 7.2 exits when a load fails: its exit ends the wait early.
    async fn load_and_run(&self, vm: &VmRuntime, snapshot_dir: &Path) -> Result<(), VmmError> {
        let l = Layout::of_runtime(vm);
        let steps = async {
            let mut qmp = self.qmp(vm).await?;
            migrate::load(&mut qmp, snapshot_dir).await?;
            qmp.execute("cont", None).await?;
            vsock::attach_working(&mut qmp, &self.cfg, &l).await
        };
        let died = |status| VmmError::DiedDuringLaunch {
            status,
            stderr_tail: process::tail_file(&l.stderr_log(), STDERR_TAIL)
                .trim()
                .to_string(),
        };
        let failed = tokio::select! {
            status = process::wait_exit(vm.pid) => return Err(died(status)),
            r = steps => match r {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
        };
        // QMP breaking first is the usual sign of QEMU exiting on a bad state file: its stderr says why.
        match tokio::time::timeout(Duration::from_secs(1), process::wait_exit(vm.pid)).await {
            Ok(status) => Err(died(status)),
            Err(_) => Err(failed),
        }
    }

    /// The pid still has the start time and boot we recorded (a zombie qualifies, unlike `is_alive`).
    fn same_start(vm: &VmRuntime) -> bool {
        vm.pid != 0
            && process::boot_id().ok().as_deref() == Some(vm.boot_id.as_str())
            && process::start_time(vm.pid).ok() == Some(vm.start_time)
    }
}

/// A memfd for the guest's memory, filled from a snapshot's `mem.snap` when given (off the runtime:
/// a restore copies up to the guest's memory size).
async fn guest_memory(
    mem_mb: u32,
    from: Option<PathBuf>,
) -> Result<std::os::fd::OwnedFd, VmmError> {
    let what = from.clone().unwrap_or_else(|| "memfd".into());
    tokio::task::spawn_blocking(move || memory::create(mem_mb, from.as_deref()))
        .await
        .map_err(|e| VmmError::io("guest memory from", &what, std::io::Error::other(e)))?
        .map_err(|e| VmmError::io("guest memory from", &what, e))
}

/// `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` → `7.2.22 (Debian …)`.
fn parse_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains("QEMU emulator version"))?;
    let v = line.split("QEMU emulator version").nth(1)?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn touch(path: &Path) -> Result<(), VmmError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .map_err(|e| VmmError::io("create", path, e))
}

fn check_input(path: &Path) -> Result<(), VmmError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(VmmError::io(
            "missing input (not a file)",
            path,
            std::io::ErrorKind::InvalidInput.into(),
        )),
        Err(e) => Err(VmmError::io("missing input", path, e)),
    }
}

#[async_trait]
impl VmmBackend for QemuBackend {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn check(&self) -> Result<(), String> {
        // Both are resolved paths: the selection looked bare names up on PATH.
        crate::select::check_executables(&[
            ("QEMU_BIN", &self.cfg.qemu_bin),
            ("VHOST_VSOCK_BIN", &self.cfg.vhost_vsock_bin),
        ])
    }

    fn owner_of(&self, process: &crate::process::HostProcess, vms_dir: &Path) -> Option<String> {
        owner::owner_of(process, vms_dir)
    }

    async fn prepare(&self, spec: &VmSpec) -> Result<(), VmmError> {
        let l = Layout::of_spec(spec);
        l.check_socket_paths()?;
        for input in [&spec.kernel, &spec.rootfs, &spec.disk]
            .into_iter()
            .chain(spec.initrd.as_ref())
        {
            check_input(input)?;
        }
        // Leftovers of an earlier run: its helper (if it survived) and the whole directory.
        helper::kill(&l).await;
        crate::fsutil::remove_dir(&l.run_dir).await?;
        std::fs::create_dir_all(&l.run_dir).map_err(|e| VmmError::io("create", &l.run_dir, e))?;
        // The helper runs as the VMM uid and creates its sockets here; QEMU chroots into it.
        std::fs::set_permissions(&l.run_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| VmmError::io("chmod", &l.run_dir, e))?;
        if let Some((uid, gid)) = self.cfg.runas {
            std::os::unix::fs::chown(&l.run_dir, Some(uid), Some(gid))
                .map_err(|e| VmmError::io("chown", &l.run_dir, e))?;
        }
        // QEMU reopens the disk by name after dropping to the VMM uid (see cmdline.rs): link it in
        // and let that uid open it.
        std::fs::hard_link(&spec.disk, l.disk_link())
            .map_err(|e| VmmError::io("hard-link the disk into", &l.run_dir, e))?;
        if let Some((uid, gid)) = self.cfg.runas {
            std::os::unix::fs::chown(&spec.disk, Some(uid), Some(gid))
                .map_err(|e| VmmError::io("chown", &spec.disk, e))?;
        }
        std::fs::create_dir_all(&l.logs_dir).map_err(|e| VmmError::io("create", &l.logs_dir, e))?;
        for log in [l.vmm_log(), l.console_log(), l.stderr_log()] {
            touch(&log)?;
        }
        Ok(())
    }

    async fn boot(&self, spec: &VmSpec) -> Result<VmRuntime, VmmError> {
        let l = Layout::of_spec(spec);
        l.check_socket_paths()?;
        let ram = guest_memory(spec.mem_mb, None).await?;
        self.launch(spec, &l, Start::Boot, ram).await
    }

    async fn pause(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        self.command(vm, "stop").await
    }

    /// Unplugs the vsock device while the guest still runs (it must acknowledge the removal), stops
    /// its helper, then stops the vCPUs.
    async fn pause_for_snapshot(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        let mut qmp = self.qmp(vm).await?;
        vsock::detach(&mut qmp).await?;
        // `resume` plugs a new device into a new helper: re-plugs into the old one stayed silent
        // more often (vsock.rs).
        helper::kill(&Layout::of_runtime(vm)).await;
        qmp.execute("stop", None).await.map(drop)
    }

    /// Runs the vCPUs and, after a snapshot, plugs a vsock device in again (restarting the helper if
    /// it died meanwhile).
    async fn resume(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        let mut qmp = self.qmp(vm).await?;
        qmp.execute("cont", None).await?;
        if !vsock::present(&mut qmp).await? {
            vsock::attach_working(&mut qmp, &self.cfg, &Layout::of_runtime(vm)).await?;
        }
        Ok(())
    }

    /// A device plugged at boot can stay silent as a hot-plugged one can (vsock.rs): unplug it,
    /// retire its helper, plug a new device into a new one and check that it answers.
    async fn repair_agent_channel(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        let mut qmp = self.qmp(vm).await?;
        let layout = Layout::of_runtime(vm);
        vsock::detach(&mut qmp).await?;
        helper::kill(&layout).await;
        vsock::attach_working(&mut qmp, &self.cfg, &layout).await
    }

    /// Device state through the migration (`vmstate.snap`), then the memory (`mem.snap`), both
    /// while the VM stays paused.
    async fn snapshot_create(&self, vm: &VmRuntime, dir: &Path) -> Result<(), VmmError> {
        let mut qmp = self.qmp(vm).await?;
        migrate::save(&mut qmp, dir).await?;
        let (pid, mem) = (vm.pid, dir.join(memory::MEM_FILE));
        let path = mem.clone();
        tokio::task::spawn_blocking(move || memory::save(pid, &path))
            .await
            .map_err(|e| VmmError::io("write", &mem, std::io::Error::other(e)))?
            .map_err(|e| VmmError::io("write", &mem, e))
    }

    /// Starts QEMU with `-incoming defer` and no vsock device (the snapshot has none), loads
    /// `vmstate.snap` from `snapshot_dir`, runs the guest and plugs a vsock device in. The state file
    /// is read during the load only, so deleting the snapshot afterwards cannot touch this VM.
    async fn restore(&self, spec: &VmSpec, snapshot_dir: &Path) -> Result<VmRuntime, VmmError> {
        let l = Layout::of_spec(spec);
        l.check_socket_paths()?;
        let ram = guest_memory(spec.mem_mb, Some(snapshot_dir.join(memory::MEM_FILE))).await?;
        let vm = self.launch(spec, &l, Start::Incoming, ram).await?;
        if let Err(e) = self.load_and_run(&vm, snapshot_dir).await {
            self.discard(&vm).await;
            return Err(e);
        }
        Ok(vm)
    }

    /// Presses the ACPI power button; guest init treats it as SIGPWR and powers off.
    async fn request_shutdown(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        self.command(vm, "system_powerdown").await
    }

    async fn kill(&self, vm: &VmRuntime) {
        if self.is_alive(vm) {
            process::signal(vm.pid, libc::SIGKILL);
            Transcript::new(Layout::of_runtime(vm).vmm_log())
                .record("--", &format!("SIGKILL qemu pid {}", vm.pid));
        }
        helper::kill(&Layout::of_runtime(vm)).await;
    }

    async fn wait_exit(&self, vm: &VmRuntime) -> ExitStatus {
        if !Self::same_start(vm) {
            // Gone (and reaped) already, or the pid now names someone else.
            return ExitStatus::Unknown;
        }
        process::wait_exit(vm.pid).await
    }

    fn is_alive(&self, vm: &VmRuntime) -> bool {
        process::is_same_process(
            vm.pid,
            vm.start_time,
            &vm.boot_id,
            &cmdline::vm_name(&vm.vm_id),
        )
    }

    async fn cleanup(&self, vm: &VmRuntime) -> Result<(), VmmError> {
        let l = Layout::of_runtime(vm);
        helper::kill(&l).await;
        crate::fsutil::remove_dir(&l.run_dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_parsed_from_the_first_line() {
        let out = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n\
                   Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n";
        assert_eq!(
            parse_version(out).as_deref(),
            Some("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")
        );
        assert_eq!(parse_version("garbage"), None);
    }

    fn backend(qemu_bin: &str) -> Result<QemuBackend, VmmError> {
        QemuBackend::new(QemuConfig {
            qemu_bin: qemu_bin.into(),
            vhost_vsock_bin: "vhost-device-vsock".into(),
            accel: Accel::Tcg,
            runas: None,
            tsc_khz: Some(1_000_000),
        })
    }

    #[test]
    fn new_fails_for_a_missing_binary() {
        assert!(matches!(
            backend("/nonexistent/qemu"),
            Err(VmmError::Spawn { .. })
        ));
        // A binary that prints no version.
        assert!(matches!(backend("true"), Err(VmmError::Spawn { .. })));
    }

    fn spec(root: &Path) -> VmSpec {
        for f in ["vmlinux", "rootfs.ext4", "disk.ext4"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        VmSpec {
            vm_id: "t1".into(),
            cpu: 1,
            mem_mb: 128,
            kernel: root.join("vmlinux"),
            initrd: None,
            rootfs: root.join("rootfs.ext4"),
            disk: root.join("disk.ext4"),
            run_dir: root.join("vm/run"),
            logs_dir: root.join("vm/logs"),
            vsock_cid: 10000,
            cmdline: "console=ttyS0".into(),
            net: None,
        }
    }

    /// `prepare` needs no QEMU; build the backend by hand when the host has none.
    fn any_backend() -> QemuBackend {
        backend("qemu-system-x86_64").unwrap_or_else(|_| QemuBackend {
            cfg: QemuConfig {
                qemu_bin: "qemu-system-x86_64".into(),
                vhost_vsock_bin: "vhost-device-vsock".into(),
                accel: Accel::Tcg,
                runas: None,
                tsc_khz: None,
            },
            caps: Capabilities {
                kind: BackendKind::Qemu,
                vmm_version: "test".into(),
                accel: Accel::Tcg,
                supports_memory_snapshots: false,
                supports_graceful_shutdown: true,
                kernel_formats: vec![KernelFormat::Elf],
            },
        })
    }

    #[tokio::test]
    async fn prepare_clears_leftovers_and_makes_logs() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        std::fs::create_dir_all(s.run_dir.join("old")).unwrap();
        std::fs::write(s.run_dir.join("v.sock"), b"stale").unwrap();
        std::fs::create_dir_all(&s.logs_dir).unwrap();
        std::fs::write(s.logs_dir.join("console.log"), b"kept\n").unwrap();

        let b = any_backend();
        b.prepare(&s).await.unwrap();
        assert!(s.run_dir.is_dir());
        // Nothing but the disk's hard link (same inode) for QEMU to open by a relative name.
        let left: Vec<_> = std::fs::read_dir(&s.run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["disk.ext4"]);
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&s.run_dir.join("disk.ext4")), ino(&s.disk));
        for f in [crate::LOG_VMM, crate::LOG_CONSOLE, crate::LOG_VMM_STDERR] {
            assert!(s.logs_dir.join(f).is_file(), "{f}");
        }
        assert_eq!(
            std::fs::read(s.logs_dir.join("console.log")).unwrap(),
            b"kept\n"
        );
        // Twice is fine.
        b.prepare(&s).await.unwrap();
    }

    #[tokio::test]
    async fn prepare_rejects_long_socket_paths_and_missing_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.run_dir = dir.path().join("r".repeat(120));
        let b = any_backend();
        assert!(matches!(
            b.prepare(&s).await,
            Err(VmmError::SocketPathTooLong { .. })
        ));
        assert!(!s.run_dir.exists());

        let mut s = spec(dir.path());
        s.initrd = Some(dir.path().join("no-initrd"));
        let err = b.prepare(&s).await.unwrap_err().to_string();
        assert!(
            err.starts_with("missing input ") && err.contains("no-initrd"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn operations_on_a_gone_vm() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        let b = any_backend();
        b.prepare(&s).await.unwrap();
        let vm = VmRuntime {
            vm_id: s.vm_id.clone(),
            run_dir: s.run_dir.clone(),
            logs_dir: s.logs_dir.clone(),
            pid: std::process::id(),
            start_time: 1,
            boot_id: "other".into(),
        };
        assert!(!b.is_alive(&vm));
        assert!(matches!(b.pause(&vm).await, Err(VmmError::Gone)));
        assert!(matches!(b.request_shutdown(&vm).await, Err(VmmError::Gone)));
        assert_eq!(b.wait_exit(&vm).await, ExitStatus::Unknown);
        b.kill(&vm).await;
        b.cleanup(&vm).await.unwrap();
        b.cleanup(&vm).await.unwrap();
        assert!(!s.run_dir.exists());
        assert!(s.logs_dir.join(crate::LOG_CONSOLE).exists());
    }
}
