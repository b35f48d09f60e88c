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
    /// Set on a 500: what the caller sees, `message` being internal detail (host paths, tool
    /// output) that goes to the log and only with `EXPOSE_INTERNAL_ERRORS` to the caller.
    public: Option<String>,
}

/// Marks a 500 so the envelope middleware can add `requestId` and show `public` instead of
/// `detail` unless configured otherwise.
#[derive(Debug, Clone)]
pub struct InternalDetail {
    pub public: String,
    pub detail: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            public: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }

    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UPGRADE_REQUIRED, message)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::masked("Internal Server Error", detail)
    }

    /// A 500 whose caller sees `public` (a stable prefix such as `Snapshot failed`) and a request
    /// id; `detail` is logged.
    fn masked(public: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError {
            public: Some(public.into()),
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
        if let Some(public) = self.public {
            resp.extensions_mut().insert(InternalDetail {
                public,
                detail: self.message,
            });
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
        if e.is_unavailable() {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Database unavailable");
        }
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
        match e {
            L::Db(d) => d.into(),
            L::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                ApiError::internal(e.to_string())
            }
            // The reason names host paths and tool output: it is the VM's `lastError` and the
            // log's (the boot logged it), while the answer keeps the documented prefix and gets a
            // request id.
            L::BootFailed { ref id, .. } if status == StatusCode::INTERNAL_SERVER_ERROR => {
                ApiError::masked(
                    format!("VM {id} failed to start: see its lastError"),
                    e.to_string(),
                )
            }
            L::SnapshotFailed(_) => {
                tracing::error!(error = %e, "snapshot failed");
                ApiError::masked("Snapshot failed: internal error", e.to_string())
            }
            L::PauseFailed(_) => {
                tracing::error!(error = %e, "pause failed");
                ApiError::masked("Pause failed: internal error", e.to_string())
            }
            _ => ApiError::new(status, e.to_string()),
        }
    }
}

/// The HTTP status of each image failure.
impl From<crate::images::ImageError> for ApiError {
    fn from(e: crate::images::ImageError) -> Self {
        use crate::images::ImageError as E;
        if let E::Db(d) = e {
            return d.into();
        }
        let status = match &e {
            E::NotFound => StatusCode::NOT_FOUND,
            E::Invalid(_) | E::Incomplete | E::ZipMissing | E::ZipInvalid | E::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            E::BuiltInReadOnly
            | E::InUse
            | E::InUseByVm
            | E::InUseBySnapshot(_)
            | E::BuiltInCurrent => StatusCode::CONFLICT,
            E::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            E::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            E::Db(_) | E::Io { .. } | E::Internal(_) => {
                tracing::error!(error = %crate::error_chain(&e), "image operation failed");
                return ApiError::internal(crate::error_chain(&e));
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(e: crate::webhooks::WebhookError) -> ApiError {
        match e {
            crate::webhooks::WebhookError::NotFound => ApiError::not_found("Not found"),
            crate::webhooks::WebhookError::Invalid(m) => ApiError::bad_request(m),
            crate::webhooks::WebhookError::Db(e) => ApiError::from(e),
        }
    }
}

impl From<crate::auth::LoginError> for ApiError {
    fn from(e: crate::auth::LoginError) -> Self {
        match e {
            crate::auth::LoginError::Invalid => ApiError::unauthorized(e.to_string()),
            crate::auth::LoginError::Busy(b) => b.into(),
            crate::auth::LoginError::Db(d) => d.into(),
        }
    }
}
