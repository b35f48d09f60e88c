//! Talking to a guest agent over the VM's hybrid-vsock socket
//! (`docs/reference/agent-protocol.md` §2).
//!
//! Connect + `CONNECT <port>` handshake are retried; once a byte of a request has been written it
//! is never sent again, so a command cannot run twice. Every reply is untrusted: size-capped,
//! deadline-bound, strictly parsed.

mod connect;
mod download;
mod error;
#[cfg(test)]
mod hostile;
mod upgrade;

pub use download::Download;
pub use error::AgentError;
pub use upgrade::AgentStream;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rds_protocol::{paths, ErrorBody, Health, HEADER_MAX_RESPONSE_BYTES};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// The `VSOCK_*` settings, as the client needs them.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub port: u32,
    pub retry_attempts: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
    pub binary_timeout: Duration,
    pub max_json_response_bytes: u64,
    pub max_binary_response_bytes: u64,
}

/// Headroom for status line and headers inside the JSON cap (`docs/reference/agent-protocol.md` §2:
/// body budget = cap − 16 KiB).
const HEADER_ALLOWANCE: u64 = 16 * 1024;

/// What a request carries.
pub enum Payload {
    Empty,
    Json(Vec<u8>),
    /// A spooled upload, streamed from disk with its exact length.
    File(tokio::fs::File, u64),
    /// A small archive the manager built in memory (peer trees).
    Gzip(Vec<u8>),
    /// A JSON request whose reply is streamed as JSON lines (`rds_protocol::stream`).
    JsonForStream(Vec<u8>),
}

type ReqBody = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    cfg: AgentConfig,
}

impl AgentClient {
    pub fn new(socket: PathBuf, cfg: AgentConfig) -> Self {
        AgentClient { socket, cfg }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// One `/health` attempt (single connect, no retries): the readiness loop does its own pacing.
    pub async fn health_once(&self) -> Result<Health, AgentError> {
        let deadline = Instant::now() + self.cfg.timeout;
        let stream = connect::connect_once(&self.socket, self.cfg.port, self.cfg.timeout)
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let resp = self
            .send(
                stream,
                Method::GET,
                paths::HEALTH,
                Payload::Empty,
                self.json_budget(),
                deadline,
            )
            .await?;
        parse_json(&self.collect(resp, deadline).await?)
    }

    /// A JSON call with `deadline` from the first byte written to the last byte read.
    pub async fn call_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        deadline: Duration,
    ) -> Result<Resp, AgentError> {
        let body = serde_json::to_vec(req).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let bytes = self
            .call(Method::POST, path, Payload::Json(body), deadline)
            .await?;
        parse_json(&bytes)
    }

    /// A call whose success has no body (204).
    pub async fn call_no_content<Req: Serialize>(
        &self,
        path: &str,
        req: Option<&Req>,
    ) -> Result<(), AgentError> {
        let payload = match req {
            Some(r) => Payload::Json(
                serde_json::to_vec(r).map_err(|e| AgentError::Invalid(e.to_string()))?,
            ),
            None => Payload::Empty,
        };
        self.call(Method::POST, path, payload, self.cfg.timeout)
            .await
            .map(|_| ())
    }

    /// Streams a spooled archive to the agent (`/files/upload`, replace-tree).
    pub async fn upload(
        &self,
        path_and_query: &str,
        file: tokio::fs::File,
        len: u64,
    ) -> Result<(), AgentError> {
        self.call(
            Method::POST,
            path_and_query,
            Payload::File(file, len),
            self.cfg.binary_timeout,
        )
        .await
        .map(|_| ())
    }

    /// Sends an archive built in memory (replace-tree of the peer trees).
    pub async fn upload_bytes(&self, path_and_query: &str, gz: Vec<u8>) -> Result<(), AgentError> {
        self.call(
            Method::POST,
            path_and_query,
            Payload::Gzip(gz),
            self.cfg.binary_timeout,
        )
        .await
        .map(|_| ())
    }

    /// Starts a streamed exec or run: the reply's JSON lines as they come, under the binary cap
    /// and `deadline` for the whole call. Dropping the stream closes the connection, which makes
    /// the agent kill the call's process group.
    pub async fn stream(
        &self,
        path: &str,
        body: Vec<u8>,
        deadline: Duration,
    ) -> Result<Download, AgentError> {
        self.open_streamed(Method::POST, path, Payload::JsonForStream(body), deadline)
            .await
    }

    /// Starts a download; the body is streamed to the caller under the binary cap and deadline.
    #[tracing::instrument(
        name = "agent.call",
        skip_all,
        fields(agent.method = "GET", agent.path = %without_query(path_and_query))
    )]
    pub async fn download(&self, path_and_query: &str) -> Result<Download, AgentError> {
        let deadline = self.cfg.binary_timeout;
        self.open_streamed(Method::GET, path_and_query, Payload::Empty, deadline)
            .await
    }

    /// A call whose 2xx body is handed over as a stream under the binary cap and `deadline`;
    /// any other status becomes [`AgentError::Status`].
    async fn open_streamed(
        &self,
        method: Method,
        path: &str,
        payload: Payload,
        deadline: Duration,
    ) -> Result<Download, AgentError> {
        let deadline = Instant::now() + deadline;
        let budget = self.cfg.max_binary_response_bytes;
        let work = async {
            let stream = self.connect().await?;
            let resp = self
                .send(stream, method, path, payload, budget, deadline)
                .await?;
            if resp.status().is_success() {
                Ok(resp)
            } else {
                let status = resp.status();
                let body = self.collect_raw(resp, 64 * 1024).await.unwrap_or_default();
                Err(status_error(status, &body))
            }
        };
        let resp = with_deadline(deadline, work).await?;
        Ok(Download::new(resp.into_body(), budget, deadline))
    }

    fn json_budget(&self) -> u64 {
        self.cfg
            .max_json_response_bytes
            .saturating_sub(HEADER_ALLOWANCE)
    }

    #[tracing::instrument(
        name = "agent.call",
        skip_all,
        fields(agent.method = %method, agent.path = %without_query(path))
    )]
    async fn call(
        &self,
        method: Method,
        path: &str,
        payload: Payload,
        deadline: Duration,
    ) -> Result<Bytes, AgentError> {
        let deadline = Instant::now() + deadline;
        let work = async {
            let stream = self.connect().await?;
            let resp = self
                .send(stream, method, path, payload, self.json_budget(), deadline)
                .await?;
            self.collect(resp, deadline).await
        };
        with_deadline(deadline, work).await
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

    /// Writes one request on a handshaken stream and returns the response head.
    async fn send(
        &self,
        stream: tokio::net::UnixStream,
        method: Method,
        path: &str,
        payload: Payload,
        budget: u64,
        deadline: Instant,
    ) -> Result<Response<Incoming>, AgentError> {
        let work = async {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, ReqBody>(TokioIo::new(stream))
                    .await
                    .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let streamed = matches!(payload, Payload::JsonForStream(_));
            let (body, len, content_type): (ReqBody, u64, Option<&str>) = match payload {
                Payload::Empty => (Empty::new().map_err(|e| match e {}).boxed(), 0, None),
                Payload::Json(v) | Payload::JsonForStream(v) => {
                    let n = v.len() as u64;
                    (
                        Full::new(Bytes::from(v)).map_err(|e| match e {}).boxed(),
                        n,
                        Some("application/json"),
                    )
                }
                Payload::Gzip(v) => {
                    let n = v.len() as u64;
                    (
                        Full::new(Bytes::from(v)).map_err(|e| match e {}).boxed(),
                        n,
                        Some("application/gzip"),
                    )
                }
                Payload::File(f, n) => {
                    let frames = tokio_util::io::ReaderStream::new(f).map(|r| r.map(Frame::data));
                    (
                        BodyExt::boxed(StreamBody::new(frames)),
                        n,
                        Some("application/gzip"),
                    )
                }
            };
            let mut builder = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, "agent")
                .header(http::header::CONNECTION, "close")
                .header(http::header::CONTENT_LENGTH, len)
                .header(HEADER_MAX_RESPONSE_BYTES, budget);
            if let Some(ct) = content_type {
                builder = builder.header(http::header::CONTENT_TYPE, ct);
            }
            if streamed {
                builder = builder.header(http::header::ACCEPT, rds_protocol::stream::NDJSON);
            }
            let req = builder
                .body(body)
                .map_err(|e| AgentError::Invalid(e.to_string()))?;
            sender
                .send_request(req)
                .await
                .map_err(|e| AgentError::Invalid(format!("no valid reply: {e}")))
        };
        with_deadline(deadline, work).await
    }

    /// The reply body under the JSON cap; non-2xx statuses become [`AgentError::Status`].
    async fn collect(
        &self,
        resp: Response<Incoming>,
        deadline: Instant,
    ) -> Result<Bytes, AgentError> {
        let status = resp.status();
        let bytes = with_deadline(deadline, self.collect_raw(resp, self.json_budget())).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(status_error(status, &bytes))
        }
    }

    async fn collect_raw(&self, resp: Response<Incoming>, cap: u64) -> Result<Bytes, AgentError> {
        Ok(Limited::new(resp.into_body(), cap as usize)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    AgentError::Invalid("too large".into())
                } else {
                    AgentError::Invalid(format!("body: {e}"))
                }
            })?
            .to_bytes())
    }
}

use futures::StreamExt;

async fn with_deadline<T>(
    deadline: Instant,
    work: impl std::future::Future<Output = Result<T, AgentError>>,
) -> Result<T, AgentError> {
    let start = Instant::now();
    match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(AgentError::Timeout(
            deadline.saturating_duration_since(start).as_millis() as u64,
        )),
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> AgentError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let message = match parsed {
        Some(ErrorBody {
            message,
            detail: Some(d),
        }) => format!("{message}: {d}"),
        Some(ErrorBody {
            message,
            detail: None,
        }) => message,
        None => status.canonical_reason().unwrap_or("error").to_string(),
    };
    AgentError::Status {
        status: status.as_u16(),
        message: truncate_chars(&message, 2048),
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|e| AgentError::Invalid(e.to_string()))
}

/// Span fields name the agent route only: queries carry caller-chosen paths.
fn without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// Agent messages reaching API clients are cut to 2048 characters
/// (`docs/reference/security.md` §5).
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}
