//! Contract tests of the Firecracker backend against a **fake Firecracker API** on the jail's Unix
//! socket. This is the one place a fake VMM is right: no real Firecracker can boot on the build
//! machines (paravirtual KVM; no binary), so the backend is held to Firecracker's documented API
//! (`docs/reference/vmm-backends.md` §4.2, §4.3) instead. The fake records every request; the tests
//! assert the exact sequence, paths and JSON bodies. It is launched through the backend's
//! `Launcher` indirection in place of the jailer; a `sleep` whose argv[0] names the VM stands in
//! for the Firecracker process, so pid, start time, `is_alive`, `kill` and `wait_exit` work on a
//! real process. The real-binary tests are in `firecracker_real.rs`.

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rds_vmm::firecracker::{
    FirecrackerBackend, FirecrackerConfig, LaunchPlan, Launcher, LOG_METRICS,
};
use rds_vmm::{ExitStatus, NetSpec, VmRuntime, VmSpec, VmmBackend, VmmError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One recorded request: `METHOD path` and its body.
type Recorded = (String, String);

/// A scripted failure: status, body, and a line the fake writes to its log FIFO first.
#[derive(Clone)]
struct Failure {
    status: u16,
    body: String,
    log_line: Option<String>,
}

#[derive(Default)]
struct FakeState {
    requests: Vec<Recorded>,
    state: String,
    jail_root: PathBuf,
    fail: HashMap<String, Failure>,
    /// Listeners the fake "Firecracker" holds, like its vsock device's `v.sock`.
    held: Vec<std::os::unix::net::UnixListener>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn requests(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().requests.clone()
    }

    fn clear(&self) {
        self.0.lock().unwrap().requests.clear();
    }

    fn fail_on(&self, call: &str, f: Failure) {
        self.0.lock().unwrap().fail.insert(call.into(), f);
    }

    /// Answers like Firecracker 1.16 for the calls the backend makes.
    fn answer(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = self.0.lock().unwrap();
        let key = format!("{method} {path}");
        s.requests.push((key.clone(), body.to_string()));
        if let Some(f) = s.fail.get(&key).cloned() {
            if let Some(line) = f.log_line {
                let mut w = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(s.jail_root.join("log.fifo"))
                    .unwrap();
                w.write_all(line.as_bytes()).unwrap();
            }
            return (f.status, f.body);
        }
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let fault = |m: &str| (400, json!({ "fault_message": m }).to_string());
        match (method, path) {
            ("GET", "/") => (
                200,
                json!({"id": "anonymous-instance", "state": s.state, "vmm_version": "1.16.1",
                       "app_name": "Firecracker"})
                .to_string(),
            ),
            ("PATCH", "/vm") => {
                let want = if v["state"] == "Paused" {
                    "Paused"
                } else {
                    "Running"
                };
                if s.state == want {
                    // Refuse repeats, so the backend's "already there" check is exercised.
                    return fault(&format!("the VM is already {want}"));
                }
                s.state = want.into();
                (204, String::new())
            }
            ("PUT", "/actions") if v["action_type"] == "InstanceStart" => {
                s.state = "Running".into();
                let l = std::os::unix::net::UnixListener::bind(s.jail_root.join("v.sock")).unwrap();
                s.held.push(l);
                (204, String::new())
            }
            ("PUT", "/snapshot/create") => {
                if s.state != "Paused" {
                    return fault("Cannot create a snapshot while the VM is running");
                }
                std::fs::write(s.jail_root.join("vmstate.snap"), b"vmstate-14-KB").unwrap();
                std::fs::write(s.jail_root.join("mem.snap"), vec![7u8; 4096]).unwrap();
                (204, String::new())
            }
            ("PUT", "/snapshot/load") => {
                // Measured on 1.16.1: the load fails while an old v.sock exists.
                if s.jail_root.join("v.sock").exists() {
                    return fault("Load snapshot error: Address already in use (os error 98)");
                }
                for f in ["vmstate.snap", "mem.snap"] {
                    if !s.jail_root.join(f).is_file() {
                        return fault(&format!("{f} missing"));
                    }
                }
                s.state = "Running".into();
                let l = std::os::unix::net::UnixListener::bind(s.jail_root.join("v.sock")).unwrap();
                s.held.push(l);
                (204, String::new())
            }
            _ => (204, String::new()),
        }
    }
}

async fn serve(listener: tokio::net::UnixListener, fake: Fake) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let fake = fake.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let fake = fake.clone();
                async move {
                    let method = req.method().to_string();
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await?.to_bytes();
                    let (status, text) =
                        fake.answer(&method, &path, &String::from_utf8_lossy(&body));
                    let mut resp = Response::builder().status(status);
                    if !text.is_empty() {
                        resp = resp.header("content-type", "application/json");
                    }
                    Ok::<_, hyper::Error>(resp.body(Full::new(Bytes::from(text))).unwrap())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Stands in for the jailer: serves the fake API on the jail's socket and starts a placeholder process.
#[derive(Default)]
struct FakeLauncher {
    fake: Fake,
    plans: Mutex<Vec<LaunchPlan>>,
    /// Make the "VMM" die at launch, printing this to stderr.
    die_with: Option<String>,
}

#[async_trait]
impl Launcher for FakeLauncher {
    async fn launch(&self, plan: &LaunchPlan) -> Result<u32, VmmError> {
        self.plans.lock().unwrap().push(plan.clone());
        self.fake.0.lock().unwrap().jail_root = plan.jail_root.clone();
        let mut cmd = if let Some(msg) = &self.die_with {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &format!("echo '{msg}' >&2; exit 1")]);
            c
        } else {
            let listener = tokio::net::UnixListener::bind(&plan.api_sock).unwrap();
            tokio::spawn(serve(listener, self.fake.clone()));
            let mut c = std::process::Command::new("sleep");
            c.arg0(format!("firecracker --id {}", plan.vm_id))
                .arg("600");
            c
        };
        rds_vmm::process::spawn_detached(&mut cmd, &plan.stderr_log).map_err(|source| {
            VmmError::Spawn {
                program: "fake".into(),
                source,
            }
        })
    }
}

fn runas() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    unsafe {
        if libc::geteuid() == 0 {
            (1234, 1234)
        } else {
            (libc::geteuid(), libc::getegid())
        }
    }
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    backend: FirecrackerBackend,
    launcher: Arc<FakeLauncher>,
}

fn world_with(launcher: FakeLauncher) -> World {
    let dir = tempfile::Builder::new().prefix("fc-").tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let img = root.join("images/i1");
    std::fs::create_dir_all(&img).unwrap();
    for f in ["vmlinux", "initrd", "rootfs.ext4"] {
        std::fs::write(img.join(f), f.as_bytes()).unwrap();
    }
    let cfg = FirecrackerConfig {
        firecracker_bin: "/usr/local/bin/firecracker".into(),
        jailer_bin: "/usr/local/bin/jailer".into(),
        chroot_base_dir: root.join("jailer"),
        runas: runas(),
        log_level: "Warning".into(),
    };
    let launcher = Arc::new(launcher);
    let backend = FirecrackerBackend::with_launcher(cfg, launcher.clone(), "1.16.1".into(), None);
    World {
        _dir: dir,
        root,
        backend,
        launcher,
    }
}

fn world() -> World {
    world_with(FakeLauncher::default())
}

impl World {
    fn fake(&self) -> &Fake {
        &self.launcher.fake
    }

    fn spec(&self, vm_id: &str, tap: &str) -> VmSpec {
        let vm = self.root.join("vms").join(vm_id);
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("disk.ext4"), b"disk").unwrap();
        let img = self.root.join("images/i1");
        VmSpec {
            vm_id: vm_id.into(),
            cpu: 2,
            mem_mb: 256,
            kernel: img.join("vmlinux"),
            initrd: Some(img.join("initrd")),
            rootfs: img.join("rootfs.ext4"),
            disk: vm.join("disk.ext4"),
            run_dir: vm.join("run"),
            logs_dir: vm.join("logs"),
            vsock_cid: 10007,
            cmdline:
                "console=ttyS0 reboot=k panic=1 root=/dev/vda ro init=/usr/local/sbin/rds-init"
                    .into(),
            net: Some(NetSpec {
                tap: tap.into(),
                mac: "02:fc:00:00:00:07".into(),
            }),
        }
    }

    async fn booted(&self, vm_id: &str) -> (VmSpec, VmRuntime) {
        let spec = self.spec(vm_id, "rds-tap7");
        self.backend.prepare(&spec).await.unwrap();
        let vm = self.backend.boot(&spec).await.unwrap();
        self.fake().clear();
        (spec, vm)
    }
}

fn calls(list: &[(&str, &str)]) -> Vec<Recorded> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn log_calls() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "PUT /logger",
            r#"{"log_path":"/log.fifo","level":"Warning","show_level":true}"#,
        ),
        ("PUT /metrics", r#"{"metrics_path":"/metrics.fifo"}"#),
        ("PUT /serial", r#"{"serial_out_path":"/console.fifo"}"#),
    ]
}

const VM1: &str = "0b7e3c52-5d1e-4f3b-9f0e-111111111111";
const VM2: &str = "0b7e3c52-5d1e-4f3b-9f0e-222222222222";

fn assert_nothing_left(w: &World, spec: &VmSpec) {
    let jail = w.backend.jail(&spec.vm_id);
    assert!(
        !jail.dir.exists(),
        "jail {} left behind",
        jail.dir.display()
    );
    assert!(
        std::fs::symlink_metadata(&spec.run_dir).is_err(),
        "run dir left behind"
    );
    for f in ["vmm.log", "console.log", "vmm.stderr.log", LOG_METRICS] {
        assert!(spec.logs_dir.join(f).is_file(), "logs/{f} must be kept");
    }
}

#[tokio::test]
async fn boot_makes_the_calls_of_the_spec_in_order() {
    let w = world();
    let spec = w.spec(VM1, "rds-tap7");
    w.backend.prepare(&spec).await.unwrap();
    let vm = w.backend.boot(&spec).await.unwrap();

    let mut want = log_calls();
    want.extend([
        ("PUT /machine-config", r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false}"#),
        (
            "PUT /boot-source",
            r#"{"kernel_image_path":"/vmlinux","initrd_path":"/initrd","boot_args":"console=ttyS0 reboot=k panic=1 root=/dev/vda ro init=/usr/local/sbin/rds-init"}"#,
        ),
        (
            "PUT /drives/rootfs",
            r#"{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":false,"is_read_only":true}"#,
        ),
        (
            "PUT /drives/disk",
            r#"{"drive_id":"disk","path_on_host":"/disk.ext4","is_root_device":false,"is_read_only":false}"#,
        ),
        (
            "PUT /network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"rds-tap7","guest_mac":"02:fc:00:00:00:07"}"#,
        ),
        ("PUT /vsock", r#"{"guest_cid":10007,"uds_path":"/v.sock"}"#),
        ("PUT /actions", r#"{"action_type":"InstanceStart"}"#),
    ]);
    assert_eq!(w.fake().requests(), calls(&want));

    // What the launcher was asked to run: the jailer with an absolute exec file, dropping to runas.
    let plan = w.launcher.plans.lock().unwrap()[0].clone();
    let args: Vec<String> = plan
        .jailer_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (uid, gid) = runas();
    assert_eq!(
        args.join(" "),
        format!(
            "--id {VM1} --exec-file /usr/local/bin/firecracker --uid {uid} --gid {gid} \
             --chroot-base-dir {} --new-pid-ns -- --api-sock /api.sock",
            w.root.join("jailer").display()
        )
    );
    let jail = w.backend.jail(VM1);
    assert_eq!(plan.api_sock, jail.root.join("api.sock"));
    assert_eq!(plan.pid_file, jail.root.join("firecracker.pid"));

    // The runtime: a live process, identified across restarts; the agent socket reaches the jail's.
    assert!(w.backend.is_alive(&vm));
    assert!(vm.start_time > 0 && !vm.boot_id.is_empty());
    assert_eq!(vm.run_dir, spec.run_dir);
    assert_eq!(
        std::fs::canonicalize(vm.agent_socket()).unwrap(),
        std::fs::canonicalize(jail.root.join("v.sock")).unwrap()
    );
    std::os::unix::net::UnixStream::connect(vm.agent_socket()).unwrap();

    // Every call is in the VM's log.
    let log = std::fs::read_to_string(spec.logs_dir.join("vmm.log")).unwrap();
    assert!(
        log.contains(r#" -> PUT /vsock {"guest_cid":10007,"uds_path":"/v.sock"}"#),
        "{log}"
    );
    assert!(log.contains(" <- 204"), "{log}");

    w.backend.kill(&vm).await;
    assert_eq!(
        w.backend.wait_exit(&vm).await,
        ExitStatus::Signal(libc::SIGKILL)
    );
    w.backend.cleanup(&vm).await.unwrap();
    assert_nothing_left(&w, &spec);
}

/// The manager's stop: Ctrl-Alt-Del, a bounded wait, then SIGKILL. The fake guest ignores the keys,
/// so the kill must come, and it must be SIGKILL (never SIGTERM: the status would say signal 15).
#[tokio::test]
async fn stop_is_ctrl_alt_del_then_sigkill() {
    let w = world();
    let (spec, vm) = w.booted(VM1).await;
    w.backend.request_shutdown(&vm).await.unwrap();
    assert_eq!(
        w.fake().requests(),
        calls(&[("PUT /actions", r#"{"action_type":"SendCtrlAltDel"}"#)])
    );
    let waited = tokio::time::timeout(Duration::from_millis(300), w.backend.wait_exit(&vm)).await;
    assert!(waited.is_err(), "the fake guest does not power off");
    w.backend.kill(&vm).await;
    w.backend.kill(&vm).await; // idempotent
    assert_eq!(
        w.backend.wait_exit(&vm).await,
        ExitStatus::Signal(libc::SIGKILL)
    );
    assert!(!w.backend.is_alive(&vm));
    assert_eq!(
        w.fake().requests().len(),
        1,
        "no API call after the request"
    );
    w.backend.cleanup(&vm).await.unwrap();
    w.backend.cleanup(&vm).await.unwrap();
    assert_nothing_left(&w, &spec);
    // Operations on the stopped VM say so.
    assert!(matches!(w.backend.pause(&vm).await, Err(VmmError::Gone)));
    assert!(matches!(
        w.backend.request_shutdown(&vm).await,
        Err(VmmError::Gone)
    ));
    assert_eq!(w.backend.wait_exit(&vm).await, ExitStatus::Unknown);
}

#[tokio::test]
async fn pause_and_resume_patch_the_vm_and_repeats_are_no_error() {
    let w = world();
    let (_spec, vm) = w.booted(VM1).await;
    w.backend.pause(&vm).await.unwrap();
    assert_eq!(
        w.fake().requests(),
        calls(&[("PATCH /vm", r#"{"state":"Paused"}"#)])
    );
    w.fake().clear();
    // The fake refuses a repeat; the backend checks `GET /` and finds the VM paused.
    w.backend.pause(&vm).await.unwrap();
    assert_eq!(
        w.fake().requests(),
        calls(&[("PATCH /vm", r#"{"state":"Paused"}"#), ("GET /", "")])
    );
    w.fake().clear();
    w.backend.resume(&vm).await.unwrap();
    assert_eq!(
        w.fake().requests(),
        calls(&[("PATCH /vm", r#"{"state":"Resumed"}"#)])
    );
    w.backend.kill(&vm).await;
    w.backend.wait_exit(&vm).await;
    w.backend.cleanup(&vm).await.unwrap();
}

/// Capture as the manager runs it (`docs/snapshots.md` Capture): pause, snapshot, resume; then a
/// restore into a fresh jail of another VM, with a stale `v.sock` there that the backend must
/// delete.
#[tokio::test]
async fn snapshot_create_and_restore() {
    let w = world();
    let (spec, vm) = w.booted(VM1).await;
    let snap = w.root.join("snapshots/.tmp-1");
    std::fs::create_dir_all(&snap).unwrap();

    w.backend.pause(&vm).await.unwrap();
    w.backend.snapshot_create(&vm, &snap).await.unwrap();
    w.backend.resume(&vm).await.unwrap();
    assert_eq!(
        w.fake().requests(),
        calls(&[
            ("PATCH /vm", r#"{"state":"Paused"}"#),
            (
                "PUT /snapshot/create",
                r#"{"snapshot_type":"Full","snapshot_path":"/vmstate.snap","mem_file_path":"/mem.snap"}"#
            ),
            ("PATCH /vm", r#"{"state":"Resumed"}"#),
        ])
    );
    // Moved out of the jail, read-only.
    let jail = w.backend.jail(VM1);
    for f in ["vmstate.snap", "mem.snap"] {
        let m = std::fs::metadata(snap.join(f)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o444, "{f}");
        assert!(!jail.root.join(f).exists(), "{f} still in the jail");
    }
    assert_eq!(
        std::fs::read(snap.join("vmstate.snap")).unwrap(),
        b"vmstate-14-KB"
    );
    w.backend.kill(&vm).await;
    w.backend.wait_exit(&vm).await;
    w.backend.cleanup(&vm).await.unwrap();
    assert_nothing_left(&w, &spec);

    // Restore as VM2 on another TAP.
    w.fake().clear();
    let spec2 = w.spec(VM2, "rds-tap9");
    w.backend.prepare(&spec2).await.unwrap();
    let jail2 = w.backend.jail(VM2);
    let _stale = std::os::unix::net::UnixListener::bind(jail2.root.join("v.sock")).unwrap();
    let vm2 = w.backend.restore(&spec2, &snap).await.unwrap();
    let mut want = log_calls();
    want.push((
        "PUT /snapshot/load",
        r#"{"snapshot_path":"/vmstate.snap","mem_backend":{"backend_type":"File","backend_path":"/mem.snap"},"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"rds-tap9"}],"vsock_override":{"uds_path":"/v.sock"}}"#,
    ));
    assert_eq!(w.fake().requests(), calls(&want));
    // The memory file is the snapshot's own inode (hard link), never a changed copy.
    let a = std::fs::metadata(snap.join("mem.snap")).unwrap();
    let b = std::fs::metadata(jail2.root.join("mem.snap")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert!(w.backend.is_alive(&vm2));
    w.backend.kill(&vm2).await;
    w.backend.wait_exit(&vm2).await;
    w.backend.cleanup(&vm2).await.unwrap();
    assert_nothing_left(&w, &spec2);
    assert!(
        snap.join("mem.snap").is_file(),
        "the snapshot itself is kept"
    );
}

/// A 400 with `fault_message` is a clear error carrying the fault and Firecracker's log, written to
/// the VM's log too; the VMM is killed and the jail removed.
#[tokio::test]
async fn a_rejected_call_is_a_clear_error_and_leaks_nothing() {
    let w = world();
    w.fake().fail_on(
        "PUT /machine-config",
        Failure {
            status: 400,
            body: r#"{"fault_message":"The memory size (MiB) is invalid."}"#.into(),
            log_line: Some(
                "2024-05-01T10:00:00.000000000 [anonymous-instance:fc_api] ERROR Received Error. \
                 Status code: 400 Bad Request. Message: The memory size (MiB) is invalid.\n"
                    .into(),
            ),
        },
    );
    let spec = w.spec(VM1, "rds-tap7");
    w.backend.prepare(&spec).await.unwrap();
    let err = w.backend.boot(&spec).await.unwrap_err();
    match &err {
        VmmError::Api {
            call,
            status,
            fault_message,
            log_tail,
        } => {
            assert_eq!(call, "PUT /machine-config");
            assert_eq!(*status, 400);
            assert_eq!(fault_message, "The memory size (MiB) is invalid.");
            assert!(
                log_tail.contains("[anonymous-instance:fc_api] ERROR"),
                "{log_tail}"
            );
        }
        other => panic!("expected Api, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "firecracker rejected PUT /machine-config (HTTP 400): The memory size (MiB) is invalid.; log: "
        ),
        "{msg}"
    );
    assert!(msg.len() <= 2048, "lastError holds 2 KiB");
    // Nothing after the rejected call.
    assert_eq!(w.fake().requests().len(), 4);
    assert_eq!(w.fake().requests()[3].0, "PUT /machine-config");
    // The placeholder VMM was killed and reaped, the jail removed, the logs kept and telling.
    let pid = {
        let log = std::fs::read_to_string(spec.logs_dir.join("vmm.log")).unwrap();
        assert!(
            log.contains(r#"<- 400 {"fault_message":"The memory size (MiB) is invalid."}"#),
            "{log}"
        );
        assert!(log.contains("ERROR Received Error"), "{log}");
        let line = log.lines().find(|l| l.contains("launched for")).unwrap();
        line.split("firecracker pid ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "VMM pid {pid} still exists"
    );
    assert_nothing_left(&w, &spec);
}

#[tokio::test]
async fn a_vmm_dying_at_launch_reports_its_stderr_and_leaks_nothing() {
    let w = world_with(FakeLauncher {
        die_with: Some("Failed to exec into Firecracker: No such file or directory".into()),
        ..FakeLauncher::default()
    });
    let spec = w.spec(VM1, "rds-tap7");
    w.backend.prepare(&spec).await.unwrap();
    let err = w.backend.boot(&spec).await.unwrap_err();
    match &err {
        VmmError::DiedDuringLaunch {
            status,
            stderr_tail,
        } => {
            assert_eq!(*status, ExitStatus::Code(1));
            assert!(
                stderr_tail.contains("Failed to exec into Firecracker"),
                "{stderr_tail}"
            );
        }
        other => panic!("expected DiedDuringLaunch, got {other:?}"),
    }
    assert!(w.fake().requests().is_empty());
    assert_nothing_left(&w, &spec);
}

#[tokio::test]
async fn serial_output_reaches_console_log_through_the_fifo() {
    let w = world();
    let (spec, vm) = w.booted(VM1).await;
    let jail = w.backend.jail(VM1);
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(jail.root.join("console.fifo"))
            .unwrap();
        f.write_all(b"[    0.000000] Linux version 6.1.0\n")
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let console = loop {
        let text = std::fs::read_to_string(spec.logs_dir.join("console.log")).unwrap();
        if text.contains("Linux version") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(console, "[    0.000000] Linux version 6.1.0\n");
    w.backend.adopt(&vm).await.unwrap(); // idempotent while the drains run
    w.backend.kill(&vm).await;
    w.backend.wait_exit(&vm).await;
    w.backend.cleanup(&vm).await.unwrap();
    assert!(matches!(w.backend.adopt(&vm).await, Err(VmmError::Gone)));
}
