//! Faults during calls, with real guests: the VMM killed while an exec runs answers the documented
//! 409 and leaves the VM STOPPED with `lastError`; a frozen guest (its VMM stopped with SIGSTOP, so
//! the agent answers nothing) turns an exec into a 504 after its deadline and the VM can still be
//! destroyed; an upload `dest` the agent would refuse unread is answered 400 by the manager. After each, nothing of the VM is left (processes, directory).
//!
//! Tests of this file run one at a time; run them under the e2e lock:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_faults`.

mod common;

use common::TestManager;
use http::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn qemu_of(id: &str) -> u32 {
    let pids = rds_testkit::pids_matching(&format!("rds-{id}"));
    assert_eq!(pids.len(), 1, "one QEMU per VM: {pids:?}");
    pids[0]
}

async fn gone(tm: &TestManager, id: &str) {
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let left = rds_testkit::wait_until(Duration::from_secs(10), || async {
        rds_testkit::pids_matching(id).is_empty().then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "processes of {id} left: {:?}",
        rds_testkit::pids_matching(id)
    );
    assert!(
        !common::vm_dirs(tm).contains(&id.to_string()),
        "directory of {id} left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmm_killed_during_an_exec() {
    let Some((image, vhost)) = common::guest_prerequisites("vmm_killed_during_an_exec") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let tm = TestManager::start(Some(&image), &vhost, &[("WARM_POOL_MAX_VMS", "0")]).await;
    let id = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;
    let path = format!("/v1/vms/{id}/exec");
    let call = tm.call(
        Method::POST,
        &path,
        Some(json!({"cmd": "sleep 60", "timeoutMs": 90000})),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        unsafe { libc::kill(qemu_of(&id) as i32, libc::SIGKILL) };
    };
    let t = Instant::now();
    let (r, ()) = futures::join!(call, kill);
    println!(
        "exec answered {} after {:?}: {}",
        r.status,
        t.elapsed(),
        r.json
    );
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert_eq!(r.json["message"], format!("VM {id} is no longer RUNNING"));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the answer did not wait for the command"
    );
    // The exit watcher records the death within moments.
    let vm = rds_testkit::wait_until(Duration::from_secs(5), || async {
        let vm = tm
            .call(Method::GET, &format!("/v1/vms/{id}"), None)
            .await
            .json;
        (vm["state"] != "RUNNING").then_some(vm)
    })
    .await
    .expect("VM still RUNNING 5 s after its VMM was killed");
    assert_eq!(vm["state"], "STOPPED", "{vm}");
    let err = vm["lastError"].as_str().unwrap_or_default();
    assert!(err.starts_with("VMM exited unexpectedly"), "{vm}");
    gone(&tm, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_guest_times_out_and_is_destroyable() {
    let Some((image, vhost)) = common::guest_prerequisites("frozen_guest") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    // A short vsock timeout so the call's deadline, max(VSOCK_TIMEOUT_MS, timeoutMs + 5 s), is
    // the exec's own.
    let extra = [("WARM_POOL_MAX_VMS", "0"), ("VSOCK_TIMEOUT_MS", "3000")];
    let tm = TestManager::start(Some(&image), &vhost, &extra).await;
    let id = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;
    // A dest the agent refuses before reading the body: the manager answers its 400 instead of
    // streaming 1 MiB into a connection the agent closes.
    let long = "d".repeat(4097);
    let r = tm.upload(&id, &long, vec![0u8; 1 << 20]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    assert_eq!(
        r.json["message"],
        "Invalid upload dest or archive: Path is longer than 4096 bytes"
    );
    let qemu = qemu_of(&id);
    unsafe { libc::kill(qemu as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let r = tm
        .exec(&id, json!({"cmd": "true", "timeoutMs": 2000}))
        .await;
    println!(
        "exec on a frozen guest: {} after {:?}: {}",
        r.status,
        t.elapsed(),
        r.json
    );
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.json);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    // Still listed, still destroyable while frozen.
    let vm = tm.call(Method::GET, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(vm.status, StatusCode::OK);
    gone(&tm, &id).await;
}
