//! The HTTP contract without booting a guest: auth, ids, bodies, validation messages, and that a
//! rejected request changes nothing. Uses a real backend selection (QEMU must be installed).

mod common;

use axum::body::Body;
use common::{vm_dirs, TestManager, KEY};
use http::{Method, Request, StatusCode};
use serde_json::json;

async fn manager() -> Option<TestManager> {
    let vhost = match rds_testkit::vhost_vsock_bin() {
        Ok(v) => v,
        Err(reason) => {
            rds_testkit::skip("api_validation", &reason);
            return None;
        }
    };
    if rds_vmm::select::which("qemu-system-x86_64").is_none() {
        rds_testkit::skip("api_validation", "qemu-system-x86_64 not installed");
        return None;
    }
    // The image is not booted here; any readable kernel/ext4 pair would do, so use the real one if built.
    let image = rds_testkit::guest_image().ok();
    Some(
        TestManager::start(
            image.as_ref(),
            &vhost,
            &[("MAX_CPU", "4"), ("MAX_MEM_MB", "2048")],
        )
        .await,
    )
}

#[tokio::test]
async fn auth_and_routing() {
    let Some(tm) = manager().await else { return };
    let no_key = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
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
    assert_eq!(r.json["checks"]["database"], "ok");
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
