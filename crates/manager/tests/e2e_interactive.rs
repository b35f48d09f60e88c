//! Interactive sandboxes through the manager with real guests (`docs/api.md` "Processes",
//! "Terminals", "Ports"): a Deno server started as a background process, read, fed stdin,
//! reached through the port proxy (HTTP with a 5 MiB body and a WebSocket echo) and signalled;
//! terminals over WebSocket with resizes, two at once; processes listed as gone after a restart;
//! another VM cannot reach the server; bad input answered 4xx. Prints the interactive numbers of
//! `docs/benchmarks.md`.
//!
//! Run under the e2e lock: `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_interactive`.

mod common;

use common::TestManager;
use futures::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = common::KEY;

const SERVER_TS: &str = r#"
Deno.serve({ port: 8000, hostname: "0.0.0.0", onListen: () => console.log("listening 8000") }, async (req) => {
  const url = new URL(req.url);
  if (req.headers.get("upgrade") === "websocket") {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send("echo:" + e.data);
    return response;
  }
  if (req.method === "POST") {
    const body = new Uint8Array(await req.arrayBuffer());
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
    const hex = Array.from(digest).map((b) => b.toString(16).padStart(2, "0")).join("");
    return Response.json({ length: body.length, sha256: hex, path: url.pathname, query: url.search,
      authorization: req.headers.get("authorization"), apiKey: req.headers.get("x-api-key") });
  }
  return new Response("hello from the guest " + url.pathname + url.search, { headers: { "set-cookie": "guest=1" } });
});
const decoder = new TextDecoder();
for await (const chunk of Deno.stdin.readable) console.log("stdin:" + decoder.decode(chunk).trim());
"#;

/// The router on a loopback port inside the manager's namespace (WebSockets need a real
/// connection; `tm.call` is in-process).
async fn serve(tm: &TestManager) -> SocketAddr {
    let app = tm
        .router
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tm.spawn(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        addr
    })
    .await
    .unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket to `path` on `addr`, authenticated with the API key (run on the manager's runtime).
async fn ws(addr: SocketAddr, path: &str) -> Result<Ws, String> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert("x-api-key", KEY.parse().unwrap());
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tokio_tungstenite::client_async(req, tcp)
        .await
        .map(|(s, _)| s)
        .map_err(|e| e.to_string())
}

/// Terminal output until `needle` (binary messages), failing on an early exit message.
async fn until(ws: &mut Ws, needle: &str) -> String {
    let mut out = String::new();
    while !out.contains(needle) {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 60 s: {out}"))
            .unwrap_or_else(|| panic!("closed before {needle:?}: {out}"))
            .unwrap();
        match msg {
            Message::Binary(b) => out.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => panic!("{t} before {needle:?}: {out}"),
            _ => {}
        }
    }
    out
}

/// The exit message of a terminal.
async fn exit_of(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("closed without exit").unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(_) => panic!("closed without exit"),
            _ => {}
        }
    }
}

/// One raw HTTP/1.1 exchange (Connection: close): status, body.
async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    key: bool,
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = if key {
        format!("x-api-key: {KEY}\r\n")
    } else {
        String::new()
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let status = std::str::from_utf8(&raw[9..12]).unwrap().parse().unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 4 + n..];
    }
}

async fn start(tm: &TestManager, id: &str, cmd: &str) -> Value {
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{id}/processes"),
            Some(json!({"cmd": cmd})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    r.json
}

fn text(out: &Value, stream: &str) -> String {
    out["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .filter(|c| c["stream"] == stream)
        .map(|c| c["data"].as_str().unwrap().to_string())
        .collect()
}

/// Polls a process's stdout until it holds `needle`.
async fn stdout_until(tm: &TestManager, id: &str, pid: &str, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let r = tm
            .call(
                Method::GET,
                &format!("/v1/vms/{id}/processes/{pid}/output"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        let out = text(&r.json, "stdout");
        if out.contains(needle) {
            return out;
        }
        assert!(
            Instant::now() < end && r.json["process"]["state"] == "running",
            "no {needle:?}: {}\n{}",
            r.json,
            tm.console_tails()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn p50(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_terminals_and_ports_in_a_real_guest() {
    let Some((image, vhost)) = common::guest_prerequisites("interactive") else {
        return;
    };
    let tm = TestManager::start(
        Some(&image),
        &vhost,
        &[("VM_SECRET_KEY", "interactive-test-secret-key-0123")],
    )
    .await;
    let addr = serve(&tm).await;
    let a = tm
        .create_vm(json!({"cpu": 1, "memMb": 512, "secretEnv": ["SECRET_TOKEN=s3cret-value"]}))
        .await;
    let r = tm
        .exec(
            &a,
            json!({"cmd": format!("cat > srv.ts <<'EOF'\n{SERVER_TS}\nEOF")}),
        )
        .await;
    assert_eq!(r.json["exitCode"], 0, "{}", r.json);

    // A background server: its output, then stdin it reads.
    let srv = start(&tm, &a, "exec deno run --allow-net srv.ts").await;
    let pid = srv["id"].as_str().unwrap().to_string();
    assert_eq!(srv["state"], "running");
    stdout_until(&tm, &a, &pid, "listening 8000").await;
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{a}/processes/{pid}/stdin"),
            Some(json!({"data": "typed line\n"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    stdout_until(&tm, &a, &pid, "stdin:typed line").await;

    // Through the port proxy: GET, a 5 MiB POST, credentials kept here, a sandboxed reply.
    let base = format!("/v1/vms/{a}/ports/8000");
    let r = tm
        .call(Method::GET, &format!("{base}/some/path?x=1"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, "hello from the guest /some/path?x=1");
    assert!(
        r.headers.get("set-cookie").is_none(),
        "the guest's cookie reached the client"
    );
    assert!(r.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("sandbox"));
    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let want = hex(&sha2::Sha256::digest(&big));
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/upload?n=5"))
        .header("x-api-key", KEY)
        .header("authorization", format!("Bearer {KEY}"))
        .body(axum::body::Body::from(big.clone()))
        .unwrap();
    let r = tm.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        r.json,
        json!({"length": big.len(), "sha256": want, "path": "/upload", "query": "?n=5",
               "authorization": null, "apiKey": null})
    );

    // A WebSocket echo server through the proxy, and a terminal, on a real connection.
    let echoed = tm
        .spawn({
            let path = format!("{base}/ws");
            async move {
                let mut s = ws(addr, &path).await.unwrap();
                s.send(Message::Text("hi".into())).await.unwrap();
                match s.next().await.unwrap().unwrap() {
                    Message::Text(t) => t.to_string(),
                    m => format!("{m:?}"),
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(echoed, "echo:hi");

    // Nothing listens: 502; bad ports: 400.
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{a}/ports/8001/"), None)
        .await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (
            StatusCode::BAD_GATEWAY,
            Some("Nothing listens on port 8001 in the guest")
        )
    );
    for bad in ["0", "70000", "x"] {
        let r = tm
            .call(Method::GET, &format!("/v1/vms/{a}/ports/{bad}/"), None)
            .await;
        assert_eq!(
            (r.status, r.json["message"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("port must be an integer from 1 to 65535")
            ),
            "port {bad}"
        );
    }

    // Terminals: two at once, a resize, the secret in the shell's environment, exit codes.
    let (first, second) = tm
        .spawn({
            let a = a.clone();
            async move {
                let mut t1 = ws(addr, &format!("/v1/vms/{a}/pty?cols=80&rows=24"))
                    .await
                    .unwrap();
                let mut t2 = ws(addr, &format!("/v1/vms/{a}/pty?cols=40&rows=10"))
                    .await
                    .unwrap();
                t1.send(Message::Binary(
                    b"echo \"[$(id -un) $(stty size) ${#SECRET_TOKEN}]\"; tty\r"
                        .to_vec()
                        .into(),
                ))
                .await
                .unwrap();
                let o1 = until(&mut t1, "/dev/pts/").await;
                t2.send(Message::Binary(
                    b"echo \"<$(stty size)>\"\r".to_vec().into(),
                ))
                .await
                .unwrap();
                until(&mut t2, "<10 40>").await;
                t1.send(Message::Text(
                    r#"{"type":"resize","cols":132,"rows":43}"#.into(),
                ))
                .await
                .unwrap();
                t1.send(Message::Text(
                    r#"{"type":"input","data":"echo \"{$(stty size)}\"\r"}"#.into(),
                ))
                .await
                .unwrap();
                until(&mut t1, "{43 132}").await;
                // Keystroke echo round trips: a character typed, the same character back.
                let mut echo = Vec::new();
                for c in b"abcdefghij" {
                    let t = Instant::now();
                    t1.send(Message::Binary(vec![*c].into())).await.unwrap();
                    until(&mut t1, &(*c as char).to_string()).await;
                    echo.push(t.elapsed());
                }
                t1.send(Message::Binary(b"\x15exit 3\r".to_vec().into()))
                    .await
                    .unwrap();
                let e1 = exit_of(&mut t1).await;
                t2.send(Message::Binary(b"exit\r".to_vec().into()))
                    .await
                    .unwrap();
                let e2 = exit_of(&mut t2).await;
                ((o1, e1, p50(echo)), e2)
            }
        })
        .await
        .unwrap();
    assert!(first.0.contains("[user 24 80 12]"), "{}", first.0);
    assert_eq!(first.1, json!({"type": "exit", "exitCode": 3}));
    assert_eq!(second, json!({"type": "exit", "exitCode": 0}));
    let echo_p50 = first.2;

    // Bad terminal requests: a size out of range, no upgrade.
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{a}/pty?cols=0"), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{a}/pty"), None)
        .await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (
            StatusCode::UPGRADE_REQUIRED,
            Some("A WebSocket upgrade is required")
        )
    );

    // Numbers: proxy against a direct connection to the guest's address, same server.
    let guest_ip = tm
        .call(Method::GET, &format!("/v1/vms/{a}"), None)
        .await
        .json["guestIp"]
        .as_str()
        .unwrap()
        .to_string();
    let bench = tm
        .spawn({
            let (path, big) = (format!("{base}/"), big.clone());
            async move {
                let direct: SocketAddr = format!("{guest_ip}:8000").parse().unwrap();
                let direct_ok =
                    tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(direct))
                        .await
                        .is_ok_and(|r| r.is_ok());
                let (mut via, mut dir) = (Vec::new(), Vec::new());
                for _ in 0..20 {
                    let t = Instant::now();
                    assert_eq!(http1(addr, "GET", &path, b"", true).await.0, 200);
                    via.push(t.elapsed());
                    if direct_ok {
                        let t = Instant::now();
                        assert_eq!(http1(direct, "GET", "/", b"", false).await.0, 200);
                        dir.push(t.elapsed());
                    }
                }
                let t = Instant::now();
                assert_eq!(http1(addr, "POST", &path, &big, true).await.0, 200);
                let up_via = t.elapsed();
                let up_dir = if direct_ok {
                    let t = Instant::now();
                    assert_eq!(http1(direct, "POST", "/", &big, false).await.0, 200);
                    Some(t.elapsed())
                } else {
                    None
                };
                (
                    p50(via),
                    (!dir.is_empty()).then(|| p50(dir)),
                    up_via,
                    up_dir,
                )
            }
        })
        .await
        .unwrap();
    let mib_s = |d: Duration| 5.0 / d.as_secs_f64();
    eprintln!(
        "interactive bench: terminal keystroke echo p50 {echo_p50:?}; port-proxy GET p50 {:?} \
         (direct to the guest's address: {:?}); 5 MiB POST via proxy {:?} ({:.1} MiB/s), direct {:?}",
        bench.0,
        bench.1,
        bench.2,
        mib_s(bench.2),
        bench.3.map(|d| format!("{d:?} ({:.1} MiB/s)", mib_s(d)))
    );

    // Another VM cannot reach the server over the network, and its own port 8000 is empty.
    let b = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;
    let r = tm
        .exec(&b, json!({"cmd": format!("curl -sS -m 5 http://{}:8000/", tm.call(Method::GET, &format!("/v1/vms/{a}"), None).await.json["guestIp"].as_str().unwrap())}))
        .await;
    assert_ne!(
        r.json["exitCode"], 0,
        "another VM reached the server: {}",
        r.json
    );
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{b}/ports/8000/"), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.json);
    let r = tm.call(Method::DELETE, &format!("/v1/vms/{b}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // Signals and exits; bad input.
    let short = start(&tm, &a, "read l; echo got:$l; exit 4").await;
    let sid = short["id"].as_str().unwrap().to_string();
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{a}/processes/{sid}/stdin"),
            Some(json!({"data": "x\n", "eof": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{a}/processes/{sid}/wait?timeoutMs=60000"),
            None,
        )
        .await;
    assert_eq!(
        (r.json["state"].as_str(), r.json["exitCode"].as_i64()),
        (Some("exited"), Some(4)),
        "{}",
        r.json
    );
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{a}/processes/{pid}/signal"),
            Some(json!({"signal": "TERM"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{a}/processes/{pid}/wait?timeoutMs=60000"),
            None,
        )
        .await;
    assert_eq!(r.json["state"], "exited", "{}", r.json);
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{a}/ports/8000/"), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_GATEWAY,
        "the server is gone: {}",
        r.json
    );
    for (method, path, body, status, message) in [
        (
            Method::GET,
            format!("/v1/vms/{a}/processes/nope"),
            None,
            404,
            "Process nope not found".to_string(),
        ),
        (
            Method::POST,
            format!("/v1/vms/{a}/processes/{sid}/stdin"),
            Some(json!({"data": "y"})),
            409,
            format!("Process {sid} has exited"),
        ),
        (
            Method::GET,
            format!("/v1/vms/{a}/processes/{sid}/output?offset=-1"),
            None,
            400,
            "offset must be a non-negative integer".into(),
        ),
        (
            Method::POST,
            format!("/v1/vms/{a}/processes/{sid}/signal"),
            Some(json!({"signal": "SEGV"})),
            400,
            "signal must be one of TERM, KILL, INT, HUP, QUIT, USR1, USR2, STOP, CONT".into(),
        ),
        (
            Method::POST,
            format!("/v1/vms/{a}/processes"),
            Some(json!({"cwd": "/workspace"})),
            400,
            "cmd is required".into(),
        ),
    ] {
        let r = tm.call(method.clone(), &path, body).await;
        assert_eq!(
            (
                r.status.as_u16(),
                r.json["message"].as_str().unwrap_or_default()
            ),
            (status, message.as_str()),
            "{method} {path}"
        );
    }

    // Followed output of an ended process: its lines, then the exit line.
    let req = http::Request::builder()
        .uri(format!("/v1/vms/{a}/processes/{sid}/output?follow=true"))
        .header("x-api-key", KEY)
        .body(axum::body::Body::empty())
        .unwrap();
    let r = tm.send(req).await;
    let followed = match &r.json {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let last: Value = serde_json::from_str(followed.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["type"].as_str(), last["exitCode"].as_i64()),
        (Some("exit"), Some(4)),
        "{followed}"
    );
    assert!(followed.contains("got:x"), "{followed}");

    // A stop ends them all; after a start they are listed as gone.
    for step in ["stop", "start"] {
        let r = tm
            .call(Method::POST, &format!("/v1/vms/{a}/{step}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{step}: {}", r.json);
    }
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{a}/processes"), None)
        .await;
    let states: Vec<(&str, &str)> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [(pid.as_str(), "gone"), (sid.as_str(), "gone")],
        "{}",
        r.json
    );
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{a}/processes/{pid}/stdin"),
            Some(json!({"data": "z"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    let r = tm.call(Method::DELETE, &format!("/v1/vms/{a}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(tm.ids("/v1/vms").await.is_empty());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
