//! The run-dat-sheesh manager as a library, so tests can start it in-process on port 0.
//!
//! Layers, top to bottom: `api` (HTTP) → `lifecycle` (VM operations) → `agent` | `storage` | `db` |
//! the `rds_vmm` backend. Imports only point downwards.

pub mod agent;
pub mod api;
pub mod config;
pub mod db;
pub mod execlog;
pub mod images;
pub mod lifecycle;
pub mod metrics;
pub mod model;
mod startup;
pub mod storage;
pub mod telemetry;
pub mod vmlogs;

pub use startup::{build, serve, App};

/// An error and every cause below it on one line (`a: b: c`), for messages that must carry the whole
/// chain such as `lastError` and startup errors.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
