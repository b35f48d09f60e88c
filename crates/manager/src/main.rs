//! `run-dat-sheesh`: parse the environment, check it, start the manager on `0.0.0.0:PORT`.

use rds_manager::config::Settings;
use std::collections::HashMap;
use std::process::ExitCode;

/// `docs/reference/configuration.md` §1: configuration problems exit with 78 (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

#[tokio::main]
async fn main() -> ExitCode {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let settings = match Settings::from_env(&vars) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let telemetry = match rds_manager::telemetry::init(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    let app = match rds_manager::build(&settings).await {
        Ok(app) => app,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], settings.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "config error: PORT: cannot bind {addr}: {e} (got \"{}\")",
                settings.port
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(%addr, "listening");
    if let Err(e) = rds_manager::serve(app, listener, shutdown_signal()).await {
        tracing::error!(error = %e, "server failed");
        return ExitCode::FAILURE;
    }
    tracing::info!("stopped; VMs keep running for re-adoption");
    telemetry.shutdown();
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
