//! Maps method and path to a handler; one file per endpoint.

mod exec;
mod health;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use rds_protocol::paths;

use crate::error::ApiError;
use crate::http::{self, Body};
use crate::state::AppState;

pub async fn dispatch(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let result = match (req.uri().path(), req.method()) {
        (paths::HEALTH, &Method::GET) => health::get(state).await,
        (paths::HEALTH, _) => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        (paths::EXEC, &Method::POST) => exec::post(state, req).await,
        (paths::EXEC, _) => Err(ApiError::MethodNotAllowed { allow: "POST" }),
        _ => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(|e| {
        if let ApiError::Internal { .. } = &e {
            tracing::error!(error = %crate::error_chain(&e), "request failed");
        }
        http::error(&e)
    })
}
