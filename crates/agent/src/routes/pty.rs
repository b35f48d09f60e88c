//! `POST /pty`: switches to `rds-pty` and hands the connection to [`crate::terminal`].

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rds_protocol::pty::{MAX_TERMINALS, UPGRADE};

use crate::error::ApiError;
use crate::http::{self, Body};
use crate::state::AppState;

pub async fn post(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    http::require_upgrade(&req, UPGRADE)?;
    let permit = state.terminals.clone().try_acquire_owned().map_err(|_| {
        ApiError::refused(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many terminals (at most {MAX_TERMINALS})"),
        )
    })?;
    let on_upgrade = hyper::upgrade::on(req);
    let state = state.clone();
    tokio::spawn(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => crate::terminal::serve(state, TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "terminal upgrade failed"),
        }
    });
    Ok(http::switching(UPGRADE))
}
