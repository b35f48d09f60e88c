pub mod health;
pub mod vms;

use super::error::ApiError;
use axum::http::StatusCode;

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}
