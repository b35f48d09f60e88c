//! The API's one error type. Its status is chosen here and only here; handlers just use `?`.

use crate::agent::AgentError;
use crate::lifecycle::LifecycleError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Internal detail: replaced by `Internal Server Error` unless `EXPOSE_INTERNAL_ERRORS`.
    internal: bool,
}

/// Marks a 500 so the envelope middleware can add `requestId` and hide the text unless configured.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            internal: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            internal: true,
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response();
        if self.internal {
            resp.extensions_mut().insert(InternalDetail(self.message));
        }
        resp
    }
}

impl From<crate::auth::Busy> for ApiError {
    fn from(e: crate::auth::Busy) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        tracing::error!(error = %e, "database error");
        ApiError::internal(e.to_string())
    }
}

impl From<crate::auth::KeyError> for ApiError {
    fn from(e: crate::auth::KeyError) -> Self {
        match e {
            crate::auth::KeyError::Busy(b) => b.into(),
            crate::auth::KeyError::Db(d) => d.into(),
        }
    }
}

fn agent_status(e: &AgentError) -> (StatusCode, String) {
    match e {
        AgentError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "Agent unreachable".into()),
        AgentError::Timeout(ms) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("Agent did not answer within {ms} ms"),
        ),
        // Agent 4xx are the caller's input errors: passed through with their message.
        AgentError::Status { status, message } if (400..500).contains(status) => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            message.clone(),
        ),
        AgentError::Status { message, .. } => {
            (StatusCode::BAD_GATEWAY, format!("Agent error: {message}"))
        }
        AgentError::Invalid(reason) => (
            StatusCode::BAD_GATEWAY,
            format!("Agent response invalid: {reason}"),
        ),
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as L;
        let status = match &e {
            L::NotFound(_) | L::ImageNotFound | L::SnapshotNotFound | L::OverlayNotFound => {
                StatusCode::NOT_FOUND
            }
            L::NotRunning(_)
            | L::WrongState { .. }
            | L::NotInStates { .. }
            | L::Busy { .. }
            | L::NoLongerRunning(_)
            | L::ActiveTemplate { .. }
            | L::BeingRestored(_) => StatusCode::CONFLICT,
            L::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            L::NoAddress => StatusCode::SERVICE_UNAVAILABLE,
            L::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            L::ImageIncomplete
            | L::NoDefaultImage
            | L::NotAnOverlay
            | L::SnapshotImageMismatch { .. }
            | L::DiskSmallerThanSnapshot(_)
            | L::Invalid(_) => StatusCode::BAD_REQUEST,
            // The reason is the caller's diagnosis (`docs/reference/api.md` §3.10), like a failed
            // boot's.
            L::SnapshotFailed(_) | L::PauseFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            L::BootFailed { cause, .. } => match cause {
                crate::lifecycle::BootFailure::Host => StatusCode::INTERNAL_SERVER_ERROR,
                crate::lifecycle::BootFailure::AgentUnreachable => StatusCode::BAD_GATEWAY,
                crate::lifecycle::BootFailure::AgentTimeout => StatusCode::GATEWAY_TIMEOUT,
            },
            L::Agent(a) => {
                let (status, message) = agent_status(a);
                return ApiError::new(status, message);
            }
            L::Db(_) | L::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            L::Refused { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            L::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            L::Peer { kind, .. } => {
                use crate::lifecycle::PeerFailure as P;
                match kind {
                    P::Invalid => StatusCode::BAD_REQUEST,
                    P::Unauthorized => StatusCode::UNAUTHORIZED,
                    P::Forbidden => StatusCode::FORBIDDEN,
                    P::NotFound => StatusCode::NOT_FOUND,
                    P::Conflict => StatusCode::CONFLICT,
                    P::ProviderFailed => StatusCode::BAD_GATEWAY,
                    P::Timeout => StatusCode::GATEWAY_TIMEOUT,
                }
            }
        };
        if matches!(e, L::Db(_) | L::Internal(_)) {
            tracing::error!(error = %e, "internal error");
            return ApiError::internal(e.to_string());
        }
        ApiError::new(status, e.to_string())
    }
}
