//! What every request handler shares.

use std::sync::Arc;

use rds_protocol::{Runtimes, MAX_CONCURRENT_EXECS};
use tokio::sync::{watch, Semaphore};

use crate::cgroup::Sandboxes;
use crate::config::Settings;
use crate::probe::ShellInfo;

pub struct AppState {
    pub settings: Settings,
    pub shell: ShellInfo,
    /// `Some` once the background runtime probe finished.
    pub runtimes: watch::Receiver<Option<Runtimes>>,
    /// One permit per exec/run call in flight.
    pub exec_slots: Arc<Semaphore>,
    pub cgroups: Option<Sandboxes>,
    /// One permit per open terminal.
    pub terminals: Arc<Semaphore>,
    pub processes: Arc<crate::processes::Processes>,
    pub warm: crate::warm::WarmShells,
}

impl AppState {
    pub fn new(
        settings: Settings,
        shell: ShellInfo,
        runtimes: watch::Receiver<Option<Runtimes>>,
        cgroups: Option<Sandboxes>,
    ) -> AppState {
        AppState {
            settings,
            shell,
            runtimes,
            exec_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXECS)),
            cgroups,
            terminals: Arc::new(Semaphore::new(rds_protocol::pty::MAX_TERMINALS)),
            processes: Arc::default(),
            warm: crate::warm::WarmShells::default(),
        }
    }
}
