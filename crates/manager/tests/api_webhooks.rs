//! Webhooks (docs/reference/api-admin.md Webhooks; docs/reference/security.md §6, §7) against a
//! receiver in a test "internet" namespace: the signature verifies, a 500 is retried on schedule and
//! the pending retry survives a manager restart, a name that resolves to a loopback address fails
//! without retry, bad inputs are refused with no side effect, and keys cannot use these routes.

mod common;

use common::admin::{self, expect, request, with_key, Admin};
use common::TestManager;
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use rds_testkit::internet::{Internet, INET_B};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got: lower-case headers and the raw body.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// An HTTP/1.1 receiver on 198.18.0.11:8080 in the internet namespace. It answers the statuses
/// queued in `replies` in turn, then 200.
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    replies: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    fn start(inet: &Internet) -> Receiver {
        let listener = inet
            .ns
            .run(|| TcpListener::bind((INET_B, 8080)).expect("bind the receiver"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let (g, r) = (got.clone(), replies.clone());
        // Ends with the test process; the listener's namespace goes when `inet` drops.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let Some(req) = read_request(&mut reader) else {
                    continue;
                };
                let status = r.lock().unwrap().pop_front().unwrap_or(200);
                g.lock().unwrap().push(req);
                let mut s = reader.into_inner();
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { got, replies }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits up to `secs` for the receiver to have `n` requests.
    async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn read_request(r: &mut BufReader<std::net::TcpStream>) -> Option<Received> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn manager() -> Option<TestManager> {
    let vhost = common::manager_prerequisites("api_webhooks")?;
    Some(TestManager::start(None, &vhost, &[]).await)
}

async fn create_hook(tm: &TestManager, a: &Admin, url: &str, types: Value) -> Value {
    let body = json!({"name": "receiver", "url": url, "eventTypes": types});
    let r = a
        .call(tm, Method::POST, "/v1/admin/webhooks", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    r.json
}

async fn deliveries(tm: &TestManager, a: &Admin, hook: &str) -> Vec<Value> {
    let path = format!("/v1/admin/webhooks/{hook}/deliveries");
    let r = a.call(tm, Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    r.json.as_array().unwrap().clone()
}

/// Waits up to `secs` for the newest delivery of `hook` to reach `status`.
async fn delivery_in(tm: &TestManager, a: &Admin, hook: &str, status: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let list = deliveries(tm, a, hook).await;
        if let Some(d) = list.first().filter(|d| d["status"] == status) {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {status} delivery in {secs} s: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_image(tm: &TestManager, name: &str) -> String {
    let r = tm
        .call(
            Method::POST,
            "/v1/images",
            Some(json!({ "name": name, "description": "d" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    r.json["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn deliveries_are_signed_retried_and_survive_a_restart() {
    let Some(mut tm) = manager().await else {
        return;
    };
    let inet = Internet::new(&tm.ns);
    let receiver = Receiver::start(&inet);
    receiver.replies.lock().unwrap().push_back(500);
    let a = admin::login(&tm).await;
    let url = format!("http://{INET_B}:8080/hook");
    let hook = create_hook(&tm, &a, &url, json!(["image.created"])).await;
    let (hook_id, secret) = (
        hook["id"].as_str().unwrap(),
        hook["secret"].as_str().unwrap(),
    );
    assert!(secret.len() >= 32, "{hook}");
    assert_eq!(hook["enabled"], true);
    // The secret is shown once: never listed, never in the activity feed.
    let r = a.call(&tm, Method::GET, "/v1/admin/webhooks", None).await;
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    assert!(r.json[0].get("secret").is_none(), "{}", r.json);
    let created = admin::event(&tm, "webhook.created", Some(hook_id)).await;
    assert!(!created.to_string().contains(secret), "{created}");

    let image = create_image(&tm, "hooked").await;
    let first = receiver.wait_for(1, 15).await;
    assert_eq!(first.len(), 1, "the receiver got no delivery");
    let req = &first[0];
    assert_eq!(req.path, "/hook");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["x-rds-event"], "image.created");
    assert!(req.headers["user-agent"].starts_with("run-dat-sheesh/"));
    let ts = &req.headers["x-rds-timestamp"];
    assert_eq!(
        req.headers["x-rds-signature"],
        signature(secret, ts, &req.body),
        "the signature must verify with the secret shown at creation"
    );
    let body: Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(body["type"], "image.created");
    assert_eq!(body["entityId"], image.as_str());
    assert_eq!(body["source"]["service"], "run-dat-sheesh-manager");
    assert!(body["meta"].is_object(), "{body}");

    // The 500 leaves the delivery pending with a retry in about 10 s (±20 %).
    let d = delivery_in(&tm, &a, hook_id, "pending", 5).await;
    assert_eq!(d["attempt"], 1, "{d}");
    assert_eq!(d["responseStatus"], 500, "{d}");
    assert_eq!(
        d["id"].as_str(),
        Some(req.headers["x-rds-delivery"].as_str())
    );
    let next = chrono::DateTime::parse_from_rfc3339(d["nextAttemptAt"].as_str().unwrap()).unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(d["createdAt"].as_str().unwrap()).unwrap();
    let wait = (next - created).num_milliseconds();
    assert!((7_000..=13_000).contains(&wait), "retry in {wait} ms");

    // A restart in between: the new manager finds the pending row and sends it when due.
    tm.restart().await.expect("restart");
    let both = receiver.wait_for(2, 20).await;
    assert_eq!(both.len(), 2, "the retry did not come after the restart");
    assert_eq!(
        both[1].headers["x-rds-delivery"],
        req.headers["x-rds-delivery"]
    );
    assert_eq!(both[1].body, req.body, "a retry sends the same body");
    let ts2 = &both[1].headers["x-rds-timestamp"];
    assert_eq!(
        both[1].headers["x-rds-signature"],
        signature(secret, ts2, &both[1].body)
    );
    let d = delivery_in(&tm, &a, hook_id, "succeeded", 5).await;
    assert_eq!(d["attempt"], 2, "{d}");
    assert_eq!(d["responseStatus"], 200, "{d}");
    assert!(
        d["completedAt"].is_string() && d["nextAttemptAt"].is_null(),
        "{d}"
    );
    let metrics = tm.metrics_text().await;
    assert!(
        metrics.contains("rds_webhook_deliveries_total{result=\"succeeded\"} 1"),
        "{metrics}"
    );

    // Types a hook did not ask for are not sent; a disabled hook gets nothing.
    let r = tm
        .call(Method::DELETE, &format!("/v1/images/{image}"), None)
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let path = format!("/v1/admin/webhooks/{hook_id}");
    let r = a
        .call(&tm, Method::PATCH, &path, Some(json!({"enabled": false})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["enabled"], false);
    admin::event(&tm, "webhook.updated", Some(hook_id)).await;
    create_image(&tm, "unhooked").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 2, "nothing more was due");
    assert_eq!(deliveries(&tm, &a, hook_id).await.len(), 1);

    let r = a.call(&tm, Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    admin::event(&tm, "webhook.deleted", Some(hook_id)).await;
    let r = a.call(&tm, Method::DELETE, &path, None).await;
    expect(&r, StatusCode::NOT_FOUND, "Not found");
}

#[tokio::test]
async fn a_name_resolving_to_loopback_fails_without_retry() {
    let Some(tm) = manager().await else { return };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let loopback = std::net::ToSocketAddrs::to_socket_addrs(&(host, 80))
        .map(|addrs| addrs.collect::<Vec<_>>())
        .unwrap_or_default();
    if loopback.is_empty() || !loopback.iter().all(|a| a.ip().is_loopback()) {
        rds_testkit::skip(
            "a_name_resolving_to_loopback_fails_without_retry",
            &format!("this host's name {host} does not resolve to loopback only: {loopback:?}"),
        );
        return;
    }
    let a = admin::login(&tm).await;
    // A name passes the check on create; the refusal comes from the lookup at delivery.
    let hook = create_hook(&tm, &a, &format!("http://{host}:8080/"), json!(["*"])).await;
    let hook_id = hook["id"].as_str().unwrap();
    create_image(&tm, "private").await;
    let d = delivery_in(&tm, &a, hook_id, "failed", 15).await;
    assert_eq!(d["error"], "blocked address", "{d}");
    assert_eq!(d["attempt"], 1, "{d}");
    assert!(
        d["responseStatus"].is_null() && d["nextAttemptAt"].is_null(),
        "{d}"
    );
}

#[tokio::test]
async fn bad_webhook_inputs_change_nothing() {
    let Some(tm) = manager().await else { return };
    let a = admin::login(&tm).await;
    let ok = "http://198.18.0.11:8080/";
    let cases = [
        (json!({"url": ok, "eventTypes": ["*"]}), "name is required"),
        (
            json!({"name": " ", "url": ok, "eventTypes": ["*"]}),
            "name is required",
        ),
        (
            json!({"name": "x".repeat(201), "url": ok, "eventTypes": ["*"]}),
            "name is required",
        ),
        (
            json!({"name": "n", "eventTypes": ["*"]}),
            "url must be a valid http or https URL",
        ),
        (
            json!({"name": "n", "url": "ftp://198.18.0.11/", "eventTypes": ["*"]}),
            "url must be a valid http or https URL",
        ),
        (
            json!({"name": "n", "url": "http://", "eventTypes": ["*"]}),
            "url must be a valid http or https URL",
        ),
        (
            json!({"name": "n", "url": "http://127.0.0.1:9/", "eventTypes": ["*"]}),
            "url targets a private or loopback address",
        ),
        (
            json!({"name": "n", "url": "http://[::ffff:10.0.0.1]/", "eventTypes": ["*"]}),
            "url targets a private or loopback address",
        ),
        (
            json!({"name": "n", "url": "http://169.254.169.254/", "eventTypes": ["*"]}),
            "url targets a private or loopback address",
        ),
        (
            json!({"name": "n", "url": "http://a.localhost/", "eventTypes": ["*"]}),
            "url targets a private or loopback address",
        ),
        (
            json!({"name": "n", "url": "http://172.16.0.5/", "eventTypes": ["*"]}),
            "url targets a private or loopback address",
        ),
        (
            json!({"name": "n", "url": ok}),
            "eventTypes must be a non-empty array of strings",
        ),
        (
            json!({"name": "n", "url": ok, "eventTypes": []}),
            "eventTypes must be a non-empty array of strings",
        ),
        (
            json!({"name": "n", "url": ok, "eventTypes": "*"}),
            "eventTypes must be a non-empty array of strings",
        ),
        (
            json!({"name": "n", "url": ok, "eventTypes": ["vm.exploded"]}),
            "Unknown event type: vm.exploded",
        ),
        (
            json!({"name": "n", "url": ok, "eventTypes": ["*"], "enabled": "yes"}),
            "enabled must be a boolean",
        ),
    ];
    for (body, message) in cases {
        let r = a
            .call(&tm, Method::POST, "/v1/admin/webhooks", Some(body.clone()))
            .await;
        expect(&r, StatusCode::BAD_REQUEST, message);
    }
    let hook = create_hook(&tm, &a, ok, json!(["vm.created"])).await;
    let path = format!("/v1/admin/webhooks/{}", hook["id"].as_str().unwrap());
    for (body, message) in [
        (
            json!({"url": "http://10.1.2.3/"}),
            "url targets a private or loopback address",
        ),
        (
            json!({"eventTypes": []}),
            "eventTypes must be a non-empty array of strings",
        ),
        (json!({"name": ""}), "name is required"),
    ] {
        let r = a.call(&tm, Method::PATCH, &path, Some(body)).await;
        expect(&r, StatusCode::BAD_REQUEST, message);
    }
    let r = a.call(&tm, Method::GET, "/v1/admin/webhooks", None).await;
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{}", r.json);
    assert_eq!(r.json[0]["url"], ok, "a refused patch changed nothing");
    assert_eq!(r.json[0]["eventTypes"], json!(["vm.created"]));
    for (method, p, status, message) in [
        (
            Method::PATCH,
            "/v1/admin/webhooks/nope",
            StatusCode::BAD_REQUEST,
            "Invalid id",
        ),
        (
            Method::DELETE,
            "/v1/admin/webhooks/nope",
            StatusCode::BAD_REQUEST,
            "Invalid id",
        ),
        (
            Method::GET,
            "/v1/admin/webhooks/3f6c1a2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f/deliveries",
            StatusCode::NOT_FOUND,
            "Not found",
        ),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"enabled": true}));
        let r = a.call(&tm, method, p, body).await;
        expect(&r, status, message);
    }
    let r = a
        .call(
            &tm,
            Method::GET,
            &format!("{path}/deliveries?limit=x"),
            None,
        )
        .await;
    expect(&r, StatusCode::BAD_REQUEST, "limit must be an integer");
    let events = admin::activity(&tm).await;
    let hook_events = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("webhook."))
        .count();
    assert_eq!(
        hook_events, 1,
        "only the one create was recorded: {events:?}"
    );
}

#[tokio::test]
async fn keys_and_foreign_origins_cannot_manage_webhooks() {
    let Some(tm) = manager().await else { return };
    let a = admin::login(&tm).await;
    let (_, key) = admin::create_key(&tm, &a, "hooks").await;
    let r = with_key(&tm, &key, "/v1/admin/webhooks").await;
    expect(&r, StatusCode::FORBIDDEN, "Admin session required");
    let r = tm.call(Method::GET, "/v1/admin/webhooks", None).await;
    expect(&r, StatusCode::FORBIDDEN, "Admin session required");
    let body = json!({"name": "n", "url": "http://198.18.0.11/", "eventTypes": ["*"]});
    let r = tm
        .send(request(
            Method::POST,
            "/v1/admin/webhooks",
            &[("cookie", &a.cookie), ("origin", "http://evil.example")],
            Some(body),
        ))
        .await;
    expect(&r, StatusCode::FORBIDDEN, "CSRF check failed");
    let r = a.call(&tm, Method::GET, "/v1/admin/webhooks", None).await;
    assert_eq!(r.json, json!([]), "nothing was created");
}

#[tokio::test]
async fn overview_reports_host_figures() {
    let Some(tm) = manager().await else { return };
    let (_, key) = {
        let a = admin::login(&tm).await;
        admin::create_key(&tm, &a, "overview").await
    };
    // The CPU sampler needs two samples 500 ms apart: poll until it has them.
    let r = rds_testkit::wait_until(Duration::from_secs(10), || async {
        let r = with_key(&tm, &key, "/v1/admin/overview").await;
        r.json["cpu"]["usagePct"].is_number().then_some(r)
    })
    .await
    .expect("usagePct within 10 s");
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let o = &r.json;
    assert_eq!(o["counts"]["activeVms"], 0, "{o}");
    assert_eq!(o["counts"]["snapshots"], 0, "{o}");
    assert_eq!(o["cpu"]["usedCores"], 0, "{o}");
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(o["cpu"]["capacityCores"], cores, "{o}");
    let usage = o["cpu"]["usagePct"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&usage), "{o}");
    let mem_total = o["memory"]["capacityBytes"].as_u64().unwrap();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(mem_total, kb * 1024, "{o}");
    assert!(o["memory"]["usedBytes"].as_u64().unwrap() < mem_total);
    // `stat -f`: total blocks and the fundamental block size, as statvfs gives them.
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b %S"])
        .arg(tm.storage())
        .output()
        .unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    let nums: Vec<u64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let capacity = nums[0] * nums[1];
    assert_eq!(
        o["storage"]["capacityBytes"].as_u64().unwrap(),
        capacity,
        "{o}"
    );
    assert!(o["storage"]["usedBytes"].as_u64().unwrap() <= capacity);
    let r = tm.call(Method::GET, "/v1/admin/overview", None).await;
    assert_eq!(r.status, StatusCode::OK, "the master key reads it too");
    let r = tm
        .send(request(Method::GET, "/v1/admin/overview", &[], None))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_literal_address_is_checked_again_on_every_attempt() {
    let Some(vhost) = common::manager_prerequisites("api_webhooks") else {
        return;
    };
    let mut tm = TestManager::start(None, &vhost, &[("WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let a = admin::login(&tm).await;
    let hook = create_hook(&tm, &a, "http://10.9.9.9:8080/", json!(["image.created"])).await;
    let hook_id = hook["id"].as_str().unwrap();
    // The operator turns private targets off: the saved hook must not reach its address any more.
    tm.settings.webhook_allow_private = false;
    tm.restart().await.expect("restart");
    create_image(&tm, "literal").await;
    let d = delivery_in(&tm, &a, hook_id, "failed", 15).await;
    assert_eq!(d["error"], "blocked address", "{d}");
    assert_eq!(d["attempt"], 1, "{d}");
}
