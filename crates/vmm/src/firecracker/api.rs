//! A small HTTP/1.1 client for Firecracker's API on its Unix socket (`<jail>/api.sock`): one connection
//! per call, every step under a deadline, answers capped at 64 KiB. A non-2xx answer becomes
//! [`VmmError::Api`] with Firecracker's `fault_message` (the caller adds the tail of the VMM's log).
//! Every request and answer is one line in `logs/vmm.log`.

use super::args::Call;
use crate::transcript::Transcript;
use crate::VmmError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// Bound on an ordinary call (Firecracker answers in milliseconds; InstanceStart in 75–95 ms).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on snapshot create/load, which write or map the whole guest memory.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_ANSWER: usize = 64 * 1024;
/// `lastError` keeps at most 2 KiB: the fault message is cut well below that.
const MAX_FAULT: usize = 1024;

pub struct ApiClient {
    sock: PathBuf,
    transcript: Transcript,
}

/// A 2xx answer.
#[derive(Debug)]
pub struct Answer {
    pub body: Bytes,
}

impl ApiClient {
    pub fn new(sock: &Path, vmm_log: PathBuf) -> ApiClient {
        ApiClient {
            sock: sock.to_path_buf(),
            transcript: Transcript::new(vmm_log),
        }
    }

    /// Sends `call`; a 2xx answer is returned, anything else is an error.
    pub async fn send(&self, call: &Call, limit: Duration) -> Result<Answer, VmmError> {
        match &call.body {
            Some(b) => self
                .transcript
                .record("->", &format!("{} {b}", call.name())),
            None => self.transcript.record("->", &call.name()),
        }
        let r = tokio::time::timeout(limit, self.exchange(call)).await;
        let (status, body) = match r {
            Err(_) => {
                self.transcript
                    .record("<-", &format!("{}: no answer", call.name()));
                return Err(VmmError::Timeout {
                    what: format!("firecracker answer to {}", call.name()),
                    ms: limit.as_millis() as u64,
                });
            }
            Ok(Err(e)) => {
                self.transcript
                    .record("<-", &format!("{}: {e}", call.name()));
                return Err(e);
            }
            Ok(Ok(x)) => x,
        };
        let text = String::from_utf8_lossy(&body);
        self.transcript
            .record("<-", &format!("{status} {}", text.trim()));
        if (200..300).contains(&status) {
            return Ok(Answer { body });
        }
        Err(VmmError::Api {
            call: call.name(),
            status,
            fault_message: fault_message(&body),
            log_tail: String::new(),
        })
    }

    async fn exchange(&self, call: &Call) -> Result<(u16, Bytes), VmmError> {
        let io_err = |what: &'static str| {
            let name = call.name();
            move |e: std::io::Error| VmmError::io(what, PathBuf::from(name), e)
        };
        let stream = UnixStream::connect(&self.sock)
            .await
            .map_err(|e| VmmError::io("connect to firecracker API socket", &self.sock, e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_err("HTTP handshake for")(std::io::Error::other(e)))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder()
            .method(call.method)
            .uri(call.path.as_str())
            .header(http::header::HOST, "localhost")
            .header(http::header::ACCEPT, "application/json");
        if call.body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let body = Full::new(Bytes::from(call.body.clone().unwrap_or_default()));
        let req = req
            .body(body)
            .map_err(|e| io_err("build request")(std::io::Error::other(e)))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| io_err("HTTP exchange for")(std::io::Error::other(e)))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| io_err("read answer to")(std::io::Error::other(e)))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        driver.abort();
        result
    }
}

/// `{"fault_message": "..."}` → its text; any other body is quoted as it came (cut).
pub fn fault_message(body: &[u8]) -> String {
    let parsed: Option<String> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("fault_message")?.as_str().map(str::to_string));
    let text = parsed.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let text = if text.is_empty() {
        "(empty answer)".to_string()
    } else {
        text
    };
    crate::fsutil::ellipsize(text, MAX_FAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_messages() {
        assert_eq!(
            fault_message(br#"{"fault_message":"Invalid vCPU count"}"#),
            "Invalid vCPU count"
        );
        assert_eq!(fault_message(b"plain text\n"), "plain text");
        assert_eq!(fault_message(b""), "(empty answer)");
        let long = format!(r#"{{"fault_message":"{}"}}"#, "é".repeat(2000));
        let m = fault_message(long.as_bytes());
        assert!(m.len() <= MAX_FAULT + 3 && m.ends_with('…'));
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_io_error_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vmm.log");
        let c = ApiClient::new(&dir.path().join("api.sock"), log.clone());
        let err = c
            .send(&super::super::args::vm_state("Paused"), CALL_TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, VmmError::Io { .. }), "{err:?}");
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains(r#" -> PATCH /vm {"state":"Paused"}"#),
            "{text}"
        );
        assert!(
            text.contains(" <- PATCH /vm: connect to firecracker"),
            "{text}"
        );
    }
}
