//! `/v1/vms` (`docs/reference/api.md` §3).

use super::detached;
use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, VmId, KIB};
use crate::api::schema::{CreateVmBody, ErrorBody, PatchVmBody, TimeoutBody, VmStateName, VmView};
use crate::api::{validate, AppState};
use crate::model::{VmRecord, VmState};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;

/// The states a list can be filtered by (every state a listed VM can be in).
const LISTED_STATES: [VmState; 7] = [
    VmState::Created,
    VmState::Starting,
    VmState::Running,
    VmState::Stopping,
    VmState::Stopped,
    VmState::Paused,
    VmState::Error,
];

/// `GET /v1/vms` filters: VMs in one of `states` (any state when empty) whose metadata holds every
/// pair of `metadata`.
#[derive(Debug, Default)]
struct ListFilter {
    states: Vec<VmState>,
    metadata: Vec<(String, String)>,
}

impl ListFilter {
    /// `state=<S>` (repeatable: any of them) and `metadata.<key>=<value>` (repeatable: all of
    /// them); other parameters are ignored.
    fn parse(query: &[(String, String)]) -> Result<ListFilter, ApiError> {
        let mut f = ListFilter::default();
        for (name, value) in query {
            if name == "state" {
                let state = VmState::parse(value)
                    .filter(|s| LISTED_STATES.contains(s))
                    .ok_or_else(|| {
                        let names: Vec<&str> = LISTED_STATES.iter().map(|s| s.as_str()).collect();
                        ApiError::bad_request(format!("state must be one of {}", names.join(", ")))
                    })?;
                f.states.push(state);
            } else if let Some(key) = name.strip_prefix("metadata.") {
                f.metadata.push((key.to_string(), value.clone()));
            }
        }
        Ok(f)
    }

    fn matches(&self, vm: &VmRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&vm.state))
            && self
                .metadata
                .iter()
                .all(|(k, v)| vm.metadata.get(k) == Some(v))
    }
}

#[utoipa::path(get, path = "/vms", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("state" = Option<VmStateName>, Query,
                description = "Only VMs in this state; repeat the parameter for any of several states"),
           ("metadata.<key>" = Option<String>, Query,
                description = "`metadata.<key>=<value>`: only VMs whose metadata has exactly this value under <key>; \
                               repeat with other keys, all must match")),
    responses((status = 200, description = "User VMs, newest first", body = [VmView]),
              (status = 400, description = "A state that is not one of the VM states", body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<VmView>>, ApiError> {
    let filter = ListFilter::parse(&query)?;
    let vms = st.vms.list().await?;
    let shown = vms.iter().filter(|vm| filter.matches(vm));
    Ok(Json(shown.map(VmView::from).collect()))
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
    if !req.secret_env.is_empty() && !st.vms.secret_env_enabled() {
        return Err(ApiError::bad_request(crate::secret_env::NEEDS_KEY));
    }
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

#[utoipa::path(patch, path = "/vms/{id}", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    request_body = PatchVmBody,
    responses((status = 200, description = "The VM with its metadata merged", body = VmView),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Another operation held the VM for too long", body = ErrorBody)))]
pub async fn update(
    State(st): State<AppState>,
    VmId(id): VmId,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<Json<VmView>, ApiError> {
    let changes = validate::patch_vm(&body)?;
    let vm = if changes.is_empty() {
        st.vms.get(&id).await?
    } else {
        st.vms.patch_metadata(&id, &changes).await?
    };
    Ok(Json(VmView::from(&vm)))
}

#[utoipa::path(post, path = "/vms/{id}/timeout", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    request_body = TimeoutBody,
    responses((status = 200, description = "The VM with its new `expiresAt` (null: no deadline)", body = VmView),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Not RUNNING, STOPPED or PAUSED, or busy", body = ErrorBody)))]
pub async fn set_timeout(
    State(st): State<AppState>,
    VmId(id): VmId,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<Json<VmView>, ApiError> {
    let (timeout_sec, action) = validate::set_timeout(&body, &st.limits)?;
    let vm = st.vms.set_timeout(&id, timeout_sec, action).await?;
    Ok(Json(VmView::from(&vm)))
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
