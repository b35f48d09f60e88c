//! `/healthz` and `/readyz` (`docs/reference/api.md` §2).

use crate::api::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "{status: ok}")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready: backend, accel, kvmProbe, checks"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(st): State<AppState>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let b = &st.backend_info;
    // Reasons name paths and tool output: callers without a credential see only "failed", and the
    // reason goes to the log.
    let known = crate::api::auth::is_known(&st, &headers).await;
    let verdict = |check: &str, r: Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            tracing::warn!(check, reason = %e, "readiness check failed");
            if known {
                format!("failed: {e}")
            } else {
                "failed".to_string()
            }
        }
    };
    let database = verdict(
        "database",
        st.vms.ping_db().await.map_err(|e| e.to_string()),
    );
    let storage = verdict("storage", st.vms.storage_check().await);
    let network = verdict("network", st.vms.network_check().await);
    let backend = verdict("backend", st.vms.backend_check().await);
    let pool_ready = st.vms.pool_ready().await.ok();
    let ready = [&database, &storage, &network, &backend]
        .iter()
        .all(|c| *c == "ok");
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "backend": b.backend,
        "accel": b.accel,
        "kvmProbe": if known { b.kvm_probe.clone() } else { b.kvm_probe.as_deref().map(probe_verdict) },
        "backendReason": if known { Some(b.reason.clone()) } else { None },
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

/// `usable`, or `unusable: <step>` without the reason (which may name a device path).
fn probe_verdict(probe: &str) -> String {
    match probe.strip_prefix("unusable: ") {
        Some(rest) => format!("unusable: {}", rest.split(':').next().unwrap_or_default()),
        None => probe.to_string(),
    }
}
