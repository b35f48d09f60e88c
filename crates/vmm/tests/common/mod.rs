//! Shared by the real-guest QEMU tests: prerequisites (root, QEMU, `vhost-device-vsock`, a guest
//! image; without them a test prints `SKIP <test>: <reason>` and passes, unless `RDS_REQUIRE_E2E=1`),
//! VM specs, and a minimal HTTP client over the hybrid vsock socket.
//!
//! Env: `RDS_TEST_IMAGE_DIR` (default `/var/cache/run-dat-sheesh/images/current`), `VHOST_VSOCK_BIN`
//! (default: `PATH`, then the tool cache), `QEMU_BIN` (default `qemu-system-x86_64`), `RDS_TEST_RUNAS`
//! (`uid:gid`, default `1234:1234`).
#![allow(dead_code)]

use rds_vmm::qemu::{QemuBackend, QemuConfig};
use rds_vmm::{Accel, VmRuntime, VmSpec};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub static ONE_VM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const DEFAULT_IMAGE_DIR: &str = "/var/cache/run-dat-sheesh/images/current";
pub const CACHED_HELPER: &str =
    "/var/cache/run-dat-sheesh/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock";
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 root=/dev/vda ro rootfstype=ext4 \
                       init=/usr/local/sbin/rds-init rds.agent_port=8080 rds.disk_wait_ms=2000";
pub const AGENT_PORT: u16 = 8080;

pub struct Tools {
    pub qemu: PathBuf,
    pub helper: PathBuf,
    pub runas: (u32, u32),
}

/// Prints the skip line (or fails under `RDS_REQUIRE_E2E=1`) and returns None.
pub fn skip<T>(test: &str, reason: String) -> Option<T> {
    if std::env::var("RDS_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{test}: RDS_REQUIRE_E2E=1 but {reason}");
    }
    println!("SKIP {test}: {reason}");
    None
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn tools(test: &str) -> Option<Tools> {
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

pub struct Image {
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
}

pub fn image(test: &str) -> Option<Image> {
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

pub fn backend(t: &Tools) -> QemuBackend {
    QemuBackend::new(QemuConfig {
        qemu_bin: t.qemu.clone(),
        vhost_vsock_bin: t.helper.clone(),
        accel: Accel::Tcg,
        runas: Some(t.runas),
        tsc_khz: host_tsc_khz(),
    })
    .expect("QemuBackend::new")
}

pub fn host_tsc_khz() -> Option<u64> {
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
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rds-vmm-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub fn make_disk(path: &Path) {
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

pub fn spec(work: &Path, vm_id: &str, img: &Image) -> VmSpec {
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
pub async fn vsock_connect(sock: &Path, port: u16) -> std::io::Result<UnixStream> {
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
pub async fn wait_handshake(sock: &Path, deadline: Duration) -> Result<UnixStream, String> {
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

pub async fn health(mut s: UnixStream) -> Result<String, String> {
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
pub fn processes_of(vm: &VmRuntime) -> Vec<(u32, String)> {
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

pub fn console(vm: &VmRuntime) -> String {
    std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_CONSOLE)).unwrap_or_default()
}

/// The last `max` bytes of `s`, cut at a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

pub fn assert_gone(vm: &VmRuntime) {
    let left = processes_of(vm);
    assert!(left.is_empty(), "processes of the VM remain: {left:?}");
    assert!(!vm.run_dir.exists(), "run dir remains");
    assert!(
        vm.logs_dir.join(rds_vmm::LOG_CONSOLE).exists(),
        "logs were removed"
    );
}

/// One HTTP/1.1 request to the agent over a fresh hybrid-vsock connection (`Connection: close`);
/// returns the status and the JSON body (null when empty).
pub async fn agent_call(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let io = async {
        let mut s = vsock_connect(sock, AGENT_PORT)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .map_err(|_| format!("{method} {path}: no answer within 30 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: malformed reply {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status in {head:?}"))?;
    // The agent answers with Content-Length bodies; a chunked one would not parse and says so.
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).map_err(|e| format!("{method} {path}: {e}: {body:?}"))?
    };
    Ok((status, json))
}

/// `/exec` of `cmd` in the guest; panics unless the agent answers 200. Returns the reply.
pub async fn guest_exec(sock: &Path, cmd: &str) -> serde_json::Value {
    let body = serde_json::json!({ "cmd": cmd });
    match agent_call(sock, "POST", "/exec", Some(&body)).await {
        Ok((200, reply)) => reply,
        other => panic!("exec {cmd:?}: {other:?}"),
    }
}

/// Polls `/health` until it answers 200 or `within` passes; returns how long it took.
pub async fn wait_health(sock: &Path, within: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let mut last = String::from("never tried");
    while t.elapsed() < within {
        match agent_call(sock, "GET", "/health", None).await {
            Ok((200, _)) => return Ok(t.elapsed()),
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}
