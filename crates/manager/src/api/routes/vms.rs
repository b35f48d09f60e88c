//! `/v1/vms` (`docs/reference/api.md` §3).

use super::detached;
use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, VmId, KIB};
use crate::api::schema::{CreateVmBody, ErrorBody, VmView};
use crate::api::{validate, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

#[utoipa::path(get, path = "/vms", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    responses((status = 200, description = "User VMs, newest first", body = [VmView]),
              (status = 401, body = ErrorBody)))]
pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<VmView>>, ApiError> {
    let vms = st.vms.list().await?;
    Ok(Json(vms.iter().map(VmView::from).collect()))
}

#[utoipa::path(get, path = "/vms/{id}", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 200, body = VmView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(State(st): State<AppState>, VmId(id): VmId) -> Result<Json<VmView>, ApiError> {
    Ok(Json(VmView::from(&st.vms.get(&id).await?)))
}

#[utoipa::path(post, path = "/vms", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    request_body = CreateVmBody,
    responses((status = 201, description = "RUNNING", body = VmView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 500, body = ErrorBody), (status = 502, body = ErrorBody),
              (status = 503, body = ErrorBody), (status = 504, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<(StatusCode, Json<VmView>), ApiError> {
    let req = validate::create_vm(&body, &st.limits)?;
    let started = std::time::Instant::now();
    let vms = st.vms.clone();
    let created = detached(async move { vms.create(req).await }).await;
    // How the VM reached RUNNING; a failed create ends on the boot path (the restore fallback).
    let mode = match &created {
        Ok(vm) => vm.provision_mode.clone().unwrap_or_else(|| "boot".into()),
        Err(_) => "boot".into(),
    };
    let result = if created.is_ok() { "ok" } else { "error" };
    st.metrics.inc(
        "rds_vm_create_total",
        &[("mode", &mode), ("result", result)],
    );
    let vm = created?;
    st.metrics.observe(
        "rds_vm_create_duration_seconds",
        &[("mode", &mode)],
        started.elapsed().as_secs_f64(),
    );
    Ok((StatusCode::CREATED, Json(VmView::from(&vm))))
}

#[utoipa::path(delete, path = "/vms/{id}", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 204, description = "Destroyed"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn destroy(State(st): State<AppState>, VmId(id): VmId) -> Result<StatusCode, ApiError> {
    st.vms.destroy(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/vms/{id}/start", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 204, description = "RUNNING again"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 500, body = ErrorBody), (status = 502, body = ErrorBody),
              (status = 504, body = ErrorBody)))]
pub async fn start(State(st): State<AppState>, VmId(id): VmId) -> Result<StatusCode, ApiError> {
    let started = std::time::Instant::now();
    st.vms.start(&id).await?;
    st.metrics.observe(
        "rds_vm_start_duration_seconds",
        &[],
        started.elapsed().as_secs_f64(),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/vms/{id}/stop", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 204, description = "The VMM has exited; disk and logs kept"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(State(st): State<AppState>, VmId(id): VmId) -> Result<StatusCode, ApiError> {
    let started = std::time::Instant::now();
    st.vms.stop(&id).await?;
    st.metrics.observe(
        "rds_vm_stop_duration_seconds",
        &[],
        started.elapsed().as_secs_f64(),
    );
    Ok(StatusCode::NO_CONTENT)
}
