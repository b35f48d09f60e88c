//! End to end through the HTTP API with real QEMU guests: create → RUNNING → exec → destroy, and a
//! boot that fails. At most two guests boot at once (2 cores).

mod common;

use common::{vm_dirs, TestManager};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn exec_ok(tm: &TestManager, id: &str, body: Value) -> Value {
    let r = tm.exec(id, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.json);
    r.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_story() {
    let Some((image, vhost)) = common::guest_prerequisites("vm_story") else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[("MAX_VMS", "1")]).await;

    let t = Instant::now();
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 512})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}\n{}",
        r.json,
        tm.console_tails()
    );
    println!("create → 201 in {:?}", t.elapsed());
    let vm = r.json;
    let id = vm["id"].as_str().unwrap().to_string();
    assert_eq!(vm["state"], "RUNNING");
    assert_eq!(vm["provisionMode"], "boot");
    assert_eq!(vm["guestIp"], "172.16.0.2");
    assert_eq!(vm["diskSizeMb"], 256);
    assert_eq!(vm["peerLinks"], json!([]));
    assert!(vm["imageId"].as_str().unwrap().starts_with("img-"));
    let listed = tm.call(Method::GET, "/v1/vms", None).await.json;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    // Identity, output, exit codes.
    let r = exec_ok(&tm, &id, json!({"cmd": "id -u; id -g; id -G"})).await;
    assert_eq!(r["stdout"], "1000\n1000\n1000\n");
    assert_eq!(r["exitCode"], 0);
    let r = exec_ok(&tm, &id, json!({"cmd": "echo out; echo err >&2; exit 3"})).await;
    assert_eq!(
        (
            r["stdout"].as_str(),
            r["stderr"].as_str(),
            r["exitCode"].as_i64()
        ),
        (Some("out\n"), Some("err\n"), Some(3))
    );
    assert_eq!(r["timedOut"], false);
    assert!(r["durationMs"].is_u64());
    let r = exec_ok(
        &tm,
        &id,
        json!({"cmd": "pwd; echo $HOME; echo ${PORT:-unset}"}),
    )
    .await;
    assert_eq!(
        r["stdout"], "/workspace\n/home/user\nunset\n",
        "cwd, home, agent env not inherited"
    );
    let r = exec_ok(&tm, &id, json!({"cmd": "echo $PATH; command -v node deno"})).await;
    assert_eq!(
        r["stdout"],
        "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin\n/usr/local/bin/node\n/usr/local/bin/deno\n",
        "the login shell keeps the sandbox PATH"
    );
    let r = exec_ok(
        &tm,
        &id,
        json!({"cmd": "echo \"$FOO-$BAR\"", "env": {"FOO": "a b", "BAR": "ü"}}),
    )
    .await;
    assert_eq!(r["stdout"], "a b-ü\n");
    let r = exec_ok(
        &tm,
        &id,
        json!({"cmd": "echo hi > /workspace/x && cat x && touch /etc/x"}),
    )
    .await;
    assert_eq!(r["stdout"], "hi\n");
    assert_ne!(r["exitCode"], 0, "uid 1000 must not write /etc");
    let r = tm.exec(&id, json!({"cmd": "true", "cwd": "/etc"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);

    // Timeout kills the whole group promptly and leaves nothing behind.
    let t = Instant::now();
    let r = exec_ok(
        &tm,
        &id,
        json!({"cmd": "sleep 30 & sleep 31; echo never", "timeoutMs": 1000}),
    )
    .await;
    let took = t.elapsed();
    assert_eq!(r["timedOut"], true);
    assert_eq!(r["exitCode"], -1);
    assert!(
        r["stderr"]
            .as_str()
            .unwrap()
            .ends_with("Timeout exceeded\n"),
        "{}",
        r["stderr"]
    );
    assert!(took < Duration::from_secs(5), "timeout took {took:?}");
    println!("timeoutMs 1000 answered in {took:?}");
    let r = exec_ok(
        &tm,
        &id,
        json!({"cmd": "ps -eo comm= | grep -c '^sleep$' || true"}),
    )
    .await;
    assert_eq!(r["stdout"], "0\n", "sleep survived the timeout");

    // Output caps.
    let r = exec_ok(
        &tm,
        &id,
        json!({"cmd": "head -c 1500000 /dev/zero | tr '\\0' a; echo e >&2"}),
    )
    .await;
    assert_eq!(r["stdoutTruncated"], true);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1_000_000);
    assert_eq!(r["stderrTruncated"], false);
    assert_eq!(r["stderr"], "e\n");

    // Quota: MAX_VMS=1 is reached, the second create is refused and allocates nothing.
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json["message"], "VM quota exceeded (maxVms=1)");
    assert_eq!(vm_dirs(&tm), vec![id.clone()]);

    power_cycle(&tm, &id).await;

    // Destroy leaves no process, file or row.
    assert!(
        !rds_testkit::pids_matching(&id).is_empty(),
        "VMM processes carry the VM id"
    );
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let gone = rds_testkit::wait_until(Duration::from_secs(5), || async {
        rds_testkit::pids_matching(&id).is_empty().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "processes left: {:?}",
        rds_testkit::pids_matching(&id)
    );
    assert!(vm_dirs(&tm).is_empty(), "files left: {:?}", vm_dirs(&tm));
    assert_eq!(
        tm.call(Method::GET, &format!("/v1/vms/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        tm.call(Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = tm.exec(&id, json!({"cmd": "true"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(tm.call(Method::GET, "/v1/vms", None).await.json, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_boot_leaves_error_state_with_console_tail() {
    let Some((image, vhost)) = common::guest_prerequisites("failed_boot") else {
        return;
    };
    // A real kernel over an empty ext4: the initramfs cannot switch to rds-init, the guest panics and
    // QEMU exits.
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.ext4");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let ok = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&blank)
        .status()
        .unwrap();
    assert!(ok.success());
    let broken = rds_testkit::GuestImage {
        rootfs: blank,
        ..image
    };
    let tm = TestManager::start(
        Some(&broken),
        &vhost,
        &[("VSOCK_HEALTH_TIMEOUT_MS", "60000")],
    )
    .await;
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256})),
        )
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.json);
    let msg = r.json["message"].as_str().unwrap();
    assert!(msg.contains("failed to start"), "{msg}");
    if r.status == StatusCode::INTERNAL_SERVER_ERROR {
        // Masked: the host-side reason (paths, QEMU's output) is in lastError and the log only.
        assert!(
            msg.ends_with("failed to start: see its lastError") && !msg.contains('/'),
            "{msg}"
        );
        assert!(r.json["requestId"].is_string(), "{}", r.json);
    }
    let vms = tm.call(Method::GET, "/v1/vms", None).await.json;
    let vm = &vms[0];
    assert_eq!(vm["state"], "ERROR");
    assert!(
        vm["lastError"]
            .as_str()
            .unwrap()
            .contains("VMM exited during boot"),
        "{}",
        vm["lastError"]
    );
    let id = vm["id"].as_str().unwrap();
    let console = tm.storage().join(format!("vms/{id}/logs/console.log"));
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains("Linux version"),
        "console log kept for diagnosis"
    );
    assert!(
        rds_testkit::pids_matching(id).is_empty(),
        "nothing runs after a failed boot"
    );
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(vm_dirs(&tm).is_empty());
}

/// Stop keeps the disk, start boots on it; state rules answer 409; a VMM killed behind the manager's
/// back is noticed within 2 s.
async fn power_cycle(tm: &TestManager, id: &str) {
    exec_ok(tm, id, json!({"cmd": "echo kept > /workspace/marker"})).await;
    let t = Instant::now();
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/stop"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    println!("stop → 204 in {:?}", t.elapsed());
    assert!(
        rds_testkit::pids_matching(&format!("rds-{id}")).is_empty(),
        "VMM still running after stop"
    );
    let vm = tm
        .call(Method::GET, &format!("/v1/vms/{id}"), None)
        .await
        .json;
    assert_eq!(vm["state"], "STOPPED");
    let r = tm.exec(id, json!({"cmd": "true"})).await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("VM must be RUNNING (state=STOPPED)")
        )
    );
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/stop"), None)
        .await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("VM must be RUNNING to stop (state=STOPPED)")
        )
    );
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/start"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = exec_ok(tm, id, json!({"cmd": "cat /workspace/marker"})).await;
    assert_eq!(r["stdout"], "kept\n", "the disk survives a power cycle");
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/start"), None)
        .await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("VM must be STOPPED to start (state=RUNNING)")
        )
    );

    // kill -9 of the VMM: the VM leaves RUNNING within 2 s and its runtime is freed.
    let pids = rds_testkit::pids_matching(&format!("rds-{id}"));
    assert_eq!(pids.len(), 1, "one QEMU per VM: {pids:?}");
    let t = Instant::now();
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    let vm = rds_testkit::wait_until(Duration::from_secs(2), || async {
        let vm = tm
            .call(Method::GET, &format!("/v1/vms/{id}"), None)
            .await
            .json;
        (vm["state"] != "RUNNING").then_some(vm)
    })
    .await
    .expect("VM still RUNNING 2 s after its VMM was killed");
    println!("VMM death noticed in {:?}", t.elapsed());
    assert_eq!(vm["state"], "STOPPED");
    assert!(
        vm["lastError"]
            .as_str()
            .unwrap()
            .starts_with("VMM exited unexpectedly"),
        "{}",
        vm["lastError"]
    );
    let freed = rds_testkit::wait_until(Duration::from_secs(5), || async {
        rds_testkit::pids_matching(id).is_empty().then_some(())
    })
    .await;
    assert!(
        freed.is_some(),
        "helpers left after the VMM died: {:?}",
        rds_testkit::pids_matching(id)
    );
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/start"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = exec_ok(tm, id, json!({"cmd": "cat /workspace/marker"})).await;
    assert_eq!(r["stdout"], "kept\n");
}
