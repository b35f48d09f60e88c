//! `GET /health`: liveness plus what the image offers.

use hyper::{Response, StatusCode};
use rds_protocol::{Health, Runtimes, PROTOCOL_VERSION};

use crate::error::ApiError;
use crate::http::{self, Body};
use crate::state::AppState;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

pub async fn get(state: &AppState) -> Result<Response<Body>, ApiError> {
    let boot_id = std::fs::read_to_string(BOOT_ID)
        .map_err(|e| ApiError::internal("cannot read boot_id", e))?;
    // Never wait for the runtime probe: readiness polls /health during boot, and a cold
    // `deno --version` under TCG takes seconds. Until the probe is done both runtimes are null.
    let runtimes: Runtimes = state.runtimes.borrow().clone().unwrap_or_default();
    let health = Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
        protocol: PROTOCOL_VERSION,
        boot_id: boot_id.trim().to_string(),
        shell: state.shell.kind,
        runtimes,
        agent_rss_kb: own_rss_kb(),
        features: rds_protocol::FEATURES.map(String::from).to_vec(),
        warm_execs: Some(state.warm.used()),
    };
    Ok(http::json(StatusCode::OK, &health))
}

fn own_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
