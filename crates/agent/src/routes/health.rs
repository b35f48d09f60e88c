//! `GET /health`: liveness plus what the image offers.

use std::time::Duration;

use hyper::{Response, StatusCode};
use rds_protocol::{Health, Runtimes, PROTOCOL_VERSION};

use crate::error::ApiError;
use crate::http::{self, Body};
use crate::state::AppState;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// How long a health call waits for the first runtime probe before reporting what it has.
const PROBE_WAIT: Duration = Duration::from_secs(2);

pub async fn get(state: &AppState) -> Result<Response<Body>, ApiError> {
    let boot_id = std::fs::read_to_string(BOOT_ID)
        .map_err(|e| ApiError::internal("cannot read boot_id", e))?;
    let mut runtimes = state.runtimes.clone();
    let probed = tokio::time::timeout(PROBE_WAIT, runtimes.wait_for(Option::is_some)).await;
    let runtimes: Runtimes = match probed {
        Ok(Ok(found)) => found.clone().unwrap_or_default(),
        _ => Runtimes::default(),
    };
    let health = Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
        protocol: PROTOCOL_VERSION,
        boot_id: boot_id.trim().to_string(),
        shell: state.shell.kind,
        runtimes,
    };
    Ok(http::json(StatusCode::OK, &health))
}
