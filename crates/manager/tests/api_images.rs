//! Images through the HTTP API (`docs/reference/api.md` §5): create, uploads checked by magic and
//! streamed under the caps, bundles, the default, deletes, the built-in image, and a VM booted from
//! an uploaded image. Tests that boot guests take `/tmp/rds-e2e.lock` through the runner:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test api_images`.

mod common;

use axum::body::Body;
use common::{TestManager, KEY};
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

const FIELDS: [&str; 22] = [
    "id",
    "name",
    "description",
    "createdAt",
    "builtIn",
    "isDefault",
    "hasKernel",
    "hasRootfs",
    "kernelFilename",
    "rootfsFilename",
    "hasInitrd",
    "kernelFormat",
    "baseRootfsBytes",
    "kernelSha256",
    "initrdSha256",
    "rootfsSha256",
    "kernelUploadedAt",
    "rootfsUploadedAt",
    "seedSnapshotId",
    "seedStatus",
    "seedUpdatedAt",
    "seedError",
];

async fn manager(image: Option<&rds_testkit::GuestImage>) -> Option<TestManager> {
    let vhost = common::manager_prerequisites("api_images")?;
    Some(TestManager::start(image, &vhost, &[]).await)
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The start of an x86-64 ELF vmlinux, padded.
fn fake_kernel(len: usize, tag: u8) -> Vec<u8> {
    let mut k = vec![tag; len];
    k[..4].copy_from_slice(b"\x7fELF");
    k[4] = 2;
    k[5] = 1;
    k[18..20].copy_from_slice(&62u16.to_le_bytes());
    k
}

/// An ext4 superblock magic and mostly zeros (which must stay holes on disk).
fn fake_rootfs(len: usize) -> Vec<u8> {
    let mut r = vec![0u8; len];
    r[1080] = 0x53;
    r[1081] = 0xef;
    r[len / 2] = 1;
    r
}

fn put(path: &str, content_type: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header("x-api-key", KEY)
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

async fn upload(tm: &TestManager, id: &str, part: &str, bytes: Vec<u8>) -> common::Resp {
    tm.put_bytes(&format!("/v1/images/{id}/{part}"), bytes)
        .await
}

async fn get_image(tm: &TestManager, id: &str) -> Value {
    let r = tm
        .call(Method::GET, &format!("/v1/images/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    r.json
}

fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap();
    out.into_inner()
}

/// Temporary files left beside an image's files.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

fn images_dir(tm: &TestManager) -> PathBuf {
    tm.settings.images_dir.clone()
}

async fn create_image(tm: &TestManager, name: &str) -> String {
    let r = tm
        .call(
            Method::POST,
            "/v1/images",
            Some(json!({"name": name, "description": "test image"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_get_list_and_validation() {
    let Some(tm) = manager(None).await else {
        return;
    };
    let r = tm
        .call(
            Method::POST,
            "/v1/images",
            Some(json!({"name": "  mine ", "description": "d", "extra": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let img = r.json;
    let keys: Vec<&str> = img
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = FIELDS.to_vec();
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "image fields");
    let id = img["id"].as_str().unwrap();
    assert!(id.starts_with("img-") && id.len() == 40, "{id}");
    assert_eq!(img["name"], "mine");
    assert_eq!(
        (
            &img["builtIn"],
            &img["isDefault"],
            &img["hasKernel"],
            &img["hasRootfs"],
            &img["hasInitrd"]
        ),
        (
            &json!(false),
            &json!(false),
            &json!(false),
            &json!(false),
            &json!(false)
        )
    );
    for null in [
        "kernelFilename",
        "rootfsFilename",
        "kernelFormat",
        "baseRootfsBytes",
        "kernelSha256",
        "initrdSha256",
        "rootfsSha256",
        "kernelUploadedAt",
        "rootfsUploadedAt",
        "seedSnapshotId",
        "seedStatus",
        "seedUpdatedAt",
        "seedError",
    ] {
        assert!(img[null].is_null(), "{null}: {}", img[null]);
    }
    assert_eq!(get_image(&tm, id).await, img);
    assert_eq!(
        get_image(&tm, &id.to_uppercase().replace("IMG-", "img-")).await["id"],
        id
    );
    let second = create_image(&tm, "second").await;
    let list = tm.call(Method::GET, "/v1/images", None).await.json;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), id], "newest first");

    for (body, message) in [
        (json!({}), "name and description are required"),
        (
            json!({"name": " ", "description": "d"}),
            "name and description are required",
        ),
        (
            json!({"name": "n", "description": null}),
            "name and description are required",
        ),
        (
            json!({"name": 5, "description": "d"}),
            "name and description are required",
        ),
        (
            json!({"name": "x".repeat(201), "description": "d"}),
            "name must be at most 200 characters",
        ),
        // The limit is on the value as sent, before trimming (as the OpenAPI maxLength says).
        (
            json!({"name": format!(" {}", "x".repeat(200)), "description": "d"}),
            "name must be at most 200 characters",
        ),
        (
            json!({"name": "n", "description": "é".repeat(2001)}),
            "description must be at most 2000 characters",
        ),
    ] {
        let r = tm
            .call(Method::POST, "/v1/images", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json["message"], message, "{body}");
    }
    let r = tm.call(Method::GET, "/v1/images/nope", None).await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (StatusCode::BAD_REQUEST, &json!("Invalid image id"))
    );
    let missing = "img-0f8fad5b-d9cb-469f-a165-70867728950e";
    for (method, path) in [
        (Method::GET, format!("/v1/images/{missing}")),
        (Method::DELETE, format!("/v1/images/{missing}")),
        (Method::POST, format!("/v1/images/{missing}/set-default")),
        (Method::DELETE, format!("/v1/images/{missing}/initrd")),
    ] {
        let r = tm.call(method.clone(), &path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(r.json["message"], "Image not found");
    }
    let r = upload(&tm, missing, "kernel", fake_kernel(4096, 1)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let list = tm.call(Method::GET, "/v1/images", None).await.json;
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "rejected creates add nothing"
    );
}

#[tokio::test]
async fn uploads_are_checked_streamed_and_replace_files() {
    let Some(tm) = manager(None).await else {
        return;
    };
    let id = create_image(&tm, "uploads").await;
    let dir = images_dir(&tm).join(&id);

    // A text file is no kernel: 400, and the image is unchanged.
    let r = upload(&tm, &id, "kernel", b"#!/bin/sh\necho hi\n".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["message"],
        "Kernel must be an ELF vmlinux or a bzImage"
    );
    // An ELF for another machine (aarch64) neither.
    let mut arm = fake_kernel(4096, 0);
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    assert_eq!(
        upload(&tm, &id, "kernel", arm).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = upload(&tm, &id, "rootfs", fake_kernel(8192, 0)).await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("Root filesystem must be an ext4 image")
        )
    );
    let r = upload(&tm, &id, "initrd", b"hello".to_vec()).await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("Initrd must be a cpio archive")
        )
    );
    let r = tm
        .send(put(
            &format!("/v1/images/{id}/kernel"),
            "text/plain",
            Body::from(fake_kernel(4096, 1)),
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Over the cap by Content-Length: 413 before a byte is read.
    for (part, limit) in [
        ("kernel", 3u64 << 30),
        ("rootfs", 3 << 30),
        ("initrd", 1 << 30),
    ] {
        let mut req = put(
            &format!("/v1/images/{id}/{part}"),
            "application/octet-stream",
            Body::from(vec![0u8; 16]),
        );
        req.headers_mut()
            .insert("content-length", (limit + 1).to_string().parse().unwrap());
        let r = tm.send(req).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{part}");
        assert_eq!(r.json["message"], "Body too large");
    }
    let img = get_image(&tm, &id).await;
    assert_eq!(img["hasKernel"], false);
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    // Valid files, sent in chunks: stored read-only, digests and sizes recorded.
    let kernel = fake_kernel(300_000, 7);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        kernel.chunks(65_537).map(|c| Ok(c.to_vec())).collect();
    let r = tm
        .send(put(
            &format!("/v1/images/{id}/kernel"),
            "application/octet-stream",
            Body::from_stream(futures::stream::iter(chunks)),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let rootfs = fake_rootfs(32 << 20);
    let t = Instant::now();
    assert_eq!(
        upload(&tm, &id, "rootfs", rootfs.clone()).await.status,
        StatusCode::NO_CONTENT
    );
    println!("32 MiB rootfs upload: {:?}", t.elapsed());
    let img = get_image(&tm, &id).await;
    assert_eq!(img["hasKernel"], true);
    assert_eq!(img["kernelFormat"], "elf");
    assert_eq!(img["kernelFilename"], "vmlinux");
    assert_eq!(img["rootfsFilename"], "rootfs.ext4");
    assert_eq!(img["kernelSha256"], sha(&kernel));
    assert_eq!(img["rootfsSha256"], sha(&rootfs));
    assert_eq!(img["baseRootfsBytes"], 32 << 20);
    assert!(img["kernelUploadedAt"].as_str().unwrap().ends_with('Z'));
    let on_disk = dir.join("rootfs.ext4");
    let meta = std::fs::metadata(&on_disk).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert!(meta.blocks() * 512 < 1 << 20, "rootfs is not sparse");
    assert_eq!(std::fs::read(&on_disk).unwrap(), rootfs);
    assert_eq!(std::fs::read(dir.join("vmlinux")).unwrap(), kernel);

    // A second kernel replaces the first; a bad one afterwards changes nothing.
    let kernel2 = fake_kernel(5000, 9);
    assert_eq!(
        upload(&tm, &id, "kernel", kernel2.clone()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        upload(&tm, &id, "kernel", b"nope".to_vec()).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(get_image(&tm, &id).await["kernelSha256"], sha(&kernel2));
    assert_eq!(std::fs::read(dir.join("vmlinux")).unwrap(), kernel2);

    // Initrd: plain newc and gzip accepted, and removable.
    let mut cpio = b"070701".to_vec();
    cpio.resize(512, b'0');
    assert_eq!(
        upload(&tm, &id, "initrd", cpio.clone()).await.status,
        StatusCode::NO_CONTENT
    );
    let img = get_image(&tm, &id).await;
    assert_eq!(
        (&img["hasInitrd"], &img["initrdSha256"]),
        (&json!(true), &json!(sha(&cpio)))
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&cpio).unwrap();
    assert_eq!(
        upload(&tm, &id, "initrd", gz.finish().unwrap())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{id}/initrd"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let img = get_image(&tm, &id).await;
    assert_eq!(
        (&img["hasInitrd"], &img["initrdSha256"]),
        (&json!(false), &Value::Null)
    );
    assert!(!dir.join("initrd").exists());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[tokio::test]
async fn bundles_defaults_deletes_and_images_in_use() {
    let Some(tm) = manager(None).await else {
        return;
    };
    let id = create_image(&tm, "bundle").await;
    let dir = images_dir(&tm).join(&id);
    let bundle_path = format!("/v1/images/{id}/bundle");
    let send_zip = |bytes: Vec<u8>, ct: &'static str| {
        let path = bundle_path.clone();
        let tm = &tm;
        async move { tm.send(put(&path, ct, Body::from(bytes))).await }
    };

    // Files one folder deep, deflated.
    let kernel = fake_kernel(200_000, 3);
    let rootfs = fake_rootfs(4 << 20);
    let both = zip(&[
        ("img/", b""),
        ("img/vmlinux", &kernel),
        ("img/rootfs.ext4", &rootfs),
        ("img/README", b"hi"),
    ]);
    let r = send_zip(both, "application/zip").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let img = get_image(&tm, &id).await;
    assert_eq!(img["kernelSha256"], sha(&kernel));
    assert_eq!(img["rootfsSha256"], sha(&rootfs));
    assert_eq!(img["hasInitrd"], false);

    // Rejections leave the image as it was and no files behind.
    let bad_kernel = zip(&[("vmlinux", b"text"), ("rootfs.ext4", &fake_rootfs(8192))]);
    for (body, ct, status, message) in [
        (
            zip(&[("readme.txt", b"x")]),
            "application/x-zip-compressed",
            StatusCode::BAD_REQUEST,
            "Zip must contain vmlinux and/or rootfs.ext4",
        ),
        (
            b"PK\x03\x04 not really".to_vec(),
            "application/octet-stream",
            StatusCode::BAD_REQUEST,
            "Invalid zip archive",
        ),
        (
            bad_kernel,
            "application/x-zip",
            StatusCode::BAD_REQUEST,
            "Kernel must be an ELF vmlinux or a bzImage",
        ),
        (
            zip(&[("vmlinux", &kernel)]),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
        ),
    ] {
        let r = send_zip(body, ct).await;
        assert_eq!(
            (r.status, r.json["message"].as_str()),
            (status, Some(message))
        );
    }
    let after = get_image(&tm, &id).await;
    assert_eq!(after["kernelSha256"], sha(&kernel));
    assert_eq!(after["rootfsSha256"], sha(&rootfs));
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    let spool = tm.storage().join("tmp");
    let spooled: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().collect();
    assert!(spooled.is_empty(), "bundle spool left {spooled:?}");

    // set-default needs kernel and rootfs.
    let empty = create_image(&tm, "empty").await;
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/images/{empty}/set-default"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("Image is missing kernel or rootfs")
        )
    );
    let r = tm
        .call(Method::POST, &format!("/v1/images/{id}/set-default"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get_image(&tm, &id).await["isDefault"], true);
    assert_eq!(get_image(&tm, &empty).await["isDefault"], false);

    // A VM on the image (a row is enough: no guest boots here) pins it.
    let db = rds_manager::db::Db::connect(&tm.settings.db).await.unwrap();
    let vm_id = uuid::Uuid::new_v4().to_string();
    db.create_vm(
        &rds_manager::db::NewVm {
            id: vm_id.clone(),
            cpu: 1,
            mem_mb: 256,
            disk_size_mb: 256,
            outbound_internet: false,
            allow_ips: vec![],
            image_id: id.clone(),
            source_snapshot_id: None,
            backend: "qemu".into(),
            pool_role: None,
            timeout_sec: None,
            timeout_action: Default::default(),
            metadata: Default::default(),
            secret_env: None,
            peer_links: Vec::new(),
        },
        10,
        &tm.settings.vm_subnet,
    )
    .await
    .unwrap();
    let r = upload(&tm, &id, "kernel", fake_kernel(4096, 1)).await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (
            StatusCode::CONFLICT,
            &json!("Image is in use; create a new image")
        )
    );
    let r = send_zip(zip(&[("vmlinux", &kernel)]), "application/zip").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{id}/initrd"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{id}"), None)
        .await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (
            StatusCode::CONFLICT,
            &json!("Image is in use by an active VM")
        )
    );
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{vm_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    db.close().await;

    // Delete: files, row and the default setting go.
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = tm
        .call(Method::GET, &format!("/v1/images/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!dir.exists());
    let list = tm.call(Method::GET, "/v1/images", None).await.json;
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["isDefault"] == false));
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "no default image now");
}

/// The built-in image is hashed, cloned into IMAGES_DIR, read-only and the default; a restart finds
/// it again from the digest cache. Then an image uploaded from the same files (the 2 GiB sparse rootfs
/// streamed through the API) boots a VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_image_and_a_vm_from_an_uploaded_image() {
    let Some((image, _vhost)) =
        common::guest_prerequisites("builtin_image_and_a_vm_from_an_uploaded_image")
    else {
        return;
    };
    let t = Instant::now();
    let Some(mut tm) = manager(Some(&image)).await else {
        return;
    };
    println!(
        "manager start with built-in registration: {:?}",
        t.elapsed()
    );
    let list = tm.call(Method::GET, "/v1/images", None).await.json;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let builtin = &list[0];
    let bid = builtin["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            &builtin["name"],
            &builtin["builtIn"],
            &builtin["isDefault"],
            &builtin["hasInitrd"],
            &builtin["kernelFormat"]
        ),
        (
            &json!("built-in"),
            &json!(true),
            &json!(true),
            &json!(image.initrd.is_some()),
            &json!("elf")
        )
    );
    let kernel_bytes = std::fs::read(&image.kernel).unwrap();
    assert_eq!(builtin["kernelSha256"], sha(&kernel_bytes));
    let rootfs_len = std::fs::metadata(&image.rootfs).unwrap().len();
    assert_eq!(builtin["baseRootfsBytes"], rootfs_len);
    let bdir = images_dir(&tm).join(&bid);
    let cloned = std::fs::metadata(bdir.join("rootfs.ext4")).unwrap();
    assert_eq!(cloned.len(), rootfs_len);
    assert_eq!(cloned.permissions().mode() & 0o777, 0o444);
    assert!(
        cloned.blocks() * 512
            <= std::fs::metadata(&image.rootfs).unwrap().blocks() * 512 + (1 << 20),
        "clone is not sparse"
    );
    let rootfs_sha = builtin["rootfsSha256"].as_str().unwrap().to_string();
    assert_eq!(rootfs_sha.len(), 64);

    let r = upload(&tm, &bid, "kernel", fake_kernel(4096, 1)).await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (StatusCode::CONFLICT, &json!("Built-in image is read-only"))
    );
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{bid}"), None)
        .await;
    assert_eq!(
        (r.status, &r.json["message"]),
        (
            StatusCode::CONFLICT,
            &json!("Built-in image cannot be deleted while KERNEL_PATH and BASE_ROOTFS_PATH point to it")
        )
    );

    // A restart reuses the image and its cached digests.
    let t = Instant::now();
    tm.restart().await.unwrap();
    println!("restart with cached digests: {:?}", t.elapsed());
    let list = tm.call(Method::GET, "/v1/images", None).await.json;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], bid.as_str());

    // The same files uploaded into a new image; the rootfs streamed from disk.
    let id = create_image(&tm, "uploaded").await;
    let r = upload(&tm, &id, "kernel", kernel_bytes).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    if let Some(initrd) = &image.initrd {
        let r = upload(&tm, &id, "initrd", std::fs::read(initrd).unwrap()).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    }
    let file = tokio::fs::File::open(&image.rootfs).await.unwrap();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let t = Instant::now();
    let r = tm
        .send(put(
            &format!("/v1/images/{id}/rootfs"),
            "application/octet-stream",
            body,
        ))
        .await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    println!(
        "rootfs upload: {} MiB in {:?} ({:.0} MiB/s)",
        rootfs_len >> 20,
        took,
        (rootfs_len >> 20) as f64 / took.as_secs_f64()
    );
    let img = get_image(&tm, &id).await;
    assert_eq!(img["rootfsSha256"], rootfs_sha.as_str());
    assert_eq!(img["kernelSha256"], builtin["kernelSha256"]);
    let stored = std::fs::metadata(images_dir(&tm).join(&id).join("rootfs.ext4")).unwrap();
    println!(
        "stored rootfs: {} MiB allocated of {} MiB",
        (stored.blocks() * 512) >> 20,
        stored.len() >> 20
    );
    assert!(stored.blocks() * 512 < stored.len(), "upload is not sparse");

    let t = Instant::now();
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 512, "imageId": id})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    println!("VM from the uploaded image: 201 in {:?}", t.elapsed());
    assert_eq!(r.json["imageId"], id.as_str());
    let vm = r.json["id"].as_str().unwrap().to_string();
    let r = tm.exec(&vm, json!({"cmd": "echo booted"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["stdout"], "booted\n");
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{vm}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}
