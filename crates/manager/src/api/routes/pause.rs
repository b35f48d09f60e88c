//! `POST /v1/vms/:id/pause` and `/resume` (`docs/lifetimes.md`): memory to the VM's own storage and
//! back, under the same id. Both run detached: a client that hangs up mid-way does not cut them.

use super::detached;
use crate::api::error::ApiError;
use crate::api::extract::VmId;
use crate::api::schema::{ErrorBody, VmView};
use crate::api::AppState;
use axum::extract::State;
use axum::Json;

#[utoipa::path(post, path = "/vms/{id}/pause", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 200, description = "PAUSED: memory and disk saved, no VMM running", body = VmView),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Not RUNNING, or another operation in progress", body = ErrorBody),
              (status = 500, description = "Pause failed; the VM runs on", body = ErrorBody),
              (status = 507, body = ErrorBody)))]
pub async fn pause(State(st): State<AppState>, VmId(id): VmId) -> Result<Json<VmView>, ApiError> {
    let vms = st.vms.clone();
    let vm = detached(async move { vms.pause(&id).await }).await?;
    Ok(Json(VmView::from(&vm)))
}

#[utoipa::path(post, path = "/vms/{id}/resume", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 200, description = "RUNNING where it was paused", body = VmView),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Not PAUSED, or another operation in progress", body = ErrorBody),
              (status = 500, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn resume(State(st): State<AppState>, VmId(id): VmId) -> Result<Json<VmView>, ApiError> {
    let vms = st.vms.clone();
    let vm = detached(async move { vms.resume(&id).await }).await?;
    Ok(Json(VmView::from(&vm)))
}
