//! `cargo bench -p rds-manager --bench net_bench` — the network path of a REAL guest under TCG:
//! TCP connect round trips and a bulk download from an "internet" namespace (198.18.0.10) through
//! the guest's TAP, the manager's bridge, its nftables rules and NAT. Namespaces only, as in
//! `tests/e2e_network.rs`; root needed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestManager;
use rds_testkit::internet::Internet;
use serde_json::json;

#[tokio::main]
async fn main() {
    let (image, vhost) = match rds_testkit::e2e_prerequisites() {
        Ok(p) => p,
        Err(reason) => {
            println!("SKIP net_bench: {reason}");
            return;
        }
    };
    let tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let _inet = Internet::new(&tm.ns);
    let id = tm
        .create_vm(json!({"cpu": 1, "memMb": 512, "outboundInternet": true, "allowIps": ["198.18.0.10/32"]}))
        .await;
    let script = "for i in $(seq 30); do curl -s -o /dev/null -w '%{time_connect}\\n' http://198.18.0.10/; done";
    let r = tm
        .exec(&id, json!({ "cmd": script, "timeoutMs": 120000 }))
        .await;
    let mut rtts: Vec<f64> = r.json["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    assert!(!rtts.is_empty(), "no connect times: {}", r.json);
    rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut speeds = Vec::new();
    for _ in 0..3 {
        let r = tm
            .exec(&id, json!({ "cmd": "curl -s -o /dev/null -w '%{speed_download}' http://198.18.0.10/bytes/33554432", "timeoutMs": 120000 }))
            .await;
        if let Ok(bps) = r.json["stdout"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .parse::<f64>()
        {
            speeds.push(bps / 1e6);
        }
    }
    speeds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("net_bench (real guest under QEMU TCG, 1 vCPU / 512 MiB)");
    println!(
        "TCP connect round trip guest -> 198.18.0.10   p50 {:.2} ms  p90 {:.2} ms  ({} samples)",
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 9 / 10],
        rtts.len()
    );
    if let Some(m) = speeds.get(speeds.len() / 2) {
        println!("download 32 MiB 198.18.0.10 -> guest        p50 {m:.1} MB/s");
    }
    tm.call(http::Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
}
