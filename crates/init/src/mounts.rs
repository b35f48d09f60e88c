//! Filesystem setup (docs/reference/agent-protocol.md §1 steps 1–4): kernel filesystems, the
//! writable-disk overlay over the read-only base root, `/run`, `/dev/shm`
//! and the `/workspace` bind mount on `/home/user`.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chown, pivot_root, Gid, Uid};

/// Where the writable disk stays mounted after the pivot (0700 root), so
/// shutdown can remount it read-only.
pub const DISK_MOUNT: &str = "/run/rds-disk";
const WRITABLE_DISK: &str = "/dev/vdb";
const SCRATCH: &str = "/run";
const NEW_ROOT: &str = "/run/rds-root";
const OLD_ROOT: &str = "/mnt";
const WORKSPACE: &str = rds_protocol::WORKSPACE;
const HOME: &str = "/home/user";

/// An error naming the step and path that failed.
#[derive(Debug)]
pub struct MountError {
    what: String,
    source: nix::Error,
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for MountError {}

trait Context<T> {
    fn what(self, what: impl Into<String>) -> Result<T, MountError>;
}

impl<T> Context<T> for nix::Result<T> {
    fn what(self, what: impl Into<String>) -> Result<T, MountError> {
        self.map_err(|source| MountError {
            what: what.into(),
            source,
        })
    }
}

impl<T> Context<T> for io::Result<T> {
    fn what(self, what: impl Into<String>) -> Result<T, MountError> {
        self.map_err(|e| MountError {
            what: what.into(),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }
}

fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    mount(Some(src), target, Some(fstype), flags, data).what(format!("mount {fstype} on {target}"))
}

fn mkdir(path: &str, mode: u32) -> Result<(), MountError> {
    match DirBuilder::new().recursive(true).mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) => Err(e).what(format!("mkdir {path}")),
    }
}

fn is_mountpoint(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (fs::metadata(path), fs::metadata(format!("{path}/.."))) else {
        return false;
    };
    a.dev() != b.dev()
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Step 1: `/proc` (hidepid=invisible), `/sys`, devtmpfs on `/dev` unless the
/// initramfs moved one there, cgroup2 on `/sys/fs/cgroup`.
pub fn kernel_filesystems() -> Result<(), MountError> {
    if !is_mountpoint("/dev") {
        mnt(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        )?;
    }
    mnt(
        "proc",
        "/proc",
        "proc",
        NOSUID_NODEV_NOEXEC,
        Some("hidepid=invisible"),
    )?;
    mnt("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    mnt(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        None,
    )?;
    Ok(())
}

/// Step 2: polls for the writable disk; false when it did not show up in time.
pub fn wait_for_disk(wait_ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        if Path::new(WRITABLE_DISK).exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Step 3: mounts the writable disk and an overlay (lower = read-only base
/// root) under a scratch tmpfs, pivots into the overlay, puts a root-only
/// tmpfs on `/run` with the disk kept at [`DISK_MOUNT`], and detaches the old root.
pub fn overlay_root() -> Result<(), MountError> {
    mnt(
        "tmpfs",
        SCRATCH,
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=0700"),
    )?;
    let disk = format!("{SCRATCH}/rds-disk");
    mkdir(&disk, 0o700)?;
    mnt(
        WRITABLE_DISK,
        &disk,
        "ext4",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    mkdir(&format!("{disk}/upper"), 0o755)?;
    mkdir(&format!("{disk}/work"), 0o700)?;
    mkdir(NEW_ROOT, 0o755)?;
    let opts = format!("lowerdir=/,upperdir={disk}/upper,workdir={disk}/work");
    mnt(
        "overlay",
        NEW_ROOT,
        "overlay",
        MsFlags::empty(),
        Some(&opts),
    )?;

    pivot_root(NEW_ROOT, format!("{NEW_ROOT}{OLD_ROOT}").as_str()).what("pivot_root")?;
    std::env::set_current_dir("/").what("chdir /")?;

    for fs in ["/dev", "/proc", "/sys"] {
        let old = format!("{OLD_ROOT}{fs}");
        mount(
            Some(old.as_str()),
            fs,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .what(format!("move {old} to {fs}"))?;
    }
    // Step 5 (first half): /run, root-owned 0755, so uid 1000 cannot write.
    mnt(
        "tmpfs",
        "/run",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=0755"),
    )?;
    mkdir(DISK_MOUNT, 0o700)?;
    let old_disk = format!("{OLD_ROOT}{disk}");
    mount(
        Some(old_disk.as_str()),
        DISK_MOUNT,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .what(format!("move {old_disk} to {DISK_MOUNT}"))?;
    // The mount shows the disk's own root directory (ext4 makes it 0755), not the 0700 mount
    // point: without this the sandbox user could list the overlay's upper and work directories.
    fs::set_permissions(DISK_MOUNT, fs::Permissions::from_mode(0o700))
        .what(format!("chmod {DISK_MOUNT}"))?;
    umount2(OLD_ROOT, MntFlags::MNT_DETACH).what(format!("detach old root {OLD_ROOT}"))?;
    Ok(())
}

/// Step 4 (filesystem part): `/workspace` (1000:1000, 0755) bind-mounted on `/home/user`.
pub fn workspace() -> Result<(), MountError> {
    let uid = Some(Uid::from_raw(rds_protocol::SANDBOX_UID));
    let gid = Some(Gid::from_raw(rds_protocol::SANDBOX_UID));
    if !Path::new(WORKSPACE).exists() {
        mkdir(WORKSPACE, 0o755)?;
        chown(WORKSPACE, uid, gid).what(format!("chown {WORKSPACE}"))?;
        fs::set_permissions(WORKSPACE, fs::Permissions::from_mode(0o755))
            .what("chmod /workspace")?;
    }
    if !Path::new(HOME).exists() {
        mkdir(HOME, 0o755)?;
        chown(HOME, uid, gid).what(format!("chown {HOME}"))?;
    }
    mount(
        Some(WORKSPACE),
        HOME,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .what(format!("bind {WORKSPACE} on {HOME}"))
}

/// Step 5 (second half): `/dev/shm` as a root-owned 0755 tmpfs.
pub fn dev_shm() -> Result<(), MountError> {
    mkdir("/dev/shm", 0o755)?;
    mnt(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=0755"),
    )
}

/// Terminals (`POST /pty`): a devpts instance on `/dev/pts`, whose `ptmx` any user may open (the
/// agent opens it as root and hands the sandbox user only its own terminal).
pub fn dev_pts() -> Result<(), MountError> {
    mkdir("/dev/pts", 0o755)?;
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        Some("mode=0620,ptmxmode=0666"),
    )
}

/// Shutdown: remounts the overlay root and then the writable disk read-only.
/// Returns the failures, for the console.
pub fn remount_readonly() -> Vec<String> {
    let mut failed = Vec::new();
    for target in ["/", DISK_MOUNT] {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            failed.push(format!("{target}: {e}"));
        }
    }
    failed
}
