//! Filesystem steps shared by the backends.

use crate::VmmError;
use std::path::Path;

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
