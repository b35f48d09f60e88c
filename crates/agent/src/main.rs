//! `rds-agent`: reads its settings, probes the image, and serves until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use rds_agent::cgroup::Sandboxes;
use rds_agent::config::{Listen, Settings};
use rds_agent::probe::{self, ShellInfo};
use rds_agent::server::{self, Listener};
use rds_agent::state::AppState;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(
            EnvFilter::try_from_env("RDS_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = match Settings::from_env(|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "invalid settings");
            return ExitCode::from(2);
        }
    };
    // A small runtime keeps the idle footprint low; the agent is I/O-bound.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> ExitCode {
    if let Listen::Vsock { .. } = settings.listen {
        // In the guest the agent must outlive any sandboxed process under memory pressure.
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
            tracing::warn!(error = %e, "cannot set oom_score_adj");
        }
    }
    let listener = match Listener::bind(&settings.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %rds_agent::error_chain(&e), "startup failed");
            return ExitCode::FAILURE;
        }
    };
    let shell = ShellInfo::probe();
    let runtimes = probe::spawn_runtime_probe();
    let cgroups = settings.cgroup.as_deref().and_then(|dir| match Sandboxes::setup(dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::info!(reason = %rds_agent::error_chain(&e), "running without sandbox cgroups");
            None
        }
    });
    tracing::info!(
        version = rds_agent::VERSION,
        shell = %shell.path.display(),
        cgroups = cgroups.is_some(),
        "listening on {}",
        listener.describe()
    );
    let state = Arc::new(AppState::new(settings, shell, runtimes, cgroups));
    let shutdown = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    server::run(listener, state, shutdown).await;
    tracing::info!("terminated");
    ExitCode::SUCCESS
}
