//! HTTP: routing, auth, extraction, errors. Handlers turn requests into lifecycle calls and do no VM
//! work themselves.

mod auth;
mod error;
mod extract;
pub mod metrics;
mod middleware;
mod openapi;
pub mod ratelimit;
mod routes;
mod schema;
mod swagger;
mod validate;

pub use auth::digest as auth_digest;
pub use error::ApiError;

use crate::config::Limits;
use crate::lifecycle::VmService;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    pub images: crate::images::ImageService,
    pub limits: Arc<Limits>,
    pub default_disk_mb: u64,
    pub api_key_digest: Arc<[u8; 32]>,
    pub expose_internal_errors: bool,
    pub backend_info: Arc<BackendInfo>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub limiter: Arc<ratelimit::Limiter>,
}

/// The router and the OpenAPI document built from the same registrations.
pub fn router(state: AppState) -> Router {
    let (router, _) = router_and_doc(state);
    router
}

pub fn router_and_doc(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    use routes::{files, health, images, logs, runs, snapshots, vms};
    let v1 = OpenApiRouter::new()
        .routes(routes!(vms::list, vms::create))
        .routes(routes!(vms::get, vms::destroy))
        .routes(routes!(vms::start))
        .routes(routes!(vms::stop))
        .routes(routes!(runs::exec))
        .routes(routes!(runs::run_ts))
        .routes(routes!(runs::run_js))
        .routes(routes!(files::upload))
        .routes(routes!(files::download))
        .routes(routes!(logs::vm_log))
        .routes(routes!(logs::exec_logs))
        .routes(routes!(snapshots::create))
        .routes(routes!(snapshots::list))
        .routes(routes!(snapshots::get, snapshots::delete))
        .routes(routes!(images::list, images::create))
        .routes(routes!(images::get, images::delete))
        .routes(routes!(images::put_kernel))
        .routes(routes!(images::put_rootfs))
        .routes(routes!(images::put_initrd, images::delete_initrd))
        .routes(routes!(images::put_bundle))
        .routes(routes!(images::set_default))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::enforce,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let scrape = OpenApiRouter::new()
        .routes(routes!(metrics::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_scraper,
        ));
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .merge(scrape)
        .nest("/v1", v1)
        .split_for_parts();
    doc.paths
        .paths
        .insert("/openapi.json".into(), openapi::self_path());
    let json = Arc::new(doc.to_json().expect("OpenAPI document serialises"));
    let router = router
        .route("/openapi.json", get(move || openapi::serve(json.clone())))
        .route("/swagger", get(swagger::index))
        .route("/swagger/", get(swagger::index))
        .route("/swagger/{file}", get(swagger::file))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_envelope,
        ))
        .with_state(state);
    (router, doc)
}
