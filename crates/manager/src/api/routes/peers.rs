//! Peers (`docs/peers.md`): `POST /v1/vms/:id/peers/sync`, `PATCH /v1/vms/:id/peers/:alias`, and
//! the route guests call, `POST /internal/v1/peer/invoke`, authorised by a bridge token instead of
//! a principal.

use super::detached;
use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, VmId, KIB};
use crate::api::schema::{ErrorBody, PeerInvokeBody, PeerInvokeResult, PeerPatchBody};
use crate::api::AppState;
use crate::lifecycle::InvokeRequest;
use crate::peers::{valid_alias, SourceMode};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::net::SocketAddr;

#[utoipa::path(post, path = "/vms/{id}/peers/sync", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 204, description = "`/workspace/peers` rebuilt from the linked providers"),
              (status = 400, description = "A provider's manifest is invalid", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "This VM or a provider is not RUNNING", body = ErrorBody),
              (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn sync(State(st): State<AppState>, VmId(id): VmId) -> Result<StatusCode, ApiError> {
    let vms = st.vms.clone();
    detached(async move { vms.sync_peers(&id).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/vms/{id}/peers/{alias}", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"),
           ("alias" = String, Path, description = "A link's alias")),
    request_body = PeerPatchBody,
    responses((status = 204, description = "Link updated and `/workspace/peers` rebuilt"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn patch(
    State(st): State<AppState>,
    Path((id, alias)): Path<(String, String)>,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<StatusCode, ApiError> {
    let id = crate::api::extract::parse_vm_id(&id)
        .ok_or_else(|| ApiError::bad_request("Invalid VM id"))?;
    if !valid_alias(&alias) {
        return Err(ApiError::bad_request("Invalid peer alias"));
    }
    let mode = match body.get("sourceMode") {
        Some(Value::String(m)) => SourceMode::parse(m),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request("sourceMode must be hidden or mounted"))?;
    let vms = st.vms.clone();
    detached(async move { vms.set_peer_source_mode(&id, &alias, mode).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/internal/v1/peer/invoke", tag = "peers",
    security(("BridgeToken" = [])), request_body = PeerInvokeBody,
    responses((status = 200, body = PeerInvokeResult),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, description = "Provider destroyed", body = ErrorBody),
              (status = 409, description = "Provider not RUNNING", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 502, description = "The provider's call failed", body = ErrorBody),
              (status = 504, description = "The provider's call timed out", body = ErrorBody)))]
pub async fn invoke(
    State(st): State<AppState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Missing bearer token"))?;
    let consumer = st.vms.peer_consumer(token, from.ip()).await?;
    if body.len() > 1024 * KIB {
        return Err(ApiError::too_large("Body too large"));
    }
    let req = InvokeRequest::parse(&body)?;
    let started = std::time::Instant::now();
    let vms = st.vms.clone();
    // Detached: a consumer that hangs up does not cut the provider's run half-way.
    let reply = detached(async move { vms.invoke_peer(consumer, req).await }).await;
    // Counted beside exec and runs (`rds_exec_total{kind="peer-invoke"}`), never in an exec log.
    let outcome = if reply.is_ok() { "ok" } else { "error" };
    let kind = [("kind", "peer-invoke")];
    st.metrics
        .inc("rds_exec_total", &[kind[0], ("result", outcome)]);
    st.metrics.observe(
        "rds_exec_duration_seconds",
        &kind,
        started.elapsed().as_secs_f64(),
    );
    let result = reply?;
    let mut bytes = Vec::with_capacity(result.get().len() + 12);
    bytes.extend_from_slice(b"{\"result\":");
    bytes.extend_from_slice(result.get().as_bytes());
    bytes.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
