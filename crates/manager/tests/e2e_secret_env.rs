//! secretEnv with real guests (`docs/secret-env.md`): exec, run-ts and run-js see a VM's secrets
//! (over the caller's env), another VM does not; the values never reach an API answer about the VM,
//! its exec log, the activity feed, its log files, the manager's log or the database row, which
//! holds ciphertext only and is cleared on destroy; bad entries are refused with nothing created.
//!
//! Tests of this file run one at a time; run them under the e2e lock:
//! `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_secret_env`.

mod common;

use common::admin::{capture_logs, captured_logs};
use common::TestManager;
use http::{Method, StatusCode};
use rds_manager::db::Db;
use serde_json::{json, Value};

const TOKEN_A: &str = "tok-A-7f3c9e21d4b8";
const SHARED_A: &str = "shared-secret-value-alpha";
const TOKEN_B: &str = "tok-B-0a6d52c8e917";
const VM_SECRET_KEY: &str = "e2e-vm-secret-key-with-at-least-32-chars";

fn hides(what: &str, text: &str) {
    for secret in [TOKEN_A, SHARED_A, TOKEN_B] {
        assert!(!text.contains(secret), "{what} holds {secret}:\n{text}");
    }
}

/// Every byte of every file under `dir`, lossily as text.
fn all_files(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.push_str(&all_files(&p));
        } else if meta.is_file() && meta.len() < 64 << 20 {
            // Disk images and memory files are the guest's own (see docs/secret-env.md).
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".ext4") && !name.ends_with(".snap") && !name.contains("overlay") {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

/// A plain connection to the manager's database, to read a DELETED row the API no longer shows.
async fn raw_pool(tm: &TestManager) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let db = &tm.settings.db;
    let url = match &db.database_url {
        Some(url) if db.dialect == "postgres" => url.clone(),
        _ => format!("sqlite://{}", db.sqlite_path.display()),
    };
    sqlx::AnyPool::connect(&url).await.unwrap()
}

async fn stdout_of(tm: &TestManager, id: &str, route: &str, body: Value) -> String {
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{id}/{route}"), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{route}: {}", r.json);
    r.json["stdout"].as_str().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_guest_and_nothing_else() {
    capture_logs();
    let Some((image, vhost)) = common::guest_prerequisites("secret_env") else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[("VM_SECRET_KEY", VM_SECRET_KEY)]).await;

    // Bad entries: the API's message, and nothing created.
    let too_many: Vec<String> = (0..65).map(|i| format!("K{i}=value")).collect();
    for (entries, message) in [
        (
            json!("TOKEN=abcd"),
            "secretEnv must be an array of at most 64 strings".to_string(),
        ),
        (
            json!(too_many),
            "secretEnv must be an array of at most 64 strings".into(),
        ),
        (
            json!(["TOKEN"]),
            "secretEnv entry 0 must be KEY=value with a valid KEY".into(),
        ),
        (
            json!(["A=abcd", "1B=abcd"]),
            "secretEnv entry 1 must be KEY=value with a valid KEY".into(),
        ),
        (
            json!([7]),
            "secretEnv entry 0 must be KEY=value with a valid KEY".into(),
        ),
        (
            json!(["A=abcd", "A=efgh"]),
            "secretEnv key A is duplicated".into(),
        ),
        (
            json!(["A=abc"]),
            "secretEnv value of A must be empty or at least 4 bytes".into(),
        ),
    ] {
        let body = json!({"cpu": 1, "memMb": 256, "secretEnv": entries});
        let r = tm.call(Method::POST, "/v1/vms", Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{entries}");
        assert_eq!(r.json["message"], message.as_str(), "{entries}");
    }
    assert_eq!(
        tm.ids("/v1/vms").await.len(),
        0,
        "refused creates leave nothing"
    );

    let a = tm
        .create_vm(json!({"cpu": 1, "memMb": 256,
            "secretEnv": [format!("TOKEN={TOKEN_A}"), format!("SHARED={SHARED_A}"), "EMPTY="]}))
        .await;
    let b = tm
        .create_vm(json!({"cpu": 1, "memMb": 256, "secretEnv": [format!("TOKEN={TOKEN_B}")]}))
        .await;

    // The guest sees them; a secret wins over the caller's env of the same key.
    let seen = stdout_of(
        &tm,
        &a,
        "exec",
        json!({"cmd": "echo \"$TOKEN|$SHARED|${EMPTY-unset}|$OTHER\"",
        "env": {"TOKEN": "from-the-caller", "OTHER": "kept"}}),
    )
    .await;
    assert_eq!(seen, format!("{TOKEN_A}|{SHARED_A}||kept"));
    let ts = stdout_of(
        &tm,
        &a,
        "run-ts",
        json!({"code": "console.log(Deno.env.get('TOKEN'))",
        "env": ["TOKEN=from-the-caller"]}),
    )
    .await;
    assert_eq!(ts, TOKEN_A);
    let js = stdout_of(
        &tm,
        &a,
        "run-js",
        json!({"code": "console.log(process.env.SHARED)"}),
    )
    .await;
    assert_eq!(js, SHARED_A);
    // Each VM only its own.
    let other = stdout_of(
        &tm,
        &b,
        "exec",
        json!({"cmd": "echo \"$TOKEN|${SHARED-none}\""}),
    )
    .await;
    assert_eq!(other, format!("{TOKEN_B}|none"));
    // A command that spells a secret out: its log entry and event must not.
    let spelled = stdout_of(
        &tm,
        &a,
        "exec",
        json!({"cmd": format!("echo {SHARED_A} | wc -c")}),
    )
    .await;
    assert_eq!(spelled, (SHARED_A.len() + 1).to_string());

    // Nothing the API says about the VMs holds a value.
    for id in [&a, &b] {
        let vm = tm.call(Method::GET, &format!("/v1/vms/{id}"), None).await;
        assert_eq!(vm.status, StatusCode::OK);
        assert!(vm.json.get("secretEnv").is_none(), "{}", vm.json);
        hides("GET /v1/vms/:id", &vm.json.to_string());
        let log = tm
            .call(
                Method::GET,
                &format!("/v1/vms/{id}/exec-logs?limit=200"),
                None,
            )
            .await;
        hides("exec log", &log.json.to_string());
        for kind in ["vmm.log", "console.log", "vmm.stderr.log"] {
            let r = tm
                .call(
                    Method::GET,
                    &format!("/v1/vms/{id}/logs?type={kind}&tail=1000"),
                    None,
                )
                .await;
            hides(kind, &r.json.to_string());
        }
    }
    let log = tm
        .call(
            Method::GET,
            &format!("/v1/vms/{a}/exec-logs?limit=200"),
            None,
        )
        .await;
    let text = log.json.to_string();
    assert!(
        text.contains("[REDACTED]"),
        "the spelled-out secret is redacted: {text}"
    );
    assert!(
        !text.contains("SHARED=") && !text.contains("\"TOKEN="),
        "secret keys are out of env: {text}"
    );
    assert!(
        text.contains("OTHER=kept"),
        "the caller's own env is kept: {text}"
    );
    let list = tm.call(Method::GET, "/v1/vms", None).await;
    hides("GET /v1/vms", &list.json.to_string());
    let activity = tm
        .call(Method::GET, "/v1/admin/activity?limit=200", None)
        .await;
    assert_eq!(activity.status, StatusCode::OK);
    hides("activity", &activity.json.to_string());

    // At rest: ciphertext in the row, no plain value in any file the manager wrote.
    let db = Db::connect(&tm.settings.db).await.unwrap();
    let row = db.get_vm(&a).await.unwrap().unwrap();
    let sealed = row.secret_env.clone().expect("sealed secretEnv stored");
    let sealed_json: Value = serde_json::from_str(&sealed).unwrap();
    assert_eq!(sealed_json["v"], 1, "{sealed}");
    for field in ["iv", "tag", "data"] {
        assert!(sealed_json[field].is_string(), "{sealed}");
    }
    hides("the row", &sealed);
    hides("the manager's files", &all_files(tm.dir.path()));

    // Destroy clears the row's secrets.
    let r = tm.call(Method::DELETE, &format!("/v1/vms/{a}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let cleared: Option<(Option<String>,)> =
        sqlx::query_as("SELECT secret_env FROM vms WHERE id = $1")
            .bind(&a)
            .fetch_optional(&raw_pool(&tm).await)
            .await
            .unwrap();
    assert_eq!(cleared, Some((None,)), "destroy clears secretEnv");
    let r = tm.call(Method::DELETE, &format!("/v1/vms/{b}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    hides("the manager's log", &captured_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_env_needs_vm_secret_key() {
    let Some(vhost) = common::manager_prerequisites("secret_env_needs_key") else {
        return;
    };
    let tm = TestManager::start(None, &vhost, &[]).await;
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256, "secretEnv": ["A=abcd"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["message"],
        "secretEnv requires VM_SECRET_KEY to be configured"
    );
    // An empty list asks for nothing secret: the create goes on (to the missing image here).
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 256, "secretEnv": []})),
        )
        .await;
    assert_ne!(
        r.json["message"],
        "secretEnv requires VM_SECRET_KEY to be configured"
    );
    assert_eq!(tm.ids("/v1/vms").await.len(), 0);
}
