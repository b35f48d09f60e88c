//! Snapshots through the HTTP API without booting a guest (`docs/reference/api.md` §3.3, §4, §5):
//! ids, lookups, scopes, the refusals of a create that names a snapshot (each leaving nothing
//! behind), deletes and the image rules, and the snapshot half of reconciliation. Rows the API
//! cannot make yet (templates, snapshots of VMs that never ran) are inserted through the manager's
//! `Db` API.

mod common;

use common::{vm_dirs, TestManager};
use http::{Method, StatusCode};
use rds_manager::db::Db;
use rds_manager::model::{now_rfc3339, SnapshotKind, SnapshotRecord};
use serde_json::{json, Value};
use std::path::PathBuf;

const UNKNOWN: &str = "snap-0f8fad5b-d9cb-469f-a165-70867728950e";

async fn manager() -> Option<TestManager> {
    let vhost = common::manager_prerequisites("api_snapshots")?;
    Some(TestManager::start(None, &vhost, &[]).await)
}

fn snap_id() -> String {
    format!("snap-{}", uuid::Uuid::new_v4())
}

fn record(id: &str, kind: SnapshotKind, image: &str) -> SnapshotRecord {
    std::thread::sleep(std::time::Duration::from_millis(3));
    SnapshotRecord {
        id: id.into(),
        kind,
        image_id: image.into(),
        source_vm_id: Some(uuid::Uuid::new_v4().to_string()),
        base_seed_snapshot_id: None,
        cpu: 1,
        mem_mb: 256,
        disk_size_mb: 512,
        has_memory: false,
        size_bytes: 1234,
        backend: "qemu".into(),
        vmm_version: "7.2.0".into(),
        agent_port: 8080,
        kernel_sha256: None,
        initrd_sha256: None,
        rootfs_sha256: None,
        created_at: now_rfc3339(),
    }
}

/// A complete image whose files are only paths (nothing boots from it here).
async fn image_by_path(db: &Db, dir: &str) -> String {
    let (kernel, rootfs) = (format!("{dir}/vmlinux"), format!("{dir}/rootfs.ext4"));
    let image = db.ensure_builtin_image(&kernel, None, &rootfs).await;
    image.unwrap().id
}

/// `snapshots/<id>/` with a meta.json and a small disk, as a capture leaves it.
fn snapshot_files(tm: &TestManager, rec: &SnapshotRecord) -> PathBuf {
    let dir = tm.storage().join("snapshots").join(&rec.id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("disk.ext4"), b"disk").unwrap();
    let meta = serde_json::to_vec(rec).unwrap();
    std::fs::write(dir.join("meta.json"), meta).unwrap();
    dir
}

async fn nothing_created(tm: &TestManager) {
    assert_eq!(tm.call(Method::GET, "/v1/vms", None).await.json, json!([]));
    assert!(vm_dirs(tm).is_empty(), "{:?}", vm_dirs(tm));
}

#[tokio::test]
async fn ids_scopes_and_unknowns() {
    let Some(tm) = manager().await else { return };
    for bad in [
        "snap-1",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "img-0f8fad5b-d9cb-469f-a165-70867728950e",
        "snap-0f8fad5bd9cb469fa16570867728950e",
    ] {
        for method in [Method::GET, Method::DELETE] {
            let path = format!("/v1/snapshots/{bad}");
            let status = StatusCode::BAD_REQUEST;
            tm.expect(method, &path, None, status, "Invalid snapshot id")
                .await;
        }
    }
    for method in [Method::GET, Method::DELETE] {
        let path = format!("/v1/snapshots/{UNKNOWN}");
        tm.expect(
            method,
            &path,
            None,
            StatusCode::NOT_FOUND,
            "Snapshot not found",
        )
        .await;
    }
    // Upper case is the same id.
    let path = format!("/v1/snapshots/{}", UNKNOWN.to_uppercase());
    tm.expect(
        Method::GET,
        &path,
        None,
        StatusCode::NOT_FOUND,
        "Snapshot not found",
    )
    .await;
    for q in ["", "?scope=user", "?scope=internal", "?scope=all"] {
        let r = tm
            .call(Method::GET, &format!("/v1/snapshots{q}"), None)
            .await;
        assert_eq!((r.status, r.json), (StatusCode::OK, json!([])), "{q}");
    }
    for q in ["?scope=bogus", "?scope=", "?scope=USER"] {
        let path = format!("/v1/snapshots{q}");
        tm.expect(
            Method::GET,
            &path,
            None,
            StatusCode::BAD_REQUEST,
            "Invalid scope",
        )
        .await;
    }
    let vm = uuid::Uuid::new_v4().to_string();
    let path = format!("/v1/vms/{vm}/snapshots");
    tm.expect(
        Method::POST,
        &path,
        None,
        StatusCode::NOT_FOUND,
        format!("VM {vm} not found"),
    )
    .await;
    tm.expect(
        Method::POST,
        "/v1/vms/nope/snapshots",
        None,
        StatusCode::BAD_REQUEST,
        "Invalid VM id",
    )
    .await;
    let r = tm.call(Method::GET, "/v1/vms/x/snapshots", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // Creates naming a malformed or unknown snapshot are refused before anything is allocated.
    let create = |extra: Value| {
        let mut body = json!({"cpu": 1, "memMb": 256});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (
            json!({"userOverlaySnapshotId": "snap-1"}),
            StatusCode::BAD_REQUEST,
            "userOverlaySnapshotId must be a snapshot id".to_string(),
        ),
        (
            json!({"userOverlaySnapshotId": 5}),
            StatusCode::BAD_REQUEST,
            "userOverlaySnapshotId must be a snapshot id".into(),
        ),
        (
            json!({"snapshotId": "x"}),
            StatusCode::BAD_REQUEST,
            "snapshotId must be a snapshot id".into(),
        ),
        (
            json!({"snapshotId": UNKNOWN, "userOverlaySnapshotId": snap_id()}),
            StatusCode::BAD_REQUEST,
            "snapshotId and userOverlaySnapshotId differ".into(),
        ),
        (
            json!({"userOverlaySnapshotId": UNKNOWN}),
            StatusCode::NOT_FOUND,
            "User overlay snapshot not found".into(),
        ),
        (
            json!({"snapshotId": UNKNOWN}),
            StatusCode::NOT_FOUND,
            "User overlay snapshot not found".into(),
        ),
        (
            json!({"snapshotId": UNKNOWN, "userOverlaySnapshotId": UNKNOWN.to_uppercase()}),
            StatusCode::NOT_FOUND,
            "User overlay snapshot not found".into(),
        ),
        // The image lookup comes first.
        (
            json!({"userOverlaySnapshotId": UNKNOWN, "imageId": "img-0f8fad5b-d9cb-469f-a165-70867728950e"}),
            StatusCode::NOT_FOUND,
            "Image not found".into(),
        ),
    ];
    for (extra, status, message) in cases {
        tm.expect(
            Method::POST,
            "/v1/vms",
            Some(create(extra)),
            status,
            message,
        )
        .await;
    }
    nothing_created(&tm).await;
}

#[tokio::test]
async fn refusals_deletes_and_image_rules() {
    let Some(tm) = manager().await else { return };
    let db = Db::connect(&tm.settings.db).await.unwrap();
    // Two complete images by path (nothing boots here) and the snapshots the API cannot make yet.
    let img = image_by_path(&db, "/nonexistent/a").await;
    let other = image_by_path(&db, "/nonexistent/b").await;
    let tpl = SnapshotRecord {
        source_vm_id: None,
        has_memory: true,
        ..record(&snap_id(), SnapshotKind::Template, &img)
    };
    let user = SnapshotRecord {
        base_seed_snapshot_id: Some(tpl.id.clone()),
        ..record(&snap_id(), SnapshotKind::UserOverlay, &img)
    };
    for s in [&tpl, &user] {
        db.insert_snapshot(s).await.unwrap();
    }
    db.set_image_seed_ready(&img, &tpl.id).await.unwrap();
    let user_dir = snapshot_files(&tm, &user);

    // The objects, by scope, newest first.
    assert_eq!(tm.ids("/v1/snapshots").await, vec![user.id.as_str()]);
    assert_eq!(
        tm.ids("/v1/snapshots?scope=internal").await,
        vec![tpl.id.as_str()]
    );
    assert_eq!(
        tm.ids("/v1/snapshots?scope=all").await,
        [user.id.clone(), tpl.id.clone()]
    );
    let r = tm
        .call(Method::GET, &format!("/v1/snapshots/{}", user.id), None)
        .await;
    assert_eq!(
        r.json,
        json!({"id": user.id, "kind": "user_overlay", "createdAt": user.created_at, "cpu": 1, "memMb": 256,
               "diskSizeMb": 512, "imageId": img, "sourceVmId": user.source_vm_id, "baseSeedSnapshotId": tpl.id,
               "hasDisk": true, "hasOverlay": true, "hasMemory": false, "internal": false, "sizeBytes": 1234,
               "backend": "qemu"})
    );
    let r = tm
        .call(Method::GET, &format!("/v1/snapshots/{}", tpl.id), None)
        .await;
    assert_eq!(
        (r.json["kind"].as_str(), r.json["internal"].as_bool()),
        (Some("template"), Some(true))
    );
    assert_eq!(
        (&r.json["sourceVmId"], &r.json["hasMemory"]),
        (&Value::Null, &json!(true))
    );

    // Create refusals in the spec's order, each leaving nothing behind.
    let refused = |body: Value, message: String| {
        tm.expect(
            Method::POST,
            "/v1/vms",
            Some(body),
            StatusCode::BAD_REQUEST,
            message,
        )
    };
    refused(
        json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": tpl.id}),
        "Snapshot kind cannot be used as a user overlay baseline".into(),
    )
    .await;
    let mismatch = format!("Snapshot image mismatch: snapshot={img} vm={other}");
    refused(
        json!({"cpu": 1, "memMb": 256, "userOverlaySnapshotId": user.id, "imageId": other}),
        mismatch.clone(),
    )
    .await;
    refused(
        json!({"cpu": 1, "memMb": 256, "snapshotId": user.id, "diskSizeMb": 511}),
        "diskSizeMb cannot be smaller than the snapshot disk (512 MiB)".into(),
    )
    .await;
    // The mismatch is checked before the disk size.
    refused(
        json!({"cpu": 1, "memMb": 256, "snapshotId": user.id, "imageId": other, "diskSizeMb": 64}),
        mismatch,
    )
    .await;
    nothing_created(&tm).await;

    // Deletes: the active template is refused; the image is pinned by the user snapshot.
    tm.expect(
        Method::DELETE,
        &format!("/v1/snapshots/{}", tpl.id),
        None,
        StatusCode::CONFLICT,
        format!("Snapshot {} is the active template of image {img}", tpl.id),
    )
    .await;
    tm.expect(
        Method::DELETE,
        &format!("/v1/images/{img}"),
        None,
        StatusCode::CONFLICT,
        format!("Image is in use by snapshot {}", user.id),
    )
    .await;
    let text = tm.metrics_text().await;
    assert!(
        text.contains("rds_snapshots{kind=\"user_overlay\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("rds_snapshots{kind=\"template\"} 1\n"),
        "{text}"
    );

    let r = tm
        .call(Method::DELETE, &format!("/v1/snapshots/{}", user.id), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    assert!(!user_dir.exists(), "files removed");
    for method in [Method::GET, Method::DELETE] {
        tm.expect(
            method,
            &format!("/v1/snapshots/{}", user.id),
            None,
            StatusCode::NOT_FOUND,
            "Snapshot not found",
        )
        .await;
    }
    let leftovers: Vec<_> = std::fs::read_dir(tm.storage().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // With no user snapshot left the image goes, and its template with it (row and files).
    let tpl_dir = snapshot_files(&tm, &tpl);
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{img}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let got = tm
        .message(Method::GET, &format!("/v1/snapshots/{}", tpl.id), None)
        .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
    assert!(!tpl_dir.exists(), "template files removed with the image");
    db.close().await;
}

#[tokio::test]
async fn reconciliation_of_snapshot_directories() {
    let Some(mut tm) = manager().await else {
        return;
    };
    let db = Db::connect(&tm.settings.db).await.unwrap();
    let img = image_by_path(&db, "/nonexistent").await;
    // A capture interrupted by a crash, a committed snapshot whose row was lost, a row whose files
    // are gone, a healthy one, and a directory whose meta.json is not valid.
    let root = tm.storage().join("snapshots");
    std::fs::create_dir_all(root.join(".tmp-0f8fad5b")).unwrap();
    std::fs::write(root.join(".tmp-0f8fad5b/disk.ext4"), b"partial").unwrap();
    let orphan = record(&snap_id(), SnapshotKind::UserOverlay, &img);
    snapshot_files(&tm, &orphan);
    let lost = record(&snap_id(), SnapshotKind::UserOverlay, &img);
    db.insert_snapshot(&lost).await.unwrap();
    let kept = record(&snap_id(), SnapshotKind::UserOverlay, &img);
    db.insert_snapshot(&kept).await.unwrap();
    snapshot_files(&tm, &kept);
    let junk = root.join(snap_id());
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("meta.json"), b"{not json").unwrap();
    db.close().await;

    tm.restart().await.unwrap();
    assert!(
        !root.join(".tmp-0f8fad5b").exists(),
        "capture directory removed"
    );
    let r = tm
        .call(Method::GET, &format!("/v1/snapshots/{}", orphan.id), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "re-registered: {}", r.json);
    assert_eq!(
        (r.json["createdAt"].as_str(), r.json["diskSizeMb"].as_u64()),
        (Some(orphan.created_at.as_str()), Some(512))
    );
    let r = tm
        .call(Method::GET, &format!("/v1/snapshots/{}", lost.id), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "row without files dropped");
    let r = tm
        .call(Method::GET, &format!("/v1/snapshots/{}", kept.id), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        junk.join("meta.json").exists(),
        "an invalid directory is left alone, never deleted"
    );
    let mut listed = tm.ids("/v1/snapshots").await;
    listed.sort();
    let mut expected = vec![orphan.id.clone(), kept.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
}
