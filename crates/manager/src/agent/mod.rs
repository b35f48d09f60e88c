//! Talking to a guest agent over the VM's hybrid-vsock socket (`agent.md` §2).
//!
//! Connect + `CONNECT <port>` handshake are retried; once a byte of a request has been written it is
//! never sent again, so a command cannot run twice. Every reply is untrusted: size-capped, deadline-
//! bound, strictly parsed.

mod connect;
mod error;

pub use error::AgentError;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rds_protocol::{paths, ErrorBody, ExecRequest, ExecResult, Health, HEADER_MAX_RESPONSE_BYTES};
use std::path::PathBuf;
use std::time::Duration;

/// The `VSOCK_*` settings, as the client needs them.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub port: u32,
    pub retry_attempts: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
    pub max_json_response_bytes: u64,
}

/// Headroom for status line and headers inside the JSON cap (`agent.md` §2: body budget = cap − 16 KiB).
const HEADER_ALLOWANCE: u64 = 16 * 1024;

#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    cfg: AgentConfig,
}

impl AgentClient {
    pub fn new(socket: PathBuf, cfg: AgentConfig) -> Self {
        AgentClient { socket, cfg }
    }

    /// One `/health` attempt (single connect, no retries): the readiness loop does its own pacing.
    pub async fn health_once(&self) -> Result<Health, AgentError> {
        let stream = connect::connect_once(&self.socket, self.cfg.port, self.cfg.timeout)
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let body = self
            .request(stream, Method::GET, paths::HEALTH, None, self.cfg.timeout)
            .await?;
        parse_json(&body)
    }

    /// `/exec`, with the deadline of `agent.md` §2: max(VSOCK_TIMEOUT_MS, timeoutMs + 5 s).
    pub async fn exec(&self, req: &ExecRequest, timeout_ms: u64) -> Result<ExecResult, AgentError> {
        let deadline = self
            .cfg
            .timeout
            .max(Duration::from_millis(timeout_ms + 5000));
        let body = serde_json::to_vec(req).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let stream = self.connect().await?;
        let reply = self
            .request(stream, Method::POST, paths::EXEC, Some(body), deadline)
            .await?;
        parse_json(&reply)
    }

    async fn connect(&self) -> Result<tokio::net::UnixStream, AgentError> {
        connect::connect_with_retries(
            &self.socket,
            self.cfg.port,
            self.cfg.timeout,
            self.cfg.retry_attempts,
            self.cfg.retry_delay,
        )
        .await
        .map_err(|e| AgentError::Unreachable(e.to_string()))
    }

    /// Sends one request on a handshaken stream and reads the capped reply body. Agent 4xx/5xx become
    /// [`AgentError::Status`].
    async fn request(
        &self,
        stream: tokio::net::UnixStream,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        deadline: Duration,
    ) -> Result<Bytes, AgentError> {
        let cap = self.cfg.max_json_response_bytes;
        let budget = cap.saturating_sub(HEADER_ALLOWANCE);
        let work = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let body = body.unwrap_or_default();
            let mut builder = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, "agent")
                .header(http::header::CONNECTION, "close")
                .header(http::header::CONTENT_LENGTH, body.len())
                .header(HEADER_MAX_RESPONSE_BYTES, budget);
            if !body.is_empty() {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            }
            let req = builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| AgentError::Invalid(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| AgentError::Invalid(format!("no valid reply: {e}")))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), budget as usize)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        AgentError::Invalid("too large".into())
                    } else {
                        AgentError::Invalid(format!("body: {e}"))
                    }
                })?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(status_error(status, &bytes))
            }
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::Timeout(deadline.as_millis() as u64)),
        }
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> AgentError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("error").to_string());
    AgentError::Status {
        status: status.as_u16(),
        message: truncate_chars(&message, 2048),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|e| AgentError::Invalid(e.to_string()))
}

/// Agent messages reaching API clients are cut to 2048 characters (`security.md` §4).
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}
