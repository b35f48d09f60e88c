//! `cargo bench -p rds-manager --bench lifetime_bench` — numbers for docs/benchmarks.md, never
//! asserted.
//!
//! One release manager, `RDS_BENCH_IDLE_VMS` (default 10) idle VMs of 1 vCPU / 256 MiB: the host's
//! used memory (MemTotal − MemAvailable) and the VMM processes' RSS with all of them running, the
//! time of each pause, the same memory figures with all of them paused and the bytes their saved
//! memory takes on disk, then each resume → 200 and → the first `exec` of `true` answered.

mod common;

use common::{pct, vmm_memory, Manager};
use serde_json::json;
use std::time::{Duration, Instant};

/// MemTotal − MemAvailable, MiB.
fn host_used_mib() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |key: &str| -> f64 {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    };
    (kb("MemTotal:") - kb("MemAvailable:")) / 1024.0
}

/// Allocated bytes under `dir` (what `du` counts), MB.
fn allocated_mb(dir: &std::path::Path) -> f64 {
    let out = std::process::Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(dir)
        .output()
        .ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e6
}

#[tokio::main]
async fn main() {
    let (image, vhost) = match rds_testkit::e2e_prerequisites() {
        Ok(p) => p,
        Err(reason) => {
            println!("SKIP lifetime_bench: {reason}");
            return;
        }
    };
    let count: usize = std::env::var("RDS_BENCH_IDLE_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!("lifetime_bench (QEMU TCG, 1 vCPU / 256 MiB, {count} idle VMs)");
    let m = Manager::start(&image, &vhost, &[("MAX_VMS", "16")]).await;
    let base = host_used_mib();
    let mut ids = Vec::new();
    for _ in 0..count {
        let (s, vm) = m
            .call("POST", "/v1/vms", Some(json!({"cpu": 1, "memMb": 256})))
            .await;
        assert_eq!(s, 201, "{vm}");
        ids.push(vm["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let running_host = host_used_mib() - base;
    let (anon, file, shmem, procs) = vmm_memory(&ids);
    println!(
        "running: host memory +{running_host:.0} MiB; VMM RSS {:.0} MiB ({procs} processes)",
        anon + file + shmem
    );

    let mut pauses = Vec::new();
    for id in &ids {
        let t = Instant::now();
        let (s, vm) = m.call("POST", &format!("/v1/vms/{id}/pause"), None).await;
        assert_eq!(s, 200, "{vm}");
        pauses.push(t.elapsed().as_secs_f64());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused_host = host_used_mib() - base;
    let (anon, file, shmem, procs) = vmm_memory(&ids);
    let on_disk: f64 = ids
        .iter()
        .map(|id| allocated_mb(&m.storage.join("vms").join(id).join("paused")))
        .sum();
    println!(
        "paused:  host memory +{paused_host:.0} MiB; VMM RSS {:.0} MiB ({procs} processes); \
         saved memory on disk {:.0} MB ({:.1} MB per VM)",
        anon + file + shmem,
        on_disk,
        on_disk / count as f64
    );
    println!(
        "pause            p50 {:.3} s p90 {:.3} s",
        pct(&mut pauses, 0.5),
        pct(&mut pauses, 0.9)
    );

    let (mut to_200, mut to_exec) = (Vec::new(), Vec::new());
    for id in &ids {
        let t = Instant::now();
        let (s, vm) = m.call("POST", &format!("/v1/vms/{id}/resume"), None).await;
        assert_eq!(s, 200, "{vm}");
        to_200.push(t.elapsed().as_secs_f64());
        let exec = json!({"cmd": "true"});
        let (s, r) = m
            .call("POST", &format!("/v1/vms/{id}/exec"), Some(exec))
            .await;
        assert_eq!(s, 200, "{r}");
        to_exec.push(t.elapsed().as_secs_f64());
    }
    println!(
        "resume           → 200 p50 {:.3} s p90 {:.3} s | → exec p50 {:.3} s p90 {:.3} s",
        pct(&mut to_200, 0.5),
        pct(&mut to_200, 0.9),
        pct(&mut to_exec, 0.5),
        pct(&mut to_exec, 0.9)
    );
    for id in &ids {
        let (s, _) = m.call("DELETE", &format!("/v1/vms/{id}"), None).await;
        assert_eq!(s, 204);
    }
}
