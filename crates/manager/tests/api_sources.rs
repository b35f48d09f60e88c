//! Guests may call only the peer invoke route (`docs/reference/security.md` §3): any other request
//! whose source address lies in `VM_SUBNET` answers 403 `Not allowed from a VM`, whatever it
//! carries, while the host (the gateway address included) is served as before. The source address
//! is set on in-process requests as the server's connection info would set it.

mod common;

use axum::body::Body;
use axum::extract::ConnectInfo;
use common::{TestManager, KEY};
use http::{Method, Request, StatusCode};
use serde_json::json;
use std::net::SocketAddr;

fn from(addr: &str, method: Method, path: &str, body: Option<serde_json::Value>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", KEY);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let mut req = b
        .body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
        .unwrap();
    let sock: SocketAddr = format!("{addr}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(sock));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_reach_nothing_but_peer_invoke() {
    let Some(vhost) = common::manager_prerequisites("guests_reach_nothing_but_peer_invoke") else {
        return;
    };
    let tm = TestManager::start(None, &vhost, &[]).await;
    let subnet = tm.settings.vm_subnet;
    let guest = subnet.guest(5).unwrap().to_string();
    let mapped = format!("[::ffff:{guest}]");
    let gateway = subnet.gateway().to_string();
    let create = json!({"cpu": 1, "memMb": 256});
    let calls: Vec<(Method, &str, Option<serde_json::Value>)> = vec![
        (Method::GET, "/v1/vms", None),
        (Method::POST, "/v1/vms", Some(create.clone())),
        (Method::GET, "/healthz", None),
        (Method::GET, "/metrics", None),
        (
            Method::POST,
            "/auth/login",
            Some(json!({"email": "a", "password": "b"})),
        ),
        (Method::GET, "/openapi.json", None),
        (Method::GET, "/", None),
        (Method::GET, "/v1/no-such-route", None),
    ];
    for (method, path, body) in &calls {
        for addr in [guest.as_str(), mapped.as_str()] {
            let r = tm
                .send(from(addr, method.clone(), path, body.clone()))
                .await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path} from {addr}: {}",
                r.json
            );
            assert_eq!(
                r.json["message"], "Not allowed from a VM",
                "{method} {path}"
            );
            assert!(
                r.headers.contains_key("x-request-id"),
                "the envelope still applies"
            );
        }
    }
    assert_eq!(
        tm.ids("/v1/vms").await.len(),
        0,
        "the refused create made nothing"
    );
    // The host, on loopback or on the bridge's gateway address, is served.
    for addr in ["127.0.0.1", gateway.as_str()] {
        let r = tm.send(from(addr, Method::GET, "/v1/vms", None)).await;
        assert_eq!(r.status, StatusCode::OK, "from {addr}: {}", r.json);
        let r = tm.send(from(addr, Method::GET, "/healthz", None)).await;
        assert_eq!(r.status, StatusCode::OK, "from {addr}");
    }
    // The invoke route is not refused by source: it answers for itself (401 without a token).
    let r = tm
        .send(from(
            &guest,
            Method::POST,
            "/internal/v1/peer/invoke",
            Some(json!({})),
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.json);
    assert_eq!(r.json["message"], "Missing bearer token");
}
