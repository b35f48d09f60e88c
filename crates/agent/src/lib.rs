//! The guest agent (`docs/reference/agent-protocol.md`): an HTTP/1.1 server on vsock that reports
//! health and runs commands in a sandbox as uid 1000. `main` wires it; the modules below do the
//! work.
//!
//! - [`config`]: settings from the environment (and the host-test hooks)
//! - [`server`]: listener, connection loop, request log line, version header
//! - [`routes`]: one file per endpoint; [`http`] and [`error`] hold what they share
//! - [`paths`]: the `/workspace` path policy; [`sandbox`] and [`cgroup`]: how a sandboxed process starts;
//!   [`runner`]: running it to completion; [`output`]: capture, caps and trimming
//! - [`archive`]: tar.gz validation, extraction and download streaming; [`fsuser`]: file work done as
//!   the sandbox user; [`wrapper`]: the run-ts/run-js entry module
//! - [`probe`]: shell and runtimes, probed once at start

pub mod archive;
pub mod cgroup;
pub mod config;
pub mod error;
pub mod fsuser;
pub mod http;
pub mod output;
pub mod paths;
pub mod probe;
pub mod processes;
pub mod routes;
pub mod runner;
pub mod sandbox;
pub mod server;
pub mod state;
pub mod stream;
pub mod terminal;
pub mod warm;
pub mod wrapper;

/// The agent's semver, sent as `X-RDS-Agent-Version` and in `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and its causes on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
