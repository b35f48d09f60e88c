//! `STORAGE_ROOT` full (a small tmpfs, filled with fallocate): a file upload answers 507 (it used
//! to be a 500) and a create 507 before anything is made, no spool file stays behind, the manager
//! keeps serving, and uploads and creates work once space is freed; an image part upload into a
//! full `IMAGES_DIR` answers 507 with nothing half-written and works once space is freed. Images live outside the tmpfs (`IMAGES_DIR`): the built-in
//! image is cloned there at start, which a tmpfs cannot take.
//!
//! Tests of this file run one at a time; run them under the e2e lock:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_storage_full`.

mod common;

use common::archive::{targz, Entry};
use common::{Opts, TestManager};
use http::{Method, StatusCode};
use serde_json::json;
use std::path::Path;

fn avail(root: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(root)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Fills `root`'s filesystem with one file (returned) until `leave` bytes are free.
fn fill(root: &Path, leave: u64) -> std::path::PathBuf {
    let fill = root.join("tmp/fill");
    std::fs::create_dir_all(fill.parent().unwrap()).unwrap();
    let ok = std::process::Command::new("fallocate")
        .args(["-l", &(avail(root) - leave).to_string()])
        .arg(&fill)
        .status()
        .unwrap()
        .success();
    assert!(ok, "fallocate");
    fill
}

/// Every file under `dir` whose name contains `part` (a leftover of an interrupted write).
fn files_named(dir: &Path, part: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named(&p, part));
        } else if p.file_name().unwrap().to_string_lossy().contains(part) {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_storage_answers_507_and_recovers() {
    let Some((image, vhost)) = common::guest_prerequisites("full_storage") else {
        return;
    };
    let images = tempfile::tempdir().unwrap();
    let images_dir = images.path().display().to_string();
    let extra = [
        ("WARM_POOL_MAX_VMS", "0"),
        ("IMAGES_DIR", images_dir.as_str()),
    ];
    let opts = Opts {
        storage_tmpfs_mb: Some(400),
        ..Opts::default()
    };
    let tm = TestManager::start_with(Some(&image), &vhost, &extra, opts).await;
    let id = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;

    let root = tm.storage();
    let fill = fill(&root, 2 << 20);
    println!("STORAGE_ROOT filled: {} bytes free", avail(&root));

    // Uploads take at most 10 MiB (spooled under STORAGE_ROOT first): 8 MiB into the 2 MiB left.
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let r = tm.upload(&id, "big", big).await;
    println!("upload: {} {}", r.status, r.json);
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.json);
    assert_eq!(r.json["message"], "Not enough free space in STORAGE_ROOT");
    let left = files_named(&root, "upload-");
    assert!(left.is_empty(), "spool files left: {left:?}");
    // Still serving.
    let r = tm.exec(&id, json!({"cmd": "echo alive"})).await;
    assert_eq!(r.json["stdout"], "alive\n", "{}", r.json);
    // A create is refused before anything is made (its sparse disk would fit, its guest would not).
    let create = json!({"cpu": 1, "memMb": 256, "diskSizeMb": 64});
    let r = tm.call(Method::POST, "/v1/vms", Some(create)).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.json);
    assert_eq!(r.json["message"], "Not enough free space in STORAGE_ROOT");
    assert_eq!(tm.ids("/v1/vms").await, vec![id.clone()], "no VM row");
    assert_eq!(common::vm_dirs(&tm), vec![id.clone()], "no VM directory");

    // Space freed: the same calls work.
    std::fs::remove_file(&fill).unwrap();
    let small = targz(&[Entry::File("ok.txt", b"fits\n")]);
    let r = tm.upload(&id, "after", small).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = tm.exec(&id, json!({"cmd": "cat after/ok.txt"})).await;
    assert_eq!(r.json["stdout"], "fits\n");
    let create = json!({"cpu": 1, "memMb": 256, "diskSizeMb": 64});
    let r = tm.call(Method::POST, "/v1/vms", Some(create)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let second = r.json["id"].as_str().unwrap().to_string();
    for vm in [&id, &second] {
        let r = tm
            .call(Method::DELETE, &format!("/v1/vms/{vm}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
}

/// An image part upload into a full `IMAGES_DIR` (here under `STORAGE_ROOT`, a 200 MiB tmpfs): 507,
/// nothing half-written (no staging file, no image folder, the image still without a kernel), the
/// manager keeps serving, and the same upload works once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_storage_refuses_an_image_upload_and_recovers() {
    let Some(vhost) = common::manager_prerequisites("full_storage_image_upload") else {
        return;
    };
    let Ok(built) = rds_testkit::guest_image() else {
        rds_testkit::skip(
            "full_storage_image_upload",
            "no guest image (its kernel is uploaded)",
        );
        return;
    };
    let kernel = std::fs::read(&built.kernel).unwrap();
    let opts = Opts {
        storage_tmpfs_mb: Some(200),
        ..Opts::default()
    };
    let tm = TestManager::start_with(None, &vhost, &[("WARM_POOL_MAX_VMS", "0")], opts).await;
    let r = tm
        .call(
            Method::POST,
            "/v1/images",
            Some(json!({"name": "full", "description": "upload into a full disk"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let image = r.json["id"].as_str().unwrap().to_string();
    let root = tm.storage();
    let fill = fill(&root, 4 << 20);

    let path = format!("/v1/images/{image}/kernel");
    let r = tm.put_bytes(&path, kernel.clone()).await;
    println!(
        "kernel upload into {} free bytes: {} {}",
        avail(&root),
        r.status,
        r.json
    );
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.json);
    assert_eq!(r.json["message"], "Not enough free space in STORAGE_ROOT");
    let images_dir = root.join("images");
    let staged: Vec<_> = std::fs::read_dir(images_dir.join(".staging"))
        .unwrap()
        .collect();
    assert!(staged.is_empty(), "staging files left: {staged:?}");
    assert!(
        !images_dir.join(&image).exists(),
        "an image folder was made"
    );
    let r = tm
        .call(Method::GET, &format!("/v1/images/{image}"), None)
        .await;
    assert_eq!(r.json["hasKernel"], false, "{}", r.json);
    assert_eq!(
        tm.call(Method::GET, "/v1/vms", None).await.status,
        StatusCode::OK
    );

    std::fs::remove_file(&fill).unwrap();
    let r = tm.put_bytes(&path, kernel).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = tm
        .call(Method::GET, &format!("/v1/images/{image}"), None)
        .await;
    assert_eq!(r.json["hasKernel"], true, "{}", r.json);
}
