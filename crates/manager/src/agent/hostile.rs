//! A guest agent that misbehaves on the wire, faked on a Unix socket because a real guest cannot
//! be made to (the fault injection the project allows fakes for): an answer that is not HTTP, a
//! body that is not JSON, a body without end, silence, and a byte every 100 ms. Each call ends with
//! a clear error within its deadline, and the client stops reading at its response cap, so a guest
//! cannot make the manager hold more than that.

use super::{AgentClient, AgentConfig, AgentError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const CAP: u64 = 256 * 1024;
/// The calls' deadline is 800 ms: no call may outlast it by more than a second (a bound, not a
/// speed target).
const BOUND: Duration = Duration::from_millis(1800);

#[derive(Clone, Copy)]
enum Guest {
    NotHttp,
    NotJson,
    Endless,
    Silent,
    Trickle,
}

/// Serves every connection as `guest` after the hybrid-vsock handshake; counts the body bytes it
/// managed to write.
fn fake(dir: &Path, guest: Guest) -> (PathBuf, Arc<AtomicU64>) {
    let path = dir.join("v.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let sent = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await; // CONNECT 8080
                let _ = s.write_all(b"OK 1\n").await;
                let _ = s.read(&mut buf).await; // the request
                match guest {
                    Guest::NotHttp => {
                        let _ = s.write_all(b"garbage, not a status line\r\n\r\n").await;
                    }
                    Guest::NotJson => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!")
                            .await;
                    }
                    Guest::Endless => {
                        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                        let _ = s.write_all(head).await;
                        let chunk = format!("{:x}\r\n{}\r\n", 16384, "x".repeat(16384));
                        while s.write_all(chunk.as_bytes()).await.is_ok() {
                            sent.fetch_add(16384, Ordering::Relaxed);
                        }
                    }
                    Guest::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
                    Guest::Trickle => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
                        while s.write_all(b"x").await.is_ok() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
    });
    (path, sent)
}

fn client(socket: PathBuf) -> AgentClient {
    AgentClient::new(
        socket,
        AgentConfig {
            port: 8080,
            retry_attempts: 1,
            retry_delay: Duration::from_millis(10),
            timeout: Duration::from_millis(500),
            binary_timeout: Duration::from_millis(500),
            max_json_response_bytes: CAP,
            max_binary_response_bytes: CAP,
        },
    )
}

async fn call(guest: Guest) -> (AgentError, Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (socket, sent) = fake(dir.path(), guest);
    let t = Instant::now();
    let r: Result<serde_json::Value, _> = client(socket)
        .call_json(
            "/exec",
            &serde_json::json!({"cmd": "true"}),
            Duration::from_millis(800),
        )
        .await;
    (r.unwrap_err(), t.elapsed(), sent.load(Ordering::Relaxed))
}

#[tokio::test]
async fn malformed_answers_are_refused_at_once() {
    for guest in [Guest::NotHttp, Guest::NotJson] {
        let (e, took, _) = call(guest).await;
        assert!(matches!(e, AgentError::Invalid(_)), "{e}");
        assert!(took < BOUND, "{took:?}");
    }
}

#[tokio::test]
async fn an_endless_body_stops_at_the_cap() {
    let (e, took, sent) = call(Guest::Endless).await;
    assert!(
        matches!(&e, AgentError::Invalid(m) if m.contains("too large")),
        "{e}"
    );
    assert!(took < BOUND, "{took:?}");
    // What the guest got written before the client hung up: the cap plus what the socket buffers
    // held, far from unbounded.
    assert!(sent < CAP + 4 * 1024 * 1024, "{sent} bytes written");
}

#[tokio::test]
async fn silence_and_a_trickle_end_at_the_deadline() {
    for guest in [Guest::Silent, Guest::Trickle] {
        let (e, took, _) = call(guest).await;
        assert!(matches!(e, AgentError::Timeout(ms) if ms <= 800), "{e}");
        assert!(took < BOUND, "{took:?}");
    }
}
