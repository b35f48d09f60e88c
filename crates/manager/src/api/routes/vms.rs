//! `/v1/vms` (`api.md` §3).

use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, VmId, KIB};
use crate::api::{validate, AppState};
use crate::model::VmRecord;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The public VM object (§3.1).
pub fn vm_json(vm: &VmRecord) -> Value {
    json!({
        "id": vm.id,
        "state": vm.state.as_str(),
        "cpu": vm.cpu,
        "memMb": vm.mem_mb,
        "diskSizeMb": vm.disk_size_mb,
        "guestIp": vm.guest_ip.to_string(),
        "outboundInternet": vm.outbound_internet,
        "allowIps": vm.allow_ips,
        "imageId": vm.image_id,
        "provisionMode": vm.provision_mode,
        "sourceSnapshotId": vm.source_snapshot_id,
        "peerLinks": [],
        "createdAt": vm.created_at,
        "lastError": vm.last_error,
    })
}

pub async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let vms = st.vms.list().await?;
    Ok(Json(Value::Array(vms.iter().map(vm_json).collect())))
}

pub async fn get(State(st): State<AppState>, VmId(id): VmId) -> Result<Json<Value>, ApiError> {
    Ok(Json(vm_json(&st.vms.get(&id).await?)))
}

pub async fn create(
    State(st): State<AppState>,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<Response, ApiError> {
    let req = validate::create_vm(&body, &st.limits)?;
    let vm = st.vms.create(req).await?;
    Ok((StatusCode::CREATED, Json(vm_json(&vm))).into_response())
}

pub async fn destroy(State(st): State<AppState>, VmId(id): VmId) -> Result<StatusCode, ApiError> {
    st.vms.destroy(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn start(State(st): State<AppState>, VmId(id): VmId) -> Result<StatusCode, ApiError> {
    st.vms.start(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn stop(State(st): State<AppState>, VmId(id): VmId) -> Result<StatusCode, ApiError> {
    st.vms.stop(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
