//! Snapshots with real QEMU guests through the HTTP API (`docs/reference/lifecycle.md` §9,
//! `docs/reference/api.md` §3.10, §4): capture of a running VM, concurrent restores with their own
//! identity and egress policy, the compatibility gate's cold boot, deletes, refusals, and faults
//! (VMM killed during a capture, manager killed during a restore, a full `STORAGE_ROOT`). Both
//! backends capture memory, so every capture here must have it.
//!
//! Tests of this file run one at a time; run them under the e2e lock:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_snapshots`.

mod common;

use common::guest::{code, curl, now_ms, reached, sh};
use common::{Opts, TestManager};
use http::{Method, StatusCode};
use rds_testkit::internet::{Internet, INET_A, INET_B, INET_DNS};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn vm(tm: &TestManager, id: &str) -> Value {
    tm.call(Method::GET, &format!("/v1/vms/{id}"), None)
        .await
        .json
}

async fn create(tm: &TestManager, body: Value) -> Value {
    let t = Instant::now();
    let r = tm.call(Method::POST, "/v1/vms", Some(body.clone())).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{body}: {}\n{}",
        r.json,
        tm.console_tails()
    );
    println!(
        "created {:.8} ({}) in {:?}",
        r.json["id"].as_str().unwrap(),
        r.json["provisionMode"],
        t.elapsed()
    );
    r.json
}

async fn snapshot(tm: &TestManager, id: &str) -> Value {
    let t = Instant::now();
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/snapshots"), None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    println!(
        "snapshot {} of {id:.8} (hasMemory={}, {} bytes) in {:?}",
        r.json["id"],
        r.json["hasMemory"],
        r.json["sizeBytes"],
        t.elapsed()
    );
    r.json
}

async fn destroy(tm: &TestManager, id: &str) {
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
}

/// Entries of `STORAGE_ROOT/snapshots/`.
fn snapshot_entries(tm: &TestManager) -> Vec<String> {
    std::fs::read_dir(tm.storage().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn no_capture_dirs(tm: &TestManager) {
    let tmp: Vec<_> = snapshot_entries(tm)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "capture directories left: {tmp:?}");
}

/// Capture of a running VM, three concurrent restores from it and what each of them is: the
/// source's files, a life of its own (writes, identity, egress policy), and the gate's cold boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_restore_identity_and_gate() {
    let Some((image, vhost)) = common::guest_prerequisites("capture_restore_identity_and_gate")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let tm = TestManager::start_with(
        Some(&image),
        &vhost,
        &[],
        Opts {
            resolv_conf: Some(format!("nameserver {INET_DNS}\n")),
            ..Opts::default()
        },
    )
    .await;
    let _inet = Internet::new(&tm.ns);

    let src = create(
        &tm,
        json!({"cpu": 1, "memMb": 256, "outboundInternet": true, "allowIps": ["198.18.0.10/32"]}),
    )
    .await;
    let s = src["id"].as_str().unwrap().to_string();
    let src_ip = src["guestIp"].as_str().unwrap().to_string();
    let blob = sh(&tm, &s, "mkdir -p data && echo alpha > data/a.txt && head -c 1048576 /dev/urandom > data/blob && sha256sum data/blob").await;
    let pid = sh(&tm, &s, "nohup sleep 1000 >/dev/null 2>&1 & echo $!").await;
    let pid = pid.trim().to_string();
    assert_eq!(
        code(&tm, &s, &format!("kill -0 {pid}")).await,
        0,
        "background process runs in the source"
    );

    let snap = snapshot(&tm, &s).await;
    let snap_id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(snap["hasMemory"], true, "captures carry memory: {snap}");
    assert!(snap_id.starts_with("snap-"));
    for (k, v) in [
        ("kind", json!("user_overlay")),
        ("sourceVmId", json!(s)),
        ("imageId", src["imageId"].clone()),
        ("cpu", json!(1)),
        ("memMb", json!(256)),
        ("diskSizeMb", src["diskSizeMb"].clone()),
        ("baseSeedSnapshotId", Value::Null),
        ("hasDisk", json!(true)),
        ("hasOverlay", json!(true)),
        ("internal", json!(false)),
        ("backend", json!("qemu")),
    ] {
        assert_eq!(snap[k], v, "{k} in {snap}");
    }
    assert!(snap["sizeBytes"].as_u64().unwrap() > 0);
    let files = std::fs::read_dir(tm.storage().join("snapshots").join(&snap_id))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        files.contains(&"meta.json".into()) && files.contains(&"disk.ext4".into()),
        "{files:?}"
    );
    no_capture_dirs(&tm);
    // The source goes on as before.
    assert_eq!(vm(&tm, &s).await["state"], "RUNNING");
    assert_eq!(sh(&tm, &s, "cat data/a.txt").await, "alpha\n");
    assert_eq!(code(&tm, &s, &format!("kill -0 {pid}")).await, 0);
    let listed = tm.call(Method::GET, "/v1/snapshots", None).await.json;
    assert_eq!(listed, json!([snap]));

    // Three restores at once, each with its own policy; a delete meanwhile is refused.
    let bodies = [
        json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": snap_id}),
        json!({"cpu": 1, "memMb": 256, "snapshotId": snap_id, "outboundInternet": true, "allowIps": ["198.18.0.11/32"]}),
        json!({"cpu": 1, "memMb": 256, "snapshotId": snap_id, "userOverlaySnapshotId": snap_id}),
    ];
    let t = Instant::now();
    let calls: Vec<_> = bodies
        .iter()
        .map(|b| tm.call_detached(Method::POST, "/v1/vms", Some(b.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tm.expect(
        Method::DELETE,
        &format!("/v1/snapshots/{snap_id}"),
        None,
        StatusCode::CONFLICT,
        format!("Snapshot {snap_id} is being restored"),
    )
    .await;
    let mut restored = Vec::new();
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{body}\n{}",
            tm.console_tails()
        );
        restored.push(body);
    }
    println!("three restores RUNNING in {:?}", t.elapsed());
    let ids: Vec<String> = restored
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let mode = "snapshot";
    for v in &restored {
        assert_eq!(
            (v["state"].as_str(), v["sourceSnapshotId"].as_str()),
            (Some("RUNNING"), Some(snap_id.as_str()))
        );
        if v["provisionMode"] != mode {
            let id = v["id"].as_str().unwrap();
            let log = tm.storage().join(format!("vms/{id}/logs/vmm.log"));
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!(
                "{v} is not provisionMode {mode}; vmm.log:\n{log}\n{}",
                tm.console_tails()
            );
        }
        assert_eq!(
            v["diskSizeMb"], src["diskSizeMb"],
            "the snapshot's size by default"
        );
        assert_ne!(v["guestIp"], src_ip.as_str());
    }
    for id in &ids {
        assert_eq!(sh(&tm, id, "cat data/a.txt").await, "alpha\n");
        assert_eq!(sh(&tm, id, "sha256sum data/blob").await, blob);
        let alive = code(&tm, id, &format!("kill -0 {pid}")).await;
        assert_eq!(
            alive, 0,
            "{id:.8}: the source's background process resumes with the memory"
        );
    }
    // Writes stay in the VM that made them.
    sh(&tm, &ids[0], "echo mine > only-r1").await;
    for other in [&ids[1], &ids[2], &s] {
        assert_ne!(
            code(&tm, other, "test -e only-r1").await,
            0,
            "{other:.8} sees another VM's write"
        );
    }

    // Identity: randomness, hostname, machine-id, clock, address.
    let (a, b) = (&ids[0], &ids[1]);
    let rnd = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    assert_ne!(
        sh(&tm, a, rnd).await,
        sh(&tm, b, rnd).await,
        "different /dev/urandom"
    );
    let machine_ids = (
        sh(&tm, a, "cat /etc/machine-id").await,
        sh(&tm, b, "cat /etc/machine-id").await,
    );
    assert_ne!(machine_ids.0, machine_ids.1, "different machine-id");
    assert_eq!(machine_ids.0.trim().len(), 32, "{machine_ids:?}");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            sh(&tm, id, "hostname").await.trim(),
            format!("rds-{}", &id[..8])
        );
        let before = now_ms();
        let guest: i64 = sh(&tm, id, "date +%s%3N").await.trim().parse().unwrap();
        let after = now_ms();
        assert!(
            guest > before - 2000 && guest < after + 2000,
            "{id:.8} clock {guest} vs host {before}..{after}"
        );
        let addr = sh(&tm, id, "ip -4 addr show eth0").await;
        let own = restored[i]["guestIp"].as_str().unwrap();
        assert!(addr.contains(&format!("inet {own}/")), "{id:.8}: {addr}");
        assert!(
            !addr.contains(&format!("inet {src_ip}/")),
            "{id:.8} kept the source's address: {addr}"
        );
    }

    // Egress: each VM has its own policy, not the snapshot's.
    assert!(
        reached(&curl(&tm, &s, INET_A).await, INET_A),
        "the source reaches .10"
    );
    assert_ne!(
        curl(&tm, a, INET_A).await.0,
        0,
        "outboundInternet=false reaches nothing"
    );
    assert_ne!(curl(&tm, a, INET_B).await.0, 0);
    assert!(
        reached(&curl(&tm, b, INET_B).await, INET_B),
        "allowIps .11 reaches .11"
    );
    assert_ne!(
        curl(&tm, b, INET_A).await.0,
        0,
        "the source's allowIps do not carry over"
    );

    // A stopped VM cannot be captured.
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{}/stop", ids[2]), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    tm.expect(
        Method::POST,
        &format!("/v1/vms/{}/snapshots", ids[2]),
        None,
        StatusCode::CONFLICT,
        "VM must be RUNNING to snapshot (state=STOPPED)",
    )
    .await;
    destroy(&tm, &ids[2]).await;
    destroy(&tm, &ids[1]).await;

    // The gate: another shape cold-boots on the snapshot's disk, grown to the larger size asked.
    let g = create(
        &tm,
        json!({"cpu": 2, "memMb": 256, "diskSizeMb": 384, "userOverlaySnapshotId": snap_id}),
    )
    .await;
    let gid = g["id"].as_str().unwrap().to_string();
    assert_eq!(
        (g["provisionMode"].as_str(), g["diskSizeMb"].as_u64()),
        (Some("boot"), Some(384))
    );
    assert_eq!(sh(&tm, &gid, "sha256sum data/blob").await, blob);
    let size_mb = |out: String| out.trim().parse::<u64>().unwrap();
    let grown = size_mb(sh(&tm, &gid, "df -m --output=size /workspace | tail -1").await);
    let plain = size_mb(sh(&tm, &s, "df -m --output=size /workspace | tail -1").await);
    assert!(grown > plain + 100, "grown {grown} MiB vs {plain} MiB");
    destroy(&tm, &gid).await;

    // A snapshot of a restored VM; deleting the first snapshot leaves its restores running.
    let second = snapshot(&tm, a).await;
    assert_eq!(second["sourceVmId"], a.as_str());
    let r = tm
        .call(Method::DELETE, &format!("/v1/snapshots/{snap_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    tm.expect(
        Method::GET,
        &format!("/v1/snapshots/{snap_id}"),
        None,
        StatusCode::NOT_FOUND,
        "Snapshot not found",
    )
    .await;
    assert!(!tm.storage().join("snapshots").join(&snap_id).exists());
    assert_eq!(sh(&tm, a, "cat data/a.txt only-r1").await, "alpha\nmine\n");

    // Refusals that create nothing.
    let before = tm.call(Method::GET, "/v1/vms", None).await.json;
    tm.expect(
        Method::POST,
        "/v1/vms",
        Some(json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": snap_id})),
        StatusCode::NOT_FOUND,
        "User overlay snapshot not found",
    )
    .await;
    let db = rds_manager::db::Db::connect(&tm.settings.db).await.unwrap();
    let kernel = image.kernel.display().to_string();
    let rootfs = image.rootfs.display().to_string();
    let initrd = image.initrd.as_ref().map(|p| p.display().to_string());
    let other = db
        .ensure_builtin_image(&kernel, initrd.as_deref(), &rootfs)
        .await
        .unwrap()
        .id;
    db.close().await;
    let second_id = second["id"].as_str().unwrap();
    tm.expect(
        Method::POST,
        "/v1/vms",
        Some(json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": second_id, "imageId": other})),
        StatusCode::BAD_REQUEST,
        format!(
            "Snapshot image mismatch: snapshot={} vm={other}",
            src["imageId"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(tm.call(Method::GET, "/v1/vms", None).await.json, before);

    // The image stays while a user snapshot needs it, even with no VM left on it.
    destroy(&tm, a).await;
    destroy(&tm, &s).await;
    let img = src["imageId"].as_str().unwrap();
    tm.expect(
        Method::DELETE,
        &format!("/v1/images/{img}"),
        None,
        StatusCode::CONFLICT,
        format!("Image is in use by snapshot {second_id}"),
    )
    .await;
    let r = tm
        .call(Method::DELETE, &format!("/v1/snapshots/{second_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        snapshot_entries(&tm).is_empty(),
        "{:?}",
        snapshot_entries(&tm)
    );

    let metrics = tm.call(Method::GET, "/metrics", None).await.json;
    let text = metrics.as_str().unwrap_or_default();
    for line in [
        "rds_snapshot_create_duration_seconds_count{memory=\"true\"} 2".to_string(),
        format!("rds_vm_create_total{{mode=\"{mode}\",result=\"ok\"}}"),
        "rds_snapshots{kind=\"user_overlay\"} 0".to_string(),
    ] {
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}

/// A VMM killed during a capture fails the capture (nothing registered, nothing left) and leaves
/// the VM STOPPED with `lastError`; a manager killed during a restore leaves nothing behind after
/// its restart, and one killed during a capture leaves no half snapshot and a VM that runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_capture_and_restore() {
    let Some((image, vhost)) = common::guest_prerequisites("kills_during_capture_and_restore")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let mut tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let k = create(&tm, json!({"cpu": 1, "memMb": 256})).await;
    let kid = k["id"].as_str().unwrap().to_string();
    sh(&tm, &kid, "echo kept > kept.txt").await;
    let base = snapshot(&tm, &kid).await;
    let base_id = base["id"].as_str().unwrap().to_string();

    // Dirty pages make the capture's /fs/sync take a while; the VMM is killed meanwhile.
    sh(
        &tm,
        &kid,
        "dd if=/dev/zero of=big bs=1M count=120 2>/dev/null; echo done",
    )
    .await;
    let qemu = rds_testkit::pids_matching(&format!("rds-{kid}"));
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    let call = tm.call_detached(Method::POST, &format!("/v1/vms/{kid}/snapshots"), None);
    tokio::time::sleep(Duration::from_millis(150)).await;
    unsafe { libc::kill(qemu[0] as i32, libc::SIGKILL) };
    let (status, body) = call.await.unwrap();
    println!("snapshot with the VMM killed 150 ms in → {status} {body}");
    match status {
        StatusCode::INTERNAL_SERVER_ERROR => {
            let m = body["message"].as_str().unwrap();
            assert!(m.starts_with("Snapshot failed: "), "{m}");
            let ids = tm.ids("/v1/snapshots").await;
            assert_eq!(ids, vec![base_id.as_str()], "nothing registered");
        }
        // The kill landed after the capture had completed: a valid snapshot.
        StatusCode::CREATED => println!("the kill landed after the capture"),
        other => panic!("unexpected {other}: {body}"),
    }
    no_capture_dirs(&tm);
    let stopped = rds_testkit::wait_until(Duration::from_secs(20), || async {
        let v = vm(&tm, &kid).await;
        (v["state"] == "STOPPED").then_some(v)
    })
    .await
    .expect("VM STOPPED after its VMM died");
    assert_eq!(
        stopped["lastError"], "VMM exited unexpectedly (signal 9)",
        "{stopped}"
    );

    // The manager dies while a restore is under way; its successor cleans up.
    let call = tm.call_detached(
        Method::POST,
        "/v1/vms",
        Some(json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": base_id})),
    );
    // Killed as soon as the restore's row is STARTING (VMM launch, load, provisioning).
    let starting = rds_testkit::wait_until(Duration::from_secs(10), || async {
        let vms = tm.call(Method::GET, "/v1/vms", None).await.json;
        vms.as_array()?
            .iter()
            .any(|v| v["state"] == "STARTING")
            .then_some(())
    })
    .await;
    tm.kill();
    println!(
        "manager killed (restore seen STARTING: {}); the request {}",
        starting.is_some(),
        match call.await {
            Ok((status, _)) => format!("had answered {status}"),
            Err(_) => "died with it".into(),
        }
    );
    tm.restart().await.unwrap();
    let vms = tm.call(Method::GET, "/v1/vms", None).await.json;
    let n = vms
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["sourceSnapshotId"] == base_id.as_str())
        .cloned()
        .expect("the interrupted restore's row");
    let nid = n["id"].as_str().unwrap().to_string();
    println!("after restart: {n}");
    let state = n["state"].as_str().unwrap();
    let links = tm.ns.output(&["ip", "-o", "link", "show"]);
    if state == "RUNNING" {
        // It had finished before the kill: re-adopted.
        assert_eq!(sh(&tm, &nid, "cat kept.txt").await, "kept\n");
    } else {
        assert!(matches!(state, "STOPPED" | "ERROR"), "{n}");
        assert!(n["lastError"].is_string(), "{n}");
        assert!(
            rds_testkit::pids_matching(&nid).is_empty(),
            "processes left: {:?}",
            rds_testkit::pids_matching(&nid)
        );
        assert!(!links.contains("rds-tap"), "TAP left:\n{links}");
        assert!(
            !tm.storage().join(format!("vms/{nid}/run")).exists(),
            "run directory left"
        );
    }
    no_capture_dirs(&tm);
    destroy(&tm, &nid).await;

    // The manager dies in the middle of a capture (guest flushed or paused, the state being
    // written): its successor removes the capture directory, registers no half snapshot, and the
    // re-adopted VM runs and answers again.
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{kid}/start"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    sh(
        &tm,
        &kid,
        "dd if=/dev/zero of=big2 bs=1M count=60 2>/dev/null; echo done",
    )
    .await;
    let call = tm.call_detached(Method::POST, &format!("/v1/vms/{kid}/snapshots"), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    tm.kill();
    let answered = call.await.map(|(status, _)| status);
    println!("manager killed 400 ms into a capture; the request: {answered:?}");
    tm.restart().await.unwrap();
    no_capture_dirs(&tm);
    let ids = tm.ids("/v1/snapshots").await;
    let committed = matches!(answered, Ok(StatusCode::CREATED));
    assert_eq!(ids.len(), if committed { 2 } else { 1 }, "{ids:?}");
    assert!(ids.contains(&base_id));
    assert_eq!(vm(&tm, &kid).await["state"], "RUNNING");
    assert_eq!(sh(&tm, &kid, "cat kept.txt").await, "kept\n");
    destroy(&tm, &kid).await;
}

/// A capture that cannot fit answers 507 and leaves the VM running; with room it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_storage_root_answers_507() {
    let Some((image, vhost)) = common::guest_prerequisites("full_storage_root_answers_507") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let images = tempfile::tempdir().unwrap();
    let images_dir = images.path().display().to_string();
    let tm = TestManager::start_with(
        Some(&image),
        &vhost,
        &[("IMAGES_DIR", images_dir.as_str())],
        Opts {
            storage_tmpfs_mb: Some(400),
            ..Opts::default()
        },
    )
    .await;
    let v = create(&tm, json!({"cpu": 1, "memMb": 256})).await;
    let id = v["id"].as_str().unwrap().to_string();
    sh(&tm, &id, "echo small > small.txt && sync").await;

    let root = tm.storage();
    let avail = || {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&root)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let fill = root.join("tmp/fill");
    let leave = 4 << 20;
    let ok = std::process::Command::new("fallocate")
        .args(["-l", &(avail() - leave).to_string()])
        .arg(&fill)
        .status()
        .unwrap()
        .success();
    assert!(ok, "fallocate");
    println!("STORAGE_ROOT filled: {} bytes free", avail());
    tm.expect(
        Method::POST,
        &format!("/v1/vms/{id}/snapshots"),
        None,
        StatusCode::INSUFFICIENT_STORAGE,
        "Not enough free space in STORAGE_ROOT",
    )
    .await;
    no_capture_dirs(&tm);
    assert!(snapshot_entries(&tm).is_empty());
    assert_eq!(vm(&tm, &id).await["state"], "RUNNING");
    assert_eq!(sh(&tm, &id, "cat small.txt").await, "small\n");

    std::fs::remove_file(&fill).unwrap();
    let snap = snapshot(&tm, &id).await;
    assert_eq!(
        tm.call(
            Method::GET,
            &format!("/v1/snapshots/{}", snap["id"].as_str().unwrap()),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    destroy(&tm, &id).await;
}
