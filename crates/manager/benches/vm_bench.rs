//! `cargo bench -p rds-manager --bench vm_bench` — numbers for docs/benchmarks.md, never asserted.
//!
//! Starts the real `run-dat-sheesh` binary on a free port with a scratch storage root, then measures
//! over real TCP: create → first exec (cold boot), exec round trips through the manager, the raw
//! hybrid-vsock round trip to the agent for comparison, and manager RSS idle and with 2 VMs.
//! `RDS_BENCH_BOOTS` (default 5) and `RDS_BENCH_EXECS` (default 200) set the run counts.

mod common;

use common::{call, call_raw, pct, random_targz, row, rss_mib, Manager};
use rds_manager::agent::{AgentClient, AgentConfig};
use serde_json::json;
use std::time::{Duration, Instant};

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
    let manager = Manager::start(&image, &vhost, &[]).await;
    let (port, storage) = (manager.port, manager.storage.clone());
    let idle_rss = rss_mib(manager.child.id());

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
    let two_vm_rss = rss_mib(manager.child.id());
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
    drop(manager);

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
