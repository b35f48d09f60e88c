//! `POST /v1/vms/:id/snapshots` and `/v1/snapshots` (`docs/reference/api.md` §3.10, §4).

use super::detached;
use crate::api::error::ApiError;
use crate::api::extract::{SnapshotId, VmId};
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::db::SnapshotScope;
use crate::model::{SnapshotKind, SnapshotRecord};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// A snapshot (`docs/reference/api.md` §4).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub id: String,
    /// `user_overlay` or `template`.
    pub kind: &'static str,
    pub created_at: String,
    pub cpu: u32,
    pub mem_mb: u32,
    pub disk_size_mb: u64,
    pub image_id: String,
    /// Null for templates.
    pub source_vm_id: Option<String>,
    /// The template the source VM was restored from, or null.
    pub base_seed_snapshot_id: Option<String>,
    /// Always true.
    pub has_disk: bool,
    /// Same as `hasDisk` (kept for compatibility).
    pub has_overlay: bool,
    pub has_memory: bool,
    /// True for templates.
    pub internal: bool,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// `firecracker` or `qemu`.
    pub backend: String,
}

impl From<&SnapshotRecord> for SnapshotView {
    fn from(s: &SnapshotRecord) -> Self {
        let template = s.kind == SnapshotKind::Template;
        SnapshotView {
            id: s.id.clone(),
            kind: s.kind.as_str(),
            created_at: s.created_at.clone(),
            cpu: s.cpu,
            mem_mb: s.mem_mb,
            disk_size_mb: s.disk_size_mb,
            image_id: s.image_id.clone(),
            source_vm_id: s.source_vm_id.clone().filter(|_| !template),
            base_seed_snapshot_id: s.base_seed_snapshot_id.clone(),
            has_disk: true,
            has_overlay: true,
            has_memory: s.has_memory,
            internal: template,
            size_bytes: s.size_bytes,
            backend: s.backend.clone(),
        }
    }
}

#[utoipa::path(post, path = "/vms/{id}/snapshots", tag = "snapshots", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")),
    responses((status = 201, description = "Captured; the VM was paused and resumed and stays RUNNING", body = SnapshotView),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 500, description = "Snapshot failed: <reason>; nothing left on disk", body = ErrorBody),
              (status = 507, description = "Not enough free space in STORAGE_ROOT", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    VmId(id): VmId,
) -> Result<(StatusCode, Json<SnapshotView>), ApiError> {
    let started = std::time::Instant::now();
    let vms = st.vms.clone();
    let snap = detached(async move { vms.snapshot(&id).await }).await?;
    st.metrics.observe(
        "rds_snapshot_create_duration_seconds",
        &[("memory", if snap.has_memory { "true" } else { "false" })],
        started.elapsed().as_secs_f64(),
    );
    Ok((StatusCode::CREATED, Json(SnapshotView::from(&snap))))
}

#[utoipa::path(get, path = "/snapshots", tag = "snapshots", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("scope" = Option<String>, Query, description = "user (default): user snapshots; internal: templates; all")),
    responses((status = 200, description = "Newest first", body = [SnapshotView]), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<SnapshotView>>, ApiError> {
    let scope = match q.get("scope").map(String::as_str) {
        None | Some("user") => SnapshotScope::User,
        Some("internal") => SnapshotScope::Internal,
        Some("all") => SnapshotScope::All,
        Some(_) => return Err(ApiError::bad_request("Invalid scope")),
    };
    let snaps = st.vms.list_snapshots(scope).await?;
    Ok(Json(snaps.iter().map(SnapshotView::from).collect()))
}

#[utoipa::path(get, path = "/snapshots/{id}", tag = "snapshots", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Snapshot id (snap-<uuid>)")),
    responses((status = 200, body = SnapshotView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    SnapshotId(id): SnapshotId,
) -> Result<Json<SnapshotView>, ApiError> {
    Ok(Json(SnapshotView::from(&st.vms.get_snapshot(&id).await?)))
}

#[utoipa::path(delete, path = "/snapshots/{id}", tag = "snapshots", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Snapshot id (snap-<uuid>)")),
    responses((status = 204, description = "Files and row removed; VMs restored from it are unaffected"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    SnapshotId(id): SnapshotId,
) -> Result<StatusCode, ApiError> {
    let vms = st.vms.clone();
    detached(async move { vms.delete_snapshot(&id).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
