//! Request bodies written to a file under a size cap before they are used (file uploads, image
//! bundles; image parts go through the image receiver, which hashes and checks as it writes, into
//! the same kind of file). The file is removed when dropped unless it was renamed into place.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file that is removed when dropped, unless [`TempFile::persist`] renamed it into place.
#[derive(Debug)]
pub struct TempFile(Option<PathBuf>);

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("body over {0} bytes")]
    TooLarge(u64),
    /// The client's body broke off or was malformed.
    #[error("body: {0}")]
    Body(String),
    /// `ENOSPC`: the caller's 507.
    #[error("no space left on the spool's filesystem")]
    NoSpace,
    #[error("spool {step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpoolError {
    /// `ENOSPC` as [`SpoolError::NoSpace`], anything else with the step and path.
    pub fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
        let path = path.to_path_buf();
        move |source| {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                SpoolError::NoSpace
            } else {
                SpoolError::Io { step, path, source }
            }
        }
    }
}

impl TempFile {
    /// Takes charge of `path` (already created by the caller).
    pub fn adopt(path: PathBuf) -> TempFile {
        TempFile(Some(path))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("temp file still armed")
    }

    /// Sets `mode` and renames the file to `to`, replacing what was there.
    pub fn persist(mut self, to: &Path, mode: u32) -> Result<(), SpoolError> {
        let from = self.0.take().expect("temp file still armed");
        let result = std::fs::set_permissions(&from, std::fs::Permissions::from_mode(mode))
            .map_err(SpoolError::io("chmod", &from))
            .and_then(|()| std::fs::rename(&from, to).map_err(SpoolError::io("rename", &from)));
        if result.is_err() {
            let _ = std::fs::remove_file(&from);
        }
        result
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Streams `body` to a new file at `path` (0600, at most `limit` bytes, flushed); returns it and
/// its length. On any error the file is gone.
pub async fn spool<S, E>(
    mut body: S,
    path: PathBuf,
    limit: u64,
) -> Result<(TempFile, u64), SpoolError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(SpoolError::io("create", &path))?;
    let spooled = TempFile(Some(path));
    let mut len = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| SpoolError::Body(e.to_string()))?;
        len += chunk.len() as u64;
        if len > limit {
            return Err(SpoolError::TooLarge(limit));
        }
        file.write_all(&chunk)
            .await
            .map_err(SpoolError::io("write", spooled.path()))?;
    }
    file.flush()
        .await
        .map_err(SpoolError::io("flush", spooled.path()))?;
    Ok((spooled, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn spools_under_the_cap_and_leaves_nothing_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let (f, len) = spool(body(&[b"abc", b"de"]), path.clone(), 5)
            .await
            .unwrap();
        assert_eq!(
            (len, std::fs::read(f.path()).unwrap()),
            (5, b"abcde".to_vec())
        );
        drop(f);
        assert!(!path.exists(), "removed on drop");
        let over = spool(body(&[b"abc", b"def"]), path.clone(), 5).await;
        assert!(matches!(over, Err(SpoolError::TooLarge(5))), "{over:?}");
        assert!(!path.exists(), "removed after the cap");
        let (f, _) = spool(body(&[b"x"]), path.clone(), 5).await.unwrap();
        let to = dir.path().join("b");
        f.persist(&to, 0o444).unwrap();
        assert!(!path.exists() && to.exists());
    }
}
