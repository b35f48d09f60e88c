//! Maps method and path to a handler; one file per endpoint (or per small family of them).

mod exec;
mod files;
mod firewall;
mod health;
pub(crate) mod net_config;
mod processes;
mod pty;
mod run;
mod system;
mod tunnel;

pub(crate) use exec::{open_cwd, validate_env};

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use rds_protocol::paths;

use crate::error::ApiError;
use crate::http::{self, Body};
use crate::state::AppState;
use run::Runtime;
use std::sync::Arc;

/// `state` is shared with the tasks of streamed calls, which outlive the handler.
pub async fn dispatch(state: &Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let post = |allowed: bool| {
        if allowed {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed { allow: "POST" })
        }
    };
    let is_post = req.method() == Method::POST;
    let result = match req.uri().path() {
        paths::HEALTH if req.method() == Method::GET => health::get(state).await,
        paths::HEALTH => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        paths::FILES_DOWNLOAD if req.method() == Method::GET => files::download(state, req).await,
        paths::FILES_DOWNLOAD => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        p if p == paths::PROCESSES || p.starts_with("/processes/") => {
            processes::route(state, req).await
        }
        path => match post(is_post) {
            Err(e) if is_known_post(path) => Err(e),
            _ => match path {
                paths::EXEC => exec::post(state, req).await,
                paths::RUN_TS => run::post(state, req, Runtime::Deno).await,
                paths::RUN_JS => run::post(state, req, Runtime::Node).await,
                paths::FILES_UPLOAD => files::upload(state, req).await,
                paths::REPLACE_TREE => files::replace_tree(state, req).await,
                paths::FIREWALL_ALLOWLIST => firewall::post(req).await,
                paths::NET_CONFIG => net_config::post(state, req).await,
                paths::TIME_SYNC => system::time_sync(req).await,
                paths::ENTROPY_RESEED => system::entropy_reseed(state, req).await,
                paths::FS_SYNC => system::fs_sync().await,
                paths::TUNNEL => tunnel::post(req).await,
                paths::PTY => pty::post(state, req).await,
                _ => Err(ApiError::NotFound),
            },
        },
    };
    result.unwrap_or_else(|e| {
        if let ApiError::Internal { .. } = &e {
            tracing::error!(error = %crate::error_chain(&e), "request failed");
        }
        http::error(&e)
    })
}

fn is_known_post(path: &str) -> bool {
    [
        paths::EXEC,
        paths::RUN_TS,
        paths::RUN_JS,
        paths::FILES_UPLOAD,
        paths::REPLACE_TREE,
        paths::FIREWALL_ALLOWLIST,
        paths::NET_CONFIG,
        paths::TIME_SYNC,
        paths::ENTROPY_RESEED,
        paths::FS_SYNC,
        paths::TUNNEL,
        paths::PTY,
    ]
    .contains(&path)
}
