//! The path policy (`docs/reference/agent-protocol.md` §5): what a caller's path means and how it
//! is opened.
//!
//! Callers speak of `/workspace/...` (or relative paths, taken from `/workspace`); the agent maps that onto
//! its workspace root directory, which is `/workspace` in the guest and a temporary directory in host tests.
//! [`normalize`] is the lexical step; [`open_dir`] opens the result beneath a handle on the root with
//! `openat2(RESOLVE_BENEATH)`, or, where the kernel lacks it, an equivalent walk, so that no symlink can
//! lead outside.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rds_protocol::{messages, MAX_PATH_BYTES};

/// A caller's path after the lexical checks: components relative to the workspace root, never `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePath(PathBuf);

impl WorkspacePath {
    /// The relative path to hand to `openat`-style calls (`.` for the root itself).
    pub fn relative(&self) -> &Path {
        if self.0.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.0
        }
    }

    /// The path's components, first to last (none for the root).
    pub fn components(&self) -> Vec<&OsStr> {
        self.0.iter().collect()
    }

    /// The path made of the first `n` components.
    pub fn prefix(&self, n: usize) -> WorkspacePath {
        WorkspacePath(self.0.iter().take(n).collect())
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&OsStr> {
        self.0.file_name()
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<WorkspacePath> {
        self.0.file_name()?;
        Some(WorkspacePath(
            self.0.parent().map(Path::to_path_buf).unwrap_or_default(),
        ))
    }
}

pub use rds_protocol::workspace::PathError;

/// Applies the lexical rules (`rds_protocol::workspace`): relative paths start at `/workspace`,
/// absolute ones must be `/workspace` or below, and `..` may not climb above it.
pub fn normalize(path: &str) -> Result<WorkspacePath, PathError> {
    rds_protocol::workspace::workspace_relative(path).map(WorkspacePath)
}

/// Why [`open_dir`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A symlink (or `..` inside one) led outside the root.
    #[error("{}", messages::PATH_ESCAPES)]
    Escapes,
    /// Missing, not a directory, or a symlink loop.
    #[error("not a directory")]
    NotADirectory,
    #[error("cannot open the workspace root {}", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve a workspace path")]
    Io(#[source] io::Error),
}

/// Which resolver [`open_dir`] uses; tests force the walk to check that both agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2(RESOLVE_BENEATH)`, falling back to the walk when the kernel lacks the call.
    Auto,
    Walk,
}

/// Opens `path` (already normalised) as an `O_PATH` directory handle beneath `root`.
pub fn open_dir(
    root: &Path,
    path: &WorkspacePath,
    resolver: Resolver,
) -> Result<OwnedFd, OpenError> {
    open_beneath(root, path, resolver, false)
}

/// Opens `path` (already normalised) as an `O_PATH` handle beneath `root`, whatever its type; symlinks
/// are followed as long as they stay beneath the root. Missing → [`OpenError::NotADirectory`] (the
/// caller words it).
pub fn open_any(
    root: &Path,
    path: &WorkspacePath,
    resolver: Resolver,
) -> Result<OwnedFd, OpenError> {
    open_beneath(root, path, resolver, true)
}

/// `openat2(RESOLVE_BENEATH)` where the kernel has it, else the component walk; `any` lifts the
/// directory requirement on the last component.
fn open_beneath(
    root: &Path,
    path: &WorkspacePath,
    resolver: Resolver,
    any: bool,
) -> Result<OwnedFd, OpenError> {
    let root_fd = open_root(root).map_err(|source| OpenError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    if resolver == Resolver::Auto {
        let dir = if any { 0 } else { libc::O_DIRECTORY };
        match openat2_flags(
            &root_fd,
            path.relative(),
            libc::O_PATH | dir | libc::O_CLOEXEC,
        ) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {}
            other => return other.map_err(classify),
        }
    }
    walk(root_fd, path.relative(), any)
}

/// Reopens an `O_PATH` handle for reading, with the permission check of the calling thread's
/// credentials (through `/proc/self/fd`, which every thread of the agent may use).
pub fn reopen(fd: &OwnedFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let c = cstring(OsStr::new(&path))?;
    // SAFETY: valid C string; the returned descriptor is owned by us.
    owned(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })
}

/// `fstat` of a descriptor.
pub fn stat_fd(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn classify(e: io::Error) -> OpenError {
    match e.raw_os_error() {
        Some(libc::EXDEV) => OpenError::Escapes,
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => OpenError::NotADirectory,
        _ => OpenError::Io(e),
    }
}

fn cstring(path: &OsStr) -> io::Result<CString> {
    CString::new(path.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let c = cstring(root.as_os_str())?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned descriptor is owned by us.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn openat2_flags(root: &OwnedFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstring(rel.as_os_str())?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // EAGAIN means a concurrent rename raced with `..` resolution; the kernel asks us to retry.
    for _ in 0..8 {
        // SAFETY: valid pointers to a C string and to an open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match owned(fd as RawFd) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            other => return other,
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Most symlinks followed in one resolution, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// The walk `RESOLVE_BENEATH` does, in user space: one component at a time with `O_NOFOLLOW`, symlinks
/// expanded by hand (absolute targets refused), `..` never above the root.
fn walk(root: OwnedFd, rel: &Path, any_last: bool) -> Result<OwnedFd, OpenError> {
    let mut pending: Vec<PathBuf> = components_rev(rel);
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut current = root;
    let mut links = 0;
    while let Some(name) = pending.pop() {
        match name.to_str() {
            Some(".") => continue,
            Some("..") => {
                current = stack.pop().ok_or(OpenError::Escapes)?;
                continue;
            }
            _ => {}
        }
        let c = cstring(name.as_os_str()).map_err(OpenError::Io)?;
        // SAFETY: valid directory descriptor and C string.
        let fd = unsafe {
            libc::openat(
                current.as_raw_fd(),
                c.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        let next = owned(fd).map_err(classify)?;
        let kind = file_type(&next).map_err(OpenError::Io)?;
        if kind == libc::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(OpenError::NotADirectory);
            }
            let target = read_link(&next).map_err(OpenError::Io)?;
            if target.is_absolute() {
                return Err(OpenError::Escapes);
            }
            pending.extend(components_rev(&target));
        } else if kind == libc::S_IFDIR {
            stack.push(std::mem::replace(&mut current, next));
        } else if any_last && pending.is_empty() {
            return Ok(next);
        } else {
            return Err(OpenError::NotADirectory);
        }
    }
    Ok(current)
}

/// Components of a relative path as strings, last first (so `pop` yields them in order).
fn components_rev(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    out.reverse();
    out
}

fn file_type(fd: &OwnedFd) -> io::Result<libc::mode_t> {
    // SAFETY: zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_mode & libc::S_IFMT)
}

fn read_link(fd: &OwnedFd) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; MAX_PATH_BYTES + 1];
    // SAFETY: an O_PATH|O_NOFOLLOW descriptor of a symlink with an empty path reads that link (Linux ≥ 2.6.39).
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::symlink;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// A path the lexical rules accept is plain names below the workspace (no `.`, `..`, root
        /// or empty component), and normalising it again gives itself; an absolute path outside
        /// `/workspace` is always refused.
        #[test]
        fn accepted_paths_stay_below_the_workspace(
            parts in proptest::collection::vec(
                prop_oneof![Just(".."), Just("."), Just(""), Just("a"), Just("workspace"), Just("b c")],
                0..8,
            ),
            absolute in any::<bool>(),
            inside in any::<bool>(),
        ) {
            let joined = parts.join("/");
            let path = match (absolute, inside) {
                (true, true) => format!("/workspace/{joined}"),
                (true, false) => format!("/{joined}"),
                (false, _) => joined.clone(),
            };
            match normalize(&path) {
                Ok(p) => {
                    // The workspace root itself reads as ".".
                    let root = p.relative() == std::path::Path::new(".");
                    for c in p.relative().components().filter(|_| !root) {
                        prop_assert!(matches!(c, std::path::Component::Normal(_)), "{path}: {c:?}");
                    }
                    let again = normalize(&p.relative().to_string_lossy()).unwrap();
                    prop_assert_eq!(again.relative(), p.relative());
                    if absolute && !inside {
                        prop_assert!(path.starts_with("/workspace"), "{path} accepted");
                    }
                }
                Err(e) => prop_assert!(
                    matches!(e, PathError::Escapes | PathError::OutsideWorkspace),
                    "{path}: {e:?}"
                ),
            }
        }
    }

    fn rel(p: &str) -> Result<String, PathError> {
        normalize(p).map(|w| w.relative().to_string_lossy().into_owned())
    }

    #[test]
    fn lexical_rules() {
        assert_eq!(rel("/workspace").unwrap(), ".");
        assert_eq!(rel("/workspace/").unwrap(), ".");
        assert_eq!(rel("").unwrap(), ".");
        assert_eq!(rel("a/./b//c").unwrap(), "a/b/c");
        assert_eq!(rel("/workspace//a/../b").unwrap(), "b");
        assert_eq!(rel("a/..").unwrap(), ".");
        assert_eq!(rel("/home/user"), Err(PathError::OutsideWorkspace));
        assert_eq!(rel("/home/user/x"), Err(PathError::OutsideWorkspace));
        assert_eq!(rel("/workspacefoo"), Err(PathError::OutsideWorkspace));
        assert_eq!(rel("/etc"), Err(PathError::OutsideWorkspace));
        assert_eq!(rel("/"), Err(PathError::OutsideWorkspace));
        assert_eq!(rel(".."), Err(PathError::Escapes));
        assert_eq!(rel("a/../../x"), Err(PathError::Escapes));
        assert_eq!(rel("/workspace/../etc"), Err(PathError::Escapes));
        assert_eq!(rel("a\0b"), Err(PathError::Nul));
        assert_eq!(rel(&"a".repeat(4097)), Err(PathError::TooLong));
        assert!(rel(&"a/".repeat(2048)).is_ok());
    }

    #[test]
    fn messages_match_spec() {
        assert_eq!(
            PathError::OutsideWorkspace.to_string(),
            "Only /workspace paths are allowed"
        );
        assert_eq!(PathError::Escapes.to_string(), "Path escapes /workspace");
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rds-paths-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ws/a/b")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("ws/file"), b"x").unwrap();
        symlink("a/b", dir.join("ws/inside")).unwrap();
        symlink("../outside", dir.join("ws/up")).unwrap();
        symlink(dir.join("ws/a"), dir.join("ws/abs")).unwrap();
        symlink("a/../..", dir.join("ws/sneaky")).unwrap();
        symlink("loop", dir.join("ws/loop")).unwrap();
        symlink("file", dir.join("ws/tofile")).unwrap();
        dir
    }

    fn outcome(root: &Path, p: &str, resolver: Resolver) -> &'static str {
        match open_dir(root, &normalize(p).unwrap(), resolver) {
            Ok(_) => "ok",
            Err(OpenError::Escapes) => "escapes",
            Err(OpenError::NotADirectory) => "notdir",
            Err(e) => panic!("{p}: {e:?}"),
        }
    }

    #[test]
    fn open_any_both_resolvers_agree() {
        let dir = scratch();
        let root = dir.join("ws");
        let cases = [
            ("file", "file"),
            ("tofile", "file"),
            ("a/b", "dir"),
            ("inside", "dir"),
            ("up", "escapes"),
            ("abs", "escapes"),
            ("missing", "missing"),
            ("file/x", "missing"),
            ("loop", "missing"),
        ];
        for resolver in [Resolver::Auto, Resolver::Walk] {
            for (p, want) in cases {
                let got = match open_any(&root, &normalize(p).unwrap(), resolver) {
                    Ok(fd) => match stat_fd(&fd).unwrap().st_mode & libc::S_IFMT {
                        libc::S_IFDIR => "dir",
                        libc::S_IFREG => "file",
                        _ => "other",
                    },
                    Err(OpenError::Escapes) => "escapes",
                    Err(OpenError::NotADirectory) => "missing",
                    Err(e) => panic!("{p}: {e:?}"),
                };
                assert_eq!(got, want, "{p} with {resolver:?}");
            }
        }
        let fd = open_any(&root, &normalize("file").unwrap(), Resolver::Auto).unwrap();
        let readable = reopen(&fd, libc::O_RDONLY).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(readable), &mut text).unwrap();
        assert_eq!(text, "x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_dir_both_resolvers_agree() {
        let dir = scratch();
        let root = dir.join("ws");
        let cases = [
            (".", "ok"),
            ("a", "ok"),
            ("a/b", "ok"),
            ("inside", "ok"),
            ("inside/..", "ok"),
            ("up", "escapes"),
            ("abs", "escapes"),
            ("sneaky", "escapes"),
            ("missing", "notdir"),
            ("file", "notdir"),
            ("tofile", "notdir"),
            ("loop", "notdir"),
        ];
        for resolver in [Resolver::Auto, Resolver::Walk] {
            for (p, want) in cases {
                assert_eq!(outcome(&root, p, resolver), want, "{p} with {resolver:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
