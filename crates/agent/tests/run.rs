//! `/run-js` and `/run-ts` end to end. The runtimes may be missing on a build host: then the tests print
//! `SKIP <test>: <reason>` and check only what needs no runtime; the manager's e2e tests run them in VMs.

mod common;

use std::path::Path;

use common::Agent;
use serde_json::{json, Value};

fn on_path(program: &str) -> bool {
    rds_protocol::SANDBOX_PATH
        .split(':')
        .any(|d| Path::new(d).join(program).is_file())
}

/// Names of the call files (`.run-js-*` / `.run-ts-*`) left in the workspace.
fn leftovers(agent: &Agent) -> Vec<String> {
    std::fs::read_dir(&agent.workspace)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".run-"))
        .collect()
}

fn run(agent: &Agent, endpoint: &str, body: Value) -> (u16, Value) {
    let r = agent.request("POST", endpoint, &[], body.to_string().as_bytes());
    let status = r.status;
    (status, r.json())
}

#[test]
fn validation_needs_no_runtime() {
    let agent = Agent::start("run-validation");
    for (endpoint, body, message) in [
        ("/run-js", json!({}), "code or path is required"),
        (
            "/run-js",
            json!({"code": "1", "path": "a.js"}),
            "code and path are mutually exclusive",
        ),
        (
            "/run-js",
            json!({"code": "1", "env": ["A=1", "1A=2"]}),
            "env entry 1 must be KEY=value with a valid KEY",
        ),
        (
            "/run-js",
            json!({"code": "1", "nodeFlags": ["-e"]}),
            "nodeFlags entry '-e' is not allowed",
        ),
        (
            "/run-js",
            json!({"code": "1", "nodeFlags": ["x"]}),
            "nodeFlags entry 'x' must start with '-'",
        ),
        (
            "/run-ts",
            json!({"code": "1", "denoFlags": ["--allow-all"]}),
            "denoFlags entry '--allow-all' is not allowed",
        ),
        (
            "/run-ts",
            json!({"code": "1", "timeoutMs": 0}),
            "timeoutMs must be an integer >= 1",
        ),
    ] {
        let (status, reply) = run(&agent, endpoint, body.clone());
        assert_eq!(
            (status, reply["message"].as_str()),
            (400, Some(message)),
            "{body}"
        );
    }
    for (endpoint, program, message) in [
        ("/run-ts", "deno", "deno is not available in this image"),
        ("/run-js", "node", "node is not available in this image"),
    ] {
        if on_path(program) {
            continue;
        }
        let (status, reply) = run(&agent, endpoint, json!({"code": "1"}));
        assert_eq!((status, reply["message"].as_str()), (400, Some(message)));
    }
    if on_path("node") {
        for (path, message) in [
            ("/etc/passwd", "Only /workspace paths are allowed"),
            ("../x", "Path escapes /workspace"),
            ("missing.js", "path not found: missing.js"),
            (".", "path not found: ."),
        ] {
            let (status, reply) = run(&agent, "/run-js", json!({"path": path}));
            assert_eq!(
                (status, reply["message"].as_str()),
                (400, Some(message)),
                "{path}"
            );
        }
    }
}

#[test]
fn run_js_records_results() {
    if !on_path("node") {
        eprintln!("SKIP run_js_records_results: node is not installed on this host");
        return;
    }
    if !common::root_or_skip("run_js_records_results") {
        return;
    }
    let agent = Agent::start("run-js");
    let ok = |body: Value| {
        let (status, reply) = run(&agent, "/run-js", body);
        assert_eq!(status, 200, "{reply}");
        assert!(
            leftovers(&agent).is_empty(),
            "call files removed: {:?}",
            leftovers(&agent)
        );
        reply
    };

    let r = ok(
        json!({"code": "const o = {n: 12345678901234567890n, a: [1, 2.50]}; o.self = o; result.set(o); console.log('out', process.argv.slice(2).join(','), process.env.X, process.env.NO_COLOR, process.env.TERM)", "args": ["a", "b"], "env": ["X=y"]}),
    );
    assert_eq!(r["exitCode"], 0);
    assert_eq!(
        r["result"],
        json!({"n": "12345678901234567890", "a": [1, 2.5], "self": "[Circular]"})
    );
    assert_eq!(r["stdout"], "out a,b y 1 dumb\n");
    assert!(r.get("error").is_none());

    // Numbers travel digit for digit.
    let raw = agent.request(
        "POST",
        "/run-js",
        &[],
        json!({"code": "result.set(1.50)"}).to_string().as_bytes(),
    );
    assert!(raw.text().contains(r#""result":1.5"#), "{}", raw.text());
    let r = ok(json!({"code": "result.set(null)"}));
    assert_eq!(r["result"], Value::Null);
    assert!(r.as_object().unwrap().contains_key("result"));
    let r = ok(json!({"code": "result.set(1); result.set(undefined)"}));
    assert!(r.get("result").is_none());

    let r = ok(json!({"code": "result.error(new TypeError('bad'))"}));
    assert_eq!(r["exitCode"], 1);
    assert_eq!(
        (r["error"]["name"].as_str(), r["error"]["message"].as_str()),
        (Some("TypeError"), Some("bad"))
    );
    assert!(r["error"]["stack"].is_string());
    let r = ok(json!({"code": "result.error('plain')"}));
    assert_eq!(r["error"], json!({"name": "Error", "message": "plain"}));
    let r = ok(json!({"code": "result.error({code: 7})"}));
    assert_eq!(r["error"], json!({"code": 7}));
    let r = ok(json!({"code": "result.error(42)"}));
    assert_eq!(r["error"], json!({"name": "Error", "message": "42"}));

    let r = ok(json!({"code": "result.set('kept'); process.exit(3)"}));
    assert_eq!(
        (r["exitCode"].as_i64(), r["result"].as_str()),
        (Some(3), Some("kept"))
    );
    let r = ok(json!({"code": "throw new RangeError('top')"}));
    assert_eq!(
        (r["exitCode"].as_i64(), r["error"]["name"].as_str()),
        (Some(1), Some("RangeError"))
    );
    assert!(r["stderr"].as_str().unwrap().contains("top"));
    let r = ok(json!({"code": "Promise.reject(new Error('later'))"}));
    assert_eq!(
        (r["exitCode"].as_i64(), r["error"]["message"].as_str()),
        (Some(1), Some("later"))
    );
    let r = ok(json!({"code": "result.set('x'.repeat(1000001))"}));
    assert!(r.get("result").is_none());
    assert_eq!(
        r["error"],
        json!({"name": "ResultTooLarge", "message": "result exceeds 1000000 bytes"})
    );

    // A module by path; cwd is its directory; it runs as uid 1000.
    std::fs::create_dir_all(agent.workspace.join("lib dir")).unwrap();
    std::fs::write(
        agent.workspace.join("lib dir/main.js"),
        "result.set({cwd: process.cwd().endsWith('lib dir'), uid: process.getuid()})",
    )
    .unwrap();
    let r = ok(json!({"path": "/workspace/lib dir/main.js"}));
    assert_eq!(r["result"], json!({"cwd": true, "uid": 1000}));

    // Timeout: killed, reported, files removed.
    let r =
        ok(json!({"code": "result.set('before'); setInterval(() => {}, 1000)", "timeoutMs": 1500}));
    assert_eq!(
        (r["timedOut"].as_bool(), r["exitCode"].as_i64()),
        (Some(true), Some(-1))
    );
    assert!(r["stderr"]
        .as_str()
        .unwrap()
        .ends_with("Timeout exceeded\n"));
    assert_eq!(r["result"], "before");
}

#[test]
fn run_ts_records_results() {
    if !on_path("deno") {
        eprintln!("SKIP run_ts_records_results: deno is not installed on this host");
        return;
    }
    if !common::root_or_skip("run_ts_records_results") {
        return;
    }
    let agent = Agent::start("run-ts");
    let (status, r) = run(
        &agent,
        "/run-ts",
        json!({"code": "const n: bigint = 5n; result.set({n, args: Deno.args}); console.log(Deno.env.get('X'))", "args": ["z"], "env": ["X=1"]}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["result"], json!({"n": "5", "args": ["z"]}));
    assert_eq!(r["stdout"], "1\n");
    let (_, r) = run(
        &agent,
        "/run-ts",
        json!({"code": "await Deno.readTextFile('/etc/hostname')"}),
    );
    assert_eq!(
        r["exitCode"], 1,
        "reading outside the allowed paths is denied: {r}"
    );
    assert!(leftovers(&agent).is_empty());
}
