//! Domain records shared by the lifecycle and the DB layer. No HTTP or SQL here.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    /// Memory and disk on the VM's own storage, no VMM (`docs/lifetimes.md`).
    Paused,
    Error,
    Deleted,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "CREATED",
            VmState::Starting => "STARTING",
            VmState::Running => "RUNNING",
            VmState::Stopping => "STOPPING",
            VmState::Stopped => "STOPPED",
            VmState::Paused => "PAUSED",
            VmState::Error => "ERROR",
            VmState::Deleted => "DELETED",
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        Some(match s {
            "CREATED" => VmState::Created,
            "STARTING" => VmState::Starting,
            "RUNNING" => VmState::Running,
            "STOPPING" => VmState::Stopping,
            "STOPPED" => VmState::Stopped,
            "PAUSED" => VmState::Paused,
            "ERROR" => VmState::Error,
            "DELETED" => VmState::Deleted,
            _ => return None,
        })
    }

    /// The transition table of `docs/reference/lifecycle.md` §1. Exhaustive on purpose: a new state
    /// must decide every transition.
    pub fn can_become(self, to: VmState) -> bool {
        use VmState::*;
        match (self, to) {
            (Deleted, _) => false,
            (_, Deleted) => true,
            // A create cut short after its disk was made is kept for a start (reconciliation).
            (Created, Starting | Error | Stopped) => true,
            // A resume that fails keeps the paused memory.
            (Starting, Running | Error | Stopped | Paused) => true,
            // ERROR: a warm-pool VM whose handover to its user failed.
            (Running, Stopping | Stopped | Paused | Error) => true,
            (Stopping, Stopped) => true,
            (Stopped, Starting) => true,
            // Resume goes through STARTING; a stop of a paused VM drops its memory.
            (Paused, Starting | Stopped) => true,
            (Created | Starting | Running | Stopping | Stopped | Paused | Error, _) => false,
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct VmRecord {
    pub id: String,
    pub state: VmState,
    pub cpu: u32,
    pub mem_mb: u32,
    pub disk_size_mb: u64,
    pub guest_ip: std::net::Ipv4Addr,
    pub tap_name: String,
    pub mac: String,
    pub vsock_cid: u32,
    pub outbound_internet: bool,
    pub allow_ips: Vec<String>,
    pub image_id: String,
    pub source_snapshot_id: Option<String>,
    pub provision_mode: Option<String>,
    pub vmm_pid: Option<u32>,
    pub vmm_start_time: Option<u64>,
    pub vmm_boot_id: Option<String>,
    pub backend: String,
    pub last_error: Option<String>,
    pub created_at: String,
    /// `template` or `pool` for internal VMs, None for user VMs.
    pub pool_role: Option<String>,
    /// When the VM's lifetime ends (RFC 3339 UTC), if it has one.
    pub expires_at: Option<String>,
    /// The lifetime last set, re-armed on resume.
    pub timeout_sec: Option<u64>,
    pub timeout_action: TimeoutAction,
    /// Labels set by the client; never used for any decision of the manager.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The sealed secretEnv (`secret_env::SecretKey::seal`); None when the VM has none.
    pub secret_env: Option<String>,
    /// Peer links of a consumer, in order (`docs/peers.md`).
    pub peer_links: Vec<crate::peers::PeerLink>,
}

/// What happens to a VM at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeoutAction {
    #[default]
    Destroy,
    Pause,
}

impl TimeoutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutAction::Destroy => "destroy",
            TimeoutAction::Pause => "pause",
        }
    }

    pub fn parse(s: &str) -> Option<TimeoutAction> {
        match s {
            "destroy" => Some(TimeoutAction::Destroy),
            "pause" => Some(TimeoutAction::Pause),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub built_in: bool,
    pub kernel_path: Option<String>,
    pub initrd_path: Option<String>,
    pub rootfs_path: Option<String>,
    pub created_at: String,
    pub kernel: Option<ImageFile>,
    pub initrd: Option<ImageFile>,
    pub rootfs: Option<ImageFile>,
    /// `elf` or `bzimage` while there is a kernel.
    pub kernel_format: Option<String>,
    pub seed: Option<ImageSeed>,
}

/// One file of an image, with its name under `IMAGES_DIR/<imageId>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePart {
    Kernel,
    Initrd,
    Rootfs,
}

impl ImagePart {
    pub fn file_name(self) -> &'static str {
        match self {
            ImagePart::Kernel => "vmlinux",
            ImagePart::Initrd => "initrd",
            ImagePart::Rootfs => "rootfs.ext4",
        }
    }
}

/// What was recorded about one file of an image when it was uploaded or registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub bytes: u64,
    pub sha256: String,
    pub uploaded_at: String,
}

/// A file of a new built-in image: where it was cloned to and what it holds.
#[derive(Debug, Clone)]
pub struct BuiltinFile {
    pub path: String,
    pub file: ImageFile,
}

/// A built-in image to insert (`docs/reference/lifecycle.md` §11).
#[derive(Debug, Clone)]
pub struct NewBuiltinImage {
    pub id: String,
    pub kernel: BuiltinFile,
    pub kernel_format: String,
    pub initrd: Option<BuiltinFile>,
    pub rootfs: BuiltinFile,
}

/// The image's template (`docs/snapshots.md` Templates); absent until templates exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSeed {
    pub snapshot_id: Option<String>,
    pub status: String,
    pub updated_at: Option<String>,
    pub error: Option<String>,
}

/// `user_overlay` (a user's `POST /v1/vms/:id/snapshots`) or `template` (an image's seed,
/// internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    UserOverlay,
    Template,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::UserOverlay => "user_overlay",
            SnapshotKind::Template => "template",
        }
    }

    pub fn parse(s: &str) -> Option<SnapshotKind> {
        match s {
            "user_overlay" => Some(SnapshotKind::UserOverlay),
            "template" => Some(SnapshotKind::Template),
            _ => None,
        }
    }
}

/// One snapshot (`docs/snapshots.md` Files, `docs/reference/lifecycle.md` §12): the row holds these
/// fields in snake_case, and the snapshot's `meta.json` is this struct serialised (camelCase), so a
/// directory describes itself and can be registered again after its row was lost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub id: String,
    pub kind: SnapshotKind,
    pub image_id: String,
    /// Null for templates.
    pub source_vm_id: Option<String>,
    /// The template the source VM was restored from, if any.
    pub base_seed_snapshot_id: Option<String>,
    pub cpu: u32,
    pub mem_mb: u32,
    pub disk_size_mb: u64,
    pub has_memory: bool,
    /// Allocated bytes of the snapshot's directory.
    pub size_bytes: u64,
    pub backend: String,
    pub vmm_version: String,
    pub agent_port: u32,
    pub kernel_sha256: Option<String>,
    pub initrd_sha256: Option<String>,
    pub rootfs_sha256: Option<String>,
    pub created_at: String,
}

#[cfg(test)]
impl SnapshotRecord {
    /// A user snapshot with every field set, for unit tests.
    pub(crate) fn sample() -> SnapshotRecord {
        SnapshotRecord {
            id: "snap-0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            kind: SnapshotKind::UserOverlay,
            image_id: "img-1".into(),
            source_vm_id: Some("vm-1".into()),
            base_seed_snapshot_id: None,
            cpu: 1,
            mem_mb: 512,
            disk_size_mb: 256,
            has_memory: true,
            size_bytes: 4096,
            backend: "qemu".into(),
            vmm_version: "7.2.0".into(),
            agent_port: 8080,
            kernel_sha256: Some("k".into()),
            initrd_sha256: None,
            rootfs_sha256: Some("r".into()),
            created_at: "2024-01-01T00:00:00.000Z".into(),
        }
    }
}

/// RFC 3339 UTC with millisecond precision, the timestamp format of the whole API.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::VmState::*;

    #[test]
    fn transitions() {
        assert!(Created.can_become(Starting));
        assert!(Starting.can_become(Running));
        assert!(Running.can_become(Stopped));
        assert!(Error.can_become(Deleted));
        assert!(!Deleted.can_become(Deleted));
        assert!(!Running.can_become(Starting));
        assert!(!Stopped.can_become(Running));
        for s in [
            Created, Starting, Running, Stopping, Stopped, Error, Deleted,
        ] {
            assert_eq!(super::VmState::parse(s.as_str()), Some(s));
        }
    }
}
