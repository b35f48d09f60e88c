//! Filesystem steps and text limits shared by the backends.

use crate::VmmError;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `sun_path` holds 108 bytes including the terminating NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Fails when a Unix socket at `path` could not be bound or reached (longer than `sun_path`).
pub(crate) fn check_socket_path(path: &Path) -> Result<(), VmmError> {
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_SOCKET_PATH {
        return Err(VmmError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when something was cut.
pub(crate) fn ellipsize(mut s: String, max: usize) -> String {
    if s.len() > max {
        s.truncate(s.floor_char_boundary(max));
        s.push('…');
    }
    s
}

/// Removes a directory tree off the async runtime; a missing directory is fine.
pub(crate) async fn remove_dir(dir: &Path) -> Result<(), VmmError> {
    let owned = dir.to_path_buf();
    let r = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VmmError::io("remove", dir, e)),
    }
}
