//! `/v1/vms/:id/processes…` (`docs/api.md` "Processes"): background processes with stdin,
//! signals, bounded output read by offset or followed as JSON lines.

use super::detached;
use crate::api::error::ApiError;
use crate::api::extract::{parse_vm_id, JsonObject, VmId, KIB};
use crate::api::schema::{
    ErrorBody, ProcessOutputView, ProcessSignalBody, ProcessStartBody, ProcessStdinBody,
    ProcessView, StreamLine,
};
use crate::api::{validate, AppState};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rds_protocol::process::StdinRequest;
use serde_json::Value;
use std::collections::HashMap;

fn ids(id: &str, pid: String) -> Result<(String, String), ApiError> {
    let id = parse_vm_id(id).ok_or_else(|| ApiError::bad_request("Invalid VM id"))?;
    Ok((id, pid))
}

#[utoipa::path(post, path = "/vms/{id}/processes", tag = "processes", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")), request_body = ProcessStartBody,
    responses((status = 201, body = ProcessView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 429, description = "Too many processes running in the VM", body = ErrorBody),
              (status = 501, description = "The VM's image predates background processes", body = ErrorBody),
              (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn start(
    State(st): State<AppState>,
    VmId(id): VmId,
    JsonObject(body): JsonObject<{ 1024 * KIB }>,
) -> Result<Response, ApiError> {
    let (req, _) = validate::process(&body, &st.limits)?;
    let vms = st.vms.clone();
    let info = detached(async move { vms.start_process(&id, req).await }).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[utoipa::path(get, path = "/vms/{id}/processes", tag = "processes", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 200, body = Vec<ProcessView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 501, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    VmId(id): VmId,
) -> Result<Json<Vec<rds_protocol::process::ProcessInfo>>, ApiError> {
    Ok(Json(st.vms.list_processes(&id).await?))
}

#[utoipa::path(get, path = "/vms/{id}/processes/{pid}", tag = "processes", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"), ("pid" = String, Path, description = "Process id")),
    responses((status = 200, body = ProcessView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 501, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<Json<rds_protocol::process::ProcessInfo>, ApiError> {
    let (id, pid) = ids(&id, pid)?;
    Ok(Json(st.vms.process(&id, &pid).await?))
}

#[utoipa::path(get, path = "/vms/{id}/processes/{pid}/output", tag = "processes", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"), ("pid" = String, Path, description = "Process id"),
           ("offset" = Option<u64>, Query, description = "Byte offset to read from (default 0)"),
           ("follow" = Option<bool>, Query, description = "Stream JSON lines until the process ends (also with `Accept: application/x-ndjson`)")),
    responses((status = 200, description = "Output from `offset`; followed, JSON lines ending with an `exit` line", content((ProcessOutputView = "application/json"), (StreamLine = "application/x-ndjson"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 501, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn output(
    State(st): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, pid) = ids(&id, pid)?;
    let offset = match q.get("offset") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("offset must be a non-negative integer"))?,
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => super::runs::wants_stream(&headers),
        Some("true") | Some("1") => true,
        Some(_) => return Err(ApiError::bad_request("follow must be true or false")),
    };
    if follow {
        let lines = st.vms.follow_process(&id, &pid, offset).await?;
        return Ok((
            [
                (header::CONTENT_TYPE, rds_protocol::stream::NDJSON),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            axum::body::Body::from_stream(lines),
        )
            .into_response());
    }
    let v: Value = st.vms.process_output(&id, &pid, offset).await?;
    Ok(Json(v).into_response())
}

#[utoipa::path(post, path = "/vms/{id}/processes/{pid}/stdin", tag = "processes", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"), ("pid" = String, Path, description = "Process id")),
    request_body = ProcessStdinBody,
    responses((status = 204, description = "Written"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "The process has exited or its stdin is closed", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 501, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn stdin(
    State(st): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
    JsonObject(body): JsonObject<{ 1024 * KIB + 4 * KIB }>,
) -> Result<StatusCode, ApiError> {
    let (id, pid) = ids(&id, pid)?;
    let data = match body.get("data") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad_request("data must be a string")),
    };
    let eof = match body.get("eof") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("eof must be a boolean")),
    };
    if data.len() > rds_protocol::process::MAX_STDIN_BYTES {
        return Err(ApiError::too_large("Body too large"));
    }
    st.vms
        .process_stdin(&id, &pid, StdinRequest { data, eof })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/vms/{id}/processes/{pid}/signal", tag = "processes", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"), ("pid" = String, Path, description = "Process id")),
    request_body = ProcessSignalBody,
    responses((status = 204, description = "Sent to the process group"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "The process has exited", body = ErrorBody), (status = 501, body = ErrorBody),
              (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn signal(
    State(st): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
    JsonObject(body): JsonObject<{ 4 * KIB }>,
) -> Result<StatusCode, ApiError> {
    let (id, pid) = ids(&id, pid)?;
    let signal = match body.get("signal") {
        Some(Value::String(s)) if rds_protocol::process::signal_number(s).is_some() => s.clone(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "signal must be one of {}",
                rds_protocol::process::SIGNALS.join(", ")
            )))
        }
    };
    st.vms.process_signal(&id, &pid, signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/vms/{id}/processes/{pid}/wait", tag = "processes", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"), ("pid" = String, Path, description = "Process id"),
           ("timeoutMs" = Option<u64>, Query, description = "1..600000, default 30000: how long to wait")),
    responses((status = 200, description = "The process once it ended, or as it is when the wait ran out", body = ProcessView),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 501, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn wait(
    State(st): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<rds_protocol::process::ProcessInfo>, ApiError> {
    let (id, pid) = ids(&id, pid)?;
    let timeout_ms = match q.get("timeoutMs") {
        None => 30_000,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=600_000).contains(t))
            .ok_or_else(|| {
                ApiError::bad_request("timeoutMs must be an integer from 1 to 600000")
            })?,
    };
    Ok(Json(st.vms.wait_process(&id, &pid, timeout_ms).await?))
}
