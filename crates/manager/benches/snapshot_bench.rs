//! `cargo bench -p rds-manager --bench snapshot_bench` — numbers for docs/benchmarks.md, never asserted.
//!
//! One run, one image, the template shape (1 vCPU / 256 MiB) for every create mode, over real TCP
//! against the release binary:
//! - manager A (snapshots off): cold boots; captures of a 512 MiB guest (time, size); restores of that
//!   user snapshot; 1, 2 and 4 restores at once; the host memory of ten idle cold-booted VMs;
//! - manager B (`ENABLE_SNAPSHOTS=true`): template restores; the memory of ten VMs restored from it;
//! - manager C (templates and `ENABLE_WARM_POOL=true`, target 1): warm-pool takes, the pool refilled
//!   before each.
//!
//! "→ exec" is create → 201 → the first `exec` of `true` answered. `RDS_BENCH_RUNS` (default 5) sets
//! the samples per mode, `RDS_BENCH_IDLE_VMS` (default 10) the VMs of the memory rows.

mod common;

use common::{pct, vmm_memory, Manager};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SHAPE: (u32, u32) = (1, 256);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Create with `body`, then exec `true`; returns (to 201, to exec, the VM).
async fn create_then_exec(m: &Manager, body: Value) -> (f64, f64, Value) {
    let t = Instant::now();
    let (s, vm) = m.call("POST", "/v1/vms", Some(body)).await;
    assert_eq!(s, 201, "{vm}");
    let to_201 = t.elapsed().as_secs_f64();
    let id = vm["id"].as_str().unwrap();
    let (s, r) = m
        .call(
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(json!({"cmd": "true"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    (to_201, t.elapsed().as_secs_f64(), vm)
}

async fn destroy(m: &Manager, vm: &Value) {
    let id = vm["id"].as_str().unwrap();
    let (s, _) = m.call("DELETE", &format!("/v1/vms/{id}"), None).await;
    assert_eq!(s, 204);
}

/// `runs` creates of `body` (each destroyed after its exec); prints p50/p90 of both times and the
/// provision modes seen. With `pool`, each create waits for a full warm pool first.
async fn measure_creates(m: &Manager, label: &str, body: Value, runs: usize, pool: bool) {
    let (mut a, mut b, mut modes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        if pool {
            let full = rds_testkit::wait_until(Duration::from_secs(120), || async {
                (pool_size(m).await >= 1).then_some(())
            })
            .await;
            assert!(full.is_some(), "the warm pool did not fill");
        }
        let (to_201, to_exec, vm) = create_then_exec(m, body.clone()).await;
        a.push(to_201);
        b.push(to_exec);
        modes.push(vm["provisionMode"].as_str().unwrap_or("?").to_string());
        destroy(m, &vm).await;
    }
    modes.dedup();
    println!(
        "{label:<28} → 201 p50 {:.3} s p90 {:.3} s | → exec p50 {:.3} s p90 {:.3} s  (mode {})",
        pct(&mut a, 0.5),
        pct(&mut a, 0.9),
        pct(&mut b, 0.5),
        pct(&mut b, 0.9),
        modes.join(",")
    );
}

/// Creates `count` VMs of `body` one after the other, lets them idle, prints their VMM memory per VM,
/// destroys them.
async fn idle_memory(m: &Manager, label: &str, body: Value, count: usize) {
    let mut vms = Vec::new();
    for _ in 0..count {
        let (s, vm) = m.call("POST", "/v1/vms", Some(body.clone())).await;
        assert_eq!(s, 201, "{vm}");
        vms.push(vm);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ids: Vec<String> = vms
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let (anon, file, shmem, procs) = vmm_memory(&ids);
    let per = |x: f64| x / count as f64;
    println!(
        "{label:<28} per VM: RSS {:.0} MiB = anon {:.0} + file {:.0} + shmem {:.0} ({procs} processes)",
        per(anon + file + shmem),
        per(anon),
        per(file),
        per(shmem)
    );
    for vm in &vms {
        destroy(m, vm).await;
    }
}

async fn wait_template(m: &Manager) -> bool {
    let ready = rds_testkit::wait_until(Duration::from_secs(300), || async {
        let (_, images) = m.call("GET", "/v1/images", None).await;
        let img = images
            .as_array()?
            .iter()
            .find(|i| i["isDefault"] == true)?
            .clone();
        match img["seedStatus"].as_str() {
            Some("ready") => Some(true),
            Some("failed") => Some(false),
            _ => None,
        }
    })
    .await;
    ready == Some(true)
}

/// Running warm-pool VMs, from `/metrics`.
async fn pool_size(m: &Manager) -> u64 {
    let body = common::call_raw(m.port, "GET", "/metrics", "text/plain", Vec::new())
        .await
        .1;
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("rds_warm_pool_vms "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::main]
async fn main() {
    let (image, vhost) = match rds_testkit::e2e_prerequisites() {
        Ok(p) => p,
        Err(reason) => {
            println!("SKIP snapshot_bench: {reason}");
            return;
        }
    };
    let runs = env_usize("RDS_BENCH_RUNS", 5);
    let idle = env_usize("RDS_BENCH_IDLE_VMS", 10);
    let shape = json!({"cpu": SHAPE.0, "memMb": SHAPE.1});
    println!(
        "snapshot_bench (QEMU TCG, {}/{} MiB shape, {runs} runs per mode)",
        SHAPE.0, SHAPE.1
    );

    // A: snapshots off.
    let a = Manager::start(&image, &vhost, &[("MAX_VMS", "16")]).await;
    measure_creates(&a, "cold boot", shape.clone(), runs, false).await;

    let (s, big) = a
        .call("POST", "/v1/vms", Some(json!({"cpu": 1, "memMb": 512})))
        .await;
    assert_eq!(s, 201, "{big}");
    let big_id = big["id"].as_str().unwrap().to_string();
    let (mut took, mut sizes, mut snaps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let (s, snap) = a
            .call("POST", &format!("/v1/vms/{big_id}/snapshots"), None)
            .await;
        assert_eq!(s, 201, "{snap}");
        took.push(t.elapsed().as_secs_f64());
        sizes.push(snap["sizeBytes"].as_f64().unwrap_or(0.0) / 1e6);
        snaps.push(snap);
    }
    println!(
        "capture, 512 MiB guest        p50 {:.3} s p90 {:.3} s, {:.0} MB on disk, memory {}",
        pct(&mut took, 0.5),
        pct(&mut took, 0.9),
        pct(&mut sizes, 0.5),
        snaps[0]["hasMemory"]
    );
    let snap_id = snaps[0]["id"].as_str().unwrap().to_string();
    let restore = json!({"cpu": 1, "memMb": 512, "userOverlaySnapshotId": snap_id});
    measure_creates(
        &a,
        "user snapshot restore (512)",
        restore.clone(),
        runs,
        false,
    )
    .await;
    for n in [1usize, 2, 4] {
        let t = Instant::now();
        let all =
            futures::future::join_all((0..n).map(|_| create_then_exec(&a, restore.clone()))).await;
        let wall = t.elapsed().as_secs_f64();
        let mut each: Vec<f64> = all.iter().map(|r| r.1).collect();
        println!(
            "{n} restores at once             all done {wall:.3} s, each → exec p50 {:.3} s max {:.3} s",
            pct(&mut each, 0.5),
            pct(&mut each, 1.0)
        );
        for (_, _, vm) in &all {
            destroy(&a, vm).await;
        }
    }
    destroy(&a, &big).await;
    idle_memory(
        &a,
        &format!("{idle} idle, cold-booted"),
        shape.clone(),
        idle,
    )
    .await;
    drop(a);

    // B: templates.
    let b = Manager::start(
        &image,
        &vhost,
        &[("MAX_VMS", "16"), ("ENABLE_SNAPSHOTS", "true")],
    )
    .await;
    let t = Instant::now();
    if wait_template(&b).await {
        println!(
            "template build                {:.1} s after start",
            t.elapsed().as_secs_f64()
        );
        measure_creates(&b, "template restore", shape.clone(), runs, false).await;
        idle_memory(
            &b,
            &format!("{idle} idle, from the template"),
            shape.clone(),
            idle,
        )
        .await;
    } else {
        println!("SKIP template rows: the default image's template did not become ready");
    }
    drop(b);

    // C: warm pool (refilled before each take).
    let c = Manager::start(
        &image,
        &vhost,
        &[
            ("ENABLE_SNAPSHOTS", "true"),
            ("ENABLE_WARM_POOL", "true"),
            ("WARM_POOL_TARGET", "1"),
        ],
    )
    .await;
    measure_creates(&c, "warm-pool take", shape.clone(), runs, true).await;
}
