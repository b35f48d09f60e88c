//! Guest-side probes for the end-to-end tests: commands that must succeed, exit codes, `curl` to the
//! fake internet (`rds_testkit::internet`), the host clock.

use super::TestManager;
use http::StatusCode;
use rds_testkit::internet::HOST_UPLINK;
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

/// stdout of a command that must succeed.
pub async fn sh(tm: &TestManager, id: &str, cmd: &str) -> String {
    let r = tm.exec(id, json!({ "cmd": cmd, "timeoutMs": 60000 })).await;
    assert_eq!(r.status, StatusCode::OK, "{id:.8} {cmd}: {}", r.json);
    assert_eq!(r.json["exitCode"], 0, "{id:.8} {cmd}: {}", r.json);
    r.json["stdout"].as_str().unwrap().to_string()
}

/// Exit code of a command.
pub async fn code(tm: &TestManager, id: &str, cmd: &str) -> i64 {
    let r = tm.exec(id, json!({ "cmd": cmd, "timeoutMs": 60000 })).await;
    assert_eq!(r.status, StatusCode::OK, "{id:.8} {cmd}: {}", r.json);
    r.json["exitCode"].as_i64().unwrap()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `curl -m 3` from the guest: exit code and body.
pub async fn curl(tm: &TestManager, id: &str, to: Ipv4Addr) -> (i64, String) {
    let r = tm
        .exec(
            id,
            json!({ "cmd": format!("curl -sS -m 3 http://{to}/"), "timeoutMs": 20000 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let out = (
        r.json["exitCode"].as_i64().unwrap(),
        r.json["stdout"].as_str().unwrap().to_string(),
    );
    println!("  {id:.8} curl {to} → {out:?}");
    out
}

pub fn reached(p: &(i64, String), to: Ipv4Addr) -> bool {
    p.0 == 0 && p.1 == format!("from={HOST_UPLINK} to={to}")
}
