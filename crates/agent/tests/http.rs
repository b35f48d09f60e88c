//! The HTTP contract over a real socket: health, version header, error shapes and statuses.

mod common;

use common::{is_root, Agent};
use serde_json::json;

#[test]
fn health_reports_the_agent() {
    let agent = Agent::start("health");
    let reply = agent.request("GET", "/health", &[], b"");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-rds-agent-version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let h = reply.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["protocol"], 1);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(h["bootId"], boot_id.trim());
    let expect_shell = if std::path::Path::new("/bin/bash").exists() {
        "bash"
    } else {
        "sh"
    };
    assert_eq!(h["shell"], expect_shell);
    let runtimes = h["runtimes"].as_object().unwrap();
    assert!(
        runtimes.contains_key("deno") && runtimes.contains_key("node"),
        "{h}"
    );
    // It parses as the shared wire type.
    let _: rds_protocol::Health = serde_json::from_value(h).unwrap();
}

#[test]
fn errors_have_the_spec_shape() {
    let agent = Agent::start("errors");
    let r = agent.request("GET", "/nope", &[], b"");
    assert_eq!((r.status, r.message().as_str()), (404, "Not found"));
    assert!(r.header("x-rds-agent-version").is_some());

    let r = agent.request("GET", "/exec", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = agent.request("POST", "/health", &[], b"{}");
    assert_eq!(r.status, 405);

    let r = agent.request("POST", "/exec", &[], b"{not json");
    assert_eq!((r.status, r.message().as_str()), (400, "Invalid JSON body"));
    assert!(r.json()["detail"].is_string());
    let r = agent.exec(json!({"cwd": "/workspace"}));
    assert_eq!(r.status, 400, "missing cmd");
    let r = agent.exec(json!({"cmd": "true", "timeoutMs": 0}));
    assert_eq!(r.status, 400);
    let r = agent.exec(json!({"cmd": "true", "timeoutMs": -5}));
    assert_eq!(r.status, 400);
}

#[test]
fn oversized_bodies_get_413() {
    let agent = Agent::start("413");
    // Declared too large: refused before reading.
    let big = format!("{{\"cmd\":\"{}\"}}", "a".repeat(3 * 1024 * 1024));
    let r = agent.request("POST", "/exec", &[], big.as_bytes());
    assert_eq!((r.status, r.message().as_str()), (413, "Body too large"));
    // Just under the cap is read and parsed.
    let fits = format!(
        "{{\"cmd\":\"true\",\"pad\":\"{}\"}}",
        "a".repeat(2 * 1024 * 1024 - 64)
    );
    let r = agent.request("POST", "/exec", &[], fits.as_bytes());
    if is_root() {
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn too_many_concurrent_execs_get_429() {
    if !common::root_or_skip("too_many_concurrent_execs_get_429") {
        return;
    }
    let agent = std::sync::Arc::new(Agent::start("429"));
    let marker = "sleep 7.4321";
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let agent = agent.clone();
            std::thread::spawn(move || {
                agent
                    .exec(json!({"cmd": marker, "timeoutMs": 20000}))
                    .status
            })
        })
        .collect();
    common::wait_until(
        std::time::Duration::from_secs(20),
        "32 running execs",
        || (common::processes_with(marker).len() >= 32).then_some(()),
    );
    let r = agent.exec(json!({"cmd": "true"}));
    assert_eq!(
        (r.status, r.message().as_str()),
        (429, "Too many concurrent executions")
    );
    // Health is not an exec and still answers.
    assert_eq!(agent.request("GET", "/health", &[], b"").status, 200);
    for pid in common::processes_with(marker) {
        // SAFETY: plain kill(2) of our own test processes.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    for w in workers {
        assert_eq!(w.join().unwrap(), 200);
    }
    assert_eq!(agent.exec(json!({"cmd": "true"})).status, 200);
}
