//! Tunnels, terminals and background processes against the agent binary on the host (the same
//! code a guest runs; the e2e tests in the manager repeat the story through a real VM).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{wait_until, Agent};
use rds_protocol::pty::{Exit, Frame, FrameReader, Kind, Open, Size};
use serde_json::{json, Value};

/// Sends an upgrade request; returns the stream after a 101, or the reply of a refusal.
fn upgrade(agent: &Agent, path: &str, protocol: &str) -> Result<UnixStream, common::Reply> {
    let mut s = UnixStream::connect(&agent.socket).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: agent\r\nConnection: upgrade\r\nUpgrade: {protocol}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in the head");
        head.push(b[0]);
    }
    if head.starts_with(b"HTTP/1.1 101") {
        return Ok(s);
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    head.extend_from_slice(&rest);
    Err(common::parse(&head))
}

#[test]
fn tunnels_reach_loopback_ports_only_when_something_listens() {
    let agent = Agent::start("tunnel");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = c.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return;
            }
            c.write_all(&buf[..n]).unwrap();
        }
    });
    let mut s = upgrade(&agent, &format!("/tunnel?port={port}"), "rds-tunnel").unwrap();
    s.write_all(b"ping through the tunnel").unwrap();
    let mut got = vec![0u8; 23];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, b"ping through the tunnel");

    // A port nobody listens on (the one just used, once closed, would do; bind-and-drop another).
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = upgrade(&agent, &format!("/tunnel?port={free}"), "rds-tunnel").unwrap_err();
    assert_eq!(
        (r.status, r.message()),
        (502, format!("Nothing listens on port {free} in the guest"))
    );
    for bad in ["0", "70000", "-1", "x"] {
        let r = upgrade(&agent, &format!("/tunnel?port={bad}"), "rds-tunnel").unwrap_err();
        assert_eq!(
            (r.status, r.message()),
            (400, "port must be an integer from 1 to 65535".to_string()),
            "port={bad}"
        );
    }
    let r = agent.request("POST", &format!("/tunnel?port={port}"), &[], b"");
    assert_eq!(
        (r.status, r.message()),
        (426, "Upgrade to rds-tunnel required".into())
    );
}

fn send(s: &mut UnixStream, f: Frame) {
    s.write_all(&f.encode()).unwrap();
}

/// Reads frames until the terminal's output contains `needle`; returns that output.
fn output_until(s: &mut UnixStream, r: &mut FrameReader, needle: &str) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    while !out.contains(needle) {
        match r.next_frame().unwrap() {
            Some(f) if f.kind == Kind::Output => out.push_str(&String::from_utf8_lossy(&f.payload)),
            Some(f) => panic!("{:?} frame before {needle:?}: {out}", f.kind),
            None => {
                let n = s.read(&mut buf).expect("terminal went quiet");
                assert!(n > 0, "closed before {needle:?}: {out}");
                r.push(&buf[..n]);
            }
        }
    }
    out
}

fn exit_frame(s: &mut UnixStream, r: &mut FrameReader) -> Exit {
    let mut buf = [0u8; 4096];
    loop {
        match r.next_frame().unwrap() {
            Some(f) if f.kind == Kind::Exit => return serde_json::from_slice(&f.payload).unwrap(),
            Some(_) => {}
            None => {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed without an exit frame");
                r.push(&buf[..n]);
            }
        }
    }
}

#[test]
fn terminals_run_a_login_shell_that_follows_resizes() {
    if !common::root_or_skip("terminals_run_a_login_shell_that_follows_resizes") {
        return;
    }
    let agent = Agent::start("pty");
    let open = |cols, rows| Open {
        size: Size { cols, rows },
        env: [("GREETING".to_string(), "hi-from-env".to_string())].into(),
        cwd: None,
    };
    let mut a = upgrade(&agent, "/pty", "rds-pty").unwrap();
    let mut b = upgrade(&agent, "/pty", "rds-pty").unwrap();
    send(&mut a, Frame::json(Kind::Open, &open(80, 24)));
    send(&mut b, Frame::json(Kind::Open, &open(40, 10)));
    let (mut ra, mut rb) = (FrameReader::default(), FrameReader::default());
    send(
        &mut a,
        Frame::new(
            Kind::Input,
            b"echo \"[$(id -u) $GREETING $(stty size)]\"; tty\r".to_vec(),
        ),
    );
    let out = output_until(&mut a, &mut ra, "/dev/pts/");
    assert!(out.contains("[1000 hi-from-env 24 80]"), "{out}");
    send(
        &mut b,
        Frame::new(Kind::Input, b"echo \"<$(stty size)>\"\r".to_vec()),
    );
    assert!(output_until(&mut b, &mut rb, "<10 40>").contains("<10 40>"));
    send(
        &mut a,
        Frame::json(
            Kind::Resize,
            &Size {
                cols: 132,
                rows: 43,
            },
        ),
    );
    send(
        &mut a,
        Frame::new(Kind::Input, b"echo \"{$(stty size)}\"\r".to_vec()),
    );
    output_until(&mut a, &mut ra, "{43 132}");
    send(&mut a, Frame::new(Kind::Input, b"exit 7\r".to_vec()));
    assert_eq!(
        exit_frame(&mut a, &mut ra),
        Exit {
            exit_code: 7,
            error: None
        }
    );

    // The other terminal is still there; hanging up on it kills its shell and what it started.
    // The job is named for this run (another run's leftovers cannot count), and the test waits
    // for output the shell computes, not for the terminal's echo of the typed line.
    let job = format!("rds-pty-job-{}", std::process::id());
    let line = format!("(exec -a {job} sleep 4242) & echo \"job-$((40+2))\"\r");
    send(&mut b, Frame::new(Kind::Input, line.into_bytes()));
    output_until(&mut b, &mut rb, "job-42");
    wait_until(Duration::from_secs(10), "the job to start", || {
        (!common::processes_with(&job).is_empty()).then_some(())
    });
    drop(b);
    wait_until(
        Duration::from_secs(10),
        "the hung-up terminal's processes to go",
        || common::processes_with(&job).is_empty().then_some(()),
    );

    // Refusals arrive as an exit frame with the reason.
    let mut c = upgrade(&agent, "/pty", "rds-pty").unwrap();
    send(&mut c, Frame::json(Kind::Open, &open(0, 24)));
    let e = exit_frame(&mut c, &mut FrameReader::default());
    assert_eq!(
        (e.exit_code, e.error.as_deref()),
        (-1, Some("cols and rows must be at least 1"))
    );
}

fn call(agent: &Agent, method: &str, path: &str, body: Value) -> (u16, Value) {
    let r = agent.request(method, path, &[], body.to_string().as_bytes());
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

#[test]
fn background_processes_take_stdin_signals_and_keep_output() {
    if !common::root_or_skip("background_processes_take_stdin_signals_and_keep_output") {
        return;
    }
    let agent = Agent::start("processes");
    let cmd = "read line; echo got:$line; echo oops >&2; exit 4";
    let (st, p) = call(
        &agent,
        "POST",
        "/processes",
        json!({"id": "p1", "cmd": cmd}),
    );
    assert_eq!(st, 201, "{p}");
    assert_eq!(
        (p["state"].as_str(), p["stdinOpen"].as_bool()),
        (Some("running"), Some(true))
    );
    let (st, _) = call(
        &agent,
        "POST",
        "/processes",
        json!({"id": "p1", "cmd": "true"}),
    );
    assert_eq!(st, 409, "a second p1");
    let (st, _) = call(
        &agent,
        "POST",
        "/processes/p1/stdin",
        json!({"data": "hello\n"}),
    );
    assert_eq!(st, 204);
    let (st, done) = call(
        &agent,
        "POST",
        "/processes/p1/wait?timeoutMs=20000",
        json!({}),
    );
    assert_eq!(st, 200);
    assert_eq!(
        (done["state"].as_str(), done["exitCode"].as_i64()),
        (Some("exited"), Some(4)),
        "{done}"
    );
    let (st, out) = call(&agent, "GET", "/processes/p1/output", json!({}));
    assert_eq!(st, 200, "{out}");
    let text = |v: &Value, stream: &str| -> String {
        v["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["stream"] == stream)
            .map(|c| c["data"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        (text(&out, "stdout"), text(&out, "stderr")),
        ("got:hello\n".into(), "oops\n".into())
    );
    assert_eq!(out["nextOffset"], 15);
    // Which pipe the agent read first is not fixed: read from 4 bytes into stdout's chunk.
    let at = out["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["stream"] == "stdout")
        .unwrap()["offset"]
        .as_u64()
        .unwrap()
        + 4;
    let (_, tail) = call(
        &agent,
        "GET",
        &format!("/processes/p1/output?offset={at}"),
        json!({}),
    );
    assert_eq!(text(&tail, "stdout"), "hello\n");

    // Following a finished process: its output, then the exit line.
    let r = agent.request("GET", "/processes/p1/output?follow=true", &[], b"");
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["type"], "exit");
    assert_eq!(lines.last().unwrap()["exitCode"], 4);

    // Bad input changes nothing.
    for (method, path, body, status, message) in [
        (
            "GET",
            "/processes/nope",
            json!({}),
            404,
            "Process nope not found",
        ),
        (
            "POST",
            "/processes/p1/stdin",
            json!({"data": "x"}),
            409,
            "Process p1 has exited",
        ),
        (
            "GET",
            "/processes/p1/output?offset=-1",
            json!({}),
            400,
            "offset must be a non-negative integer",
        ),
        (
            "GET",
            "/processes/p1/output?offset=99",
            json!({}),
            400,
            "offset 99 is past the output (15 bytes so far)",
        ),
        (
            "POST",
            "/processes",
            json!({"id": "../x", "cmd": "true"}),
            400,
            "id must be 1-64 of [A-Za-z0-9-]",
        ),
    ] {
        let (st, v) = call(&agent, method, path, body);
        assert_eq!(
            (st, v["message"].as_str().unwrap_or_default()),
            (status, message),
            "{method} {path}"
        );
    }

    // A signal ends a long sleep (128 + 15); an unknown one is refused.
    let (st, _) = call(
        &agent,
        "POST",
        "/processes",
        json!({"id": "p2", "cmd": "exec sleep 300"}),
    );
    assert_eq!(st, 201);
    let (st, v) = call(
        &agent,
        "POST",
        "/processes/p2/signal",
        json!({"signal": "SEGV"}),
    );
    assert_eq!(st, 400, "{v}");
    let (st, _) = call(
        &agent,
        "POST",
        "/processes/p2/signal",
        json!({"signal": "TERM"}),
    );
    assert_eq!(st, 204);
    let (_, done) = call(
        &agent,
        "POST",
        "/processes/p2/wait?timeoutMs=20000",
        json!({}),
    );
    assert_eq!(done["exitCode"], 143, "{done}");
    let (_, list) = call(&agent, "GET", "/processes", json!({}));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p1", "p2"]);

    // The cap on running processes.
    for i in 0..rds_protocol::process::MAX_RUNNING {
        let (st, v) = call(
            &agent,
            "POST",
            "/processes",
            json!({"id": format!("s{i}"), "cmd": "exec sleep 300"}),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = call(
        &agent,
        "POST",
        "/processes",
        json!({"id": "one-more", "cmd": "true"}),
    );
    assert_eq!(
        (st, v["message"].as_str()),
        (429, Some("Too many processes (at most 16 running)"))
    );
    for i in 0..rds_protocol::process::MAX_RUNNING {
        let (st, _) = call(
            &agent,
            "POST",
            &format!("/processes/s{i}/signal"),
            json!({"signal": "KILL"}),
        );
        assert_eq!(st, 204);
    }
}
