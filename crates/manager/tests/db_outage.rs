//! Postgres stopped and started again under a running manager (issue: faults). While the server is
//! down every request that needs it answers 503 `Database unavailable` (never a 500), `/readyz`
//! says the database check failed, and nothing is started or lost; once it is back the manager
//! serves again without a restart and the VM made before the outage is still there and works.
//!
//! The test runs its own Postgres server (`rds_testkit::PgCluster`): stopping the shared test
//! server would fail the tests running beside it.

mod common;

use common::guest::sh;
use common::TestManager;
use http::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_and_loses_nothing() {
    let Some((image, vhost)) = common::guest_prerequisites("postgres_outage") else {
        return;
    };
    let cluster = match rds_testkit::PgCluster::start() {
        Ok(c) => c,
        Err(reason) => {
            rds_testkit::skip("postgres_outage", &reason);
            return;
        }
    };
    let url = cluster.url();
    let extra = [
        ("DB_DIALECT", "postgres"),
        ("DATABASE_URL", url.as_str()),
        ("WARM_POOL_MAX_VMS", "0"),
    ];
    let tm = TestManager::start(Some(&image), &vhost, &extra).await;
    let id = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;
    assert_eq!(sh(&tm, &id, "echo before").await, "before\n");
    let storage = tm.storage().display().to_string();
    // The VMM and its vsock helper.
    let processes = rds_testkit::pids_matching(&storage);
    assert_eq!(
        rds_testkit::pids_matching(&format!("rds-{id}")).len(),
        1,
        "one VMM"
    );

    cluster.stop().unwrap();
    let no_key = |path: &str| {
        http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let r = tm.send(no_key("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert_eq!(r.json["checks"]["database"], "failed", "{}", r.json);
    let r = tm.call(Method::GET, "/readyz", None).await;
    let database = r.json["checks"]["database"].as_str().unwrap();
    assert!(database.starts_with("failed: "), "{database}");
    assert!(!database.contains(&url), "no URL in {database}");

    let vm = format!("/v1/vms/{id}");
    let exec = format!("{vm}/exec");
    let calls = [
        (Method::GET, "/v1/vms", None),
        (Method::GET, vm.as_str(), None),
        (
            Method::POST,
            exec.as_str(),
            Some(json!({"cmd": "echo during"})),
        ),
        (
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256})),
        ),
        (
            Method::PATCH,
            vm.as_str(),
            Some(json!({"metadata": {"k": "v"}})),
        ),
        (Method::GET, "/v1/snapshots", None),
        (Method::GET, "/v1/images", None),
    ];
    for (method, path, body) in calls {
        let r = tm.call(method.clone(), path, body).await;
        println!(
            "{method} {path} during the outage → {} {}",
            r.status, r.json
        );
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {}",
            r.json
        );
        assert_eq!(r.json["message"], "Database unavailable");
    }
    assert_eq!(tm.send(no_key("/healthz")).await.status, StatusCode::OK);

    cluster.resume().unwrap();
    let back = rds_testkit::wait_until(Duration::from_secs(60), || async {
        let r = tm.send(no_key("/readyz")).await;
        (r.json["checks"]["database"] == "ok").then_some(())
    })
    .await;
    assert!(back.is_some(), "database check ok again after the restart");
    let r = tm.call(Method::GET, "/v1/vms", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let vms = r.json.as_array().unwrap();
    assert_eq!(
        vms.len(),
        1,
        "the create during the outage left nothing: {vms:?}"
    );
    assert_eq!(vms[0]["id"], id.as_str());
    assert_eq!(vms[0]["state"], "RUNNING");
    assert!(vms[0]["metadata"].get("k").is_none(), "{}", vms[0]);
    assert_eq!(
        rds_testkit::pids_matching(&storage),
        processes,
        "nothing started"
    );
    assert_eq!(sh(&tm, &id, "echo after").await, "after\n");

    let r = tm.call(Method::DELETE, &vm, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let gone = rds_testkit::wait_until(Duration::from_secs(10), || async {
        rds_testkit::pids_matching(&storage)
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "VMM gone after destroy");
}
