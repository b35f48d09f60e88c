//! The manager as a real process: the `run-dat-sheesh` binary, configured by its environment, in a
//! network namespace of its own, next to an OTLP/HTTP collector the test runs in that namespace.
//!
//! - Logs and traces: JSON log lines carry request ids; spans reach the collector (flushed on SIGTERM) as one server span per request with
//!   the route as its name, lifecycle steps and agent calls as its children, and no key, command
//!   or body anywhere in what was exported or logged.
//! - Signals (`docs/reference/lifecycle.md` §4–5): SIGTERM stops the manager with its VMs running;
//!   `kill -9` of the manager with two running VMs, then a new process: both RUNNING with the same
//!   VMMs, exec works, and no process, TAP or directory beyond theirs exists. A VMM killed behind a
//!   running manager's back leaves RUNNING within 2 s and its helper and TAP are freed.
//! - `kill -9` in the middle of a create (during the boot), a stop (during the guest's flush) and
//!   a destroy: after each restart every VM is RUNNING, STOPPED or ERROR, RUNNING ones answer, and
//!   no process, TAP, host rule or directory is left that no VM owns; and in the middle of an image
//!   upload: the image is unchanged and no staging file survives the restart.

mod common;

use common::netns::{Ns, NsRuntime};
use common::{test_env, KEY};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PORT: u16 = 3000;

/// An OTLP/HTTP receiver for `/v1/traces`, keeping every request body.
struct Collector {
    port: u16,
    bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
}

impl Collector {
    async fn start(rt: &NsRuntime) -> Collector {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let port = rt
            .run(async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: bytes::Bytes| {
                        kept.lock().unwrap().push(body);
                        // An empty ExportTraceServiceResponse encodes as no bytes.
                        async {
                            (
                                [("content-type", "application/x-protobuf")],
                                Vec::<u8>::new(),
                            )
                        }
                    }),
                );
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = l.local_addr().unwrap().port();
                tokio::spawn(async move { axum::serve(l, app).await });
                port
            })
            .await;
        Collector { port, bodies }
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }

    fn spans(&self) -> Vec<Span> {
        let mut out = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let req: ExportTraceServiceRequest =
                prost::Message::decode(body.as_ref()).expect("OTLP protobuf");
            for rs in req.resource_spans {
                let resource = rs
                    .resource
                    .map(|r| attrs(&r.attributes))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        out.push(Span {
                            trace: s.trace_id,
                            id: s.span_id,
                            parent: s.parent_span_id,
                            name: s.name,
                            kind: s.kind,
                            attrs: attrs(&s.attributes),
                            service: resource.get("service.name").cloned().unwrap_or_default(),
                        });
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Span {
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    kind: i32,
    attrs: HashMap<String, String>,
    service: String,
}

fn attrs(kv: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .map(|a| {
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (a.key.clone(), v)
        })
        .collect()
}

/// Names from `s` up to its trace's root.
fn ancestry(spans: &[Span], s: &Span) -> Vec<String> {
    let mut names = vec![s.name.clone()];
    let mut cur = s.clone();
    while !cur.parent.is_empty() {
        let Some(p) = spans
            .iter()
            .find(|p| p.id == cur.parent && p.trace == cur.trace)
        else {
            names.push("<missing parent>".into());
            break;
        };
        names.push(p.name.clone());
        cur = p.clone();
    }
    names
}

/// One `run-dat-sheesh` process in `ns`, its stderr kept in `log`.
struct Manager {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Manager {
    fn spawn(ns: &Ns, env: &HashMap<String, String>, log: &std::path::Path) -> Manager {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let netns = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
        let fd = netns.as_raw_fd();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_run-dat-sheesh"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: setns is async-signal-safe; `netns` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn run-dat-sheesh");
        drop(netns);
        Manager {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends `sig` and waits for the exit; returns its status.
    fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "manager did not exit after signal {sig}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A namespace with a runtime in it, an HTTP client for the manager, and the collector.
struct Harness {
    rt: NsRuntime,
    http: reqwest::Client,
    collector: Collector,
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    _pg: Option<rds_testkit::TestPostgres>,
    // Last: the namespace goes after everything in it.
    ns: Ns,
}

impl Harness {
    async fn new(image: Option<&rds_testkit::GuestImage>, vhost: &str, service: &str) -> Harness {
        let ns = Ns::new("proc");
        let rt = NsRuntime::start(&ns.name, None);
        let collector = Collector::start(&rt).await;
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("http://127.0.0.1:{}", collector.port);
        let port = PORT.to_string();
        let (env, pg) = test_env(
            &dir,
            image,
            vhost,
            &[
                ("PORT", &port),
                ("LOG_FORMAT", "json"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_SERVICE_NAME", service),
            ],
        )
        .await;
        // reqwest is built without a TLS provider of its own (the manager installs ring too).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Harness {
            rt,
            http: reqwest::Client::new(),
            collector,
            dir,
            env,
            _pg: pg,
            ns,
        }
    }

    fn storage(&self) -> String {
        self.dir.path().join("s").display().to_string()
    }

    /// Starts a manager process and waits until `/healthz` answers.
    async fn manager(&self, name: &str) -> Manager {
        let mut m = Manager::spawn(&self.ns, &self.env, &self.dir.path().join(name));
        let t = Instant::now();
        loop {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("manager exited at start: {status}\n{}", m.log_tail());
            }
            if self.request("GET", "/healthz", None, None).await.is_some() {
                return m;
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "manager not up\n{}",
                m.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A request from inside the namespace; `None` when the manager cannot be reached.
    async fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Option<(u16, Value)> {
        let mut req = self.http.request(
            method.parse().unwrap(),
            format!("http://127.0.0.1:{PORT}{path}"),
        );
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        self.rt
            .run(async move {
                let resp = req.send().await.ok()?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.ok()?;
                Some((
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                ))
            })
            .await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.request(method, path, Some(KEY), body.map(|b| b.to_string()))
            .await
            .unwrap_or_else(|| panic!("{method} {path}: manager unreachable"))
    }

    async fn exec(&self, id: &str, cmd: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/vms/{id}/exec"),
                Some(json!({ "cmd": cmd })),
            )
            .await;
        assert_eq!(status, 200, "{cmd}: {body}");
        assert_eq!(body["exitCode"], 0, "{cmd}: {body}");
        body["stdout"].as_str().unwrap().to_string()
    }

    async fn state(&self, id: &str) -> String {
        let (status, body) = self.call("GET", &format!("/v1/vms/{id}"), None).await;
        assert_eq!(status, 200, "{body}");
        body["state"].as_str().unwrap().to_string()
    }

    fn taps(&self) -> Vec<String> {
        let links = self.ns.output(&["ip", "-o", "link", "show"]);
        let mut taps: Vec<String> = links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("rds-tap"))
            .collect();
        taps.sort();
        taps
    }

    fn processes(&self) -> Vec<u32> {
        let mut p = rds_testkit::pids_matching(&self.storage());
        p.sort();
        p
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for pid in rds_testkit::pids_matching(&self.storage()) {
            // SAFETY: plain syscall; these are the VMs this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn qemu_pid(id: &str) -> u32 {
    let pids = rds_testkit::pids_matching(&format!("rds-{id}"));
    assert_eq!(pids.len(), 1, "one QEMU for {id}: {pids:?}");
    pids[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_the_collector_without_secrets() {
    let Some(vhost) = common::manager_prerequisites("traces_reach_the_collector_without_secrets")
    else {
        return;
    };
    // Nothing boots here: the image, when built, only makes the manager's startup realistic.
    let image = rds_testkit::guest_image().ok();
    let service = format!("rds-e2e-{}", std::process::id());
    let h = Harness::new(image.as_ref(), &vhost, &service).await;
    let mut m = h.manager("manager.log").await;
    let (status, _) = h.call("GET", "/v1/vms", None).await;
    assert_eq!(status, 200);
    let (status, _) = h
        .request("GET", "/v1/vms", Some("wrong-key-0123456789"), None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let marker = "body-marker-5b0e1c";
    let (status, _) = h
        .call("POST", "/v1/vms", Some(json!({ "cpu": marker })))
        .await;
    assert_eq!(status, 400);

    // SIGTERM flushes what the batch exporter still holds.
    let exit = m.signal(libc::SIGTERM);
    assert!(exit.success(), "{exit}\n{}", m.log_tail());
    let spans = h.collector.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let list = spans
        .iter()
        .find(|s| s.name == "GET /v1/vms" && s.attrs["http.response.status_code"] == "200")
        .unwrap_or_else(|| panic!("no GET /v1/vms span in {names:?}"));
    assert_eq!(list.kind, 2, "a server span");
    assert_eq!(list.service, service);
    assert_eq!(list.attrs["http.route"], "/v1/vms");
    assert_eq!(list.attrs["http.request.method"], "GET");
    assert!(list.parent.is_empty(), "a request is a trace's root");
    // The harness polled /healthz until the manager answered: probes are not exported.
    assert!(!names.contains(&"GET /healthz"), "{names:?}");
    for code in ["401", "400"] {
        assert!(
            spans.iter().any(
                |s| s.attrs.get("http.response.status_code").map(String::as_str) == Some(code)
            ),
            "no span with status {code}: {names:?}"
        );
    }
    let raw = String::from_utf8_lossy(&h.collector.raw()).into_owned();
    let log = std::fs::read_to_string(&m.log).unwrap();
    assert!(
        log.contains("\"request_id\""),
        "JSON log lines carry request ids"
    );
    for secret in [KEY, "wrong-key-0123456789", marker, "admin-password-123"] {
        assert!(!raw.contains(secret), "{secret} was exported");
        assert!(!log.contains(secret), "{secret} was logged");
    }
    println!("exported {} spans: {names:?}", spans.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_restarts_and_lifecycle_traces() {
    let Some((image, vhost)) = common::guest_prerequisites("signals_restarts_and_lifecycle_traces")
    else {
        return;
    };
    let h = Harness::new(Some(&image), &vhost, "rds-e2e-story").await;
    let mut m = h.manager("manager-1.log").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, body) = h
            .call("POST", "/v1/vms", Some(json!({ "cpu": 1, "memMb": 512 })))
            .await;
        assert_eq!(status, 201, "{body}\n{}", m.log_tail());
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let secret_cmd = "echo cmd-marker-77f1 > /workspace/marker && sync";
    for id in &ids {
        h.exec(id, secret_cmd).await;
    }
    let qemus: Vec<u32> = ids.iter().map(|id| qemu_pid(id)).collect();
    let processes = h.processes();
    let taps = h.taps();
    assert_eq!(taps.len(), 2, "{taps:?}");

    // SIGTERM: the manager exits 0 and leaves its VMs running for re-adoption.
    let exit = m.signal(libc::SIGTERM);
    assert!(exit.success(), "{exit}\n{}", m.log_tail());
    assert!(
        m.log_tail().contains("VMs keep running"),
        "{}",
        m.log_tail()
    );
    // Written to a file, not a terminal: plain text without colour codes.
    let log = std::fs::read(&m.log).unwrap();
    assert!(
        !log.contains(&0x1b),
        "escape sequences in a log file:\n{}",
        m.log_tail()
    );
    assert_eq!(h.processes(), processes, "VMM processes survive SIGTERM");

    // Lifecycle steps and agent calls are children of the request that caused them.
    let spans = h.collector.spans();
    let create = spans
        .iter()
        .find(|s| s.name == "vm.create")
        .unwrap_or_else(|| panic!("no vm.create span"));
    assert_eq!(ancestry(&spans, create), ["vm.create", "POST /v1/vms"]);
    assert!(ids.contains(&create.attrs["vm_id"]), "{:?}", create.attrs);
    for step in [
        "storage.provision_disk",
        "net.attach",
        "vmm.boot",
        "agent.wait_ready",
        "guest.provision",
    ] {
        let s = spans
            .iter()
            .find(|s| s.name == step && s.parent == create.id)
            .unwrap_or_else(|| panic!("no {step} under vm.create"));
        assert_eq!(s.trace, create.trace);
    }
    let exec_call = spans
        .iter()
        .find(|s| s.name == "agent.call" && s.attrs["agent.path"] == "/exec")
        .expect("an agent call for exec");
    assert_eq!(
        ancestry(&spans, exec_call),
        ["agent.call", "vm.exec", "POST /v1/vms/{id}/exec"]
    );
    let raw = String::from_utf8_lossy(&h.collector.raw()).into_owned();
    assert!(!raw.contains("cmd-marker-77f1"), "a command was exported");
    assert!(!raw.contains(KEY), "the API key was exported");

    // A new process re-adopts both.
    let mut m = h.manager("manager-2.log").await;
    for id in &ids {
        assert_eq!(h.state(id).await, "RUNNING");
        assert_eq!(
            h.exec(id, "cat /workspace/marker").await,
            "cmd-marker-77f1\n"
        );
    }

    // kill -9 of the manager: nothing runs its shutdown path; the VMMs stay.
    let exit = m.signal(libc::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9)
    );
    assert_eq!(h.processes(), processes, "VMM processes survive kill -9");
    let m = h.manager("manager-3.log").await;
    for (id, qemu) in ids.iter().zip(&qemus) {
        assert_eq!(h.state(id).await, "RUNNING", "{}", m.log_tail());
        assert_eq!(h.exec(id, "echo alive").await, "alive\n");
        assert_eq!(qemu_pid(id), *qemu, "the same VMM, re-adopted");
    }
    assert_eq!(h.processes(), processes, "no process started or orphaned");
    assert_eq!(h.taps(), taps, "no TAP added or orphaned");
    let mut dirs: Vec<String> = std::fs::read_dir(h.dir.path().join("s/vms"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(dirs, want, "one directory per VM");

    // A VMM killed behind the running manager's back: the VM leaves RUNNING within 2 s.
    // SAFETY: plain syscall on a QEMU this test started.
    unsafe { libc::kill(qemus[0] as i32, libc::SIGKILL) };
    let t = Instant::now();
    let state = rds_testkit::wait_until(Duration::from_secs(2), || async {
        let s = h.state(&ids[0]).await;
        (s != "RUNNING").then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("still RUNNING 2 s after its VMM died\n{}", m.log_tail()));
    println!("VMM death noticed as {state} in {:?}", t.elapsed());
    // Its helper and TAP go too; the other VM keeps its own.
    let freed = rds_testkit::wait_until(Duration::from_secs(5), || async {
        (rds_testkit::pids_matching(&ids[0]).is_empty() && h.taps().len() == 1).then_some(())
    })
    .await;
    assert!(
        freed.is_some(),
        "left after the VMM died: {:?} {:?}",
        rds_testkit::pids_matching(&ids[0]),
        h.taps()
    );
    assert_eq!(h.exec(&ids[1], "echo still").await, "still\n");

    for id in &ids {
        let (status, body) = h.call("DELETE", &format!("/v1/vms/{id}"), None).await;
        assert!(status == 200 || status == 204, "{status} {body}");
    }
    assert_eq!(
        h.processes(),
        Vec::<u32>::new(),
        "processes left after destroy"
    );
    assert_eq!(h.taps(), Vec::<String>::new(), "TAPs left after destroy");
    let mut m = m;
    assert!(m.signal(libc::SIGTERM).success());
}

/// Whether `text` names the address `ip` (not merely a longer one starting with it).
fn mentions(text: &str, ip: &str) -> bool {
    text.match_indices(ip).any(|(at, _)| {
        !text[at + ip.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// The state a restarted manager must reach after a `kill -9` at any moment: every VM RUNNING,
/// STOPPED or ERROR (no operation left half-way), a RUNNING VM with its VMM and TAP, any other
/// without processes, TAP or host rules, one directory per VM, and no process under the storage
/// that no RUNNING VM owns. `Err` says what is still off (reconciliation and the VMM watcher may
/// need a moment).
async fn consistent(h: &Harness) -> Result<Vec<String>, String> {
    let (status, list) = h.call("GET", "/v1/vms", None).await;
    if status != 200 {
        return Err(format!("list: {status} {list}"));
    }
    let rules = h.ns.output(&["nft", "list", "ruleset"]);
    let (mut ids, mut running) = (Vec::new(), Vec::new());
    for v in list.as_array().unwrap() {
        let id = v["id"].as_str().unwrap().to_string();
        let state = v["state"].as_str().unwrap();
        let ip = v["guestIp"].as_str().unwrap_or_default();
        match state {
            "RUNNING" => running.push(id.clone()),
            "STOPPED" | "ERROR" => {
                if !rds_testkit::pids_matching(&id).is_empty() {
                    return Err(format!("{state} VM {id} still has processes"));
                }
                if !ip.is_empty() && mentions(&rules, ip) {
                    return Err(format!("{state} VM {id} still has host rules for {ip}"));
                }
            }
            other => return Err(format!("VM {id} left in {other}")),
        }
        ids.push(id);
    }
    for pid in h.processes() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.is_empty() && !running.iter().any(|id| cmdline.contains(id.as_str())) {
            return Err(format!("process {pid} owned by no RUNNING VM: {cmdline}"));
        }
    }
    if h.taps().len() != running.len() {
        return Err(format!("TAPs {:?} for RUNNING {running:?}", h.taps()));
    }
    let mut dirs: Vec<String> = std::fs::read_dir(h.dir.path().join("s/vms"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    ids.sort();
    if dirs != ids {
        return Err(format!("directories {dirs:?} for VMs {ids:?}"));
    }
    Ok(running)
}

/// `kill -9` of the manager in the middle of a create (during the boot), a stop (during the
/// guest's shutdown) and a destroy: after a restart each time, every VM is in a state the
/// lifecycle allows and nothing is orphaned; the RUNNING ones answer, and all can be destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_operations_leaves_allowed_states_and_nothing_orphaned() {
    let test = "kill_9_during_operations_leaves_allowed_states_and_nothing_orphaned";
    let Some((image_files, vhost)) = common::guest_prerequisites(test) else {
        return;
    };
    let mut h = Harness::new(Some(&image_files), &vhost, "rds-e2e-kill").await;
    // Cold boots: a create then takes seconds, a window to kill the manager in.
    h.env.insert("WARM_POOL_MAX_VMS".into(), "0".into());
    h.env.insert("ENABLE_SNAPSHOTS".into(), "false".into());
    let mut m = h.manager("kill-1.log").await;
    let mut vms = Vec::new();
    for _ in 0..2 {
        let (status, body) = h
            .call("POST", "/v1/vms", Some(json!({ "cpu": 1, "memMb": 256 })))
            .await;
        assert_eq!(status, 201, "{body}\n{}", m.log_tail());
        vms.push(body["id"].as_str().unwrap().to_string());
    }
    let create = json!({ "cpu": 1, "memMb": 256 }).to_string();
    let ops = [
        ("create", "POST", Some(create), Duration::from_millis(1500)),
        ("stop", "POST", None, Duration::from_millis(150)),
        ("destroy", "DELETE", None, Duration::from_millis(20)),
    ];
    for (round, (op, method, body, delay)) in ops.into_iter().enumerate() {
        let path = match op {
            "create" => "/v1/vms".to_string(),
            "stop" => format!("/v1/vms/{}/stop", vms[0]),
            _ => format!("/v1/vms/{}", vms[1]),
        };
        if op == "stop" {
            // Dirty pages make the stop's guest flush take a while: the kill lands inside it.
            h.exec(
                &vms[0],
                "dd if=/dev/zero of=big bs=1M count=100 2>/dev/null; echo ok",
            )
            .await;
        }
        let call = h.request(method, &path, Some(KEY), body);
        let kill = async {
            tokio::time::sleep(delay).await;
            m.signal(libc::SIGKILL)
        };
        let (answer, exit) = tokio::join!(call, kill);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&exit),
            Some(9)
        );
        println!("{op}: manager killed {delay:?} in; the caller saw {answer:?}");
        m = h.manager(&format!("kill-{}.log", round + 2)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let running = loop {
            match consistent(&h).await {
                Ok(running) => break running,
                Err(e) if Instant::now() > deadline => {
                    panic!("after a kill during {op}: {e}\n{}", m.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        println!("after {op}: RUNNING {running:?}");
        for id in &running {
            assert_eq!(h.exec(id, "echo alive").await, "alive\n");
        }
    }
    // An image part upload: 2 MB of a declared 64 MB sent, then the manager is killed.
    let (status, body) = h
        .call(
            "POST",
            "/v1/images",
            Some(json!({"name": "cut", "description": "upload cut by kill -9"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let image = body["id"].as_str().unwrap().to_string();
    let staging = h.dir.path().join("s/images/.staging");
    let head = format!(
        "PUT /v1/images/{image}/kernel HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\n\
         content-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        64 << 20
    );
    // The head of a real kernel, so the receiver's format check keeps the bytes.
    let mut chunk = std::fs::read(&image_files.kernel).unwrap();
    chunk.truncate(2 << 20);
    let upload = h.rt.run(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", PORT))
            .await
            .unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&chunk).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let kill = async {
        let staged = rds_testkit::wait_until(Duration::from_secs(10), || async {
            let n = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
            (n > 0).then_some(n)
        })
        .await
        .expect("a staging file while the upload runs");
        println!("image upload: {staged} staging file(s) when the manager is killed");
        m.signal(libc::SIGKILL)
    };
    let ((), exit) = tokio::join!(upload, kill);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9)
    );
    let mut m = h.manager("kill-image.log").await;
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(left.is_empty(), "staging files after the restart: {left:?}");
    let (_, img) = h.call("GET", &format!("/v1/images/{image}"), None).await;
    assert_eq!(img["hasKernel"], false, "{img}");
    assert!(!h.dir.path().join("s/images").join(&image).exists());

    let (_, list) = h.call("GET", "/v1/vms", None).await;
    for v in list.as_array().unwrap() {
        let id = v["id"].as_str().unwrap();
        let (status, body) = h.call("DELETE", &format!("/v1/vms/{id}"), None).await;
        assert_eq!(status, 204, "{body}");
    }
    assert_eq!(h.processes(), Vec::<u32>::new(), "processes after destroy");
    assert_eq!(h.taps(), Vec::<String>::new(), "TAPs after destroy");
    assert!(m.signal(libc::SIGTERM).success());
}
