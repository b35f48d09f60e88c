//! Streamed exec, run-ts and run-js through the manager with a real guest (`docs/api.md`
//! "Streaming"): with `Accept: application/x-ndjson` the first output reaches the client while the
//! command still runs, the last line carries the exit (and a run's result), the exec log gets its
//! entry as for a buffered call, errors before the start are ordinary JSON answers, and a client
//! that hangs up gets the command's process group killed in the guest.
//!
//! Tests of this file run one at a time; run them under the e2e lock:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_stream`.

mod common;

use axum::body::Body;
use common::TestManager;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

const KEY: &str = common::KEY;

fn streamed_request(path: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .header("accept", "application/x-ndjson")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The JSON lines of a whole streamed body.
fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn output(events: &[Value], kind: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

/// `cmd` in the guest, buffered, through the router (from inside the manager's runtime).
async fn exec_in(router: &axum::Router, id: &str, cmd: &str) -> Value {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/vms/{id}/exec"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(Body::from(json!({"cmd": cmd}).to_string()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_calls_deliver_output_as_it_happens() {
    let Some((image, vhost)) = common::guest_prerequisites("streamed_calls") else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let id = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;

    // The command waits for a file that is made only once its first line reached the client.
    let (router, vm) = (tm.router.clone(), id.clone());
    let text = tm
        .spawn(async move {
            let cmd = "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; \
                       echo second >&2; exit 3";
            let req = streamed_request(
                &format!("/v1/vms/{vm}/exec"),
                json!({"cmd": cmd, "timeoutMs": 60000}),
            );
            let resp = router.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(
                resp.headers()["content-type"],
                "application/x-ndjson",
                "{:?}",
                resp.headers()
            );
            let mut body = resp.into_body();
            let mut seen = String::new();
            while !seen.contains("first") {
                let frame = body
                    .frame()
                    .await
                    .unwrap_or_else(|| panic!("stream ended: {seen}"))
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
            assert!(!seen.contains("\"exit\""), "ended before the go: {seen}");
            assert_eq!(exec_in(&router, &vm, "touch /tmp/go").await["exitCode"], 0);
            let rest = body.collect().await.unwrap().to_bytes();
            seen.push_str(&String::from_utf8_lossy(&rest));
            seen
        })
        .await
        .unwrap();
    let events = lines(&text);
    assert_eq!(output(&events, "stdout"), "first\n", "{text}");
    assert_eq!(output(&events, "stderr"), "second\n", "{text}");
    let exit = events.last().unwrap();
    assert_eq!(exit["type"], "exit", "{text}");
    assert_eq!(
        (exit["exitCode"].as_i64(), exit["timedOut"].as_bool()),
        (Some(3), Some(false))
    );

    // The exec log has the streamed call as it has a buffered one.
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{id}/exec-logs"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let logged = r.json.to_string();
    assert!(
        logged.contains("echo first")
            && logged.contains("first\\n")
            && logged.contains("second\\n"),
        "exec log: {logged}"
    );

    // run-ts and run-js: output, then the exit line with the result.
    for (route, code) in [
        ("run-ts", "console.log('ts out'); result.set({x: 1})"),
        ("run-js", "console.log('js out'); result.set({x: 1})"),
    ] {
        let router = tm.router.clone();
        let req = streamed_request(&format!("/v1/vms/{id}/{route}"), json!({"code": code}));
        let text = tm
            .spawn(async move {
                let resp = router.oneshot(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .await
            .unwrap();
        let events = lines(&text);
        assert!(
            output(&events, "stdout").ends_with("out\n"),
            "{route}: {text}"
        );
        let exit = events.last().unwrap();
        assert_eq!(
            (exit["type"].as_str(), exit["exitCode"].as_i64()),
            (Some("exit"), Some(0)),
            "{route}: {text}"
        );
        assert_eq!(exit["result"], json!({"x": 1}), "{route}: {text}");
    }

    // A client that hangs up: the command's process group dies in the guest.
    let (router, vm) = (tm.router.clone(), id.clone());
    tm.spawn(async move {
        let cmd = "(exec -a rds-stream-child sleep 300) & echo started; exec -a rds-stream-main sleep 300";
        let req = streamed_request(
            &format!("/v1/vms/{vm}/exec"),
            json!({"cmd": cmd, "timeoutMs": 120000}),
        );
        let resp = router.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut seen = String::new();
        while !seen.contains("started") {
            let frame = body
                .frame()
                .await
                .unwrap_or_else(|| panic!("stream ended: {seen}"))
                .unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
        drop(body);
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = tm
            .exec(
                &id,
                json!({"cmd": "pgrep -f 'rds-stream-(child|main)' | wc -l"}),
            )
            .await;
        if r.json["stdout"] == "0\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hung-up command still runs: {}",
            r.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Before the call starts, errors are ordinary JSON answers.
    let router = tm.router.clone();
    let missing = "7d1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    let (status, body) = tm
        .spawn(async move {
            let resp = router
                .clone()
                .oneshot(streamed_request(
                    &format!("/v1/vms/{missing}/exec"),
                    json!({"cmd": "true"}),
                ))
                .await
                .unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        })
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["message"], format!("VM {missing} not found"));

    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
}
