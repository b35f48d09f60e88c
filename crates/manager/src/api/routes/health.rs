//! `/healthz` and `/readyz` (`docs/reference/api.md` §2).

use crate::api::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "{status: ok}")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready: backend, accel, kvmProbe, checks"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Value>) {
    let b = &st.backend_info;
    let verdict = |r: Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    let database = verdict(st.vms.ping_db().await.map_err(|e| e.to_string()));
    let storage = verdict(st.vms.storage_check().await);
    let network = verdict(st.vms.network_check().await);
    let backend = verdict(st.vms.backend_check().await);
    let pool_ready = st.vms.pool_ready().await.ok();
    let ready = [&database, &storage, &network, &backend]
        .iter()
        .all(|c| *c == "ok");
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "backend": b.backend,
        "accel": b.accel,
        "kvmProbe": b.kvm_probe,
        "backendReason": b.reason,
        // Reconciliation finished before the API opened.
        "checks": { "database": database, "reconciliation": "ok", "network": network, "storage": storage, "backend": backend },
        // Pool VMs count against no quota; operators see them here and in /metrics.
        "warmPool": { "target": st.vms.pool_target(), "ready": pool_ready },
        "templates": st.vms.templates_on(),
    });
    if ready {
        (StatusCode::OK, Json(body))
    } else {
        body["message"] = json!("Not ready");
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}
