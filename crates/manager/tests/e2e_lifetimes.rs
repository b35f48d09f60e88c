//! Lifetimes, pause and resume with real QEMU guests (`docs/lifetimes.md`): pause writes memory to
//! the VM's own storage and ends the VMM, resume carries on with files, processes, address and
//! egress rules; deadlines destroy or pause, an extended one lives on, and one that passed while
//! the manager was down applies at start.
//!
//! Tests of this file run one at a time; run them under the e2e lock:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_lifetimes`.

mod common;

use common::guest::{code, sh};
use common::TestManager;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn vm(tm: &TestManager, id: &str) -> Value {
    tm.call(Method::GET, &format!("/v1/vms/{id}"), None)
        .await
        .json
}

async fn create(tm: &TestManager, body: Value) -> String {
    let r = tm.call(Method::POST, "/v1/vms", Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{body}: {}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

async fn post(tm: &TestManager, id: &str, action: &str) -> (StatusCode, Value) {
    let t = Instant::now();
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/{action}"), None)
        .await;
    println!("{action} {id:.8}: {} in {:?}", r.status, t.elapsed());
    (r.status, r.json)
}

/// VMM processes (QEMU and its vsock helper) of `id`.
fn vmm_pids(tm: &TestManager, id: &str) -> Vec<u32> {
    rds_testkit::pids_matching(&tm.storage().join("vms").join(id).display().to_string())
}

/// Waits up to `secs` for `id` to reach `state` (`DELETED`: gone from the API).
async fn wait_state(tm: &TestManager, id: &str, state: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = tm.call(Method::GET, &format!("/v1/vms/{id}"), None).await;
        let now = match r.status {
            StatusCode::NOT_FOUND => "DELETED",
            _ => r.json["state"].as_str().unwrap_or("?"),
        };
        if now == state {
            return r.json;
        }
        assert!(
            Instant::now() < deadline,
            "{id:.8} is {now}, not {state}, after {secs} s: {}",
            r.json
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A file and a background process in the guest; returns the process id.
async fn leave_traces(tm: &TestManager, id: &str) -> String {
    sh(tm, id, "echo before-pause > /workspace/trace.txt").await;
    let pid = sh(tm, id, "nohup sleep 100000 >/dev/null 2>&1 & echo $!").await;
    pid.trim().to_string()
}

async fn traces_survived(tm: &TestManager, id: &str, pid: &str) {
    assert_eq!(
        sh(tm, id, "cat /workspace/trace.txt").await,
        "before-pause\n"
    );
    let alive = code(tm, id, &format!("kill -0 {pid}")).await;
    assert_eq!(
        alive, 0,
        "{id:.8}: the background process runs on after resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_twice_keep_files_processes_and_address() {
    let Some((image, vhost)) = common::guest_prerequisites("pause_and_resume") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let mut tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let id = create(&tm, json!({"cpu": 1, "memMb": 256})).await;
    let before = vm(&tm, &id).await;
    let pid = leave_traces(&tm, &id).await;
    let memory = tm
        .app()
        .state
        .vms
        .backend()
        .capabilities()
        .supports_memory_snapshots;
    for round in 1..=2 {
        let (status, paused) = post(&tm, &id, "pause").await;
        assert_eq!(status, StatusCode::OK, "round {round}: {paused}");
        assert_eq!(paused["state"], "PAUSED");
        assert!(vmm_pids(&tm, &id).is_empty(), "no VMM process holds memory");
        let paused_dir = tm.storage().join("vms").join(&id).join("paused");
        assert_eq!(paused_dir.join("complete").is_file(), memory);
        // Nothing runs in a paused VM, and nothing starts it by accident.
        let r = tm
            .exec(&id, json!({"cmd": "true", "timeoutMs": 5000}))
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
        let (status, again) = post(&tm, &id, "pause").await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        let (status, start) = post(&tm, &id, "start").await;
        assert_eq!(status, StatusCode::CONFLICT, "{start}");

        let (status, resumed) = post(&tm, &id, "resume").await;
        assert_eq!(status, StatusCode::OK, "round {round}: {resumed}");
        assert_eq!(resumed["state"], "RUNNING");
        assert_eq!(resumed["guestIp"], before["guestIp"], "the address is kept");
        assert!(
            !paused_dir.exists(),
            "the memory files go once the guest runs"
        );
        if memory {
            traces_survived(&tm, &id, &pid).await;
        }
        let (status, again) = post(&tm, &id, "resume").await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
    }
    let events: Vec<String> = tm
        .call(Method::GET, "/v1/admin/activity?limit=200", None)
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["entityId"] == id.as_str())
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events.iter().filter(|t| *t == "vm.paused").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|t| *t == "vm.resumed").count(),
        2,
        "{events:?}"
    );

    // A paused VM stays paused across a manager restart (reconciliation keeps a complete pause).
    let (status, _) = post(&tm, &id, "pause").await;
    assert_eq!(status, StatusCode::OK);
    tm.restart().await.expect("restart");
    assert_eq!(vm(&tm, &id).await["state"], "PAUSED");
    // A stop of a paused VM drops its memory; the disk boots again with the file.
    let (status, stopped) = post(&tm, &id, "stop").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{stopped}");
    assert_eq!(vm(&tm, &id).await["state"], "STOPPED");
    let (status, _) = post(&tm, &id, "start").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        sh(&tm, &id, "cat /workspace/trace.txt").await,
        "before-pause\n"
    );

    // Destroying a paused VM frees its storage.
    let (status, _) = post(&tm, &id, "pause").await;
    assert_eq!(status, StatusCode::OK);
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    assert!(!tm.storage().join("vms").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_destroy_pause_and_can_be_extended() {
    let Some((image, vhost)) = common::guest_prerequisites("deadlines") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let shape =
        |action: &str| json!({"cpu": 1, "memMb": 256, "timeoutSec": 20, "timeoutAction": action});
    let gone = create(&tm, shape("destroy")).await;
    let kept = create(&tm, shape("destroy")).await;
    let paused = create(&tm, shape("pause")).await;
    let pid = leave_traces(&tm, &paused).await;
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{kept}/timeout"),
            Some(json!({"timeoutSec": 600})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let t = wait_state(&tm, &paused, "PAUSED", 40).await;
    assert!(t["expiresAt"].is_null(), "a pause clears the deadline: {t}");
    wait_state(&tm, &gone, "DELETED", 20).await;
    assert!(!tm.storage().join("vms").join(&gone).exists());
    assert!(vmm_pids(&tm, &gone).is_empty());
    assert!(vmm_pids(&tm, &paused).is_empty());
    assert_eq!(
        vm(&tm, &kept).await["state"],
        "RUNNING",
        "extended: lives on"
    );

    let (status, resumed) = post(&tm, &paused, "resume").await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    traces_survived(&tm, &paused, &pid).await;
    // The lifetime starts again with the resume.
    let expires = resumed["expiresAt"].as_str().expect("re-armed deadline");
    let at = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let left = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    assert!((10..=21).contains(&left), "{left} s left after resume");

    let metrics = tm.metrics_text().await;
    assert!(
        metrics.contains("rds_vm_expired_total{action=\"destroy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rds_vm_expired_total{action=\"pause\"} 1"),
        "{metrics}"
    );
    let expired: Vec<Value> = tm
        .call(Method::GET, "/v1/admin/activity?limit=200", None)
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "vm.expired")
        .cloned()
        .collect();
    assert_eq!(expired.len(), 2, "{expired:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passed_while_down_applies_at_start() {
    let Some((image, vhost)) = common::guest_prerequisites("deadline_while_down") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let mut tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let id = create(
        &tm,
        json!({"cpu": 1, "memMb": 256, "timeoutSec": 12, "timeoutAction": "destroy"}),
    )
    .await;
    let expires = vm(&tm, &id).await["expiresAt"]
        .as_str()
        .unwrap()
        .to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    // Stopped while the VM runs on (its VMM is in a session of its own); started after the
    // deadline.
    tm.kill();
    let wait = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64 + 1000)).await;
    assert!(
        !vmm_pids(&tm, &id).is_empty(),
        "the VM ran on while the manager was down"
    );
    tm.restart().await.expect("restart");
    wait_state(&tm, &id, "DELETED", 10).await;
    assert!(vmm_pids(&tm, &id).is_empty(), "its VMM is gone");
    assert!(!tm.storage().join("vms").join(&id).exists());
}
