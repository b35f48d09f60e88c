//! Lifetimes and metadata through the HTTP API (`docs/api.md` "Lifetimes, pause and metadata"):
//! the create fields and their refusals (which leave nothing behind), the VM object's `expiresAt`,
//! `timeoutAction` and `metadata`, `POST /v1/vms/:id/timeout`, `PATCH /v1/vms/:id` and the list
//! filters. VMs in every state are rows inserted through the manager's `Db` API (no guest boots
//! for those); one test creates real VMs (a warm-pool take and a boot) under
//! `DEFAULT_VM_TIMEOUT_SEC`. Expiry itself is tested in `e2e_lifetimes.rs`.

mod common;

use common::{vm_dirs, TestManager};
use http::{Method, StatusCode};
use rds_manager::db::{Db, NewVm};
use rds_manager::model::VmState;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

const UNKNOWN: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const KEY_RULE: &str = "(1-64 characters of A-Z a-z 0-9 _ . -)";

async fn manager(test: &str, extra: &[(&str, &str)]) -> Option<TestManager> {
    let vhost = common::manager_prerequisites(test)?;
    // Nothing boots here; a readable image makes creates get as far as they can.
    let image = rds_testkit::guest_image().ok();
    Some(TestManager::start(image.as_ref(), &vhost, extra).await)
}

async fn get(tm: &TestManager, id: &str) -> Value {
    let r = tm.call(Method::GET, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.json);
    r.json
}

async fn patch(tm: &TestManager, id: &str, body: Value) -> (StatusCode, Value) {
    let r = tm
        .call(Method::PATCH, &format!("/v1/vms/{id}"), Some(body))
        .await;
    (r.status, r.json)
}

async fn set_timeout(tm: &TestManager, id: &str, body: Value) -> (StatusCode, Value) {
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/timeout"), Some(body))
        .await;
    (r.status, r.json)
}

/// Seconds from now to the VM's `expiresAt`.
fn expires_in(vm: &Value) -> f64 {
    let at = vm["expiresAt"].as_str().unwrap_or_else(|| panic!("{vm}"));
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds() as f64 / 1000.0
}

/// Asserts `expiresAt` is `secs` from now, give or take `slack` seconds (for time spent since it
/// was set), and has the API's timestamp format.
fn assert_expires_in(vm: &Value, secs: u64, slack: f64) {
    let left = expires_in(vm);
    assert!(
        left <= secs as f64 + 0.5 && left >= secs as f64 - slack,
        "expiresAt {} is {left} s away, not about {secs}: {vm}",
        vm["expiresAt"]
    );
    let at = vm["expiresAt"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
}

/// `/v1/vms` with `query`: the ids, sorted.
async fn listed(tm: &TestManager, query: &str) -> Vec<String> {
    let mut ids = tm.ids(&format!("/v1/vms{query}")).await;
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The default image, or one whose files are only paths (nothing boots from it).
async fn some_image(db: &Db) -> String {
    match db.default_image().await.unwrap() {
        Some(image) => image.id,
        None => {
            let image =
                db.ensure_builtin_image("/nonexistent/vmlinux", None, "/nonexistent/rootfs");
            image.await.unwrap().id
        }
    }
}

/// A user VM row in `state` (a row is enough: nothing runs), with `metadata`.
async fn row(db: &Db, tm: &TestManager, state: VmState, metadata: Value) -> String {
    let image_id = some_image(db).await;
    let id = uuid::Uuid::new_v4().to_string();
    let metadata = serde_json::from_value(metadata).unwrap();
    let new = NewVm {
        id: id.clone(),
        cpu: 1,
        mem_mb: 256,
        disk_size_mb: 256,
        outbound_internet: false,
        allow_ips: vec![],
        image_id,
        source_snapshot_id: None,
        backend: "qemu".into(),
        pool_role: None,
        timeout_sec: None,
        timeout_action: Default::default(),
        metadata,
        secret_env: None,
        peer_links: Vec::new(),
    };
    db.create_vm(&new, 100, &tm.settings.vm_subnet)
        .await
        .unwrap();
    // Through the transition table, as the lifecycle would have moved it.
    use VmState::*;
    let path: &[VmState] = match state {
        Created => &[],
        Starting => &[Starting],
        Running => &[Starting, Running],
        Stopped => &[Starting, Running, Stopping, Stopped],
        Paused => &[Starting, Running, Paused],
        Error => &[Error],
        other => panic!("no path to {other}"),
    };
    let mut from = Created;
    for to in path {
        assert!(db.transition(&id, &[from], *to, None).await.unwrap());
        from = *to;
    }
    id
}

#[tokio::test]
async fn refused_inputs_change_nothing() {
    let Some(tm) = manager(
        "refused_inputs_change_nothing",
        &[("MAX_VM_TIMEOUT_SEC", "3600")],
    )
    .await
    else {
        return;
    };
    let create = |extra: Value| {
        let mut body = json!({"cpu": 1, "memMb": 256});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let timeout = "timeoutSec must be an integer between 1 and 3600";
    let object = "metadata must be an object of strings";
    let fifty_one: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long_key = "k".repeat(65);
    let mut cases = vec![
        (json!({"timeoutSec": 0}), timeout.to_string()),
        (json!({"timeoutSec": 3601}), timeout.to_string()),
        (json!({"timeoutSec": -5}), timeout.to_string()),
        (json!({"timeoutSec": 1.5}), timeout.to_string()),
        (json!({"timeoutSec": 60.0}), timeout.to_string()),
        (json!({"timeoutSec": "60"}), timeout.to_string()),
        (json!({"timeoutSec": true}), timeout.to_string()),
        (
            json!({"timeoutAction": "stop"}),
            "timeoutAction must be 'destroy' or 'pause'".into(),
        ),
        (
            json!({"timeoutAction": "PAUSE"}),
            "timeoutAction must be 'destroy' or 'pause'".into(),
        ),
        (
            json!({"timeoutAction": 1}),
            "timeoutAction must be 'destroy' or 'pause'".into(),
        ),
        (json!({"metadata": []}), object.into()),
        (json!({"metadata": "team=red"}), object.into()),
        (json!({"metadata": {"team": 1}}), object.into()),
        (json!({"metadata": {"team": null}}), object.into()),
        (json!({"metadata": {"team": true}}), object.into()),
        (json!({"metadata": {"team": {"x": "y"}}}), object.into()),
        (
            json!({ "metadata": fifty_one }),
            "metadata may have at most 50 keys".into(),
        ),
        (
            json!({"metadata": {"a-b": "1", "": "v"}}),
            format!("metadata key '' is invalid {KEY_RULE}"),
        ),
        (
            json!({"metadata": {"has space": "v"}}),
            format!("metadata key 'has space' is invalid {KEY_RULE}"),
        ),
        (
            json!({"metadata": {"a/b": "v"}}),
            format!("metadata key 'a/b' is invalid {KEY_RULE}"),
        ),
        (
            json!({"metadata": {"ключ": "v"}}),
            format!("metadata key 'ключ' is invalid {KEY_RULE}"),
        ),
        (
            json!({"metadata": {long_key.clone(): "v"}}),
            format!("metadata key '{long_key}' is invalid {KEY_RULE}"),
        ),
        (
            json!({"metadata": {"note": "x".repeat(513)}}),
            "metadata value of 'note' is longer than 512 characters".into(),
        ),
        (
            json!({"metadata": {"note": "a\u{0}b"}}),
            "metadata value of 'note' must not contain NUL".into(),
        ),
    ];
    // The fields are checked after the older ones: a bad cpu is still reported first.
    cases.push((
        json!({"cpu": 0, "timeoutSec": 0, "metadata": []}),
        "cpu must be an integer between 1 and 4".into(),
    ));
    for (extra, message) in cases {
        let body = create(extra);
        tm.expect(
            Method::POST,
            "/v1/vms",
            Some(body),
            StatusCode::BAD_REQUEST,
            message,
        )
        .await;
    }
    assert_eq!(tm.call(Method::GET, "/v1/vms", None).await.json, json!([]));
    assert!(vm_dirs(&tm).is_empty(), "{:?}", vm_dirs(&tm));

    // The other routes: malformed ids, unknown VMs, bad bodies and filters.
    for (method, path, body) in [
        (
            Method::POST,
            format!("/v1/vms/{UNKNOWN}/timeout"),
            json!({"timeoutSec": 60}),
        ),
        (
            Method::PATCH,
            format!("/v1/vms/{UNKNOWN}"),
            json!({"metadata": {"a": "b"}}),
        ),
    ] {
        tm.expect(
            method.clone(),
            &path,
            Some(body.clone()),
            StatusCode::NOT_FOUND,
            format!("VM {UNKNOWN} not found"),
        )
        .await;
        let bad_id = path.replace(UNKNOWN, "undefined");
        tm.expect(
            method,
            &bad_id,
            Some(body),
            StatusCode::BAD_REQUEST,
            "Invalid VM id",
        )
        .await;
    }
    let states =
        "state must be one of CREATED, STARTING, RUNNING, STOPPING, STOPPED, PAUSED, ERROR";
    for q in ["running", "DELETED", "", "RUNNING,STOPPED"] {
        let path = format!("/v1/vms?state={q}");
        tm.expect(Method::GET, &path, None, StatusCode::BAD_REQUEST, states)
            .await;
    }
    let path = "/v1/vms?state=RUNNING&state=nope";
    tm.expect(Method::GET, path, None, StatusCode::BAD_REQUEST, states)
        .await;
    assert_eq!(tm.ids("/v1/vms?state=PAUSED&metadata.a=b").await.len(), 0);
}

#[tokio::test]
async fn metadata_filters_and_timeouts_on_rows() {
    let Some(tm) = manager(
        "metadata_filters_and_timeouts_on_rows",
        &[("MAX_VM_TIMEOUT_SEC", "7200")],
    )
    .await
    else {
        return;
    };
    let db = Db::connect(&tm.settings.db).await.unwrap();
    let red_web = row(
        &db,
        &tm,
        VmState::Running,
        json!({"team": "red", "tier": "web"}),
    )
    .await;
    let red_db = row(
        &db,
        &tm,
        VmState::Stopped,
        json!({"team": "red", "tier": "db"}),
    )
    .await;
    let blue = row(&db, &tm, VmState::Paused, json!({"team": "blue"})).await;
    let failed = row(&db, &tm, VmState::Error, json!({})).await;
    let booting = row(&db, &tm, VmState::Starting, json!({"team": "red"})).await;
    let all = sorted(&[&red_web, &red_db, &blue, &failed, &booting]);

    // The VM object: metadata as stored, no deadline, the default action.
    let vm = get(&tm, &red_web).await;
    assert_eq!(vm["metadata"], json!({"team": "red", "tier": "web"}));
    assert_eq!(vm["expiresAt"], Value::Null);
    assert_eq!(vm["timeoutAction"], "destroy");
    assert_eq!(get(&tm, &failed).await["metadata"], json!({}));
    let list = tm.call(Method::GET, "/v1/vms", None).await.json;
    let listed_blue = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == blue.as_str())
        .unwrap();
    assert_eq!(listed_blue["metadata"], json!({"team": "blue"}));
    assert_eq!(listed_blue["state"], "PAUSED");

    // Filters: no filter (and unknown parameters) list everything, newest first as before.
    assert_eq!(listed(&tm, "").await, all);
    assert_eq!(listed(&tm, "?colour=red&metadata=x").await, all);
    assert_eq!(
        tm.ids("/v1/vms").await,
        vec![
            booting.clone(),
            failed.clone(),
            blue.clone(),
            red_db.clone(),
            red_web.clone()
        ]
    );
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("?metadata.team=red", sorted(&[&red_web, &red_db, &booting])),
        ("?metadata.team=blue", sorted(&[&blue])),
        ("?metadata.team=Red", vec![]),
        ("?metadata.team=re", vec![]),
        ("?metadata.nope=red", vec![]),
        ("?metadata.team=red&metadata.tier=db", sorted(&[&red_db])),
        ("?metadata.tier=db&metadata.team=blue", vec![]),
        ("?state=RUNNING", sorted(&[&red_web])),
        ("?state=PAUSED", sorted(&[&blue])),
        ("?state=ERROR", sorted(&[&failed])),
        ("?state=STARTING", sorted(&[&booting])),
        ("?state=CREATED", vec![]),
        ("?state=RUNNING&state=STOPPED", sorted(&[&red_web, &red_db])),
        ("?state=STOPPED&metadata.team=red", sorted(&[&red_db])),
        ("?state=PAUSED&metadata.team=red", vec![]),
        (
            "?metadata.team=red&state=RUNNING&state=STARTING",
            sorted(&[&red_web, &booting]),
        ),
        // Percent-encoded values are decoded before they are compared.
        ("?metadata.tier=%77eb", sorted(&[&red_web])),
    ];
    for (query, want) in cases {
        assert_eq!(listed(&tm, query).await, want, "{query}");
    }

    // PATCH merges: a string sets, null removes, absent keys stay; other fields are ignored.
    let (status, vm) = patch(
        &tm,
        &red_web,
        json!({"metadata": {"tier": null, "owner": "ann", "team": "green"}, "cpu": 4, "state": "STOPPED"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["metadata"], json!({"team": "green", "owner": "ann"}));
    assert_eq!(
        (vm["cpu"].clone(), vm["state"].clone()),
        (json!(1), json!("RUNNING"))
    );
    assert_eq!(get(&tm, &red_web).await["metadata"], vm["metadata"]);
    assert_eq!(
        listed(&tm, "?metadata.team=green").await,
        vec![red_web.clone()]
    );
    assert_eq!(
        listed(&tm, "?metadata.tier=web").await,
        Vec::<String>::new()
    );
    // Removing what is not there, or a body without metadata, changes nothing.
    for body in [
        json!({"metadata": {"missing": null}}),
        json!({"metadata": {}}),
        json!({}),
        json!({"metadata": null}),
    ] {
        let (status, vm) = patch(&tm, &red_web, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {vm}");
        assert_eq!(
            vm["metadata"],
            json!({"team": "green", "owner": "ann"}),
            "{body}"
        );
    }
    // Any state but deleted: a failed, a booting and a paused VM take metadata too.
    for id in [&failed, &booting, &blue] {
        let (status, vm) = patch(&tm, id, json!({"metadata": {"seen": "yes"}})).await;
        assert_eq!(status, StatusCode::OK, "{vm}");
        assert_eq!(vm["metadata"]["seen"], "yes");
    }
    // Refusals leave the metadata as it was.
    let forty_nine: Map<String, Value> = (0..49).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (status, vm) = patch(&tm, &failed, json!({ "metadata": forty_nine })).await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["metadata"].as_object().unwrap().len(), 50);
    let before = get(&tm, &failed).await["metadata"].clone();
    let refusals = [
        (
            json!({"metadata": {"one-more": "v"}}),
            "metadata may have at most 50 keys".to_string(),
        ),
        (
            json!({"metadata": {"k0": null, "bad key": "v"}}),
            format!("metadata key 'bad key' is invalid {KEY_RULE}"),
        ),
        (
            json!({"metadata": {"k0": "x".repeat(513)}}),
            "metadata value of 'k0' is longer than 512 characters".into(),
        ),
        (
            json!({"metadata": {"k0": 5}}),
            "metadata must be an object of strings or nulls".into(),
        ),
        (
            json!({"metadata": ["k0"]}),
            "metadata must be an object of strings or nulls".into(),
        ),
    ];
    for (body, message) in refusals {
        let path = format!("/v1/vms/{failed}");
        tm.expect(
            Method::PATCH,
            &path,
            Some(body),
            StatusCode::BAD_REQUEST,
            message,
        )
        .await;
    }
    assert_eq!(get(&tm, &failed).await["metadata"], before);
    // Removing one and adding one keeps 50: allowed.
    let (status, vm) = patch(&tm, &failed, json!({"metadata": {"k0": null, "k49": "v"}})).await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["metadata"].as_object().unwrap().len(), 50);
    assert_eq!(vm["metadata"].get("k0"), None);

    // POST /timeout: set, extend, shorten, change the action, clear.
    let (status, vm) = set_timeout(&tm, &red_web, json!({"timeoutSec": 3600})).await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_expires_in(&vm, 3600, 5.0);
    assert_eq!(vm["timeoutAction"], "destroy");
    assert_eq!(get(&tm, &red_web).await["expiresAt"], vm["expiresAt"]);
    let first = vm["expiresAt"].as_str().unwrap().to_string();
    let (status, vm) = set_timeout(
        &tm,
        &red_web,
        json!({"timeoutSec": 7200, "timeoutAction": "pause"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_expires_in(&vm, 7200, 5.0);
    assert!(vm["expiresAt"].as_str().unwrap() > first.as_str());
    assert_eq!(vm["timeoutAction"], "pause");
    let (status, vm) = set_timeout(&tm, &red_web, json!({"timeoutSec": 600})).await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_expires_in(&vm, 600, 5.0);
    assert_eq!(vm["timeoutAction"], "pause", "an absent action is kept");
    let (status, vm) = set_timeout(&tm, &red_web, json!({"timeoutSec": null})).await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["expiresAt"], Value::Null);
    assert_eq!(get(&tm, &red_web).await["expiresAt"], Value::Null);
    let (status, vm) = set_timeout(
        &tm,
        &red_web,
        json!({"timeoutSec": null, "timeoutAction": "destroy"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(
        (vm["expiresAt"].clone(), vm["timeoutAction"].clone()),
        (Value::Null, json!("destroy"))
    );
    // Also STOPPED and PAUSED VMs; metadata untouched by it.
    for id in [&red_db, &blue] {
        let (status, vm) = set_timeout(&tm, id, json!({"timeoutSec": 7200})).await;
        assert_eq!(status, StatusCode::OK, "{vm}");
        assert_expires_in(&vm, 7200, 5.0);
    }
    assert_eq!(
        get(&tm, &red_db).await["metadata"],
        json!({"team": "red", "tier": "db"})
    );
    // Refused: bad bodies (400), other states (409); nothing changes.
    let path = format!("/v1/vms/{red_db}/timeout");
    let expires = get(&tm, &red_db).await["expiresAt"].clone();
    for (body, message) in [
        (
            json!({}),
            "timeoutSec is required (an integer, or null to clear the deadline)",
        ),
        (
            json!({"timeoutAction": "pause"}),
            "timeoutSec is required (an integer, or null to clear the deadline)",
        ),
        (
            json!({"timeoutSec": 7201}),
            "timeoutSec must be an integer between 1 and 7200",
        ),
        (
            json!({"timeoutSec": 0}),
            "timeoutSec must be an integer between 1 and 7200",
        ),
        (
            json!({"timeoutSec": "60"}),
            "timeoutSec must be an integer between 1 and 7200",
        ),
        (
            json!({"timeoutSec": 60, "timeoutAction": "kill"}),
            "timeoutAction must be 'destroy' or 'pause'",
        ),
    ] {
        tm.expect(
            Method::POST,
            &path,
            Some(body),
            StatusCode::BAD_REQUEST,
            message,
        )
        .await;
    }
    for (id, state) in [(&failed, "ERROR"), (&booting, "STARTING")] {
        let path = format!("/v1/vms/{id}/timeout");
        tm.expect(
            Method::POST,
            &path,
            Some(json!({"timeoutSec": 60})),
            StatusCode::CONFLICT,
            format!("VM must be RUNNING, STOPPED or PAUSED to set a timeout (state={state})"),
        )
        .await;
        assert_eq!(get(&tm, id).await["expiresAt"], Value::Null);
    }
    let vm = get(&tm, &red_db).await;
    assert_eq!(
        (vm["expiresAt"].clone(), vm["timeoutAction"].clone()),
        (expires, json!("destroy"))
    );

    // A destroyed VM is gone for both routes.
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{blue}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let gone = format!("VM {blue} not found");
    let path = format!("/v1/vms/{blue}");
    let body = json!({"metadata": {"a": "b"}});
    tm.expect(
        Method::PATCH,
        &path,
        Some(body),
        StatusCode::NOT_FOUND,
        &gone,
    )
    .await;
    let path = format!("/v1/vms/{blue}/timeout");
    let body = json!({"timeoutSec": 60});
    tm.expect(
        Method::POST,
        &path,
        Some(body),
        StatusCode::NOT_FOUND,
        &gone,
    )
    .await;
    assert_eq!(
        listed(&tm, "?metadata.team=blue").await,
        Vec::<String>::new()
    );
}

/// What a create stores, on the create path itself: metadata, the action, and no deadline without
/// `timeoutSec` (no `DEFAULT_VM_TIMEOUT_SEC` here) or one `timeoutSec` from the insert. The agent
/// gets 100 ms to answer, so the boots end at once (a VM in ERROR keeps its row); were a guest that
/// fast, the VMs would simply run.
#[tokio::test]
async fn create_stores_lifetime_and_metadata() {
    let Some((image, vhost)) = common::guest_prerequisites("create_stores_lifetime_and_metadata")
    else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[("VSOCK_HEALTH_TIMEOUT_MS", "100")]).await;
    for (body, want_expiry) in [
        (
            json!({"cpu": 1, "memMb": 256, "metadata": {"case": "none"}}),
            None,
        ),
        (
            json!({"cpu": 1, "memMb": 256, "timeoutSec": null, "timeoutAction": null,
                   "metadata": {"case": "nulls"}}),
            None,
        ),
        (
            json!({"cpu": 1, "memMb": 256, "timeoutSec": 90, "timeoutAction": "pause",
                   "metadata": {"case": "ninety", "owner": "ci"}}),
            Some(90),
        ),
    ] {
        let t = Instant::now();
        let r = tm.call(Method::POST, "/v1/vms", Some(body.clone())).await;
        assert!(
            r.status == StatusCode::CREATED || r.status.is_server_error(),
            "{body}: {} {}",
            r.status,
            r.json
        );
        let case = body["metadata"]["case"].as_str().unwrap();
        let ids = tm.ids(&format!("/v1/vms?metadata.case={case}")).await;
        assert_eq!(ids.len(), 1, "{body}: {ids:?}");
        let vm = get(&tm, &ids[0]).await;
        assert_eq!(vm["metadata"], body["metadata"]);
        match want_expiry {
            None => {
                assert_eq!(vm["expiresAt"], Value::Null, "{vm}");
                assert_eq!(vm["timeoutAction"], "destroy");
            }
            Some(secs) => {
                assert_expires_in(&vm, secs, t.elapsed().as_secs_f64() + 2.0);
                assert_eq!(vm["timeoutAction"], "pause");
            }
        }
    }
}

/// The OpenAPI document states the new routes, fields, ranges, patterns and enums.
#[tokio::test]
async fn openapi_describes_lifetimes_and_metadata() {
    let Some(tm) = manager("openapi_describes_lifetimes_and_metadata", &[]).await else {
        return;
    };
    let req = http::Request::builder()
        .uri("/openapi.json")
        .body(axum::body::Body::empty())
        .unwrap();
    let doc = tm.send(req).await.json;
    let paths = &doc["paths"];
    assert!(paths["/v1/vms/{id}/timeout"]["post"].is_object(), "{paths}");
    for method in ["get", "delete", "patch"] {
        assert!(paths["/v1/vms/{id}"][method].is_object(), "{method}");
    }
    let params: Vec<&str> = paths["/v1/vms"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"state"), "{params:?}");
    assert!(
        params.iter().any(|p| p.starts_with("metadata.")),
        "{params:?}"
    );
    let schemas = &doc["components"]["schemas"];
    let vm = &schemas["VmView"]["properties"];
    assert_eq!(vm["metadata"]["maxProperties"], 50, "{vm}");
    assert_eq!(
        vm["metadata"]["propertyNames"]["pattern"],
        "^[A-Za-z0-9_.-]{1,64}$"
    );
    assert_eq!(vm["metadata"]["additionalProperties"]["maxLength"], 512);
    assert!(
        vm["expiresAt"].is_object() && vm["timeoutAction"].is_object(),
        "{vm}"
    );
    assert_eq!(
        schemas["TimeoutActionName"]["enum"],
        json!(["destroy", "pause"])
    );
    let states = schemas["VmStateName"]["enum"].as_array().unwrap();
    assert!(states.contains(&json!("PAUSED")), "{states:?}");
    let create = &schemas["CreateVmBody"]["properties"];
    assert_eq!(create["timeoutSec"]["minimum"], 1, "{create}");
    assert!(create["metadata"].is_object() && create["timeoutAction"].is_object());
    let timeout = &schemas["TimeoutBody"];
    assert!(
        timeout["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("timeoutSec"))),
        "{timeout}"
    );
    let patch = &schemas["PatchVmBody"]["properties"]["metadata"];
    assert_eq!(
        patch["additionalProperties"]["type"],
        json!(["string", "null"]),
        "{patch}"
    );
}

/// Real creates: a warm-pool take and a boot carry their lifetime and metadata;
/// `DEFAULT_VM_TIMEOUT_SEC` applies without `timeoutSec`; filters on running VMs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_vms_carry_lifetime_and_metadata() {
    let Some((image, vhost)) =
        common::guest_prerequisites("created_vms_carry_lifetime_and_metadata")
    else {
        return;
    };
    let tm = TestManager::start(
        Some(&image),
        &vhost,
        &[
            ("DEFAULT_VM_TIMEOUT_SEC", "600"),
            ("ENABLE_WARM_POOL", "true"),
            ("WARM_POOL_TARGET", "1"),
        ],
    )
    .await;
    // The pool VM (template shape: 1 vCPU, 256 MiB) must be up for the first create to take it.
    let t = Instant::now();
    loop {
        let r = tm
            .send(
                http::Request::builder()
                    .uri("/readyz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        if r.json["warmPool"]["ready"] == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "warm pool not ready: {}\n{}",
            r.json,
            tm.console_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pooled = vm_dirs(&tm);

    // Taken from the pool: no timeoutSec, so DEFAULT_VM_TIMEOUT_SEC, counted from the take.
    let taken = tm
        .create_vm(json!({"cpu": 1, "memMb": 256, "timeoutAction": "pause",
                          "metadata": {"suite": "lifetimes", "path": "pool"}}))
        .await;
    assert!(pooled.contains(&taken), "not a pool take: {pooled:?}");
    let vm = get(&tm, &taken).await;
    assert_eq!(
        vm["metadata"],
        json!({"suite": "lifetimes", "path": "pool"})
    );
    assert_eq!(vm["timeoutAction"], "pause");
    assert_expires_in(&vm, 600, 30.0);

    // Booted (another shape): its own timeoutSec wins over the default.
    let t = Instant::now();
    let booted = tm
        .create_vm(json!({"cpu": 1, "memMb": 320, "timeoutSec": 1200,
                          "metadata": {"suite": "lifetimes", "path": "boot"}}))
        .await;
    let took = t.elapsed().as_secs_f64();
    let vm = get(&tm, &booted).await;
    assert_eq!(vm["state"], "RUNNING");
    assert_eq!(
        vm["metadata"],
        json!({"suite": "lifetimes", "path": "boot"})
    );
    assert_eq!(vm["timeoutAction"], "destroy");
    // The deadline is counted from the insert, before the boot.
    assert_expires_in(&vm, 1200, took + 5.0);

    let both = sorted(&[&taken, &booted]);
    assert_eq!(listed(&tm, "?metadata.suite=lifetimes").await, both);
    assert_eq!(listed(&tm, "?state=RUNNING").await, both);
    assert_eq!(
        listed(&tm, "?metadata.path=boot").await,
        vec![booted.clone()]
    );
    assert_eq!(
        listed(
            &tm,
            "?state=RUNNING&metadata.path=pool&metadata.suite=lifetimes"
        )
        .await,
        vec![taken.clone()]
    );
    assert_eq!(
        listed(&tm, "?state=STOPPED&metadata.suite=lifetimes").await,
        Vec::<String>::new()
    );

    // A running VM's deadline can be cleared; null without any timeoutSec rule applies.
    let (status, vm) = set_timeout(&tm, &taken, json!({"timeoutSec": null})).await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["expiresAt"], Value::Null);
    assert_eq!(vm["state"], "RUNNING");
    for id in [&taken, &booted] {
        let r = tm
            .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    }
}
