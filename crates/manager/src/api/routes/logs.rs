//! `GET /v1/vms/:id/logs` and `/exec-logs` (`docs/reference/api.md` §3.5–3.6): readable in any
//! state.

use crate::api::error::ApiError;
use crate::api::extract::VmId;
use crate::api::schema::{ErrorBody, ExecLogPage, LogTailView};
use crate::api::AppState;
use crate::execlog::Kind;
use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A strict query integer, clamped to `min..=max` (`docs/reference/api.md` §1.5).
pub(crate) fn clamped(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(v.parse::<usize>().unwrap_or(max).clamp(min, max))
        }
        Some(_) => Err(ApiError::bad_request(format!("{name} must be an integer"))),
    }
}

#[utoipa::path(get, path = "/vms/{id}/logs", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"),
           ("type" = Option<String>, Query, description = "vmm.log (default), console.log, vmm.stderr.log"),
           ("tail" = Option<u32>, Query, description = "1..1000, default 200")),
    responses((status = 200, body = LogTailView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn vm_log(
    State(st): State<AppState>,
    VmId(id): VmId,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let name = match q.get("type") {
        None => rds_vmm::LOG_VMM,
        Some(t) => {
            crate::vmlogs::canonical(t).ok_or_else(|| ApiError::bad_request("Invalid log type"))?
        }
    };
    let tail = clamped(&q, "tail", 200, 1, 1000)?;
    let t = st.vms.vm_log(&id, name, tail).await?;
    Ok(Json(
        json!({"type": name, "lines": t.lines, "truncated": t.truncated, "updatedAt": t.updated_at}),
    ))
}

#[utoipa::path(get, path = "/vms/{id}/exec-logs", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"),
           ("limit" = Option<u32>, Query, description = "1..200, default 50"),
           ("type" = Option<String>, Query, description = "all, exec, run-ts, run-js"),
           ("before" = Option<String>, Query, description = "Entry id: only older entries")),
    responses((status = 200, body = ExecLogPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn exec_logs(
    State(st): State<AppState>,
    VmId(id): VmId,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let kind = match q.get("type").map(String::as_str) {
        None | Some("all") => None,
        Some("exec") => Some(Kind::Exec),
        Some("run-ts") => Some(Kind::RunTs),
        Some("run-js") => Some(Kind::RunJs),
        Some(_) => return Err(ApiError::bad_request("Invalid type")),
    };
    let limit = clamped(&q, "limit", 50, 1, 200)?;
    let before = match q.get("before") {
        None => None,
        Some(b) => Some(
            super::super::extract::parse_vm_id(b)
                .ok_or_else(|| ApiError::bad_request("Invalid id"))?,
        ),
    };
    let (entries, has_more) = st.vms.exec_logs(&id, kind, before, limit).await?;
    Ok(Json(json!({"entries": entries, "hasMore": has_more})))
}
