//! Writing a validated archive beneath a directory handle.
//!
//! Every component is opened with `O_NOFOLLOW` relative to its parent's handle, so a symlink already in
//! the destination is never followed, whoever put it there; something in the way is an error. The caller
//! picks the identity by the thread it runs on (see [`crate::fsuser`]).

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::scan::{scan, ArchiveError, Entry, Kind, Limits};

/// Modes given to what is extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModePolicy {
    pub dir: u32,
    pub file: u32,
    /// Files with any execute bit in the archive.
    pub exec_file: u32,
}

impl ModePolicy {
    /// Upload: dirs 0755, files 0644 or 0755 if any execute bit was set.
    pub const UPLOAD: ModePolicy = ModePolicy {
        dir: 0o755,
        file: 0o644,
        exec_file: 0o755,
    };
    /// Replace-tree, `readOnly=true`.
    pub const READ_ONLY: ModePolicy = ModePolicy {
        dir: 0o555,
        file: 0o444,
        exec_file: 0o444,
    };
    /// Replace-tree, `readOnly=false`.
    pub const READ_WRITE: ModePolicy = ModePolicy {
        dir: 0o755,
        file: 0o644,
        exec_file: 0o644,
    };
}

/// Owner set with `fchown` on everything created (replace-tree); `None` leaves the creating identity.
pub type Owner = Option<(u32, u32)>;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens the directory `name` in `parent` without following a symlink, creating it (mode `mode`, owner
/// `owner`) when missing. Returns the handle and whether it was created.
pub(crate) fn open_or_create_dir(
    parent: &impl AsRawFd,
    name: &[u8],
    mode: u32,
    owner: Owner,
) -> io::Result<(OwnedFd, bool)> {
    let c = cname(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY (all calls below): valid descriptors and C strings.
    match owned(unsafe { libc::openat(parent.as_raw_fd(), c.as_ptr(), flags) }) {
        Ok(fd) => return Ok((fd, false)),
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
        Err(_) => {}
    }
    let created = match check(unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o700) }) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
        Err(e) => return Err(e),
    };
    let fd = owned(unsafe { libc::openat(parent.as_raw_fd(), c.as_ptr(), flags) })?;
    if created {
        set_owner_mode(&fd, mode, owner)?;
    }
    Ok((fd, created))
}

fn set_owner_mode(fd: &OwnedFd, mode: u32, owner: Owner) -> io::Result<()> {
    // SAFETY: valid descriptor.
    unsafe {
        if let Some((uid, gid)) = owner {
            check(libc::fchown(fd.as_raw_fd(), uid, gid))?;
        }
        check(libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t))
    }
}

fn set_mtime(fd: &OwnedFd, mtime: i64) {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: valid descriptor and two timespecs.
    unsafe { libc::futimens(fd.as_raw_fd(), [t, t].as_ptr()) };
}

/// Extracts the archive in `reader` beneath `dest`, merging with what is there. Directories named by
/// entries get the policy's mode and the archive's mtime; files are replaced in place.
pub fn extract<R: Read>(
    dest: &OwnedFd,
    reader: R,
    limits: Limits,
    modes: ModePolicy,
    owner: Owner,
) -> Result<(), ArchiveError> {
    let mut dir_times: Vec<(Vec<u8>, i64)> = Vec::new();
    scan(reader, limits, |entry, data| {
        write_entry(dest, entry, data, modes, owner).map_err(|source| ArchiveError::Write {
            path: entry.display(),
            source,
        })?;
        if let (Kind::Dir, Some(t)) = (entry.kind, entry.mtime) {
            dir_times.push((entry.path.clone(), t));
        }
        Ok(())
    })?;
    // Writing inside a directory changes its mtime, so the archive's are applied last (deepest first).
    dir_times.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
    for (path, t) in dir_times {
        if let Ok(fd) = walk_dirs(dest, path.split(|b| *b == b'/'), modes.dir, owner) {
            set_mtime(&fd, t);
        }
    }
    Ok(())
}

/// Opens (creating as needed) the directories `components` beneath `dest`.
fn walk_dirs<'a>(
    dest: &OwnedFd,
    components: impl Iterator<Item = &'a [u8]>,
    mode: u32,
    owner: Owner,
) -> io::Result<OwnedFd> {
    // SAFETY: dup of a valid descriptor.
    let mut current = owned(unsafe { libc::fcntl(dest.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    for name in components.filter(|c| !c.is_empty()) {
        current = open_or_create_dir(&current, name, mode, owner)?.0;
    }
    Ok(current)
}

fn write_entry(
    dest: &OwnedFd,
    entry: &Entry,
    data: &mut dyn Read,
    modes: ModePolicy,
    owner: Owner,
) -> io::Result<()> {
    let components: Vec<&[u8]> = entry.components().collect();
    match entry.kind {
        Kind::Dir => {
            let fd = walk_dirs(dest, components.iter().copied(), modes.dir, owner)?;
            if !components.is_empty() {
                // An existing directory the identity does not own keeps its mode.
                let _ = set_owner_mode(&fd, modes.dir, owner);
            }
            Ok(())
        }
        Kind::File => {
            let (name, parents) = components
                .split_last()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?;
            let parent = walk_dirs(dest, parents.iter().copied(), modes.dir, owner)?;
            let c = cname(name)?;
            // O_NONBLOCK: a FIFO in the way must not block us; it is refused below.
            let flags = libc::O_WRONLY
                | libc::O_CREAT
                | libc::O_TRUNC
                | libc::O_NOFOLLOW
                | libc::O_NONBLOCK
                | libc::O_CLOEXEC;
            // SAFETY: valid descriptor and C string.
            let fd = owned(unsafe { libc::openat(parent.as_raw_fd(), c.as_ptr(), flags, 0o600) })?;
            let st = crate::paths::stat_fd(&fd)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            let mode = if entry.mode & 0o111 != 0 {
                modes.exec_file
            } else {
                modes.file
            };
            let mut file = std::fs::File::from(fd);
            io::copy(data, &mut file)?;
            let fd = OwnedFd::from(file);
            set_owner_mode(&fd, mode, owner)?;
            if let Some(t) = entry.mtime {
                set_mtime(&fd, t);
            }
            Ok(())
        }
    }
}
