//! `GET /v1/admin/overview` (key or cookie, `docs/reference/api-admin.md` Overview): what the
//! console's dashboard shows, from the DB and real host figures.

use crate::api::error::ApiError;
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::hoststats;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub counts: Counts,
    pub cpu: Cpu,
    pub memory: Bytes,
    pub storage: Bytes,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// User VMs that are not deleted.
    pub active_vms: u64,
    /// Warm-pool VMs.
    pub warm_vms: u64,
    pub snapshots: u64,
    pub templates: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// Host CPU busy fraction 0..1 over the last 500 ms; null when unknown.
    pub usage_pct: Option<f64>,
    pub capacity_cores: u64,
    /// Sum of `cpu` over RUNNING VMs.
    pub used_cores: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bytes {
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

#[utoipa::path(get, path = "/admin/overview", tag = "admin", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    responses((status = 200, description = "Counts and host figures", body = Overview),
              (status = 401, body = ErrorBody)))]
pub async fn overview(State(st): State<AppState>) -> Result<Json<Overview>, ApiError> {
    let (counts, storage, memory) = tokio::join!(
        st.vms.overview_counts(),
        st.vms.storage_usage(),
        hoststats::memory()
    );
    let (counts, storage) = (counts?, storage?);
    let (mem_used, mem_total) = memory.unwrap_or((0, 0));
    Ok(Json(Overview {
        counts: Counts {
            active_vms: counts.active_vms,
            warm_vms: counts.warm_vms,
            snapshots: counts.snapshots,
            templates: counts.templates,
        },
        cpu: Cpu {
            usage_pct: st.cpu.get(),
            capacity_cores: hoststats::cores(),
            used_cores: counts.used_cores,
        },
        memory: Bytes {
            used_bytes: mem_used,
            capacity_bytes: mem_total,
        },
        storage: Bytes {
            used_bytes: storage.used,
            capacity_bytes: storage.capacity,
        },
    }))
}
