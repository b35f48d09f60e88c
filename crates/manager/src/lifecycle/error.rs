use crate::agent::AgentError;
use crate::db::DbError;
use crate::model::VmState;

/// Why a lifecycle operation failed; `api::error` chooses the status in one place.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("VM {0} not found")]
    NotFound(String),
    #[error("VM must be RUNNING (state={0})")]
    NotRunning(VmState),
    #[error("VM must be {required} to {action} (state={state})")]
    WrongState {
        action: &'static str,
        required: VmState,
        state: VmState,
    },
    /// A state rule with several allowed states (`allowed` reads e.g. `RUNNING, STOPPED or PAUSED`).
    #[error("VM must be {allowed} to {action} (state={state})")]
    NotInStates {
        action: &'static str,
        allowed: &'static str,
        state: VmState,
    },
    /// Input that breaks a rule only known once the VM is looked at (400).
    #[error("{0}")]
    Invalid(String),
    #[error("VM {id} is busy ({op} in progress)")]
    Busy { id: String, op: &'static str },
    #[error("VM {0} is no longer RUNNING")]
    NoLongerRunning(String),
    #[error("VM quota exceeded (maxVms={0})")]
    Quota(u64),
    #[error("No free guest address in VM_SUBNET")]
    NoAddress,
    #[error("Image not found")]
    ImageNotFound,
    #[error("Image is missing kernel or rootfs")]
    ImageIncomplete,
    #[error("No default image configured; upload an image and set it as default")]
    NoDefaultImage,
    #[error("Snapshot not found")]
    SnapshotNotFound,
    #[error("User overlay snapshot not found")]
    OverlayNotFound,
    #[error("Snapshot kind cannot be used as a user overlay baseline")]
    NotAnOverlay,
    #[error("Snapshot image mismatch: snapshot={snapshot} vm={vm}")]
    SnapshotImageMismatch { snapshot: String, vm: String },
    #[error("diskSizeMb cannot be smaller than the snapshot disk ({0} MiB)")]
    DiskSmallerThanSnapshot(u64),
    #[error("Snapshot {id} is the active template of image {image_id}")]
    ActiveTemplate { id: String, image_id: String },
    #[error("Snapshot {0} is being restored")]
    BeingRestored(String),
    /// The free-space pre-check failed or a write hit ENOSPC (507).
    #[error("Not enough free space in STORAGE_ROOT")]
    NoSpace,
    /// A capture failed; nothing was registered and the VM was resumed (500).
    #[error("Snapshot failed: {0}")]
    SnapshotFailed(String),
    /// A pause failed before the memory was complete; the VM runs on (500).
    #[error("Pause failed: {0}")]
    PauseFailed(String),
    /// Boot or provisioning failed; the VM is left in ERROR with `lastError`.
    #[error("VM {id} failed to start: {reason}")]
    BootFailed {
        id: String,
        reason: String,
        cause: BootFailure,
    },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Internal(String),
    /// A peer rule or call failed (`docs/peers.md`); the kind picks the status.
    #[error("{message}")]
    Peer { kind: PeerFailure, message: String },
    /// The guest refused with a status of its own (a port nothing listens on: 502; a process
    /// that has exited: 409; past a cap: 429).
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// The VM's guest agent predates the feature (an image built before it): 501.
    #[error("{0}")]
    Unsupported(String),
}

/// Why a peer link, sync or invoke failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFailure {
    /// 400: a bad link, manifest or invoke body.
    Invalid,
    /// 401: no bridge token, an unknown one, or one used from another address.
    Unauthorized,
    /// 403: not linked, or an export the manifest does not declare.
    Forbidden,
    /// 404: the provider or the alias is gone.
    NotFound,
    /// 409: the provider is not RUNNING.
    Conflict,
    /// 502: the provider's call failed.
    ProviderFailed,
    /// 504: the provider's call timed out.
    Timeout,
}

impl LifecycleError {
    pub fn peer(kind: PeerFailure, message: impl Into<String>) -> Self {
        LifecycleError::Peer {
            kind,
            message: message.into(),
        }
    }
}

/// Which kind of failure stopped a boot, for the status (500 / 502 / 504).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFailure {
    Host,
    AgentUnreachable,
    AgentTimeout,
}
