pub mod files;
pub mod health;
pub mod images;
pub mod logs;
pub mod runs;
pub mod vms;

use super::error::ApiError;
use axum::http::StatusCode;

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}
