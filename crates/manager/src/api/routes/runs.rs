//! `POST /v1/vms/:id/exec`, `/run-ts`, `/run-js` (`api.md` §3.7–3.8).

use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, VmId, KIB};
use crate::api::{validate, AppState};
use crate::lifecycle::Runtime;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

type Body1M = JsonObject<{ 1024 * KIB }>;

pub async fn exec(
    State(st): State<AppState>,
    VmId(id): VmId,
    JsonObject(body): Body1M,
) -> Result<Json<Value>, ApiError> {
    let (req, timeout_ms) = validate::exec(&body, &st.limits)?;
    let result = st.vms.exec(&id, &req, timeout_ms).await?;
    Ok(Json(
        serde_json::to_value(result).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

pub async fn run_ts(st: State<AppState>, id: VmId, body: Body1M) -> Result<Response, ApiError> {
    run(st, id, body, Runtime::Deno).await
}

pub async fn run_js(st: State<AppState>, id: VmId, body: Body1M) -> Result<Response, ApiError> {
    run(st, id, body, Runtime::Node).await
}

async fn run(
    State(st): State<AppState>,
    VmId(id): VmId,
    JsonObject(body): Body1M,
    rt: Runtime,
) -> Result<Response, ApiError> {
    let (req, timeout_ms) = validate::run(&body, &st.limits, rt == Runtime::Deno)?;
    let reply = st.vms.run(&id, rt, req, timeout_ms).await?;
    // Serialised from the raw agent JSON, so `result` keeps every digit as produced.
    let bytes = serde_json::to_vec(&reply).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
