//! Reconciliation at manager start (`docs/reference/lifecycle.md` §5) with real QEMU guests: a
//! manager killed with two running VMs is replaced by a new one on the same storage and database,
//! which re-adopts both (exec works) and removes planted orphans; a VMM killed while no manager
//! runs leaves its VM STOPPED with `lastError`, and nothing of it (process, TAP, rules, run
//! directory) remains. At most two guests run at once.

mod common;

use common::{vm_dirs, TestManager};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

async fn exec_ok(tm: &TestManager, id: &str, cmd: &str) -> Value {
    let r = tm.exec(id, json!({ "cmd": cmd })).await;
    assert_eq!(r.status, StatusCode::OK, "{cmd}: {}", r.json);
    r.json
}

async fn vm(tm: &TestManager, id: &str) -> Value {
    tm.call(Method::GET, &format!("/v1/vms/{id}"), None)
        .await
        .json
}

/// QEMU pid of a VM (`-name rds-<id>`).
fn qemu_pid(id: &str) -> u32 {
    let pids = rds_testkit::pids_matching(&format!("rds-{id}"));
    assert_eq!(pids.len(), 1, "one QEMU for {id}: {pids:?}");
    pids[0]
}

fn links(tm: &TestManager) -> String {
    tm.ns.output(&["ip", "-o", "link", "show"])
}

fn ruleset(tm: &TestManager) -> String {
    tm.ns.output(&["nft", "list", "ruleset"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_readopts_running_vms_and_cleans_up() {
    let Some((image, vhost)) =
        common::guest_prerequisites("restart_readopts_running_vms_and_cleans_up")
    else {
        return;
    };
    let mut tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let t = Instant::now();
    let a = tm.create_vm(json!({"cpu": 1, "memMb": 512})).await;
    let b = tm.create_vm(json!({"cpu": 1, "memMb": 512})).await;
    println!("two VMs RUNNING in {:?}", t.elapsed());
    let (ip_a, ip_b) = (
        vm(&tm, &a).await["guestIp"].as_str().unwrap().to_string(),
        vm(&tm, &b).await["guestIp"].as_str().unwrap().to_string(),
    );
    exec_ok(&tm, &a, "echo a > /workspace/marker").await;
    // Synced: the VMM of b is SIGKILLed later, which loses the guest page cache.
    exec_ok(&tm, &b, "echo b > /workspace/marker && sync").await;
    let qemu_a = qemu_pid(&a);

    // kill -9 of the manager: its runtime goes, the VMM processes stay.
    tm.kill();
    assert_eq!(qemu_pid(&a), qemu_a, "the VMM survives its manager");

    // Orphans a crashed manager might leave: a vsock helper and a run directory of a VM without a
    // row, and a TAP without a VM.
    let ghost = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let ghost_run = tm.storage().join(format!("vms/{ghost}/run"));
    std::fs::create_dir_all(&ghost_run).unwrap();
    let helper = std::process::Command::new(&vhost)
        .args(["--guest-cid", "19999", "--socket"])
        .arg(ghost_run.join("vhost.sock"))
        .arg("--uds-path")
        .arg(ghost_run.join("v.sock"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let ghost_pid = helper.id();
    tm.ns
        .ip(&["tuntap", "add", "dev", "rds-tap99", "mode", "tap"]);
    assert!(links(&tm).contains("rds-tap99"));

    let t = Instant::now();
    tm.restart().await.expect("restart");
    println!(
        "restart with reconciliation of 2 live VMs in {:?}",
        t.elapsed()
    );
    for (id, want) in [(&a, "a\n"), (&b, "b\n")] {
        let v = vm(&tm, id).await;
        assert_eq!(v["state"], "RUNNING", "{v}");
        let r = exec_ok(&tm, id, "cat /workspace/marker").await;
        assert_eq!(r["stdout"], want, "exec works after a manager restart");
    }
    assert_eq!(qemu_pid(&a), qemu_a, "re-adopted, not rebooted");
    // Nothing orphaned: the planted helper and directory are gone, the TAP too; the VMs' own
    // TAPs and rules are in place.
    let gone = rds_testkit::wait_until(Duration::from_secs(3), || async {
        (!std::path::Path::new(&format!("/proc/{ghost_pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{ghost_pid}/cmdline")).is_ok_and(|c| c.is_empty()))
        .then_some(())
    })
    .await;
    assert!(gone.is_some(), "orphan vsock helper {ghost_pid} still runs");
    drop(helper);
    assert!(!tm.storage().join(format!("vms/{ghost}")).exists());
    let l = links(&tm);
    assert!(!l.contains("rds-tap99"), "{l}");
    assert!(l.contains("rds-tap2") && l.contains("rds-tap3"), "{l}");
    let rules = ruleset(&tm);
    assert!(
        rules.contains(&ip_a) && rules.contains(&ip_b),
        "host rules re-applied: {rules}"
    );
    let mut dirs = vm_dirs(&tm);
    dirs.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(dirs, want);

    // A VMM that dies while no manager runs: STOPPED on restart, its resources freed.
    tm.kill();
    let qemu_b = qemu_pid(&b);
    unsafe { libc::kill(qemu_b as i32, libc::SIGKILL) };
    // The test process is QEMU's parent (managers run in-process): reap it.
    unsafe { libc::waitpid(qemu_b as i32, std::ptr::null_mut(), 0) };
    let t = Instant::now();
    tm.restart().await.expect("restart");
    println!("restart with one dead VMM in {:?}", t.elapsed());
    let v = vm(&tm, &b).await;
    assert_eq!(v["state"], "STOPPED", "{v}");
    assert_eq!(v["lastError"], "VMM exited while the manager was down");
    assert_eq!(vm(&tm, &a).await["state"], "RUNNING");
    exec_ok(&tm, &a, "true").await;
    assert!(
        rds_testkit::pids_matching(&b).is_empty(),
        "helper of the dead VM left: {:?}",
        rds_testkit::pids_matching(&b)
    );
    assert!(!tm.storage().join(format!("vms/{b}/run")).exists());
    assert!(tm.storage().join(format!("vms/{b}/disk.ext4")).exists());
    let l = links(&tm);
    assert!(l.contains("rds-tap2") && !l.contains("rds-tap3"), "{l}");
    let rules = ruleset(&tm);
    assert!(rules.contains(&ip_a) && !rules.contains(&ip_b), "{rules}");

    // It starts again on its disk, with its address.
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{b}/start"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = exec_ok(&tm, &b, "cat /workspace/marker").await;
    assert_eq!(r["stdout"], "b\n");
    assert_eq!(vm(&tm, &b).await["guestIp"], ip_b.as_str());

    for id in [&a, &b] {
        let r = tm
            .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    }
    let l = links(&tm);
    assert!(!l.contains("rds-tap"), "{l}");
    let rules = ruleset(&tm);
    assert!(!rules.contains(&ip_a) && !rules.contains(&ip_b), "{rules}");
    assert!(vm_dirs(&tm).is_empty());
    assert!(rds_testkit::pids_matching(&tm.storage().display().to_string()).is_empty());
}
