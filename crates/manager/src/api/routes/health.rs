//! `/healthz` and `/readyz` (`api.md` §2).

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
    let database = match st.vms.ping_db().await {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    let ready = database == "ok";
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "backend": b.backend,
        "accel": b.accel,
        "kvmProbe": b.kvm_probe,
        "backendReason": b.reason,
        "checks": { "database": database, "reconciliation": "ok", "backend": "ok" },
    });
    if ready {
        (StatusCode::OK, Json(body))
    } else {
        body["message"] = json!("Not ready");
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}
