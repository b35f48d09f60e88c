//! `cargo bench -p rds-manager --bench vm_bench` — numbers for docs/benchmarks.md, never asserted.
//!
//! Starts the real `run-dat-sheesh` binary on a free port with a scratch storage root, then measures
//! over real TCP: create → first exec (cold boot), exec round trips through the manager, the raw
//! hybrid-vsock round trip to the agent for comparison, and manager RSS idle and with 2 VMs.
//! `RDS_BENCH_BOOTS` (default 5) and `RDS_BENCH_EXECS` (default 200) set the run counts.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rds_manager::agent::{AgentClient, AgentConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "bench-key-0123456789abcdef";

async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let data = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(data)))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn call_raw(port: u16, method: &str, path: &str, ct: &str, body: Vec<u8>) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("x-api-key", KEY)
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// A tar.gz holding one file of `n` pseudo-random (incompressible) bytes.
fn random_targz(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("blob.bin").unwrap();
    h.set_size(n as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, data.as_slice()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// One result line: label, unit, p50 and p90 of the samples.
fn row(label: &str, unit: &str, samples: &mut [f64]) {
    let (p50, p90) = (pct(samples, 0.5), pct(samples, 0.9));
    println!("{label:<23} p50 {p50:.2} {unit}  p90 {p90:.2} {unit}");
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[tokio::main]
async fn main() {
    let (image, vhost) = match rds_testkit::e2e_prerequisites() {
        Ok(p) => p,
        Err(reason) => {
            println!("SKIP vm_bench: {reason}");
            return;
        }
    };
    let boots: usize = std::env::var("RDS_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let execs: usize = std::env::var("RDS_BENCH_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let storage = dir.path().join("s");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run-dat-sheesh"));
    cmd.env("API_KEY", KEY)
        .env("ADMIN_EMAIL", "a@b.c")
        .env("ADMIN_PASSWORD", "bench-password-1")
        .env("PORT", port.to_string())
        .env("STORAGE_ROOT", &storage)
        .env("SQLITE_PATH", dir.path().join("m.db"))
        .env("KERNEL_PATH", &image.kernel)
        .env("BASE_ROOTFS_PATH", &image.rootfs)
        .env("VHOST_VSOCK_BIN", &vhost)
        .env("VSOCK_HEALTH_TIMEOUT_MS", "120000")
        .env("RATE_LIMIT_EXEC", "0")
        .env("RUST_LOG", "warn");
    if let Some(i) = &image.initrd {
        cmd.env("INITRD_PATH", i);
    }
    let mut manager = cmd.spawn().expect("start manager");
    let up = rds_testkit::wait_until(Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    assert!(up.is_some(), "manager did not start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_mib(manager.id());

    // Cold boots, one at a time: create → 201 → first exec answered.
    let (mut to_201, mut to_exec) = (Vec::new(), Vec::new());
    for _ in 0..boots {
        let t = Instant::now();
        let (s, vm) = call(
            port,
            "POST",
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 512})),
        )
        .await;
        assert_eq!(s, 201, "{vm}");
        to_201.push(t.elapsed().as_secs_f64());
        let id = vm["id"].as_str().unwrap().to_string();
        let (s, _) = call(
            port,
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(json!({"cmd": "true"})),
        )
        .await;
        assert_eq!(s, 200);
        to_exec.push(t.elapsed().as_secs_f64());
        call(port, "DELETE", &format!("/v1/vms/{id}"), None).await;
    }

    // Two running VMs: exec round trips through the manager and raw vsock to the agent.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, vm) = call(
            port,
            "POST",
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 512})),
        )
        .await;
        assert_eq!(s, 201, "{vm}");
        ids.push(vm["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let two_vm_rss = rss_mib(manager.id());
    let mut rt = Vec::new();
    for _ in 0..execs {
        let t = Instant::now();
        let (s, _) = call(
            port,
            "POST",
            &format!("/v1/vms/{}/exec", ids[0]),
            Some(json!({"cmd": "true"})),
        )
        .await;
        assert_eq!(s, 200);
        rt.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let agent = AgentClient::new(
        storage.join(format!("vms/{}/run/v.sock", ids[0])),
        AgentConfig {
            port: 8080,
            retry_attempts: 1,
            retry_delay: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            binary_timeout: Duration::from_secs(30),
            max_json_response_bytes: 2_000_000,
            max_binary_response_bytes: 50_000_000,
        },
    );
    let mut raw = Vec::new();
    let mut agent_rss_kb = 0;
    for _ in 0..execs {
        let t = Instant::now();
        let h = agent.health_once().await.expect("health");
        raw.push(t.elapsed().as_secs_f64() * 1000.0);
        agent_rss_kb = h.agent_rss_kb.unwrap_or(0);
    }

    // run-ts: the first call in a fresh VM (cold Deno) and then warm calls.
    let run_ts = |id: String| async move {
        let t = Instant::now();
        let (s, r) = call(
            port,
            "POST",
            &format!("/v1/vms/{id}/run-ts"),
            Some(json!({"code": "console.log(1)"})),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        t.elapsed().as_secs_f64()
    };
    let ts_cold = run_ts(ids[1].clone()).await;
    let mut ts_warm = Vec::new();
    for _ in 0..10 {
        ts_warm.push(run_ts(ids[1].clone()).await);
    }

    // Files: a 5 MiB incompressible archive up and the same tree down.
    let archive = random_targz(5 * 1024 * 1024);
    let mb = archive.len() as f64 / 1e6;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let t = Instant::now();
        let (s, b) = call_raw(
            port,
            "POST",
            &format!("/v1/vms/{}/files/upload?dest=/workspace/b{i}", ids[1]),
            "application/gzip",
            archive.clone(),
        )
        .await;
        assert_eq!(s, 204, "{}", String::from_utf8_lossy(&b));
        up.push(mb / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (s, b) = call_raw(
            port,
            "GET",
            &format!("/v1/vms/{}/files/download?path=/workspace/b{i}", ids[1]),
            "application/json",
            Vec::new(),
        )
        .await;
        assert_eq!(s, 200);
        down.push(b.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    for id in &ids {
        call(port, "DELETE", &format!("/v1/vms/{id}"), None).await;
    }
    let _ = manager.kill();
    let _ = manager.wait();

    println!("vm_bench (QEMU TCG, 1 vCPU / 512 MiB, {boots} boots, {execs} calls)");
    row("create -> 201", "s", &mut to_201);
    row("create -> first exec", "s", &mut to_exec);
    row("exec `true` via API", "ms", &mut rt);
    row("raw vsock GET /health", "ms", &mut raw);
    println!(
        "run-ts console.log(1)   cold {:.2} s  warm p50 {:.2} s",
        ts_cold,
        pct(&mut ts_warm, 0.5)
    );
    println!("upload 5 MiB tar.gz     p50 {:.1} MB/s", pct(&mut up, 0.5));
    println!(
        "download 5 MiB tar.gz   p50 {:.1} MB/s",
        pct(&mut down, 0.5)
    );
    println!(
        "agent RSS in the guest  {:.1} MiB",
        agent_rss_kb as f64 / 1024.0
    );
    println!("manager RSS idle        {idle_rss:.1} MiB");
    println!("manager RSS with 2 VMs  {two_vm_rss:.1} MiB");
}
