//! Templates and the warm pool with real QEMU guests through the HTTP API (`docs/snapshots.md`
//! Templates, Warm pool): with `ENABLE_SNAPSHOTS=true` the default image's template becomes ready,
//! is listed only as internal, and creates of the template shape resume from it; an upload to an
//! image starts its template over (a failed build records why); with `ENABLE_WARM_POOL=true` a
//! create takes the pool VM with its own egress policy and the pool refills, outside the quota.
//!
//! Run under the e2e lock like the other guest tests:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_templates`.

mod common;

use common::guest::{curl, reached, sh};
use common::{Opts, TestManager};
use http::{Method, StatusCode};
use rds_testkit::internet::{Internet, INET_A, INET_B, INET_DNS};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every test here runs guests at the template shape.
const SHAPE: (u64, u64) = (1, 256);

async fn default_image(tm: &TestManager) -> Value {
    let images = tm.call(Method::GET, "/v1/images", None).await.json;
    images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["isDefault"] == true)
        .cloned()
        .expect("a default image")
}

async fn image(tm: &TestManager, id: &str) -> Value {
    tm.call(Method::GET, &format!("/v1/images/{id}"), None)
        .await
        .json
}

/// Polls the image until its `seedStatus` is one of `want`; returns the image.
async fn wait_seed(tm: &TestManager, id: &str, want: &[&str], within: Duration) -> Value {
    let t = Instant::now();
    loop {
        let img = image(tm, id).await;
        if want.iter().any(|w| img["seedStatus"] == *w) {
            println!(
                "image {id:.12}: seedStatus {} after {:?}",
                img["seedStatus"],
                t.elapsed()
            );
            return img;
        }
        assert!(
            t.elapsed() < within,
            "image {id} still {} after {within:?}: {img}\n{}",
            img["seedStatus"],
            tm.console_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn snapshots(tm: &TestManager, scope: &str) -> Vec<Value> {
    let r = tm
        .call(Method::GET, &format!("/v1/snapshots?scope={scope}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    r.json.as_array().unwrap().clone()
}

/// Directories under `STORAGE_ROOT/vms/`: user and internal VMs alike.
fn vm_dirs(tm: &TestManager) -> Vec<String> {
    common::vm_dirs(tm)
}

async fn readyz(tm: &TestManager) -> Value {
    tm.call(Method::GET, "/readyz", None).await.json
}

/// Waits until the warm pool holds `n` RUNNING VMs (`/readyz`).
async fn wait_pool(tm: &TestManager, n: u64, within: Duration) {
    let t = Instant::now();
    loop {
        let r = readyz(tm).await;
        if r["warmPool"]["ready"] == n {
            println!("warm pool at {n} after {:?}", t.elapsed());
            return;
        }
        assert!(
            t.elapsed() < within,
            "warm pool not at {n}: {r}\n{}",
            tm.console_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The default image's template: built in the background at start, listed only as internal, used
/// by creates of the template shape (and only those); it cannot be deleted while active. Then an
/// uploaded image: its build fails (no init on its rootfs), says why, and an upload starts it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_of_the_default_image_and_upload_reset() {
    let Some((guest, vhost)) =
        common::guest_prerequisites("template_of_the_default_image_and_upload_reset")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let tm = TestManager::start(Some(&guest), &vhost, &[("ENABLE_SNAPSHOTS", "true")]).await;
    assert_eq!(readyz(&tm).await["templates"], true);
    let img_id = default_image(&tm).await["id"].as_str().unwrap().to_string();
    let img = wait_seed(&tm, &img_id, &["ready"], Duration::from_secs(180)).await;
    let tpl_id = img["seedSnapshotId"]
        .as_str()
        .expect("seedSnapshotId")
        .to_string();
    assert!(
        img["seedUpdatedAt"].is_string() && img["seedError"].is_null(),
        "{img}"
    );

    // Internal: not a user snapshot, no user VM, nothing left of the builder VM.
    assert!(snapshots(&tm, "user").await.is_empty());
    for scope in ["internal", "all"] {
        let listed = snapshots(&tm, scope).await;
        assert_eq!(listed.len(), 1, "{scope}: {listed:?}");
        let t = &listed[0];
        assert_eq!(t["id"], tpl_id.as_str());
        assert_eq!(
            (t["kind"].as_str(), t["internal"].as_bool()),
            (Some("template"), Some(true))
        );
        assert_eq!(
            (t["hasMemory"].as_bool(), t["sourceVmId"].is_null()),
            (Some(true), true)
        );
        assert_eq!(
            (t["cpu"].as_u64(), t["memMb"].as_u64()),
            (Some(SHAPE.0), Some(SHAPE.1))
        );
    }
    assert_eq!(tm.call(Method::GET, "/v1/vms", None).await.json, json!([]));
    assert!(
        vm_dirs(&tm).is_empty(),
        "builder VM left: {:?}",
        vm_dirs(&tm)
    );
    let r = tm
        .call(Method::DELETE, &format!("/v1/snapshots/{tpl_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.json["message"],
        format!("Snapshot {tpl_id} is the active template of image {img_id}")
    );
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": tpl_id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);

    // The template shape resumes from the template, with the VM's own identity; others boot.
    let t = Instant::now();
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}\n{}",
        r.json,
        tm.console_tails()
    );
    println!("template-shape create → 201 in {:?}", t.elapsed());
    let vm = r.json;
    let id = vm["id"].as_str().unwrap().to_string();
    assert_eq!(vm["provisionMode"], "snapshot", "{vm}");
    assert_eq!(vm["sourceSnapshotId"], tpl_id.as_str());
    assert_eq!(
        sh(&tm, &id, "hostname").await.trim(),
        format!("rds-{}", &id[..8])
    );
    let addr = sh(&tm, &id, "ip -4 -o addr show eth0").await;
    assert!(
        addr.contains(&format!(" {}/", vm["guestIp"].as_str().unwrap())),
        "{addr}"
    );
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 384})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["provisionMode"], "boot");
    assert!(r.json["sourceSnapshotId"].is_null());
    for v in [id.as_str(), r.json["id"].as_str().unwrap()] {
        assert_eq!(
            tm.call(Method::DELETE, &format!("/v1/vms/{v}"), None)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
    }

    // An uploaded image whose rootfs has no init: its build fails and says so; an upload (even of
    // the same bytes) starts a build at once, whatever the hourly retry limit says.
    let up = tm
        .call(
            Method::POST,
            "/v1/images",
            Some(json!({"name": "broken", "description": "no init"})),
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.json);
    let up_id = up.json["id"].as_str().unwrap().to_string();
    let empty_rootfs = tm.dir.path().join("empty.ext4");
    std::fs::File::create(&empty_rootfs)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&empty_rootfs)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let kernel = std::fs::read(&guest.kernel).unwrap();
    for (part, bytes) in [
        ("kernel", kernel.clone()),
        (
            "initrd",
            std::fs::read(guest.initrd.as_ref().expect("image initrd")).unwrap(),
        ),
        ("rootfs", std::fs::read(&empty_rootfs).unwrap()),
    ] {
        let r = tm
            .put_bytes(&format!("/v1/images/{up_id}/{part}"), bytes)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{part}: {}", r.json);
    }
    let failed = wait_seed(&tm, &up_id, &["failed"], Duration::from_secs(120)).await;
    let why = failed["seedError"].as_str().unwrap_or_default();
    assert!(!why.is_empty() && why.len() <= 4000, "{failed}");
    assert!(failed["seedSnapshotId"].is_null());
    let r = tm
        .put_bytes(&format!("/v1/images/{up_id}/kernel"), kernel)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let again = image(&tm, &up_id).await;
    assert_ne!(
        again["seedStatus"], "failed",
        "the upload reset the template: {again}"
    );
    let refailed = wait_seed(&tm, &up_id, &["failed"], Duration::from_secs(120)).await;
    assert!(refailed["seedUpdatedAt"].as_str() > failed["seedUpdatedAt"].as_str());
    // The default image's template was not touched by any of this.
    assert_eq!(image(&tm, &img_id).await["seedSnapshotId"], tpl_id.as_str());
    assert!(vm_dirs(&tm).is_empty(), "{:?}", vm_dirs(&tm));
}

/// The warm pool: one VM kept RUNNING outside the quota and the API; a matching create takes it
/// (same id as the pool VM's directory), with `createdAt` now and the requested egress applied on
/// the host and in the guest; the pool refills; a create of another shape boots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_take_refill_and_egress() {
    let Some((guest, vhost)) = common::guest_prerequisites("warm_pool_take_refill_and_egress")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let tm = TestManager::start_with(
        Some(&guest),
        &vhost,
        &[
            ("ENABLE_SNAPSHOTS", "true"),
            ("ENABLE_WARM_POOL", "true"),
            ("WARM_POOL_TARGET", "1"),
            ("MAX_VMS", "1"),
        ],
        Opts {
            resolv_conf: Some(format!("nameserver {INET_DNS}\n")),
            ..Opts::default()
        },
    )
    .await;
    let _inet = Internet::new(&tm.ns);
    let img_id = default_image(&tm).await["id"].as_str().unwrap().to_string();
    // Once the template is ready the pool VM is (re)made from it; wait for both.
    wait_seed(&tm, &img_id, &["ready"], Duration::from_secs(180)).await;
    wait_pool(&tm, 1, Duration::from_secs(120)).await;
    let rz = readyz(&tm).await;
    assert_eq!(rz["warmPool"]["target"], 1, "{rz}");
    assert_eq!(tm.call(Method::GET, "/v1/vms", None).await.json, json!([]));
    let metrics = tm.metrics_text().await;
    assert!(metrics.contains("rds_warm_pool_vms 1"), "{metrics}");
    assert!(
        metrics.contains("rds_internal_vms{role=\"pool\"} 1"),
        "{metrics}"
    );

    // Pool VMs right before the create (a replacement of a booted one by a template-made one may be
    // under way): a take hands out one of them, a boot would make a new one.
    let pooled = vm_dirs(&tm);
    assert!(!pooled.is_empty());
    let before = chrono_now();
    let t = Instant::now();
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256, "outboundInternet": true, "allowIps": [format!("{INET_A}/32")]})),
        )
        .await;
    println!("warm-pool create → 201 in {:?}", t.elapsed());
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let vm = r.json;
    let id = vm["id"].as_str().unwrap().to_string();
    assert!(
        pooled.contains(&id),
        "the create did not take a pool VM ({pooled:?})"
    );
    assert_eq!(vm["state"], "RUNNING");
    assert_eq!(vm["allowIps"], json!([format!("{INET_A}/32")]));
    assert!(
        vm["createdAt"].as_str().unwrap() >= before.as_str(),
        "createdAt {} < {before}",
        vm["createdAt"]
    );
    assert!(
        reached(&curl(&tm, &id, INET_A).await, INET_A),
        "allowIps entry not reachable"
    );
    assert!(
        !reached(&curl(&tm, &id, INET_B).await, INET_B),
        "outside allowIps reachable"
    );
    // The quota counts user VMs only: the pool refills, and a second user VM is refused.
    wait_pool(&tm, 1, Duration::from_secs(120)).await;
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    assert_eq!(r.json["message"], "VM quota exceeded (maxVms=1)");
    // Nothing was created for the refused create; the pool VM is still there to take.
    assert_eq!(tm.ids("/v1/vms").await, vec![id.clone()]);
    let internal: Vec<String> = tm
        .metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("rds_internal_vms"))
        .map(str::to_string)
        .collect();
    println!(
        "after the refused create: dirs {:?}, {internal:?}",
        vm_dirs(&tm)
    );
    assert_eq!(readyz(&tm).await["warmPool"]["ready"], 1);
    assert_eq!(
        tm.call(Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Another shape does not take a pool VM: it boots a VM of its own, and the pool stays (or, if
    // its worker replaced a VM meanwhile, comes back) at its target.
    let pooled = vm_dirs(&tm);
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 320})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["provisionMode"], "boot");
    let own = r.json["id"].as_str().unwrap().to_string();
    assert!(!pooled.contains(&own), "the 320 MiB create took a pool VM");
    wait_pool(&tm, 1, Duration::from_secs(120)).await;
}

fn chrono_now() -> String {
    rds_manager::model::now_rfc3339()
}
