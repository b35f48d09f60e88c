//! The HTTP contract without booting a guest: auth, ids, bodies, validation messages, and that a
//! rejected request changes nothing. Uses a real backend selection (QEMU must be installed).

mod common;

use axum::body::Body;
use common::{vm_dirs, TestManager, KEY};
use http::{Method, Request, StatusCode};
use serde_json::json;

async fn manager() -> Option<TestManager> {
    manager_with(&[]).await
}

async fn manager_with(extra: &[(&str, &str)]) -> Option<TestManager> {
    let vhost = common::manager_prerequisites("api_validation")?;
    // The image is not booted here; any readable kernel/ext4 pair would do, so use the real one if built.
    let image = rds_testkit::guest_image().ok();
    let mut settings = vec![("MAX_CPU", "4"), ("MAX_MEM_MB", "2048")];
    settings.extend_from_slice(extra);
    Some(TestManager::start(image.as_ref(), &vhost, &settings).await)
}

fn no_key(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn auth_and_routing() {
    let Some(tm) = manager().await else { return };
    let r = tm.send(no_key("/v1/vms")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json, json!({"message": "Unauthorized"}));
    let wrong = Request::builder()
        .uri("/v1/vms")
        .header("x-api-key", "nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(tm.send(wrong).await.status, StatusCode::UNAUTHORIZED);
    // Unknown /v1 path: 401 without a key, 404 with one.
    assert_eq!(
        tm.send(no_key("/v1/nothing-here")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = tm.call(Method::GET, "/v1/nothing-here", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["message"], "Not Found");
    // Wrong method on a known path: 405 with Allow and a JSON body.
    let r = tm.call(Method::PUT, "/v1/vms", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers.get("allow").is_some());
    assert_eq!(r.json["message"], "Method Not Allowed");
    // Envelope headers: a valid client request id is kept, nosniff always set.
    let req = Request::builder()
        .uri("/healthz")
        .header("x-request-id", "abc.123")
        .body(Body::empty())
        .unwrap();
    let r = tm.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-request-id"], "abc.123");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    let r = tm.send(no_key("/readyz")).await;
    assert_eq!(r.json["backend"], "qemu");
    for check in ["database", "reconciliation", "network", "storage"] {
        assert_eq!(r.json["checks"][check], "ok", "{check}: {}", r.json);
    }
    if tm.settings.image.kernel.is_some() {
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert_eq!(r.json["checks"]["backend"], "ok", "{}", r.json);
        assert_eq!(r.json["status"], "ready");
    }
}

#[tokio::test]
async fn readiness_needs_a_usable_backend_and_image() {
    let Some(vhost) = common::manager_prerequisites("readiness_needs_a_usable_backend_and_image")
    else {
        return;
    };
    // No image at all: alive, not ready, and the check says why.
    let tm = TestManager::start(None, &vhost, &[]).await;
    let r = tm.send(no_key("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert_eq!(r.json["status"], "not_ready");
    assert_eq!(r.json["message"], "Not ready");
    // Without a credential the check says only that it failed; with a key it says why.
    assert_eq!(r.json["checks"]["backend"], "failed", "{}", r.json);
    assert!(r.json["backendReason"].is_null(), "{}", r.json);
    let r = tm.call(Method::GET, "/readyz", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    let backend = r.json["checks"]["backend"].as_str().unwrap();
    assert!(
        backend.starts_with("failed: no default guest image"),
        "{backend}"
    );
    assert_eq!(r.json["checks"]["database"], "ok");
    assert_eq!(tm.send(no_key("/healthz")).await.status, StatusCode::OK);

    // The default image's kernel vanishes from IMAGES_DIR after startup (a hard link or clone of
    // the built image there: removing it leaves the original alone).
    let Ok(image) = rds_testkit::guest_image() else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[]).await;
    assert_eq!(tm.send(no_key("/readyz")).await.status, StatusCode::OK);
    let stored: Vec<std::path::PathBuf> = std::fs::read_dir(tm.settings.images_dir.clone())
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n == "vmlinux"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    std::fs::remove_file(&stored[0]).unwrap();
    let r = tm.send(no_key("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert_eq!(r.json["checks"]["backend"], "failed", "{}", r.json);
    assert!(
        !r.json.to_string().contains("vmlinux"),
        "no path: {}",
        r.json
    );
    let r = tm.call(Method::GET, "/readyz", None).await;
    let backend = r.json["checks"]["backend"].as_str().unwrap();
    assert!(
        backend.contains("vmlinux") && backend.contains("No such file"),
        "{backend}"
    );
}

#[tokio::test]
async fn bad_creates_change_nothing() {
    let Some(tm) = manager().await else { return };
    let cases = [
        (
            json!({"cpu": 0, "memMb": 256}),
            "cpu must be an integer between 1 and 4",
        ),
        (
            json!({"cpu": 1.5, "memMb": 256}),
            "cpu must be an integer between 1 and 4",
        ),
        (
            json!({"cpu": "2", "memMb": 256}),
            "cpu must be an integer between 1 and 4",
        ),
        (
            json!({"cpu": 5, "memMb": 256}),
            "cpu must be an integer between 1 and 4",
        ),
        (
            json!({"cpu": 1, "memMb": 64}),
            "memMb must be an integer between 128 and 2048",
        ),
        (
            json!({"cpu": 1, "memMb": 256, "allowIps": ["abc"]}),
            "allowIps entry 'abc' is not an IP address or CIDR",
        ),
        (json!([1, 2]), "Request body must be a JSON object"),
    ];
    for (body, message) in cases {
        let r = tm.call(Method::POST, "/v1/vms", Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json["message"], message, "{body}");
    }
    let bad_json = Request::builder()
        .method(Method::POST)
        .uri("/v1/vms")
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(Body::from("{\"cpu\": 1,"))
        .unwrap();
    let r = tm.send(bad_json).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON: "));
    let text = Request::builder()
        .method(Method::POST)
        .uri("/v1/vms")
        .header("x-api-key", KEY)
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        tm.send(text).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let huge = json!({"cpu": 1, "memMb": 256, "pad": "x".repeat(70 * 1024)});
    let r = tm.call(Method::POST, "/v1/vms", Some(huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["message"], "Body too large");

    let r = tm.call(Method::GET, "/v1/vms", None).await;
    assert_eq!(r.json, json!([]), "a rejected create left a VM behind");
    assert!(
        vm_dirs(&tm).is_empty(),
        "a rejected create left files: {:?}",
        vm_dirs(&tm)
    );
}

#[tokio::test]
async fn ids_are_checked() {
    let Some(tm) = manager().await else { return };
    for bad in ["undefined", "null", "123"] {
        let r = tm.call(Method::GET, &format!("/v1/vms/{bad}"), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json["message"], "Invalid VM id");
    }
    let unknown = "0f8fad5b-d9cb-469f-a165-70867728950e";
    for (method, path) in [
        (Method::GET, format!("/v1/vms/{unknown}")),
        (Method::DELETE, format!("/v1/vms/{unknown}")),
    ] {
        let r = tm.call(method, &path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json["message"], format!("VM {unknown} not found"));
    }
    let r = tm.exec(unknown, json!({"cmd": "true"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = tm.exec(unknown, json!({"cmd": ""})).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "validation comes before the lookup"
    );
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let Some(tm) = manager().await else { return };
    let doc = tm
        .send(
            Request::builder()
                .uri("/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["ApiKeyAuth"]["name"], "X-API-Key");
    assert_eq!(schemes["SessionCookie"]["in"], "cookie");
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/v1/vms",
        "/v1/vms/{id}",
        "/v1/vms/{id}/exec",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ] {
        assert!(
            paths.contains_key(required),
            "{required} missing from the document"
        );
    }
    // Every documented operation is served: the router neither 404s the path nor 405s the method.
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let mut checked = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let uri = path.replace("{id}", id);
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("x-api-key", KEY)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let r = tm.send(req).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                !(r.status == StatusCode::NOT_FOUND && r.json["message"] == "Not Found"),
                "{method} {uri} is documented but not routed"
            );
            checked += 1;
        }
    }
    assert!(checked >= 14, "only {checked} operations documented");
}

#[tokio::test]
async fn metrics_and_rate_limits() {
    let Some(tm) = manager_with(&[("RATE_LIMIT_GLOBAL", "3")]).await else {
        return;
    };
    for i in 0..3 {
        let r = tm.call(Method::GET, "/v1/vms", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["x-ratelimit-limit"], "3");
        assert_eq!(
            r.headers["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let r = tm.call(Method::GET, "/v1/vms", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        r.json["message"],
        format!("Rate limit exceeded, retry in {retry} seconds")
    );
    // Exempt routes keep answering.
    let healthz = Request::builder()
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(tm.send(healthz).await.status, StatusCode::OK);

    let anon = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    assert_eq!(tm.send(anon).await.status, StatusCode::UNAUTHORIZED);
    let bearer = Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    let r = tm.send(bearer).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.json.as_str().unwrap().to_string();
    assert!(text.contains("rds_build_info{version="), "{text}");
    assert!(
        text.contains("rds_http_requests_total{route=\"/v1/vms\",method=\"GET\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("rds_rate_limited_total{route=\"/v1/vms\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_offline() {
    let Some(tm) = manager().await else { return };
    let get = |p: &str| Request::builder().uri(p).body(Body::empty()).unwrap();
    let r = tm.send(get("/swagger")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let html = r.json.as_str().unwrap().to_string();
    assert!(
        html.contains("/swagger/swagger-ui-bundle.js") && !html.contains("http"),
        "{html}"
    );
    let r = tm.send(get("/swagger/swagger-ui-bundle.js")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json.as_str().unwrap().len() > 100_000, "bundle embedded");
    assert_eq!(
        tm.send(get("/swagger/nope.js")).await.status,
        StatusCode::NOT_FOUND
    );
}
