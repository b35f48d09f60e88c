//! HTTP: routing, auth, extraction, errors. Handlers turn requests into lifecycle calls and do no VM
//! work themselves.

mod auth;
mod error;
mod extract;
mod middleware;
mod routes;
mod validate;

pub use auth::digest as auth_digest;
pub use error::ApiError;

use crate::config::Limits;
use crate::lifecycle::VmService;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// What `/readyz` reports about the backend choice made at startup.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub backend: &'static str,
    pub accel: &'static str,
    pub kvm_probe: Option<String>,
    pub reason: String,
}

#[derive(Clone)]
pub struct AppState {
    pub vms: VmService,
    pub limits: Arc<Limits>,
    pub default_disk_mb: u64,
    pub api_key_digest: Arc<[u8; 32]>,
    pub expose_internal_errors: bool,
    pub backend_info: Arc<BackendInfo>,
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/vms", get(routes::vms::list).post(routes::vms::create))
        .route(
            "/vms/{id}",
            get(routes::vms::get).delete(routes::vms::destroy),
        )
        .route("/vms/{id}/start", post(routes::vms::start))
        .route("/vms/{id}/stop", post(routes::vms::stop))
        .route("/vms/{id}/exec", post(routes::runs::exec))
        .route("/vms/{id}/run-ts", post(routes::runs::run_ts))
        .route("/vms/{id}/run-js", post(routes::runs::run_js))
        .route("/vms/{id}/files/upload", post(routes::files::upload))
        .route("/vms/{id}/files/download", get(routes::files::download))
        .route("/vms/{id}/logs", get(routes::logs::vm_log))
        .route("/vms/{id}/exec-logs", get(routes::logs::exec_logs))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .nest("/v1", v1)
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_envelope,
        ))
        .with_state(state)
}
