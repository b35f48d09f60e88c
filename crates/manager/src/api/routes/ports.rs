//! `ANY /v1/vms/:id/ports/:port[/…]` (`docs/api.md` "Ports"): HTTP and WebSocket requests relayed
//! to a server on the guest's loopback through a tunnel over vsock (never through the guest's
//! network, so its egress rules neither apply nor change). Bodies stream both ways.
//!
//! The caller's credentials stay here (`Authorization`, `X-API-Key`, `Cookie`, `X-CSRF-Token` are
//! not passed on), and what the guest serves cannot act as this origin in a browser: its
//! `Set-Cookie` is dropped and every reply is a sandboxed document (own opaque origin).

use crate::api::error::ApiError;
use crate::api::extract::parse_vm_id;
use crate::api::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

/// Policy of every relayed reply: scripts may run, but in an origin of their own.
const SANDBOX_CSP: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

pub async fn proxy_root(
    State(st): State<AppState>,
    Path((id, port)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    forward(st, &id, &port, "/".into(), req).await
}

pub async fn proxy(
    State(st): State<AppState>,
    Path((id, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    forward(st, &id, &port, format!("/{rest}"), req).await
}

fn parse_port(text: &str) -> Result<u16, ApiError> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::bad_request("port must be an integer from 1 to 65535"))
}

/// Headers that belong to one hop, or to the caller's session with this API.
fn kept(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "cookie"
            | "x-api-key"
            | "x-csrf-token"
    )
}

fn bad_gateway(port: u16, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_gateway(format!(
        "The server on port {port} in the guest did not answer: {e}"
    ))
}

async fn forward(
    st: AppState,
    id: &str,
    port: &str,
    path: String,
    mut req: Request,
) -> Result<Response, ApiError> {
    let id = parse_vm_id(id).ok_or_else(|| ApiError::bad_request("Invalid VM id"))?;
    let port = parse_port(port)?;
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let tunnel = st.vms.open_tunnel(&id, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(tunnel.into_inner())
        .await
        .map_err(|e| bad_gateway(port, e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

    let uri = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let (parts, body) = req.into_parts();
    let mut up = hyper::Request::builder()
        .method(parts.method)
        .uri(uri)
        .version(Version::HTTP_11);
    let headers = up.headers_mut().expect("a fresh builder");
    copy_headers(&parts.headers, headers);
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&format!("localhost:{port}")).expect("ascii"),
    );
    if let Some(u) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u.clone());
    }
    let up = up
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))?;
    let mut resp = sender
        .send_request(up)
        .await
        .map_err(|e| bad_gateway(port, e))?;

    let mut out = Response::builder().status(resp.status());
    let out_headers = out.headers_mut().expect("a fresh builder");
    copy_headers(resp.headers(), out_headers);
    out_headers.remove(header::SET_COOKIE);
    out_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX_CSP),
    );
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client), Some(u)) = (client_upgrade, upgrade) else {
            return Err(bad_gateway(port, "switched protocols unasked"));
        };
        out_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        out_headers.insert(header::UPGRADE, u);
        let guest = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(g)) = (client.await, guest.await) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(g)).await;
            }
        });
        return Ok(out
            .body(Body::empty())
            .expect("valid parts")
            .into_response());
    }
    Ok(out
        .body(Body::new(resp.into_body()))
        .expect("valid parts")
        .into_response())
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if kept(name) {
            to.append(name.clone(), value.clone());
        }
    }
}
