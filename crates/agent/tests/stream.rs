//! Streamed `/exec` and `/run-js` (`Accept: application/x-ndjson`): output events arrive while the
//! process still runs, a character split between reads arrives whole, the last line carries the
//! exit (and a run's result), and a reader that hangs up gets the process group killed.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{processes_with, wait_until, Agent};
use serde_json::{json, Value};

/// Sends a streamed request and returns the open connection.
fn open(agent: &Agent, path: &str, body: Value) -> UnixStream {
    let body = body.to_string();
    let mut s = UnixStream::connect(&agent.socket).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nAccept: application/x-ndjson\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// Reads until `needle` has arrived; returns everything read so far.
fn read_until(s: &mut UnixStream, needle: &str) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains(needle) {
        let n = s.read(&mut buf).expect("the stream went quiet");
        assert!(
            n > 0,
            "stream ended before {needle}: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
    raw
}

/// The JSON lines of a whole reply.
fn lines(raw: &[u8]) -> Vec<Value> {
    let reply = common::parse(raw);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    reply
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn text_of(events: &[Value], kind: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

#[test]
fn exec_streams_output_while_the_process_runs() {
    if !common::root_or_skip("exec_streams_output_while_the_process_runs") {
        return;
    }
    let agent = Agent::start("stream-exec");
    // The process waits for a file the test creates only once the first event has arrived.
    let cmd = "echo first; while [ ! -e go ]; do sleep 0.02; done; printf second >&2; exit 3";
    let mut s = open(&agent, "/exec", json!({"cmd": cmd, "timeoutMs": 30000}));
    let mut raw = read_until(&mut s, "first");
    assert!(!String::from_utf8_lossy(&raw).contains("\"exit\""));
    std::fs::write(agent.workspace.join("go"), "").unwrap();
    s.read_to_end(&mut raw).unwrap();
    let events = lines(&raw);
    assert_eq!(text_of(&events, "stdout"), "first\n");
    assert_eq!(text_of(&events, "stderr"), "second");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "exit", "{events:?}");
    assert_eq!(last["exitCode"], 3);
    assert_eq!(last["timedOut"], false);
    assert!(
        last.get("stdout").is_none(),
        "output is not repeated: {last}"
    );
}

#[test]
fn a_character_split_between_reads_arrives_whole() {
    if !common::root_or_skip("a_character_split_between_reads_arrives_whole") {
        return;
    }
    let agent = Agent::start("stream-utf8");
    let cmd = "printf '\\303'; sleep 0.2; printf '\\251!'";
    let mut s = open(&agent, "/exec", json!({"cmd": cmd}));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let events = lines(&raw);
    assert_eq!(text_of(&events, "stdout"), "é!", "{events:?}");
    assert!(events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .all(|e| !e["data"].as_str().unwrap().contains('\u{FFFD}')));
}

#[test]
fn a_reader_that_hangs_up_kills_the_process_group() {
    if !common::root_or_skip("a_reader_that_hangs_up_kills_the_process_group") {
        return;
    }
    let agent = Agent::start("stream-hangup");
    let marker = format!("rds-stream-probe-{}", std::process::id());
    let cmd =
        format!("(exec -a {marker}-child sleep 300) & echo started; exec -a {marker} sleep 300");
    let mut s = open(&agent, "/exec", json!({"cmd": cmd, "timeoutMs": 600000}));
    read_until(&mut s, "started");
    wait_until(Duration::from_secs(20), "both sleeps running", || {
        (processes_with(&marker).len() == 2).then_some(())
    });
    drop(s);
    wait_until(Duration::from_secs(20), "the group killed", || {
        processes_with(&marker).is_empty().then_some(())
    });
    // The agent serves on.
    assert_eq!(agent.exec_ok(json!({"cmd": "echo ok"}))["stdout"], "ok\n");
}

#[test]
fn run_js_streams_and_ends_with_its_result() {
    let node = rds_protocol::SANDBOX_PATH
        .split(':')
        .any(|d| std::path::Path::new(d).join("node").is_file());
    if !node {
        eprintln!(
            "SKIP run_js_streams_and_ends_with_its_result: node is not installed on this host"
        );
        return;
    }
    if !common::root_or_skip("run_js_streams_and_ends_with_its_result") {
        return;
    }
    let agent = Agent::start("stream-run-js");
    let code = "console.log('one'); console.error('two'); result.set({n: 1.50})";
    let mut s = open(&agent, "/run-js", json!({"code": code}));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let events = lines(&raw);
    assert_eq!(text_of(&events, "stdout"), "one\n");
    assert_eq!(text_of(&events, "stderr"), "two\n");
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["exitCode"].as_i64()),
        (Some("exit"), Some(0))
    );
    assert_eq!(last["result"], json!({"n": 1.5}));
}
