pub mod admin;
pub mod auth;
pub mod events;
pub mod files;
pub mod health;
pub mod images;
pub mod logs;
pub mod overview;
pub mod pause;
pub mod peers;
pub mod ports;
pub mod processes;
pub mod runs;
pub mod snapshots;
pub mod terminal;
pub mod vms;
pub mod webhooks;

use super::error::ApiError;
use crate::lifecycle::LifecycleError;
use std::future::Future;
use tracing::Instrument;

/// Runs a lifecycle operation in a task of its own. axum drops a handler's future when the client
/// hangs up; an operation dropped half-way would leave a VM or a capture neither done nor rolled
/// back, so it must run where the connection cannot reach it.
pub async fn detached<T, F>(op: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, LifecycleError>> + Send + 'static,
{
    tokio::spawn(op.in_current_span())
        .await
        .map_err(|e| ApiError::internal(format!("lifecycle task failed: {e}")))?
        .map_err(ApiError::from)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}
