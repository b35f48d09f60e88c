//! Domain records shared by the lifecycle and the DB layer. No HTTP or SQL here.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
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
            "ERROR" => VmState::Error,
            "DELETED" => VmState::Deleted,
            _ => return None,
        })
    }

    /// The transition table of `vm-lifecycle.md` §1. Exhaustive on purpose: a new state must decide
    /// every transition.
    pub fn can_become(self, to: VmState) -> bool {
        use VmState::*;
        match (self, to) {
            (Deleted, _) => false,
            (_, Deleted) => true,
            (Created, Starting | Error) => true,
            (Starting, Running | Error | Stopped) => true,
            (Running, Stopping | Stopped) => true,
            (Stopping, Stopped) => true,
            (Stopped, Starting) => true,
            (Created | Starting | Running | Stopping | Stopped | Error, _) => false,
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

/// A built-in image to insert (`vm-lifecycle.md` §9).
#[derive(Debug, Clone)]
pub struct NewBuiltinImage {
    pub id: String,
    pub kernel: BuiltinFile,
    pub kernel_format: String,
    pub initrd: Option<BuiltinFile>,
    pub rootfs: BuiltinFile,
}

/// The image's template (`vm-lifecycle.md` §8.5); absent until templates exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSeed {
    pub snapshot_id: Option<String>,
    pub status: String,
    pub updated_at: Option<String>,
    pub error: Option<String>,
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
