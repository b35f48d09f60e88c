//! Load with real guests: N VMs at once, each running M execs that echo a token of their own, while
//! every VM takes a file upload and a poller lists VMs without pause. Every output must belong to
//! its own request, no answer may be a 5xx, and nothing of a VM may be left after its destroy.
//!
//! CI runs a small size (3 VMs × 5 execs); the full size of `docs/benchmarks.md` ("Load") is the same
//! test with `RDS_LOAD_VMS=20 RDS_LOAD_EXECS=20`, which also prints the manager's RSS and exec
//! latencies. Run it under the e2e lock:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_load -- --nocapture`.

mod common;

use common::archive::{targz, Entry};
use common::TestManager;
use futures::future::join_all;
use http::{Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_vms_many_execs_no_mixups() {
    let Some((image, vhost)) = common::guest_prerequisites("load") else {
        return;
    };
    let (vms, execs, mem) = (
        size("RDS_LOAD_VMS", 3),
        size("RDS_LOAD_EXECS", 5),
        size("RDS_LOAD_MEM_MB", 256),
    );
    let max = (vms + 2).to_string();
    let tm = TestManager::start(
        Some(&image),
        &vhost,
        &[
            ("MAX_VMS", max.as_str()),
            ("RATE_LIMIT_GLOBAL", "0"),
            ("RATE_LIMIT_VM_CREATE", "0"),
            ("RATE_LIMIT_EXEC", "0"),
            ("RATE_LIMIT_FILES_UPLOAD", "0"),
            ("WARM_POOL_MAX_VMS", "0"),
            // Creates restore the default image's template, as on a production host.
            ("ENABLE_SNAPSHOTS", "true"),
            // 20 emulated VMs on two host cores run about ten times slower than one: give file
            // transfers the time the exec calls get from their timeoutMs.
            ("VSOCK_BINARY_TIMEOUT_MS", "300000"),
            ("VSOCK_HEALTH_TIMEOUT_MS", "600000"),
        ],
    )
    .await;
    // Steady state: the image's template exists before the creates (built once at start).
    let ready = rds_testkit::wait_until(Duration::from_secs(300), || async {
        let images = tm.call(Method::GET, "/v1/images", None).await.json;
        images
            .as_array()?
            .iter()
            .any(|i| i["isDefault"] == true && i["seedSnapshotId"].is_string())
            .then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "no template for the default image after 5 min"
    );
    let rss_idle = rss_mib();
    let t0 = Instant::now();

    // Creates, all at once.
    let creates = (0..vms).map(|_| {
        tm.call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": mem})),
        )
    });
    let mut ids = Vec::new();
    for r in join_all(creates).await {
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}\n{}",
            r.json,
            tm.console_tails()
        );
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    println!("load: {vms} VMs of {mem} MiB RUNNING in {:?}", t0.elapsed());

    // A poller lists VMs until the work is done; every answer must be a 200 with every VM.
    let done = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let poller = {
        let (router, done, polls, want) =
            (tm.router.clone(), done.clone(), polls.clone(), ids.len());
        tm.spawn(async move {
            use tower::ServiceExt;
            while !done.load(Ordering::Relaxed) {
                let req = http::Request::get("/v1/vms")
                    .header("x-api-key", common::KEY)
                    .body(axum::body::Body::empty())
                    .unwrap();
                let resp = router.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "GET /v1/vms under load");
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap();
                let list: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
                assert_eq!(list.as_array().map(Vec::len), Some(want), "{list}");
                polls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Per VM: one upload of a file naming the VM, and `execs` execs each echoing its own token.
    let t1 = Instant::now();
    let work = ids.iter().enumerate().map(|(v, id)| {
        let tm = &tm;
        async move {
            let mark = format!("vm-{v}-{id}");
            let archive = targz(&[Entry::File("mark.txt", mark.as_bytes())]);
            let up = tm.upload(id, "load", archive);
            let runs = (0..execs).map(|i| {
                let token = format!("{id}-{i}-{}", uuid::Uuid::new_v4());
                async move {
                    let t = Instant::now();
                    let r = tm
                        .exec(
                            id,
                            json!({"cmd": format!("echo {token}"), "timeoutMs": 120000}),
                        )
                        .await;
                    (token, r, t.elapsed().as_secs_f64() * 1000.0)
                }
            });
            let (up, runs) = futures::join!(up, join_all(runs));
            assert_eq!(
                up.status,
                StatusCode::NO_CONTENT,
                "upload to {id}: {}",
                up.json
            );
            let mut ms = Vec::new();
            for (token, r, t) in runs {
                assert!(
                    !r.status.is_server_error(),
                    "exec on {id}: {} {}",
                    r.status,
                    r.json
                );
                assert_eq!(r.status, StatusCode::OK, "exec on {id}: {}", r.json);
                assert_eq!(r.json["stdout"], format!("{token}\n"), "output of {token}");
                ms.push(t);
            }
            let back = tm.exec(id, json!({"cmd": "cat load/mark.txt"})).await;
            assert_eq!(
                back.json["stdout"],
                mark.as_str(),
                "the upload landed in its own VM"
            );
            ms
        }
    });
    let mut latencies: Vec<f64> = join_all(work).await.into_iter().flatten().collect();
    let rss_busy = rss_mib();
    done.store(true, Ordering::Relaxed);
    poller
        .await
        .expect("the poller saw only complete 200 answers");
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "load: {} execs in {:?}: p50 {:.1} ms, p99 {:.1} ms; {} list polls; test-process RSS \
         {rss_idle:.0} MiB idle, {rss_busy:.0} MiB under load",
        latencies.len(),
        t1.elapsed(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        polls.load(Ordering::Relaxed),
    );
    assert!(
        polls.load(Ordering::Relaxed) > 0,
        "the poller ran during the work"
    );

    // Destroys, all at once; then nothing of any VM is left.
    let paths: Vec<String> = ids.iter().map(|id| format!("/v1/vms/{id}")).collect();
    let destroys = paths.iter().map(|p| tm.call(Method::DELETE, p, None));
    for r in join_all(destroys).await {
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    }
    let dirs = common::vm_dirs(&tm);
    for id in &ids {
        assert!(!dirs.contains(id), "directory of {id} left: {dirs:?}");
        assert!(
            rds_testkit::pids_matching(id).is_empty(),
            "a process of {id} left"
        );
    }
    assert_eq!(tm.ids("/v1/vms").await.len(), 0);
}
