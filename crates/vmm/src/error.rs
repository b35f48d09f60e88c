use std::path::PathBuf;

/// Why a backend operation failed. Messages are short; the chain carries the cause.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to spawn {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("socket path too long ({len} bytes, limit 107): {path}")]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("{what} did not appear within {ms} ms")]
    Timeout { what: String, ms: u64 },
    #[error("VMM exited during launch ({status}): {stderr_tail}")]
    DiedDuringLaunch {
        status: crate::ExitStatus,
        stderr_tail: String,
    },
    #[error("VMM rejected {command}: {message}")]
    Rejected { command: String, message: String },
    /// A non-2xx answer of Firecracker's API: its `fault_message` and the tail of its log.
    #[error("firecracker rejected {call} (HTTP {status}): {fault_message}{}", log_suffix(.log_tail))]
    Api {
        call: String,
        status: u16,
        fault_message: String,
        log_tail: String,
    },
    #[error("VMM is not running")]
    Gone,
    #[error("{0} is not supported by this backend")]
    Unsupported(&'static str),
}

impl VmmError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VmmError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

fn log_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; log: {tail}")
    }
}
