//! DB API keys, the activity feed and its SSE stream (docs/reference/api.md §1.2, §1.7, §7;
//! docs/reference/api-admin.md Admin routes; docs/reference/security.md §3, §7): keys created,
//! listed, used, revoked and expired; rate limits per principal; the bounded and cached argon2
//! verification; refused inputs that change nothing; activity paging and the events of image
//! operations and of a real VM; SSE frames, replay and the end of a stream at logout.

mod common;

use common::admin::{self, expect, request, with_key, Admin};
use common::TestManager;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tower::ServiceExt;

async fn manager(extra: &[(&str, &str)]) -> Option<TestManager> {
    let vhost = common::manager_prerequisites("api_admin")?;
    Some(TestManager::start(None, &vhost, extra).await)
}

async fn keys(tm: &TestManager, admin: &Admin) -> Vec<Value> {
    let r = admin
        .call(tm, Method::GET, "/v1/admin/api-keys", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    r.json.as_array().unwrap().clone()
}

async fn key_record(tm: &TestManager, admin: &Admin, id: &str) -> Value {
    keys(tm, admin)
        .await
        .into_iter()
        .find(|k| k["id"] == id)
        .unwrap()
}

#[tokio::test]
async fn api_keys_are_created_listed_used_and_revoked() {
    let Some(tm) = manager(&[]).await else { return };
    let admin = admin::login(&tm).await;
    let r = admin
        .call(
            &tm,
            Method::POST,
            "/v1/admin/api-keys",
            Some(json!({"name": "  deploy bot  ", "expiresAt": null, "extra": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let created = r.json.clone();
    let key = created["apiKey"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let prefix = created["prefix"].as_str().unwrap();
    assert_eq!(created["name"], "deploy bot", "trimmed");
    assert!(
        prefix.len() == 12
            && prefix
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(key.starts_with(&format!("rds_{prefix}_")), "{key}");
    assert_eq!(key.len(), 4 + 12 + 1 + 32, "24 random bytes in base64url");
    for field in ["revokedAt", "lastUsedAt", "expiresAt"] {
        assert_eq!(created[field], Value::Null, "{field}");
    }
    // Listed without the key or its hash.
    let listed = keys(&tm, &admin).await;
    assert_eq!(listed.len(), 1);
    let mut fields: Vec<&str> = listed[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "createdAt",
            "expiresAt",
            "id",
            "lastUsedAt",
            "name",
            "prefix",
            "revokedAt"
        ]
    );
    assert!(!serde_json::to_string(&listed).unwrap().contains(&key[17..]));

    // In use: lastUsedAt is set by the first request and kept for a minute.
    assert_eq!(with_key(&tm, &key, "/v1/vms").await.status, StatusCode::OK);
    let used = key_record(&tm, &admin, &id).await["lastUsedAt"].clone();
    assert!(used.is_string(), "{used}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        with_key(&tm, &key, "/v1/images").await.status,
        StatusCode::OK
    );
    assert_eq!(key_record(&tm, &admin, &id).await["lastUsedAt"], used);
    // A key is accepted as a bearer token on /metrics only.
    let bearer = format!("Bearer {key}");
    let scrape = |path: &str| request(Method::GET, path, &[("authorization", &bearer)], None);
    assert_eq!(tm.send(scrape("/metrics")).await.status, StatusCode::OK);
    assert_eq!(
        tm.send(scrape("/v1/vms")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Revoked: refused on the very next request (the cached answer is dropped); idempotent.
    let path = format!("/v1/admin/api-keys/{id}/revoke");
    let r = admin.call(&tm, Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let revoked_at = r.json["revokedAt"].clone();
    assert!(revoked_at.is_string());
    assert_eq!(r.json["id"], id.as_str());
    assert!(r.json.get("apiKey").is_none());
    let r = with_key(&tm, &key, "/v1/vms").await;
    expect(&r, StatusCode::UNAUTHORIZED, "Unauthorized");
    assert_eq!(
        tm.send(scrape("/metrics")).await.status,
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = admin.call(&tm, Method::POST, &path, None).await;
    assert_eq!(
        (r.status, &r.json["revokedAt"]),
        (StatusCode::OK, &revoked_at)
    );
    let unknown = "/v1/admin/api-keys/0f8fad5b-d9cb-469f-a165-70867728950e/revoke";
    let r = admin.call(&tm, Method::POST, unknown, None).await;
    expect(&r, StatusCode::NOT_FOUND, "Not found");
    for bad in ["abc", "null", "0f8fad5b-d9cb-169f-a165-70867728950e"] {
        let r = admin
            .call(
                &tm,
                Method::POST,
                &format!("/v1/admin/api-keys/{bad}/revoke"),
                None,
            )
            .await;
        expect(&r, StatusCode::BAD_REQUEST, "Invalid id");
    }

    // Activity: one created, one revoked (the second revoke records nothing), never the key.
    let created_event = admin::event(&tm, "apikey.created", Some(&id)).await;
    assert_eq!(
        admin::meta(&created_event),
        json!({"name": "deploy bot", "prefix": prefix, "expiresAt": null})
    );
    admin::event(&tm, "apikey.revoked", Some(&id)).await;
    let events = admin::activity(&tm).await;
    let revocations = events
        .iter()
        .filter(|e| e["type"] == "apikey.revoked")
        .count();
    assert_eq!(revocations, 1);
    assert!(!serde_json::to_string(&events).unwrap().contains(&key[17..]));
}

#[tokio::test]
async fn rate_limits_count_per_principal() {
    let Some(tm) = manager(&[("RATE_LIMIT_GLOBAL", "3")]).await else {
        return;
    };
    let admin = admin::login(&tm).await;
    let (_, key) = admin::create_key(&tm, &admin, "limited").await;
    // The create above counted against the session, not against the others.
    for _ in 0..3 {
        assert_eq!(
            tm.call(Method::GET, "/v1/vms", None).await.status,
            StatusCode::OK
        );
    }
    let r = tm.call(Method::GET, "/v1/vms", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "master spent");
    for _ in 0..3 {
        assert_eq!(with_key(&tm, &key, "/v1/vms").await.status, StatusCode::OK);
    }
    let r = with_key(&tm, &key, "/v1/vms").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "DB key spent");
    for _ in 0..2 {
        let r = admin.call(&tm, Method::GET, "/v1/vms", None).await;
        assert_eq!(r.status, StatusCode::OK, "the session has its own budget");
    }
    let r = admin.call(&tm, Method::GET, "/v1/vms", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn expired_unknown_and_malformed_keys_are_refused() {
    let Some(tm) = manager(&[]).await else { return };
    let admin = admin::login(&tm).await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let r = admin
        .call(
            &tm,
            Method::POST,
            "/v1/admin/api-keys",
            Some(json!({"name": "short-lived", "expiresAt": soon})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["expiresAt"], soon.as_str());
    let key = r.json["apiKey"].as_str().unwrap().to_string();
    // Used (and so cached) before it expires, refused after.
    assert_eq!(with_key(&tm, &key, "/v1/vms").await.status, StatusCode::OK);
    let until = chrono::DateTime::parse_from_rfc3339(&soon).unwrap();
    while chrono::Utc::now() <= until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = with_key(&tm, &key, "/v1/vms").await;
    expect(&r, StatusCode::UNAUTHORIZED, "Unauthorized");

    // Unknown prefix, wrong secret, malformed: 401. An unknown prefix is refused without
    // hashing: with every verification slot taken it still answers at once.
    let (_, good) = admin::create_key(&tm, &admin, "real").await;
    // `rds_` and 12 hex characters; the secret after them may itself hold `_`.
    let prefix_part = &good[..16];
    let wrong_secret = format!("{prefix_part}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let held = tm.app().state.auth.verification_pool().occupy(2).await;
    let started = Instant::now();
    for bad in [
        "rds_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "rds_0123456789AB_x",
        "rds_short_x",
        "not-a-key",
    ] {
        let r = with_key(&tm, bad, "/v1/vms").await;
        expect(&r, StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    assert!(started.elapsed() < Duration::from_secs(1), "no hashing");
    drop(held);
    let r = with_key(&tm, &wrong_secret, "/v1/vms").await;
    expect(&r, StatusCode::UNAUTHORIZED, "Unauthorized");
    assert_eq!(with_key(&tm, &good, "/v1/vms").await.status, StatusCode::OK);
}

#[tokio::test]
async fn verification_is_bounded_and_cached() {
    let Some(tm) = manager(&[]).await else { return };
    let admin = admin::login(&tm).await;
    let (_, first) = admin::create_key(&tm, &admin, "first").await;
    let (_, second) = admin::create_key(&tm, &admin, "second").await;
    let (_, third) = admin::create_key(&tm, &admin, "third").await;
    let pool = tm.app().state.auth.verification_pool().clone();

    // Both slots busy: an uncached key waits 2 s for one, then gets 503.
    let held = pool.occupy(2).await;
    let started = Instant::now();
    let r = with_key(&tm, &first, "/v1/vms").await;
    expect(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "Credential verification busy, retry shortly",
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The master key and sessions need no verification.
    assert_eq!(
        tm.call(Method::GET, "/v1/vms", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        admin.call(&tm, Method::GET, "/v1/vms", None).await.status,
        StatusCode::OK
    );
    // A slot freed within the 2 s serves the waiting request.
    let waiting = with_key(&tm, &first, "/v1/vms");
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(held);
    };
    let (r, ()) = tokio::join!(waiting, release);
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);

    // One slot busy: the other is enough.
    let one = pool.occupy(1).await;
    assert_eq!(
        with_key(&tm, &second, "/v1/vms").await.status,
        StatusCode::OK
    );
    drop(one);

    // Verified answers are cached: with both slots taken, known keys still pass at once and a
    // key never verified does not.
    let held = pool.occupy(2).await;
    let started = Instant::now();
    for key in [&first, &second] {
        assert_eq!(with_key(&tm, key, "/v1/vms").await.status, StatusCode::OK);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let r = with_key(&tm, &third, "/v1/vms").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    drop(held);
    assert_eq!(
        with_key(&tm, &third, "/v1/vms").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_key_inputs_change_nothing() {
    let Some(tm) = manager(&[]).await else { return };
    let admin = admin::login(&tm).await;
    let past = "2001-01-01T00:00:00Z";
    let cases = [
        (json!({}), "name is required"),
        (json!({"name": ""}), "name is required"),
        (json!({"name": "   "}), "name is required"),
        (json!({"name": null}), "name is required"),
        (json!({"name": 5}), "name is required"),
        (
            json!({"name": "x".repeat(201)}),
            "name must be at most 200 characters",
        ),
        (json!({"name": "a\u{0}b"}), "name must not contain NUL"),
        (
            json!({"name": "k", "expiresAt": past}),
            "expiresAt must be an ISO-8601 timestamp in the future",
        ),
        (
            json!({"name": "k", "expiresAt": "next week"}),
            "expiresAt must be an ISO-8601 timestamp in the future",
        ),
        (
            json!({"name": "k", "expiresAt": 4102444800u64}),
            "expiresAt must be an ISO-8601 timestamp in the future",
        ),
    ];
    for (body, message) in cases {
        let r = admin
            .call(&tm, Method::POST, "/v1/admin/api-keys", Some(body.clone()))
            .await;
        assert_eq!(
            (r.status, r.json["message"].as_str().unwrap_or_default()),
            (StatusCode::BAD_REQUEST, message),
            "{body}"
        );
    }
    let raw = |ct: &str, body: &str| {
        let mut headers = admin.headers().to_vec();
        headers.push(("content-type", ct));
        let mut req = request(Method::POST, "/v1/admin/api-keys", &headers, None);
        *req.body_mut() = axum::body::Body::from(body.to_string());
        req
    };
    let r = tm.send(raw("text/plain", "{\"name\":\"k\"}")).await;
    expect(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type",
    );
    let r = tm.send(raw("application/json", "[1]")).await;
    expect(
        &r,
        StatusCode::BAD_REQUEST,
        "Request body must be a JSON object",
    );
    let r = tm.send(raw("application/json", "{")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON: "));
    let r = tm
        .send(raw(
            "application/json",
            &format!("{{\"name\":\"{}\"}}", "x".repeat(70_000)),
        ))
        .await;
    expect(&r, StatusCode::PAYLOAD_TOO_LARGE, "Body too large");

    assert!(keys(&tm, &admin).await.is_empty(), "no key was created");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = admin::activity(&tm).await;
    assert!(
        events.iter().all(|e| e["type"] != "apikey.created"),
        "{events:?}"
    );
}

#[tokio::test]
async fn activity_pages_and_image_events() {
    let Some(tm) = manager(&[]).await else { return };
    let create = json!({"name": "events", "description": "d"});
    let r = tm.call(Method::POST, "/v1/images", Some(create)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    let mut kernel = vec![0u8; 4096];
    kernel[..6].copy_from_slice(b"\x7fELF\x02\x01");
    kernel[18] = 62;
    let mut rootfs = vec![0u8; 8192];
    rootfs[1080..1082].copy_from_slice(&[0x53, 0xef]);
    let cpio = b"070701"
        .iter()
        .copied()
        .chain([0u8; 200])
        .collect::<Vec<u8>>();
    for (part, bytes) in [
        ("kernel", kernel.clone()),
        ("rootfs", rootfs),
        ("initrd", cpio),
    ] {
        let r = tm
            .put_bytes(&format!("/v1/images/{id}/{part}"), bytes)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{part}: {}", r.json);
    }
    let image = |tail: &str| format!("/v1/images/{id}{tail}");
    let r = tm.call(Method::DELETE, &image("/initrd"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let zip = {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        w.start_file("vmlinux", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, &kernel).unwrap();
        w.finish().unwrap();
        out.into_inner()
    };
    let r = tm.put_bytes(&image("/bundle"), zip).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = tm.call(Method::POST, &image("/set-default"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Refused operations record nothing.
    let r = tm.call(Method::PUT, &image("/kernel"), None).await;
    assert_ne!(r.status, StatusCode::NO_CONTENT);
    let r = tm.call(Method::DELETE, &image(""), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);

    let want = [
        "image.created",
        "image.kernel_uploaded",
        "image.rootfs_uploaded",
        "image.initrd_uploaded",
        "image.initrd_deleted",
        "image.bundle_uploaded",
        "image.default_set",
        "image.deleted",
    ];
    admin::event(&tm, "image.deleted", Some(&id)).await;
    let events = admin::activity(&tm).await;
    let mut kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    kinds.reverse();
    assert_eq!(kinds, want, "oldest first");
    for e in &events {
        assert_eq!(e["entityType"], "image");
        assert_eq!(e["entityId"], id.as_str());
        assert!(e["message"].as_str().unwrap().contains(&id));
        assert!(e["createdAt"].as_str().unwrap().ends_with('Z'));
    }
    let kernel_event = &events[want.len() - 2];
    assert_eq!(kernel_event["type"], "image.kernel_uploaded");
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&kernel)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        admin::meta(kernel_event),
        json!({"bytes": 4096, "sha256": sha})
    );
    assert_eq!(admin::meta(&events[2]), json!({"files": ["vmlinux"]}));
    assert_eq!(admin::meta(&events[7]), json!({"name": "events"}));

    // Paging: newest first, `before` continues without overlap.
    let page = |q: &str| {
        let path = format!("/v1/admin/activity{q}");
        let tm = &tm;
        async move { tm.call(Method::GET, &path, None).await }
    };
    let first = page("?limit=3").await.json;
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ids(&json!(events));
    assert_eq!(ids(&first), all[..3]);
    let next = page(&format!("?limit=3&before={}", all[2])).await.json;
    assert_eq!(ids(&next), all[3..6]);
    let last = page(&format!("?before={}", all[6])).await.json;
    assert_eq!(ids(&last), all[7..]);
    assert_eq!(ids(&page("?limit=0").await.json).len(), 1, "clamped to 1");
    assert_eq!(ids(&page("?limit=100000").await.json).len(), all.len());
    let unknown = "?before=0f8fad5b-d9cb-469f-a165-70867728950e";
    assert_eq!(page(unknown).await.json, json!([]));
    for (q, message) in [
        ("?limit=abc", "limit must be an integer"),
        ("?limit=-1", "limit must be an integer"),
        ("?limit=1.5", "limit must be an integer"),
        ("?before=nope", "Invalid id"),
    ] {
        expect(&page(q).await, StatusCode::BAD_REQUEST, message);
    }
    // The feed is open to sessions as well as keys.
    let admin = admin::login(&tm).await;
    admin::event(&tm, "auth.login", None).await;
    let r = admin
        .call(&tm, Method::GET, "/v1/admin/activity?limit=1", None)
        .await;
    assert_eq!(r.json[0]["type"], "auth.login");
}

/// An open `/v1/admin/events` stream: its chunks, as text, arrive on a channel.
struct Stream {
    rx: tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
    text: String,
    ended: bool,
}

impl Stream {
    async fn open(tm: &TestManager, headers: &[(&str, &str)]) -> (http::HeaderMap, Stream) {
        let req = request(Method::GET, "/v1/admin/events", headers, None);
        let router = tm.router.clone();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        tm.spawn(async move {
            let resp = router.oneshot(req).await.unwrap();
            let _ = head_tx.send((resp.status(), resp.headers().clone()));
            let mut body = resp.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let _ = tx.send(Some(String::from_utf8_lossy(&data).into_owned()));
                }
            }
            let _ = tx.send(None);
        });
        let (status, headers) = head_rx.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let stream = Stream {
            rx,
            text: String::new(),
            ended: false,
        };
        (headers, stream)
    }

    /// Reads until `done` holds for the text so far (or the stream ends), at most `limit`.
    async fn until(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> &str {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.text) && !self.ended {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Some(chunk))) => self.text.push_str(&chunk),
                Ok(_) => self.ended = true,
                Err(_) => panic!("stream so far: {:?}", self.text),
            }
        }
        &self.text
    }

    /// The `data` of every `activity` event so far, in order.
    fn events(&self) -> Vec<Value> {
        self.text
            .split("\n\n")
            .filter(|f| f.starts_with("event: activity\n"))
            .map(|f| {
                let lines: Vec<&str> = f.lines().collect();
                let id = lines[1].strip_prefix("id: ").unwrap();
                let data: Value =
                    serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["id"], id, "id line names the event");
                data
            })
            .collect()
    }
}

async fn new_image(tm: &TestManager, name: &str) -> String {
    let body = json!({"name": name, "description": "d"});
    let r = tm.call(Method::POST, "/v1/images", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn events_stream_live_replay_and_end_at_logout() {
    let Some(tm) = manager(&[]).await else { return };
    let admin = admin::login(&tm).await;
    // Stored before the stream opens, so the first live event is the image's.
    admin::event(&tm, "auth.login", None).await;
    let cookie = [("cookie", admin.cookie.as_str())];
    let (headers, mut live) = Stream::open(&tm, &cookie).await;
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert!(live
        .until(Duration::from_secs(5), |t| t.contains("\n\n"))
        .await
        .starts_with(": connected\n\n"));

    let first = new_image(&tm, "streamed").await;
    live.until(Duration::from_secs(10), |t| t.contains("event: activity"))
        .await;
    let got = live.events();
    assert_eq!(got.len(), 1, "{}", live.text);
    let e = &got[0];
    assert_eq!(e["type"], "image.created");
    assert_eq!(e["entityType"], "image");
    assert_eq!(e["entityId"], first.as_str());
    assert_eq!(e["meta"], json!({"name": "streamed"}));
    assert_eq!(e["metaJson"], "{\"name\":\"streamed\"}");

    // Reconnecting with Last-Event-ID replays what was stored after it, oldest first.
    let later = [
        new_image(&tm, "a").await,
        new_image(&tm, "b").await,
        new_image(&tm, "c").await,
    ];
    admin::event(&tm, "image.created", Some(&later[2])).await;
    let later: Vec<Value> = later.into_iter().map(Value::from).collect();
    let last_id = e["id"].as_str().unwrap().to_string();
    let mut headers = cookie.to_vec();
    headers.push(("last-event-id", &last_id));
    let (_, mut replay) = Stream::open(&tm, &headers).await;
    replay
        .until(Duration::from_secs(10), |t| {
            t.matches("event: activity").count() >= 3
        })
        .await;
    assert!(replay.text.starts_with(": connected\n\n"));
    let replayed: Vec<Value> = replay
        .events()
        .iter()
        .map(|e| e["entityId"].clone())
        .collect();
    assert_eq!(replayed, later);
    // The live stream saw the same events.
    live.until(Duration::from_secs(10), |t| {
        t.matches("event: activity").count() >= 4
    })
    .await;
    let seen: Vec<Value> = live.events()[1..]
        .iter()
        .map(|e| e["entityId"].clone())
        .collect();
    assert_eq!(seen, later);

    // Logout ends the streams at their next ping check (within 15 s); no ping follows it.
    let r = tm
        .send(request(Method::POST, "/auth/logout", &cookie, None))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let before = live.text.len();
    let text = live
        .until(Duration::from_secs(25), |_| false)
        .await
        .to_string();
    assert!(live.ended);
    assert!(!text[before..].contains(": ping"), "{text}");
}

#[tokio::test]
async fn a_real_vm_records_its_lifecycle() {
    let Some((image, vhost)) = common::guest_prerequisites("a_real_vm_records_its_lifecycle")
    else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let id = tm.create_vm(json!({"cpu": 1, "memMb": 512})).await;
    let long = format!("echo {}", "x".repeat(1500));
    let r = tm.exec(&id, json!({"cmd": long, "timeoutMs": 20000})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{id}/run-js"),
            Some(json!({"code": "console.log(1)"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/stop"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);

    admin::event(&tm, "vm.deleted", Some(&id)).await;
    let mut events = admin::activity(&tm).await;
    events.retain(|e| e["entityId"] == id.as_str());
    events.reverse();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "vm.created",
            "vm.started",
            "exec.command",
            "runJs.executed",
            "vm.stopped",
            "vm.deleted"
        ]
    );
    let created = admin::meta(&events[0]);
    assert_eq!(
        (created["cpu"].clone(), created["memMb"].clone()),
        (json!(1), json!(512))
    );
    let started = admin::meta(&events[1]);
    assert_eq!(started["provisionMode"], "boot");
    assert!(started["durationMs"].as_u64().unwrap() > 0, "{started}");
    let exec = admin::meta(&events[2]);
    assert_eq!(exec["cmd"].as_str().unwrap(), &long[..1000]);
    assert_eq!(
        (
            &exec["exitCode"],
            &exec["timedOut"],
            &exec["timeoutMs"],
            &exec["cwd"]
        ),
        (&json!(0), &json!(false), &json!(20000), &Value::Null)
    );
    let run = admin::meta(&events[3]);
    assert_eq!(
        run,
        json!({"path": null, "hasInlineCode": true, "timeoutMs": 30000, "exitCode": 0})
    );
    assert_eq!(admin::meta(&events[5]), json!({"warnings": []}));
    assert_eq!(tm.call(Method::GET, "/v1/vms", None).await.json, json!([]));
}
