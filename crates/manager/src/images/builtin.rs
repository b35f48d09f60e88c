//! The built-in image (`docs/reference/lifecycle.md` §11): the files of `KERNEL_PATH`,
//! `INITRD_PATH` and `BASE_ROOTFS_PATH` are hashed (digests cached in the DB by path, size and
//! mtime, since a 2 GiB rootfs takes seconds), and unless a built-in image with those digests
//! exists they are cloned (reflink or sparse copy) into `IMAGES_DIR/<new id>/` and registered
//! read-only.

use super::format::{self, HEAD_LEN};
use super::receive::hex;
use super::{ImageError, ImageService};
use crate::model::{now_rfc3339, BuiltinFile, ImageFile, ImagePart, ImageRecord, NewBuiltinImage};
use crate::storage::clone_file;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A source file and its digest.
struct Source {
    path: PathBuf,
    bytes: u64,
    sha256: String,
}

impl ImageService {
    /// Registers (or finds) the built-in image for these files; returns it.
    pub async fn register_builtin(
        &self,
        kernel: &Path,
        initrd: Option<&Path>,
        rootfs: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let started = std::time::Instant::now();
        let k = self.digest(kernel).await?;
        let i = match initrd {
            Some(p) => Some(self.digest(p).await?),
            None => None,
        };
        let r = self.digest(rootfs).await?;
        let db = &self.inner.db;
        let found = db
            .find_builtin_image(&k.sha256, i.as_ref().map(|s| s.sha256.as_str()), &r.sha256)
            .await?;
        let image = match found {
            Some(img) if files_present(&img) => img,
            found => {
                // New contents, or a registered image whose files are gone: clone under its id.
                let id = found
                    .map(|img| img.id)
                    .unwrap_or_else(|| format!("img-{}", uuid::Uuid::new_v4()));
                let dir = self.image_dir(&id)?;
                let mut sources = vec![(ImagePart::Kernel, &k), (ImagePart::Rootfs, &r)];
                sources.extend(i.as_ref().map(|s| (ImagePart::Initrd, s)));
                let mut cloned = Vec::new();
                for (part, src) in sources {
                    let path = self.clone_in(src, &dir.join(part.file_name())).await?;
                    let file = ImageFile {
                        bytes: src.bytes,
                        sha256: src.sha256.clone(),
                        uploaded_at: now_rfc3339(),
                    };
                    cloned.push((part, BuiltinFile { path, file }));
                }
                let take = |want| {
                    cloned
                        .iter()
                        .find(|(p, _)| *p == want)
                        .map(|(_, f)| f.clone())
                };
                let kernel_format = kernel_format_of(kernel)?;
                let new = NewBuiltinImage {
                    id: id.clone(),
                    kernel: take(ImagePart::Kernel).expect("kernel cloned"),
                    kernel_format: kernel_format.to_string(),
                    initrd: take(ImagePart::Initrd),
                    rootfs: take(ImagePart::Rootfs).expect("rootfs cloned"),
                };
                if db.get_image(&id).await?.is_none() {
                    db.insert_builtin_image(&new).await?;
                }
                db.get_image(&id).await?.ok_or(ImageError::NotFound)?
            }
        };
        tracing::info!(image_id = %image.id, elapsed_ms = started.elapsed().as_millis() as u64, "built-in image registered");
        *self.inner.builtin.lock().expect("builtin lock") = Some(image.id.clone());
        Ok(image)
    }

    /// The SHA-256 of `path`, from the cache when its size and mtime are unchanged.
    async fn digest(&self, path: &Path) -> Result<Source, ImageError> {
        let meta = std::fs::metadata(path).map_err(ImageError::io("stat", path))?;
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let key = path.to_string_lossy().into_owned();
        let db = &self.inner.db;
        let memo_key = (key.clone(), meta.len(), mtime_ns);
        let sha256 = match db.cached_digest(&key, meta.len(), mtime_ns).await? {
            Some(sha) => sha,
            None => {
                let memo = digest_memo()
                    .lock()
                    .expect("digest memo")
                    .get(&memo_key)
                    .cloned();
                let sha = match memo {
                    Some(sha) => sha,
                    None => {
                        let owned = path.to_path_buf();
                        let started = std::time::Instant::now();
                        let sha = tokio::task::spawn_blocking(move || hash_file(&owned))
                            .await
                            .map_err(|e| ImageError::Internal(format!("hash task: {e}")))?
                            .map_err(ImageError::io("read", path))?;
                        tracing::info!(path = %key, bytes = meta.len(), elapsed_ms = started.elapsed().as_millis() as u64, "digest computed");
                        sha
                    }
                };
                db.store_digest(&key, meta.len(), mtime_ns, &sha).await?;
                sha
            }
        };
        digest_memo()
            .lock()
            .expect("digest memo")
            .insert(memo_key, sha256.clone());
        Ok(Source {
            path: path.to_path_buf(),
            bytes: meta.len(),
            sha256,
        })
    }

    /// Clones `src` to `dst` through a temporary name, read-only; returns `dst` as a string.
    async fn clone_in(&self, src: &Source, dst: &Path) -> Result<String, ImageError> {
        let name = dst.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dst.with_file_name(format!(".tmp-{name}-{}", uuid::Uuid::new_v4()));
        let (from, to, mode) = (src.path.clone(), tmp.clone(), self.inner.clone_mode);
        // A source that is already read-only for everyone (the image builder's output is 0444) is
        // immutable by convention: a hard link shares it at no cost; anything else is cloned.
        let read_only = std::fs::metadata(&from).is_ok_and(|m| m.permissions().mode() & 0o222 == 0);
        tokio::task::spawn_blocking(move || {
            if read_only && std::fs::hard_link(&from, &to).is_ok() {
                return Ok(());
            }
            clone_file(&from, &to, mode)
        })
        .await
        .map_err(|e| ImageError::Internal(format!("clone task: {e}")))?
        .map_err(ImageError::io("clone", &src.path))?;
        let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
            .and_then(|()| std::fs::rename(&tmp, dst));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::io("install", dst)(e));
        }
        Ok(dst.to_string_lossy().into_owned())
    }
}

fn files_present(img: &ImageRecord) -> bool {
    [&img.kernel_path, &img.rootfs_path, &img.initrd_path]
        .into_iter()
        .flatten()
        .all(|p| Path::new(p).is_file())
}

fn kernel_format_of(path: &Path) -> Result<&'static str, ImageError> {
    let mut head = vec![0u8; HEAD_LEN];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(ImageError::io("read", path))?;
    format::kernel_format(&head[..n])
        .map(|f| f.as_str())
        .ok_or(ImageError::Invalid(ImagePart::Kernel))
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// (path, size, mtime in ns) → SHA-256.
type DigestMemo = std::sync::Mutex<std::collections::HashMap<(String, u64, i64), String>>;

/// Digests already computed by this process, so several managers in one process (tests) or a
/// rebuilt DB do not hash the same gigabytes again.
fn digest_memo() -> &'static DigestMemo {
    static MEMO: std::sync::OnceLock<DigestMemo> = std::sync::OnceLock::new();
    MEMO.get_or_init(Default::default)
}
