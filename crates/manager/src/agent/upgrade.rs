//! Connections that leave HTTP after the agent's 101 (tunnels to guest ports, terminals), and the
//! plain GET calls of the process table.

use super::{parse_json, status_error, with_deadline, AgentClient, AgentError, Payload};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// A raw byte stream to the agent, after its 101.
pub type AgentStream = TokioIo<Upgraded>;

impl AgentClient {
    /// `POST path` switched to `protocol`: the raw stream once the agent answered 101 (within
    /// the JSON call timeout); its refusal as [`AgentError::Status`] otherwise.
    #[tracing::instrument(name = "agent.upgrade", skip_all, fields(agent.protocol = protocol))]
    pub async fn upgrade(
        &self,
        path: &str,
        protocol: &'static str,
    ) -> Result<AgentStream, AgentError> {
        let deadline = Instant::now() + self.cfg.timeout;
        let work = async {
            let stream = self.connect().await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
                    .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::HOST, "agent")
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, protocol)
                .header(header::CONTENT_LENGTH, 0)
                .body(Empty::new())
                .map_err(|e| AgentError::Invalid(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| AgentError::Invalid(format!("no valid reply: {e}")))?;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                return hyper::upgrade::on(resp)
                    .await
                    .map(TokioIo::new)
                    .map_err(|e| AgentError::Invalid(format!("upgrade: {e}")));
            }
            let status = resp.status();
            let body = self.collect_raw(resp, 64 * 1024).await.unwrap_or_default();
            Err(status_error(status, &body))
        };
        with_deadline(deadline, work).await
    }

    /// A GET whose 2xx reply is JSON, within `deadline`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        deadline: Duration,
    ) -> Result<T, AgentError> {
        let bytes = self
            .call(Method::GET, path_and_query, Payload::Empty, deadline)
            .await?;
        parse_json(&bytes)
    }

    /// A GET whose reply is streamed JSON lines (following a process's output), under the binary
    /// cap and `deadline`.
    pub async fn get_stream(
        &self,
        path_and_query: &str,
        deadline: Duration,
    ) -> Result<super::Download, AgentError> {
        self.open_streamed(Method::GET, path_and_query, Payload::Empty, deadline)
            .await
    }
}
