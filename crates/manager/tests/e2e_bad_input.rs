//! The bad inputs of the security design (`docs/reference/api.md` §1.5 and the refusal table of
//! docs/reliability.md), as one table run against a manager with a real RUNNING guest: each row's
//! status and a message naming the problem, and — after all rows — no side effect anywhere: the
//! same VMs, images, snapshots, webhooks and keys, the same files under `STORAGE_ROOT` (logs
//! aside), the same processes, TAPs and host rules, and the same files in the guest's workspace.
//!
//! Rows the API has no input for are left out (an expired session, which needs hours); the rate
//! limit and login limit rows are in api_validation.rs and api_auth.rs.

mod common;

use axum::body::Body;
use common::admin::{self, Admin};
use common::archive::{targz, Entry};
use common::{TestManager, KEY};
use http::{Method, Request};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One refused request: what it is, the request, the status and a fragment of the message.
struct Row {
    what: String,
    req: Request<Body>,
    status: u16,
    message: &'static str,
}

fn raw(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    ct: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    b.body(Body::from(body)).unwrap()
}

fn keyed(method: Method, path: &str, body: Option<Value>) -> Request<Body> {
    admin::request(method, path, &[("x-api-key", KEY)], body)
}

fn tar_upload(vm: &str, dest: &str, archive: Vec<u8>) -> Request<Body> {
    raw(
        Method::POST,
        &format!("/v1/vms/{vm}/files/upload?dest={dest}"),
        &[("x-api-key", KEY)],
        Some("application/gzip"),
        archive,
    )
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct World {
    api: BTreeMap<String, Value>,
    files: BTreeMap<String, u64>,
    processes: Vec<u32>,
    links: String,
    rules: String,
    workspace: BTreeMap<String, Vec<u8>>,
}

async fn world(tm: &TestManager, admin: &Admin, vm: &str) -> World {
    let mut api = BTreeMap::new();
    for path in [
        "/v1/vms",
        "/v1/images",
        "/v1/snapshots?scope=all",
        "/v1/admin/webhooks",
        "/v1/admin/api-keys",
    ] {
        let r = admin.call(tm, Method::GET, path, None).await;
        assert_eq!(r.status.as_u16(), 200, "{path}: {}", r.json);
        api.insert(path.to_string(), r.json);
    }
    // Time-dependent fields of a VM that no request changes on purpose.
    for v in api.get_mut("/v1/vms").unwrap().as_array_mut().unwrap() {
        v.as_object_mut().unwrap().remove("updatedAt");
    }
    let mut files = BTreeMap::new();
    walk(&tm.storage(), &tm.storage(), &mut files);
    let (status, _, tgz) = tm.download(vm, "/workspace").await;
    assert_eq!(status.as_u16(), 200);
    let mut processes = rds_testkit::pids_matching(&tm.storage().display().to_string());
    processes.sort();
    World {
        api,
        files,
        processes,
        links: tm.ns.output(&["ip", "-o", "link", "show"]),
        rules: tm.ns.output(&["nft", "list", "ruleset"]),
        workspace: common::archive::files(&tgz),
    }
}

/// Path → size of every file under `dir`, logs (which grow on their own) and sockets aside.
fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut BTreeMap<String, u64>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = p.strip_prefix(root).unwrap().display().to_string();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if !name.ends_with("logs") {
                out.insert(format!("{name}/"), 0);
                walk(root, &p, out);
            }
        } else if meta.is_file() {
            out.insert(name, meta.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_without_side_effects() {
    let Some((image, vhost)) = common::guest_prerequisites("bad_inputs") else {
        return;
    };
    let extra = [
        ("MAX_VMS", "1"),
        ("MAX_CPU", "4"),
        ("MAX_MEM_MB", "2048"),
        ("MAX_ALLOW_IPS", "4"),
        ("WARM_POOL_MAX_VMS", "0"),
        ("VM_SECRET_KEY", "bad-input-test-secret-key-0123456789"),
        // Every row is one request; limits would answer 429 before the row's own check.
        ("RATE_LIMIT_GLOBAL", "0"),
        ("RATE_LIMIT_VM_CREATE", "0"),
        ("RATE_LIMIT_EXEC", "0"),
        ("RATE_LIMIT_RUN_TS", "0"),
        ("RATE_LIMIT_RUN_JS", "0"),
        ("RATE_LIMIT_FILES_UPLOAD", "0"),
        ("RATE_LIMIT_FILES_DOWNLOAD", "0"),
    ];
    let tm = TestManager::start(Some(&image), &vhost, &extra).await;
    let vm = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;
    common::guest::sh(&tm, &vm, "echo x > f && ln -s /etc out && mkdir d").await;
    let admin = admin::login(&tm).await;
    let (revoked_id, revoked) = admin::create_key(&tm, &admin, "revoked").await;
    let r = admin
        .call(
            &tm,
            Method::POST,
            &format!("/v1/admin/api-keys/{revoked_id}/revoke"),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let r = tm
        .call(
            Method::POST,
            "/v1/images",
            Some(json!({"name": "bad-parts", "description": "d"})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.json);
    let image_id = r.json["id"].as_str().unwrap().to_string();
    let images = tm.call(Method::GET, "/v1/images", None).await.json;
    let builtin = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["builtIn"] == true)
        .expect("the built-in image")["id"]
        .as_str()
        .unwrap()
        .to_string();

    let before = world(&tm, &admin, &vm).await;
    let guest = tm.settings.vm_subnet.guest(7).unwrap().to_string();
    let vmp = format!("/v1/vms/{vm}");
    let create = |body: Value| keyed(Method::POST, "/v1/vms", Some(body));
    let exec = |body: Value| keyed(Method::POST, &format!("{vmp}/exec"), Some(body));
    let run = |kind: &str, body: Value| keyed(Method::POST, &format!("{vmp}/{kind}"), Some(body));
    let cookie_only = [("cookie", admin.cookie.as_str())];
    let base = || json!({"cpu": 1, "memMb": 256});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    let secret = |entries: Value| with("secretEnv", entries);
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |what: &str, req: Request<Body>, status: u16, message: &'static str| {
        rows.push(Row {
            what: what.to_string(),
            req,
            status,
            message,
        })
    };

    // Credentials and sources.
    add(
        "no key",
        admin::request(Method::GET, "/v1/vms", &[], None),
        401,
        "Unauthorized",
    );
    add(
        "wrong key",
        admin::request(Method::GET, "/v1/vms", &[("x-api-key", "rds_nope")], None),
        401,
        "Unauthorized",
    );
    add(
        "revoked DB key",
        admin::request(
            Method::GET,
            "/v1/vms",
            &[("x-api-key", revoked.as_str())],
            None,
        ),
        401,
        "Unauthorized",
    );
    add(
        "key on a session-only route",
        keyed(Method::GET, "/v1/admin/api-keys", None),
        403,
        "Admin session required",
    );
    add(
        "cookie write without CSRF proof",
        admin::request(Method::POST, "/v1/vms", &cookie_only, Some(base())),
        403,
        "CSRF check failed",
    );
    add(
        "API route from VM_SUBNET",
        admin::from_client(keyed(Method::POST, "/v1/vms", Some(base())), &guest),
        403,
        "Not allowed from a VM",
    );
    // Ids.
    add(
        "id undefined",
        keyed(Method::GET, "/v1/vms/undefined", None),
        400,
        "Invalid VM id",
    );
    add(
        "id null",
        keyed(Method::DELETE, "/v1/vms/null", None),
        400,
        "Invalid VM id",
    );
    add(
        "image id img-123",
        keyed(Method::DELETE, "/v1/images/img-123", None),
        400,
        "Invalid image id",
    );
    // Bodies.
    add(
        "body not JSON",
        raw(
            Method::POST,
            "/v1/vms",
            &[("x-api-key", KEY)],
            Some("application/json"),
            b"{\"cpu\": 1,".to_vec(),
        ),
        400,
        "Invalid JSON",
    );
    add(
        "body not an object",
        create(json!([1])),
        400,
        "must be a JSON object",
    );
    add(
        "wrong content type",
        raw(
            Method::POST,
            "/v1/vms",
            &[("x-api-key", KEY)],
            Some("text/plain"),
            b"{}".to_vec(),
        ),
        415,
        "Unsupported Media Type",
    );
    add(
        "cpu \"2\"",
        create(with("cpu", json!("2"))),
        400,
        "cpu must be an integer",
    );
    add(
        "cpu 1.5",
        create(with("cpu", json!(1.5))),
        400,
        "cpu must be an integer",
    );
    add(
        "cpu 0",
        create(with("cpu", json!(0))),
        400,
        "cpu must be an integer between 1 and 4",
    );
    add(
        "cpu MAX_CPU+1",
        create(with("cpu", json!(5))),
        400,
        "cpu must be an integer between 1 and 4",
    );
    add(
        "memMb 64",
        create(with("memMb", json!(64))),
        400,
        "memMb must be an integer between 128 and 2048",
    );
    add(
        "memMb MAX_MEM_MB+1",
        create(with("memMb", json!(2049))),
        400,
        "memMb must be an integer between 128 and 2048",
    );
    add(
        "allowIps example.com",
        create(with("allowIps", json!(["example.com"]))),
        400,
        "allowIps entry",
    );
    add(
        "allowIps /33",
        create(with("allowIps", json!(["1.2.3.4/33"]))),
        400,
        "allowIps entry",
    );
    add(
        "allowIps empty entry",
        create(with("allowIps", json!([""]))),
        400,
        "allowIps entry",
    );
    add(
        "allowIps metadata address",
        create(with("allowIps", json!(["169.254.169.254"]))),
        400,
        "169.254.169.254",
    );
    add(
        "allowIps over MAX_ALLOW_IPS",
        create(with(
            "allowIps",
            json!(["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"]),
        )),
        400,
        "allowIps",
    );
    add(
        "diskSizeMb 0",
        create(with("diskSizeMb", json!(0))),
        400,
        "diskSizeMb",
    );
    add(
        "diskSizeMb 63",
        create(with("diskSizeMb", json!(63))),
        400,
        "diskSizeMb",
    );
    add(
        "diskSizeMb 1048577",
        create(with("diskSizeMb", json!(1048577))),
        400,
        "diskSizeMb",
    );
    add(
        "secretEnv without =",
        create(secret(json!(["NOEQUALS"]))),
        400,
        "secretEnv",
    );
    add(
        "secretEnv key 1A",
        create(secret(json!(["1A=value"]))),
        400,
        "secretEnv",
    );
    add(
        "secretEnv key A-B",
        create(secret(json!(["A-B=value"]))),
        400,
        "secretEnv",
    );
    add(
        "secretEnv duplicate key",
        create(secret(json!(["A=value1", "A=value2"]))),
        400,
        "secretEnv",
    );
    add(
        "secretEnv 3-byte value",
        create(secret(json!(["A=abc"]))),
        400,
        "secretEnv",
    );
    add(
        "peerLinks bad alias",
        create(with(
            "peerLinks",
            json!([{"alias": "Bad Alias", "vmId": vm}]),
        )),
        400,
        "alias",
    );
    add(
        "peerLinks duplicate alias",
        create(with(
            "peerLinks",
            json!([{"alias": "p", "vmId": vm}, {"alias": "p", "vmId": vm}]),
        )),
        400,
        "alias",
    );
    add(
        "peerLinks unknown target",
        create(with(
            "peerLinks",
            json!([{"alias": "p", "vmId": "0f8fad5b-d9cb-469f-a165-70867728950e"}]),
        )),
        400,
        "not found",
    );
    add(
        "unknown image",
        create(with(
            "imageId",
            json!("img-0f8fad5b-d9cb-469f-a165-70867728950e"),
        )),
        404,
        "Image not found",
    );
    add(
        "image without kernel or rootfs",
        create(with("imageId", json!(image_id))),
        400,
        "missing kernel or rootfs",
    );
    add(
        "unknown snapshot",
        create(with(
            "snapshotId",
            json!("snap-0f8fad5b-d9cb-469f-a165-70867728950e"),
        )),
        404,
        "not found",
    );
    // Exec.
    add("exec empty cmd", exec(json!({"cmd": ""})), 400, "cmd");
    add(
        "exec NUL in cmd",
        exec(json!({"cmd": "echo a\u{0}b"})),
        400,
        "cmd",
    );
    add(
        "exec cwd /etc",
        exec(json!({"cmd": "true", "cwd": "/etc"})),
        400,
        "/workspace",
    );
    add(
        "exec cwd ../..",
        exec(json!({"cmd": "true", "cwd": "../.."})),
        400,
        "/workspace",
    );
    add(
        "exec cwd /home/user",
        exec(json!({"cmd": "true", "cwd": "/home/user"})),
        400,
        "/workspace",
    );
    add(
        "exec cwd a file",
        exec(json!({"cmd": "true", "cwd": "f"})),
        400,
        "cwd",
    );
    add(
        "exec cwd a symlink out",
        exec(json!({"cmd": "true", "cwd": "out"})),
        400,
        "/workspace",
    );
    add(
        "exec env key 1A",
        exec(json!({"cmd": "true", "env": {"1A": "x"}})),
        400,
        "env",
    );
    add(
        "exec timeoutMs 0",
        exec(json!({"cmd": "true", "timeoutMs": 0})),
        400,
        "timeoutMs",
    );
    add(
        "exec timeoutMs 1.5",
        exec(json!({"cmd": "true", "timeoutMs": 1.5})),
        400,
        "timeoutMs",
    );
    add(
        "exec timeoutMs above max",
        exec(json!({"cmd": "true", "timeoutMs": 100_000_000})),
        400,
        "timeoutMs",
    );
    // run-ts / run-js.
    add(
        "run-ts code and path",
        run("run-ts", json!({"code": "1", "path": "a.ts"})),
        400,
        "code",
    );
    add("run-ts neither", run("run-ts", json!({})), 400, "code");
    add(
        "run-ts path /etc/passwd",
        run("run-ts", json!({"path": "/etc/passwd"})),
        400,
        "path",
    );
    add(
        "run-ts path ../x",
        run("run-ts", json!({"path": "../x"})),
        400,
        "/workspace",
    );
    add(
        "run-ts missing file",
        run("run-ts", json!({"path": "missing.ts"})),
        400,
        "missing.ts",
    );
    add(
        "run-ts flag without -",
        run("run-ts", json!({"code": "1", "denoFlags": ["allow-all"]})),
        400,
        "denoFlags",
    );
    add(
        "run-js nodeFlags -e",
        run("run-js", json!({"code": "1", "nodeFlags": ["-e"]})),
        400,
        "nodeFlags",
    );
    add(
        "run-js nodeFlags --eval",
        run("run-js", json!({"code": "1", "nodeFlags": ["--eval"]})),
        400,
        "nodeFlags",
    );
    add(
        "run-js nodeFlags -p",
        run("run-js", json!({"code": "1", "nodeFlags": ["-p"]})),
        400,
        "nodeFlags",
    );
    // Uploads and downloads.
    let ok_tar = targz(&[Entry::File("a.txt", b"a")]);
    add(
        "upload without dest",
        raw(
            Method::POST,
            &format!("{vmp}/files/upload"),
            &[("x-api-key", KEY)],
            Some("application/gzip"),
            ok_tar.clone(),
        ),
        400,
        "dest",
    );
    add(
        "upload dest escaping",
        tar_upload(&vm, "../x", ok_tar.clone()),
        400,
        "dest",
    );
    add(
        "upload dest a file",
        tar_upload(&vm, "f", ok_tar.clone()),
        400,
        "f",
    );
    add(
        "upload not gzip",
        tar_upload(&vm, "d", b"plain text".to_vec()),
        400,
        "gzip",
    );
    add(
        "upload symlink",
        tar_upload(&vm, "d", targz(&[Entry::Symlink("l", "/etc/passwd")])),
        400,
        "link",
    );
    add(
        "upload hard link",
        tar_upload(
            &vm,
            "d",
            targz(&[Entry::File("a", b"a"), Entry::Hardlink("b", "a")]),
        ),
        400,
        "link",
    );
    add(
        "upload absolute path",
        tar_upload(&vm, "d", targz(&[Entry::File("/abs", b"a")])),
        400,
        "abs",
    );
    add(
        "upload .. path",
        tar_upload(&vm, "d", targz(&[Entry::File("../up", b"a")])),
        400,
        "up",
    );
    add(
        "upload over 10 MiB",
        tar_upload(&vm, "d", vec![0u8; 11 << 20]),
        413,
        "too large",
    );
    add(
        "download without path",
        keyed(Method::GET, &format!("{vmp}/files/download"), None),
        400,
        "path",
    );
    add(
        "download /etc",
        keyed(
            Method::GET,
            &format!("{vmp}/files/download?path=/etc"),
            None,
        ),
        400,
        "path",
    );
    add(
        "download escaping symlink",
        keyed(Method::GET, &format!("{vmp}/files/download?path=out"), None),
        400,
        "escapes /workspace",
    );
    add(
        "logs type unknown",
        keyed(Method::GET, &format!("{vmp}/logs?type=nope"), None),
        400,
        "type",
    );
    add(
        "exec-logs type unknown",
        keyed(Method::GET, &format!("{vmp}/exec-logs?type=nope"), None),
        400,
        "type",
    );
    add(
        "snapshot scope unknown",
        keyed(Method::GET, "/v1/snapshots?scope=nope", None),
        400,
        "scope",
    );
    // Images.
    let part = |name: &str, data: Vec<u8>| {
        raw(
            Method::PUT,
            &format!("/v1/images/{image_id}/{name}"),
            &[("x-api-key", KEY)],
            Some("application/octet-stream"),
            data,
        )
    };
    add(
        "kernel neither ELF nor bzImage",
        part("kernel", b"not a kernel at all".repeat(100)),
        400,
        "Kernel must be",
    );
    add(
        "rootfs not ext4",
        part("rootfs", vec![0u8; 8192]),
        400,
        "ext4",
    );
    add(
        "upload to the built-in image",
        raw(
            Method::PUT,
            &format!("/v1/images/{builtin}/kernel"),
            &[("x-api-key", KEY)],
            Some("application/octet-stream"),
            b"x".to_vec(),
        ),
        409,
        "Built-in image is read-only",
    );
    add(
        "delete the image in use",
        keyed(Method::DELETE, &format!("/v1/images/{builtin}"), None),
        409,
        "in use",
    );
    // Webhooks and API keys (admin session).
    let hook = |body: Value| {
        admin::request(
            Method::POST,
            "/v1/admin/webhooks",
            &admin.headers(),
            Some(body),
        )
    };
    add(
        "webhook bad URL",
        hook(json!({"name": "h", "url": "not a url", "eventTypes": ["vm.created"]})),
        400,
        "url",
    );
    add(
        "webhook blocked target",
        hook(json!({"name": "h", "url": "http://127.0.0.1/hook", "eventTypes": ["vm.created"]})),
        400,
        "private or loopback",
    );
    add(
        "webhook empty eventTypes",
        hook(json!({"name": "h", "url": "https://example.com/hook", "eventTypes": []})),
        400,
        "eventTypes",
    );
    add(
        "webhook unknown eventType",
        hook(json!({"name": "h", "url": "https://example.com/hook", "eventTypes": ["vm.nope"]})),
        400,
        "vm.nope",
    );
    let key = |body: Value| {
        admin::request(
            Method::POST,
            "/v1/admin/api-keys",
            &admin.headers(),
            Some(body),
        )
    };
    add(
        "API key blank name",
        key(json!({"name": "  "})),
        400,
        "name",
    );
    add(
        "API key past expiresAt",
        key(json!({"name": "k", "expiresAt": "2001-01-01T00:00:00Z"})),
        400,
        "expiresAt",
    );
    // Login and peer invoke.
    add(
        "login missing field",
        admin::request(
            Method::POST,
            "/auth/login",
            &[],
            Some(json!({"email": admin::EMAIL})),
        ),
        400,
        "password",
    );
    add(
        "login wrong credentials",
        admin::request(
            Method::POST,
            "/auth/login",
            &[],
            Some(json!({"email": admin::EMAIL, "password": "wrong-password"})),
        ),
        401,
        "",
    );
    add(
        "peer invoke without token",
        admin::from_client(
            admin::request(
                Method::POST,
                "/internal/v1/peer/invoke",
                &[],
                Some(json!({"exportName": "f"})),
            ),
            &guest,
        ),
        401,
        "token",
    );
    // Quota and state.
    add("quota reached (MAX_VMS=1)", create(base()), 429, "quota");
    add(
        "start a RUNNING VM",
        keyed(Method::POST, &format!("{vmp}/start"), None),
        409,
        "RUNNING",
    );

    let mut failures = Vec::new();
    for row in rows {
        let r = tm.send(row.req).await;
        let message = r.json["message"].as_str().unwrap_or_default().to_string();
        let ok =
            r.status.as_u16() == row.status && message.contains(row.message) && !message.is_empty();
        println!("{:<34} → {} {message}", row.what, r.status.as_u16());
        if !ok {
            failures.push(format!(
                "{}: want {} ~{:?}, got {} {}",
                row.what, row.status, row.message, r.status, r.json
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "rows that did not answer as documented:\n{}",
        failures.join("\n")
    );

    let after = world(&tm, &admin, &vm).await;
    for (k, v) in &before.api {
        assert_eq!(after.api.get(k), Some(v), "{k} changed");
    }
    assert_eq!(
        after.files, before.files,
        "files under STORAGE_ROOT changed"
    );
    assert_eq!(after.processes, before.processes, "processes changed");
    assert_eq!(after.links, before.links, "links changed");
    assert_eq!(after.rules, before.rules, "host rules changed");
    assert_eq!(after.workspace, before.workspace, "guest workspace changed");
}
