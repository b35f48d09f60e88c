//! The one error type every route returns, and the single place that picks its HTTP status.

use hyper::StatusCode;
use rds_protocol::{messages, ErrorBody};

/// Longest `detail` sent back (`docs/reference/agent-protocol.md` §3).
const MAX_DETAIL_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Invalid input; the message is the one the spec names.
    #[error("{message}")]
    BadRequest {
        message: String,
        detail: Option<String>,
    },
    #[error("{}", messages::NOT_FOUND)]
    NotFound,
    #[error("{}", messages::METHOD_NOT_ALLOWED)]
    MethodNotAllowed { allow: &'static str },
    #[error("{}", messages::BODY_TOO_LARGE)]
    BodyTooLarge,
    #[error("{}", messages::TOO_MANY_EXECS)]
    TooManyExecs,
    /// 413 with a message of its own (`Download too large`).
    #[error("{message}")]
    TooLarge {
        message: String,
        detail: Option<String>,
    },
    /// 500 whose message the spec names (`Firewall update failed: <reason>`); the reason is not secret.
    #[error("{message}")]
    Failed { message: String },
    /// A refusal with a status and message of its own (409 for an ended process, 429 past a cap,
    /// 502 for a port nothing listens on).
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// Anything the caller cannot fix; the cause is logged, the reply stays generic.
    #[error("{context}")]
    Internal {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            detail: None,
        }
    }

    pub fn bad_request_detail(message: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            detail: Some(detail.into()),
        }
    }

    pub fn refused(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::Refused {
            status,
            message: message.into(),
        }
    }

    pub fn internal(context: &'static str, source: std::io::Error) -> Self {
        ApiError::Internal { context, source }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyExecs => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Refused { status, .. } => *status,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body sent for this error.
    pub fn body(&self) -> ErrorBody {
        match self {
            ApiError::BadRequest { message, detail } | ApiError::TooLarge { message, detail } => {
                ErrorBody {
                    message: message.clone(),
                    detail: detail.as_deref().map(clip_detail),
                }
            }
            ApiError::Internal { context, .. } => ErrorBody {
                message: messages::INTERNAL.to_string(),
                detail: Some(clip_detail(context)),
            },
            other => ErrorBody {
                message: other.to_string(),
                detail: None,
            },
        }
    }
}

fn clip_detail(detail: &str) -> String {
    detail.chars().take(MAX_DETAIL_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        assert_eq!(
            ApiError::TooManyExecs.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::TooManyExecs.body().message,
            "Too many concurrent executions"
        );
        assert_eq!(ApiError::BodyTooLarge.body().message, "Body too large");
        let long = ApiError::BadRequest {
            message: "x".into(),
            detail: Some("d".repeat(900)),
        };
        assert_eq!(long.body().detail.unwrap().len(), 500);
        let internal = ApiError::internal("spawn failed", std::io::Error::other("secret cause"));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!format!("{:?}", internal.body()).contains("secret cause"));
    }
}
