//! The run-dat-sheesh manager as a library, so tests can start it in-process on port 0.
//!
//! Layers, top to bottom: `api` (HTTP) → `lifecycle` (VM operations) → `agent` | `storage` | `db` |
//! the `rds_vmm` backend. Imports only point downwards.

pub mod activity;
pub mod agent;
pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod execlog;
pub mod hoststats;
pub mod images;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod peers;
pub mod secret_env;
mod startup;
pub mod storage;
pub mod telemetry;
pub mod vmlogs;
pub mod webhooks;

pub use startup::{build, serve, App};

/// An error and every cause below it on one line (`a: b: c`), for messages that must carry the
/// whole chain such as `lastError` and startup errors.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Runs the cleanup `job` now and then every `every` for the life of the runtime, logging how many
/// rows it removed (`what`) or why it failed.
pub(crate) fn spawn_cleanup<F, Fut>(what: &'static str, every: std::time::Duration, job: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, db::DbError>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match job().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "{what}"),
                Err(e) => tracing::warn!(error = %e, "{what}: failed"),
            }
        }
    });
}
