//! The jail of one Firecracker VM (`docs/reference/vmm-backends.md` §4.1, §6):
//! `<base>/<exec name>/<vmId>/root/`, holding hard links to the VM's kernel, initramfs, base
//! rootfs, writable disk (and, for a restore, its snapshot files), three log FIFOs, and later what
//! the jailer adds (the binary, `dev/`, the pid file) and Firecracker's sockets. Paths inside are
//! jail-relative (`/vmlinux`), as Firecracker sees them.

use crate::fsutil::check_socket_path;
use crate::VmmError;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Jail-relative names (the API bodies of `docs/reference/vmm-backends.md` §4.2 use exactly these).
pub const KERNEL: &str = "/vmlinux";
pub const INITRD: &str = "/initrd";
pub const ROOTFS: &str = "/rootfs.ext4";
pub const DISK: &str = "/disk.ext4";
pub const LOG_FIFO: &str = "/log.fifo";
pub const METRICS_FIFO: &str = "/metrics.fifo";
pub const CONSOLE_FIFO: &str = "/console.fifo";
pub const API_SOCK: &str = "/api.sock";
pub const VSOCK: &str = "/v.sock";
pub const MEM_SNAP: &str = "/mem.snap";
pub const VMSTATE_SNAP: &str = "/vmstate.snap";

/// A jail on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// `<base>/<exec name>/<vmId>`: removed whole by `cleanup`.
    pub dir: PathBuf,
    /// `<dir>/root`: the VMM's `/`.
    pub root: PathBuf,
    exec_name: String,
}

/// The VM of a Firecracker process whose root (`/proc/<pid>/root`) is `root`: the jailer starts it
/// with `--id <id>` chrooted into `<base>/<exec name>/<id>/root`, which only this manager's jails
/// (its `JAILER_CHROOT_BASE_DIR`) match.
pub fn owner(args_id: Option<&str>, root: &Path, base: &Path, exec_name: &str) -> Option<String> {
    let id = args_id.filter(|id| !id.is_empty() && !id.contains('/'))?;
    (Jail::new(base, exec_name, id).root == root).then(|| id.to_string())
}

impl Jail {
    /// The jailer names the directory after the binary (`--exec-file`'s last component).
    pub fn new(base: &Path, exec_name: &str, vm_id: &str) -> Jail {
        let dir = base.join(exec_name).join(vm_id);
        Jail {
            root: dir.join("root"),
            dir,
            exec_name: exec_name.to_string(),
        }
    }

    /// Host path of a jail-relative path (`/vmlinux` → `<root>/vmlinux`).
    pub fn host(&self, jail_path: &str) -> PathBuf {
        self.root.join(jail_path.trim_start_matches('/'))
    }

    pub fn api_sock(&self) -> PathBuf {
        self.host(API_SOCK)
    }

    pub fn agent_sock(&self) -> PathBuf {
        self.host(VSOCK)
    }

    /// Written by the jailer: Firecracker's host pid.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join(format!("{}.pid", self.exec_name))
    }

    /// Fails when a socket of this jail cannot fit in `sun_path`. The longest is the listener a guest
    /// connection to host port 65535 arrives at: `<root>/v.sock_65535` (base + 67 for a UUID id).
    pub fn check_socket_paths(&self) -> Result<(), VmmError> {
        check_socket_path(&listener(&self.agent_sock()))?;
        check_socket_path(&self.api_sock())
    }
}

/// `<sock>_65535`.
pub fn listener(sock: &Path) -> PathBuf {
    let mut s = sock.as_os_str().to_os_string();
    s.push("_65535");
    PathBuf::from(s)
}

/// What may be done when a hard link would cross filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Kernel, initramfs, base rootfs, snapshot files: copied in (0444) when a link is impossible.
    ReadOnly,
    /// The writable disk: guest writes must reach the VM's own file, so only a link will do.
    Writable,
}

/// Hard-links `src` to `dst`; see [`Input`] for the cross-filesystem case.
pub fn link_in(src: &Path, dst: &Path, kind: Input, owner: (u32, u32)) -> Result<(), VmmError> {
    let meta = std::fs::metadata(src).map_err(|e| VmmError::io("missing input", src, e))?;
    if !meta.is_file() {
        return Err(VmmError::io(
            "missing input (not a file)",
            src,
            std::io::ErrorKind::InvalidInput.into(),
        ));
    }
    if kind == Input::ReadOnly && !readable_by(&meta, owner) {
        return Err(VmmError::io(
            "input not readable by the VMM uid (needs o+r or JAILER_UID ownership)",
            src,
            std::io::ErrorKind::PermissionDenied.into(),
        ));
    }
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) && kind == Input::ReadOnly => {
            std::fs::copy(src, dst).map_err(|e| VmmError::io("copy into jail", src, e))?;
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| VmmError::io("chmod", dst, e))
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(VmmError::io(
            "cannot hard-link the writable disk across filesystems \
             (JAILER_CHROOT_BASE_DIR must be on STORAGE_ROOT's filesystem)",
            src,
            e,
        )),
        Err(e) => Err(VmmError::io("hard-link into jail", src, e)),
    }
}

fn readable_by(meta: &std::fs::Metadata, (uid, gid): (u32, u32)) -> bool {
    let mode = meta.mode();
    mode & 0o004 != 0
        || (meta.uid() == uid && mode & 0o400 != 0)
        || (meta.gid() == gid && mode & 0o040 != 0)
}

/// A FIFO owned by the VMM uid, mode 0600.
pub fn make_fifo(path: &Path, (uid, gid): (u32, u32)) -> Result<(), VmmError> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| VmmError::io("mkfifo", path, e.into()))?;
    // mkfifo is subject to the umask; the mode is set again explicitly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| VmmError::io("chmod", path, e))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| VmmError::io("chown", path, e))
}

/// Removes a file; absent is fine.
pub fn remove_file(path: &Path) -> Result<(), VmmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VmmError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6f1d2c1e-8f0a-4b8e-9a57-0c2f7d3b9e11";

    #[test]
    fn a_firecracker_belongs_to_the_jail_it_runs_in() {
        let base = Path::new("/srv/rds/jailer");
        let root = base.join("firecracker").join(UUID).join("root");
        assert_eq!(
            owner(Some(UUID), &root, base, "firecracker").as_deref(),
            Some(UUID)
        );
        // Another manager's jails, another id than its root says, or no id at all: not ours.
        assert_eq!(
            owner(Some(UUID), &root, Path::new("/other/jailer"), "firecracker"),
            None
        );
        assert_eq!(owner(Some("0000"), &root, base, "firecracker"), None);
        assert_eq!(owner(None, &root, base, "firecracker"), None);
        assert_eq!(owner(Some("../x"), &root, base, "firecracker"), None);
        assert_eq!(owner(Some(UUID), Path::new("/"), base, "firecracker"), None);
    }

    #[test]
    fn paths_follow_the_jailer_naming() {
        let j = Jail::new(Path::new("/srv/rds/jailer"), "firecracker", UUID);
        assert_eq!(
            j.dir,
            PathBuf::from(format!("/srv/rds/jailer/firecracker/{UUID}"))
        );
        assert_eq!(j.root, j.dir.join("root"));
        assert_eq!(j.host("/vmlinux"), j.root.join("vmlinux"));
        assert_eq!(j.api_sock(), j.root.join("api.sock"));
        assert_eq!(j.agent_sock(), j.root.join("v.sock"));
        assert_eq!(j.pid_file(), j.root.join("firecracker.pid"));
    }

    #[test]
    fn socket_limit_is_base_plus_67_for_a_uuid() {
        // "/firecracker/<uuid>/root/v.sock_65535" is 67 bytes: a 40-byte base gives exactly 107.
        let base = format!("/{}", "b".repeat(39));
        let j = Jail::new(Path::new(&base), "firecracker", UUID);
        assert_eq!(listener(&j.agent_sock()).as_os_str().len(), base.len() + 67);
        j.check_socket_paths().unwrap();
        let base = format!("/{}", "b".repeat(40));
        match Jail::new(Path::new(&base), "firecracker", UUID).check_socket_paths() {
            Err(VmmError::SocketPathTooLong { path, len }) => {
                assert_eq!(len, 108);
                assert!(path.to_string_lossy().ends_with("/root/v.sock_65535"));
            }
            other => panic!("expected SocketPathTooLong, got {other:?}"),
        }
    }

    #[test]
    fn read_only_inputs_must_be_readable_by_the_vmm() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k");
        std::fs::write(&src, b"x").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
        let me = (u32::MAX - 7, u32::MAX - 7);
        let err = link_in(&src, &dir.path().join("l"), Input::ReadOnly, me).unwrap_err();
        assert!(
            err.to_string().contains("not readable by the VMM uid"),
            "{err}"
        );
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).unwrap();
        link_in(&src, &dir.path().join("l"), Input::ReadOnly, me).unwrap();
        let a = std::fs::metadata(&src).unwrap();
        let b = std::fs::metadata(dir.path().join("l")).unwrap();
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        let err = link_in(
            &dir.path().join("none"),
            &dir.path().join("m"),
            Input::Writable,
            me,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("missing input "), "{err}");
    }
}
