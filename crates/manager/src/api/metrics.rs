//! HTTP metrics (a route layer, so the matched pattern is known) and the `/metrics` endpoint.

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// `/v1/vms/{id}/exec` → `/v1/vms/:id/exec`, the label form of `docs/reference/api.md` §2.1.
pub fn route_label(pattern: &str) -> String {
    pattern.replace("{id}", ":id")
}

pub async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| route_label(m.as_str()))
        .unwrap_or_default();
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let m = &st.metrics;
    m.inc(
        "rds_http_requests_total",
        &[("route", &route), ("method", &method), ("status", &status)],
    );
    m.observe(
        "rds_http_request_duration_seconds",
        &[("route", &route), ("method", &method)],
        started.elapsed().as_secs_f64(),
    );
    resp
}

#[utoipa::path(get, path = "/metrics", tag = "health", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"), (status = 401)))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut gauges = vec![(
        "rds_build_info",
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("backend", st.backend_info.backend.to_string()),
        ],
        1.0,
    )];
    if let Ok(vms) = st.vms.list().await {
        let mut by_state = std::collections::BTreeMap::new();
        for vm in &vms {
            *by_state.entry(vm.state.as_str()).or_insert(0u64) += 1;
        }
        for (state, n) in by_state {
            gauges.push(("rds_vms", vec![("state", state.to_string())], n as f64));
        }
    }
    if let Ok(counts) = st.vms.snapshot_counts().await {
        for kind in ["user_overlay", "template"] {
            let n = counts
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n);
            gauges.push(("rds_snapshots", vec![("kind", kind.to_string())], n as f64));
        }
    }
    if let Ok(images) = st.images.list().await {
        for image in images {
            if let Some(seed) = &image.seed {
                let labels = vec![("image", image.id.clone()), ("status", seed.status.clone())];
                gauges.push(("rds_template_status", labels, 1.0));
            }
        }
    }
    if let Ok(counts) = st.vms.internal_counts().await {
        for (role, n) in counts {
            gauges.push((
                "rds_internal_vms",
                vec![("role", role.to_string())],
                n as f64,
            ));
        }
    }
    if let Ok(u) = st.vms.storage_usage().await {
        gauges.push(("rds_storage_used_bytes", vec![], u.used as f64));
        gauges.push(("rds_storage_capacity_bytes", vec![], u.capacity as f64));
    }
    let (destroyed, paused) = st.vms.expired_counts();
    for (action, n) in [("destroy", destroyed), ("pause", paused)] {
        let labels = vec![("action", action.to_string())];
        gauges.push(("rds_vm_expired_total", labels, n as f64));
    }
    if let Ok(n) = st.vms.pool_ready().await {
        gauges.push(("rds_warm_pool_vms", vec![], n as f64));
    }
    let body = st.metrics.render(&gauges);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
