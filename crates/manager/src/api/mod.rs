//! HTTP: routing, auth, extraction, errors. Handlers turn requests into lifecycle calls and do no
//! VM work themselves.

mod auth;
mod console;
mod docs_site;
mod error;
mod extract;
pub mod metrics;
mod middleware;
mod openapi;
pub mod ratelimit;
mod routes;
mod schema;
mod sources;
mod swagger;
mod validate;

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
    pub auth: crate::auth::AuthService,
    pub activity: crate::activity::Activity,
    pub webhooks: crate::webhooks::Webhooks,
    /// Host CPU busy fraction, sampled in the background for the overview.
    pub cpu: crate::hoststats::CpuUsage,
    pub expose_internal_errors: bool,
    pub backend_info: Arc<BackendInfo>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub limiter: Arc<ratelimit::Limiter>,
    /// Requests from these addresses are guests' (`sources::refuse_guests`).
    pub vm_subnet: crate::config::Subnet,
}

/// The router and the OpenAPI document built from the same registrations.
pub fn router(state: AppState) -> Router {
    let (router, _) = router_and_doc(state);
    router
}

pub fn router_and_doc(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    use routes::{
        admin, auth as login, events, files, health, images, logs, overview, runs, snapshots,
    };
    use routes::{pause, peers, ports, processes, terminal, vms, webhooks};
    let v1 = OpenApiRouter::new()
        .routes(routes!(vms::list, vms::create))
        .routes(routes!(vms::get, vms::destroy))
        .routes(routes!(vms::start))
        .routes(routes!(vms::stop))
        .routes(routes!(vms::update))
        .routes(routes!(vms::set_timeout))
        .routes(routes!(pause::pause))
        .routes(routes!(pause::resume))
        .routes(routes!(peers::sync))
        .routes(routes!(peers::patch))
        .routes(routes!(runs::exec))
        .routes(routes!(runs::run_ts))
        .routes(routes!(runs::run_js))
        .routes(routes!(processes::list, processes::start))
        .routes(routes!(processes::get))
        .routes(routes!(processes::output))
        .routes(routes!(processes::stdin))
        .routes(routes!(processes::signal))
        .routes(routes!(processes::wait))
        .route("/vms/{id}/pty", axum::routing::get(terminal::open))
        .route(
            "/vms/{id}/ports/{port}",
            axum::routing::any(ports::proxy_root),
        )
        .route(
            "/vms/{id}/ports/{port}/",
            axum::routing::any(ports::proxy_root),
        )
        .route(
            "/vms/{id}/ports/{port}/{*rest}",
            axum::routing::any(ports::proxy),
        )
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
        .routes(routes!(admin::activity))
        .routes(routes!(events::events))
        .routes(routes!(admin::list_keys, admin::create_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(overview::overview))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::update_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::enforce,
        ))
        .route_layer(axum::middleware::from_fn(auth::check_csrf))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_principal,
        ));
    // Outside `/v1`: no principal needed, no CSRF check (`docs/reference/api.md` §1.3); login is
    // rate limited.
    let session = OpenApiRouter::new()
        .routes(routes!(login::login))
        .routes(routes!(login::logout))
        .routes(routes!(login::me))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::enforce,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ));
    // Guests' one route: a bridge token instead of a principal (`docs/peers.md`).
    let internal = OpenApiRouter::new()
        .routes(routes!(peers::invoke))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::enforce,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
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
        .merge(session)
        .merge(internal)
        .nest("/v1", v1)
        .split_for_parts();
    doc.paths
        .paths
        .insert("/openapi.json".into(), openapi::self_path());
    let json = Arc::new(openapi::render(&doc, &state.limits));
    let router = router
        .route("/openapi.json", get(move || openapi::serve(json.clone())))
        .route("/swagger", get(swagger::index))
        .route("/swagger/", get(swagger::index))
        .route("/swagger/{file}", get(swagger::file))
        .merge(docs_site::routes())
        .merge(console::routes())
        .fallback(console::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sources::refuse_guests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_envelope,
        ))
        .with_state(state);
    (router, doc)
}
