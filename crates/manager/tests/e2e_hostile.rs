//! A hostile sandbox user inside a real guest: filling its disk stops at `diskSizeMb` and hurts no
//! other VM; a memory hog ends (the guest's OOM killer, which spares the agent) without
//! taking the agent down, which answers the next call. Two guests of 256 MiB.
//!
//! Run under the e2e lock: `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_hostile`.

mod common;

use common::guest::sh;
use common::TestManager;
use http::StatusCode;
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_users_hit_their_own_limits_only() {
    let Some((image, vhost)) = common::guest_prerequisites("hostile_users") else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[("WARM_POOL_MAX_VMS", "0")]).await;
    let a = tm
        .create_vm(json!({"cpu": 1, "memMb": 256, "diskSizeMb": 128}))
        .await;
    let b = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;

    // Disk: writes stop with ENOSPC inside the guest; the host file never grows past diskSizeMb.
    let t = Instant::now();
    let out = sh(
        &tm,
        &a,
        "dd if=/dev/urandom of=fill bs=1M count=400 2>&1 | head -n 1; df -m /workspace | tail -n 1",
    )
    .await;
    println!("disk fill in {:?}: {out}", t.elapsed());
    assert!(out.contains("No space left on device"), "{out}");
    let disk = tm.storage().join(format!("vms/{a}/disk.ext4"));
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(meta.len(), 128 << 20, "the disk file keeps its size");
    assert!(
        meta.blocks() * 512 <= 128 << 20,
        "allocated {} bytes",
        meta.blocks() * 512
    );
    // The other VM writes and runs as before; the full one still answers and recovers.
    assert_eq!(
        sh(&tm, &b, "head -c 20000000 /dev/zero > f && stat -c %s f").await,
        "20000000\n"
    );
    assert_eq!(
        sh(&tm, &a, "rm fill && echo x > small && cat small").await,
        "x\n"
    );

    // A memory hog: the guest's OOM killer ends it (the agent is exempt), the agent answers.
    let t = Instant::now();
    let r = tm
        .exec(
            &a,
            json!({"cmd": "perl -e '@a = (); push @a, \"x\" x (1 << 20) while 1'", "timeoutMs": 60000}),
        )
        .await;
    println!(
        "memory hog answered {} in {:?}: {}",
        r.status,
        t.elapsed(),
        r.json
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["exitCode"], 137, "killed by SIGKILL: {}", r.json);
    assert_eq!(sh(&tm, &a, "echo alive").await, "alive\n");
    assert_eq!(sh(&tm, &b, "cat f | wc -c").await, "20000000\n");
}
