//! Real boots through the QEMU backend (TCG here). Needs root, QEMU, `vhost-device-vsock` and a guest
//! image (`vmlinux`, `initrd`, `rootfs.ext4`); without them each test prints `SKIP <test>: <reason>`
//! and passes, unless `RDS_REQUIRE_E2E=1`.
//!
//! Env: `RDS_TEST_IMAGE_DIR` (default `/var/cache/run-dat-sheesh/images/current`), `VHOST_VSOCK_BIN`
//! (default: `PATH`, then the tool cache), `QEMU_BIN` (default `qemu-system-x86_64`), `RDS_TEST_RUNAS`
//! (`uid:gid`, default `1234:1234`). One VM at a time: a booting guest keeps a core busy.

use rds_vmm::qemu::{QemuBackend, QemuConfig};
use rds_vmm::{Accel, ExitStatus, VmRuntime, VmSpec, VmmBackend, VmmError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

static ONE_VM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEFAULT_IMAGE_DIR: &str = "/var/cache/run-dat-sheesh/images/current";
const CACHED_HELPER: &str =
    "/var/cache/run-dat-sheesh/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock";
const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 root=/dev/vda ro rootfstype=ext4 \
                       init=/usr/local/sbin/rds-init rds.agent_port=8080 rds.disk_wait_ms=2000";
const AGENT_PORT: u16 = 8080;

struct Tools {
    qemu: PathBuf,
    helper: PathBuf,
    runas: (u32, u32),
}

/// Prints the skip line (or fails under `RDS_REQUIRE_E2E=1`) and returns None.
fn skip<T>(test: &str, reason: String) -> Option<T> {
    if std::env::var("RDS_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{test}: RDS_REQUIRE_E2E=1 but {reason}");
    }
    println!("SKIP {test}: {reason}");
    None
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tools(test: &str) -> Option<Tools> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip(
            test,
            "not root (QEMU -chroot/-runas and the helper's uid need root)".into(),
        );
    }
    let qemu_name = std::env::var("QEMU_BIN").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let Some(qemu) = find_on_path(&qemu_name) else {
        return skip(test, format!("QEMU binary {qemu_name} not found"));
    };
    let helper = match std::env::var("VHOST_VSOCK_BIN") {
        Ok(v) => find_on_path(&v),
        Err(_) => find_on_path("vhost-device-vsock")
            .or_else(|| Some(PathBuf::from(CACHED_HELPER)).filter(|p| p.is_file())),
    };
    let Some(helper) = helper else {
        return skip(
            test,
            "vhost-device-vsock not found (VHOST_VSOCK_BIN, PATH, tool cache)".into(),
        );
    };
    let runas = std::env::var("RDS_TEST_RUNAS").unwrap_or_else(|_| "1234:1234".into());
    let (u, g) = runas.split_once(':').expect("RDS_TEST_RUNAS is uid:gid");
    Some(Tools {
        qemu,
        helper,
        runas: (u.parse().unwrap(), g.parse().unwrap()),
    })
}

struct Image {
    vmlinux: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
}

fn image(test: &str) -> Option<Image> {
    let dir = PathBuf::from(
        std::env::var("RDS_TEST_IMAGE_DIR").unwrap_or_else(|_| DEFAULT_IMAGE_DIR.into()),
    );
    let img = Image {
        vmlinux: dir.join("vmlinux"),
        initrd: dir.join("initrd"),
        rootfs: dir.join("rootfs.ext4"),
    };
    for p in [&img.vmlinux, &img.initrd, &img.rootfs] {
        if !p.is_file() {
            return skip(test, format!("guest image file {} missing", p.display()));
        }
    }
    Some(img)
}

fn backend(t: &Tools) -> QemuBackend {
    QemuBackend::new(QemuConfig {
        qemu_bin: t.qemu.clone(),
        vhost_vsock_bin: t.helper.clone(),
        accel: Accel::Tcg,
        runas: Some(t.runas),
        tsc_khz: host_tsc_khz(),
    })
    .expect("QemuBackend::new")
}

fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

/// A temp dir the VMM uid can traverse (the helper binds its sockets below it).
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rds-vmm-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn make_disk(path: &Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .status()
        .expect("mkfs.ext4");
    assert!(st.success(), "mkfs.ext4 failed");
}

fn spec(work: &Path, vm_id: &str, img: &Image) -> VmSpec {
    let disk = work.join("disk.ext4");
    make_disk(&disk);
    VmSpec {
        vm_id: vm_id.into(),
        cpu: 2,
        mem_mb: 512,
        kernel: img.vmlinux.clone(),
        initrd: Some(img.initrd.clone()),
        rootfs: img.rootfs.clone(),
        disk,
        run_dir: work.join("vm/run"),
        logs_dir: work.join("vm/logs"),
        vsock_cid: 10_000 + (std::process::id() % 1000),
        cmdline: CMDLINE.into(),
        net: None,
    }
}

/// Connects to the hybrid socket and completes `CONNECT <port>`; returns the stream on `OK`.
async fn vsock_connect(sock: &Path, port: u16) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(sock).await?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 64 {
            return Err(std::io::Error::other("overlong handshake reply"));
        }
    }
    let line = String::from_utf8_lossy(&line);
    if !line.starts_with("OK ") {
        return Err(std::io::Error::other(format!("handshake reply {line:?}")));
    }
    Ok(s)
}

/// Retries the handshake every 100 ms until `deadline`.
async fn wait_handshake(sock: &Path, deadline: Duration) -> Result<UnixStream, String> {
    let until = Instant::now() + deadline;
    let mut last = String::from("never tried");
    while Instant::now() < until {
        let attempt = tokio::time::timeout(Duration::from_secs(2), vsock_connect(sock, AGENT_PORT));
        match attempt.await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "handshake timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

async fn health(mut s: UnixStream) -> Result<String, String> {
    let req = "GET /health HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n";
    let io = async {
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(10), io).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no /health response within 10 s".into()),
    }
}

/// Processes whose command line names this VM (QEMU's `-name`, the helper's run-dir paths).
fn processes_of(vm: &VmRuntime) -> Vec<(u32, String)> {
    let name = rds_vmm::qemu::vm_name(&vm.vm_id);
    let run = vm.run_dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if pid != std::process::id() && (cmd.split(' ').any(|a| a == name) || cmd.contains(&run)) {
            found.push((pid, cmd));
        }
    }
    found
}

fn console(vm: &VmRuntime) -> String {
    std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_CONSOLE)).unwrap_or_default()
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn assert_gone(vm: &VmRuntime) {
    let left = processes_of(vm);
    assert!(left.is_empty(), "processes of the VM remain: {left:?}");
    assert!(!vm.run_dir.exists(), "run dir remains");
    assert!(
        vm.logs_dir.join(rds_vmm::LOG_CONSOLE).exists(),
        "logs were removed"
    );
}

#[tokio::test]
async fn boots_answers_health_and_shuts_down() {
    const T: &str = "boots_answers_health_and_shuts_down";
    let (Some(tools), Some(img)) = (tools(T), image(T)) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    println!("QEMU {}", b.capabilities().vmm_version);
    let s = spec(work.path(), "e2e-boot", &img);
    b.prepare(&s).await.unwrap();

    let t0 = Instant::now();
    let vm = b.boot(&s).await.unwrap();
    let t_qmp = t0.elapsed();
    assert!(b.is_alive(&vm));
    assert_eq!(vm.agent_socket(), s.run_dir.join("v.sock"));
    // QMP works beyond the launch handshake.
    b.pause(&vm).await.unwrap();
    b.pause(&vm).await.unwrap();
    b.resume(&vm).await.unwrap();

    let handshake = wait_handshake(&vm.agent_socket(), Duration::from_secs(60)).await;
    let t_vsock = t0.elapsed();
    let mut t_health = None;
    match handshake {
        Ok(stream) => {
            println!("TIMING qemu start -> QMP {t_qmp:?}, -> vsock handshake OK {t_vsock:?}");
            match health(stream).await {
                Ok(resp) if resp.starts_with("HTTP/1.1 200") => {
                    let compact: String = resp.chars().filter(|c| !c.is_whitespace()).collect();
                    assert!(compact.contains("\"protocol\":1"), "{resp}");
                    t_health = Some(t0.elapsed());
                    println!("TIMING qemu start -> /health 200 {:?}", t_health.unwrap());
                }
                other => println!("NOTE /health did not answer 200: {other:?}"),
            }
        }
        Err(e) => println!("NOTE no vsock handshake within 60 s: {e}"),
    }
    if t_health.is_none() {
        // The agent is optional for this crate; the guest must at least have reached rds-init.
        let con = console(&vm);
        println!("console.log tail:\n{}", tail(&con, 3000));
        assert!(
            con.contains("rds-init"),
            "console shows no rds-init:\n{}",
            tail(&con, 4000)
        );
        if std::env::var("RDS_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("RDS_REQUIRE_E2E=1 but the agent did not answer /health");
        }
    }

    let t1 = Instant::now();
    b.request_shutdown(&vm).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), b.wait_exit(&vm))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no exit within 15 s of system_powerdown; console tail:\n{}",
                console(&vm)
            )
        });
    println!(
        "TIMING system_powerdown -> exit {:?} ({status})",
        t1.elapsed()
    );
    assert_eq!(status, ExitStatus::Code(0));
    assert!(!b.is_alive(&vm));
    assert!(matches!(b.request_shutdown(&vm).await, Err(VmmError::Gone)));
    b.cleanup(&vm).await.unwrap();
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
    let log = std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_VMM)).unwrap();
    assert!(log.contains("\"system_powerdown\""), "{log}");
}

#[tokio::test]
async fn kill_stops_qemu_and_helper() {
    const T: &str = "kill_stops_qemu_and_helper";
    let (Some(tools), Some(img)) = (tools(T), image(T)) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    let s = spec(work.path(), "e2e-kill", &img);
    b.prepare(&s).await.unwrap();
    let vm = b.boot(&s).await.unwrap();
    assert_eq!(processes_of(&vm).len(), 2, "{:?}", processes_of(&vm));
    // Let the guest get going so the kill hits a running VM.
    tokio::time::sleep(Duration::from_secs(1)).await;

    b.kill(&vm).await;
    let status = tokio::time::timeout(Duration::from_secs(5), b.wait_exit(&vm))
        .await
        .expect("exit after SIGKILL");
    assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
    assert!(!b.is_alive(&vm));
    b.kill(&vm).await;
    assert_eq!(b.wait_exit(&vm).await, ExitStatus::Unknown);
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
}

#[tokio::test]
async fn qemu_dying_at_launch_reports_its_stderr() {
    const T: &str = "qemu_dying_at_launch_reports_its_stderr";
    let Some(tools) = tools(T) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    for f in ["vmlinux", "rootfs.ext4"] {
        std::fs::write(work.path().join(f), b"not an image").unwrap();
    }
    let img = Image {
        vmlinux: work.path().join("vmlinux"),
        initrd: work.path().join("vmlinux"),
        rootfs: work.path().join("rootfs.ext4"),
    };
    let mut s = spec(work.path(), "e2e-dies", &img);
    s.initrd = None;
    b.prepare(&s).await.unwrap();
    std::fs::remove_file(&s.disk).unwrap();

    let err = b.boot(&s).await.unwrap_err();
    match &err {
        VmmError::DiedDuringLaunch { stderr_tail, .. } => {
            assert!(stderr_tail.contains("disk.ext4"), "{stderr_tail}")
        }
        other => panic!("expected DiedDuringLaunch, got {other:?}"),
    }
    let vm = VmRuntime {
        vm_id: s.vm_id.clone(),
        run_dir: s.run_dir.clone(),
        logs_dir: s.logs_dir.clone(),
        pid: 0,
        start_time: 0,
        boot_id: String::new(),
    };
    // The helper was stopped with the failed launch.
    assert!(processes_of(&vm).is_empty(), "{:?}", processes_of(&vm));
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
}

/// A 211-byte PVH ELF "kernel" whose entry point halts forever: a real QEMU launch without a guest
/// image (command line, chroot, uid drop, seccomp, memfd, vhost-user link to the helper, QMP).
fn halting_kernel(path: &Path) {
    const BASE: u64 = 0x10_0000;
    let (ehsize, phsize, phnum) = (64u64, 56u64, 2u64);
    let note_off = ehsize + phsize * phnum;
    let note_len = 12 + 4 + 8; // header, "Xen\0", 64-bit entry
    let code_off = (note_off + note_len + 15) & !15;
    let entry = BASE + code_off;
    let code = [0xf4u8, 0xeb, 0xfd]; // hlt; jmp back to hlt
    let total = code_off + code.len() as u64;

    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&ehsize.to_le_bytes()); // phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [ehsize as u16, phsize as u16, phnum as u16, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let phdr = |f: &mut Vec<u8>, kind: u32, flags: u32, off: u64, len: u64, align: u64| {
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        for v in [off, BASE + off, BASE + off, len, len, align] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(&mut f, 1, 5, 0, total, 0x1000); // PT_LOAD, R+X
    phdr(&mut f, 4, 4, note_off, note_len, 4); // PT_NOTE
    for v in [4u32, 8, 18] {
        // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(b"Xen\0");
    f.extend_from_slice(&entry.to_le_bytes());
    f.resize(code_off as usize, 0);
    f.extend_from_slice(&code);
    std::fs::write(path, f).unwrap();
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap() // effective uid
}

#[tokio::test]
async fn launch_control_and_kill_with_a_halting_kernel() {
    const T: &str = "launch_control_and_kill_with_a_halting_kernel";
    let Some(tools) = tools(T) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    halting_kernel(&work.path().join("vmlinux"));
    std::fs::File::create(work.path().join("rootfs.ext4"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let img = Image {
        vmlinux: work.path().join("vmlinux"),
        initrd: PathBuf::new(),
        rootfs: work.path().join("rootfs.ext4"),
    };
    let mut s = spec(work.path(), "e2e-halt", &img);
    s.initrd = None;
    s.mem_mb = 128;
    b.prepare(&s).await.unwrap();

    let t0 = Instant::now();
    let vm = b.boot(&s).await.unwrap();
    println!("TIMING qemu spawn -> QMP ready {:?}", t0.elapsed());
    assert!(b.is_alive(&vm));
    let procs = processes_of(&vm);
    assert_eq!(procs.len(), 2, "{procs:?}");
    for (pid, _) in &procs {
        assert_eq!(
            uid_of(*pid),
            tools.runas.0,
            "pid {pid} did not drop to the VMM uid"
        );
    }
    let qmp_mode = std::fs::metadata(s.run_dir.join("qmp.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(qmp_mode & 0o777, 0o600);
    assert!(vm.agent_socket().exists(), "helper made no v.sock");

    b.pause(&vm).await.unwrap();
    b.resume(&vm).await.unwrap();
    b.resume(&vm).await.unwrap();
    // The halting guest ignores the power button; the request itself must be accepted.
    b.request_shutdown(&vm).await.unwrap();
    assert!(b.is_alive(&vm));

    b.kill(&vm).await;
    let status = tokio::time::timeout(Duration::from_secs(5), b.wait_exit(&vm))
        .await
        .expect("exit after SIGKILL");
    assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
    b.kill(&vm).await;
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
    let stderr = std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_VMM_STDERR)).unwrap();
    println!("vmm.stderr.log:\n{stderr}");
    let log = std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_VMM)).unwrap();
    for cmd in ["qmp_capabilities", "stop", "cont", "system_powerdown"] {
        assert!(
            log.contains(&format!("\"{cmd}\"")),
            "{cmd} missing in vmm.log:\n{log}"
        );
    }
}
