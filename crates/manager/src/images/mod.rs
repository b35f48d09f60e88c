//! Guest images (`docs/reference/api.md` §5, `docs/reference/lifecycle.md` §6, §11): metadata in
//! the DB, files under `IMAGES_DIR/<imageId>/` (`vmlinux`, `initrd`, `rootfs.ext4`, 0444 once
//! complete). Uploads stream to a temporary file beside the target under a cap, are checked by
//! magic and hashed as they pass, fsynced, then renamed into place; any failure removes the
//! temporary file and leaves the image as it was. An image a non-deleted user VM uses is never
//! changed, so every VM's overlay keeps the lower layer it was made on.

mod builtin;
mod bundle;
pub mod format;
mod receive;

pub use format::KernelFormat;

use crate::activity::{Activity, Draft, EventType};
use crate::db::{Db, DbError};
use crate::model::{ImagePart, ImageRecord};
use crate::storage::spool::{self, SpoolError};
use crate::storage::CloneMode;
use bytes::Bytes;
use futures::Stream;
use serde_json::json;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const GIB: u64 = 1024 * 1024 * 1024;
/// The directory under `IMAGES_DIR` holding files being received.
const STAGING: &str = ".staging";
/// Kernel, rootfs and bundle bodies (`docs/reference/api.md` §1.4).
pub const MAX_UPLOAD_BYTES: u64 = 3 * GIB;
/// Initrd bodies.
pub const MAX_INITRD_BYTES: u64 = GIB;

/// The size cap of one file of an image.
pub fn limit(part: ImagePart) -> u64 {
    match part {
        ImagePart::Initrd => MAX_INITRD_BYTES,
        ImagePart::Kernel | ImagePart::Rootfs => MAX_UPLOAD_BYTES,
    }
}

/// Why an image operation failed. The messages are the API's; `api::routes::images` picks statuses.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("Image not found")]
    NotFound,
    #[error("{}", invalid_message(*.0))]
    Invalid(ImagePart),
    #[error("Built-in image is read-only")]
    BuiltInReadOnly,
    #[error("Image is in use; create a new image")]
    InUse,
    #[error("Image is in use by an active VM")]
    InUseByVm,
    #[error("Image is in use by snapshot {0}")]
    InUseBySnapshot(String),
    #[error("Built-in image cannot be deleted while KERNEL_PATH and BASE_ROOTFS_PATH point to it")]
    BuiltInCurrent,
    #[error("Image is missing kernel or rootfs")]
    Incomplete,
    #[error("Body too large")]
    TooLarge,
    #[error("Zip must contain vmlinux and/or rootfs.ext4")]
    ZipMissing,
    #[error("Invalid zip archive")]
    ZipInvalid,
    /// The request body broke off or could not be read.
    #[error("upload body: {0}")]
    Body(String),
    #[error("Not enough free space in STORAGE_ROOT")]
    NoSpace,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Internal(String),
}

fn invalid_message(part: ImagePart) -> &'static str {
    match part {
        ImagePart::Kernel => "Kernel must be an ELF vmlinux or a bzImage",
        ImagePart::Initrd => "Initrd must be a cpio archive",
        ImagePart::Rootfs => "Root filesystem must be an ext4 image",
    }
}

impl ImageError {
    /// An I/O error on `path`; a full disk is told apart (507).
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.to_path_buf();
        move |source| {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                ImageError::NoSpace
            } else {
                ImageError::Io { what, path, source }
            }
        }
    }
}

impl From<SpoolError> for ImageError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::TooLarge(_) => ImageError::TooLarge,
            SpoolError::Body(m) => ImageError::Body(m),
            SpoolError::NoSpace => ImageError::NoSpace,
            SpoolError::Io { step, path, source } => ImageError::Io {
                what: step,
                path,
                source,
            },
        }
    }
}

#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    dir: PathBuf,
    spool: PathBuf,
    /// `STORAGE_ROOT/snapshots`: an image's templates go with it.
    snapshots: PathBuf,
    clone_mode: CloneMode,
    /// Serialises the final check-and-rename of uploads with deletes.
    commit: tokio::sync::Mutex<()>,
    /// The built-in image of the current `KERNEL_PATH`/`BASE_ROOTFS_PATH`, once registered.
    builtin: std::sync::Mutex<Option<String>>,
    activity: Activity,
}

impl ImageService {
    /// Creates `images_dir` if missing (0711: the VMM uid may need to pass through, never to list).
    /// `spool_dir` holds bundle zips while they are read; `snapshots_dir` the image's templates.
    pub fn new(
        db: Db,
        images_dir: &Path,
        spool_dir: &Path,
        snapshots_dir: &Path,
        clone_mode: CloneMode,
        activity: Activity,
    ) -> Result<ImageService, ImageError> {
        for dir in [images_dir, spool_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(ImageError::io("create", dir))?;
        }
        std::fs::set_permissions(images_dir, std::fs::Permissions::from_mode(0o711))
            .map_err(ImageError::io("chmod", images_dir))?;
        // Files being received live in `.staging/` (same filesystem, so a commit is a rename) and
        // not in the image's directory, which a refused upload must not create. What a killed
        // manager left there is garbage.
        let staging = images_dir.join(STAGING);
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("clear", &staging)(e)),
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(ImageError::io("create", &staging))?;
        Ok(ImageService {
            inner: Arc::new(Inner {
                db,
                dir: images_dir.to_path_buf(),
                spool: spool_dir.to_path_buf(),
                snapshots: snapshots_dir.to_path_buf(),
                clone_mode,
                commit: tokio::sync::Mutex::new(()),
                builtin: std::sync::Mutex::new(None),
                activity,
            }),
        })
    }

    /// `IMAGES_DIR/.staging/`, where uploads are received before their commit.
    fn staging(&self) -> PathBuf {
        self.inner.dir.join(STAGING)
    }

    /// `IMAGES_DIR/<id>/`, made if missing (only by a commit or the built-in registration).
    fn image_dir(&self, id: &str) -> Result<PathBuf, ImageError> {
        let dir = self.inner.dir.join(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)
            .map_err(ImageError::io("create", &dir))?;
        Ok(dir)
    }

    pub async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.inner.db.list_images().await?)
    }

    pub async fn get(&self, id: &str) -> Result<ImageRecord, ImageError> {
        self.inner
            .db
            .get_image(id)
            .await?
            .ok_or(ImageError::NotFound)
    }

    /// The image creates use when they name none.
    pub async fn default_id(&self) -> Result<Option<String>, ImageError> {
        Ok(self.inner.db.default_image_id().await?)
    }

    /// A user image without files.
    pub async fn create(&self, name: &str, description: &str) -> Result<ImageRecord, ImageError> {
        let id = format!("img-{}", uuid::Uuid::new_v4());
        let image = self.inner.db.insert_image(&id, name, description).await?;
        self.event(EventType::ImageCreated, &id, json!({ "name": name }));
        Ok(image)
    }

    /// Records `kind` about image `id` (docs/reference/api.md §7).
    fn event(&self, kind: EventType, id: &str, meta: serde_json::Value) {
        let what = kind.as_str().trim_start_matches("image.").replace('_', " ");
        let draft = Draft::new(kind, Some(id), format!("Image {id} {what}"));
        self.inner.activity.record(draft.meta(meta));
    }

    /// The image, if its files may be replaced.
    async fn writable(&self, id: &str) -> Result<ImageRecord, ImageError> {
        let image = self.get(id).await?;
        if image.built_in {
            return Err(ImageError::BuiltInReadOnly);
        }
        if self.inner.db.vm_using_image(id).await?.is_some()
            || self.inner.db.user_snapshot_using_image(id).await?.is_some()
        {
            return Err(ImageError::InUse);
        }
        Ok(image)
    }

    /// Streams `body` in as the image's `part` (`PUT /v1/images/:id/{kernel,rootfs,initrd}`).
    pub async fn upload<S, E>(&self, id: &str, part: ImagePart, body: S) -> Result<(), ImageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.writable(id).await?;
        let tmp = self.staging().join(format!(
            "{id}-{}-{}",
            part.file_name(),
            uuid::Uuid::new_v4()
        ));
        let started = std::time::Instant::now();
        let got = receive::receive(body, tmp, part, limit(part)).await?;
        tracing::info!(image_id = %id, part = part.file_name(), bytes = got.file.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64, "image file received");
        let meta = json!({ "bytes": got.file.bytes, "sha256": got.file.sha256 });
        self.commit(id, vec![(part, got)]).await?;
        let kind = match part {
            ImagePart::Kernel => EventType::ImageKernelUploaded,
            ImagePart::Rootfs => EventType::ImageRootfsUploaded,
            ImagePart::Initrd => EventType::ImageInitrdUploaded,
        };
        self.event(kind, id, meta);
        Ok(())
    }

    /// Spools a zip (`PUT /v1/images/:id/bundle`) and installs the files it holds, all or none.
    pub async fn upload_bundle<S, E>(&self, id: &str, body: S) -> Result<(), ImageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.writable(id).await?;
        let path = self
            .inner
            .spool
            .join(format!("bundle-{}.zip", uuid::Uuid::new_v4()));
        let (zip, _) = spool::spool(body, path, MAX_UPLOAD_BYTES).await?;
        let staging = self.staging();
        let zip_path = zip.path().to_path_buf();
        let files = tokio::task::spawn_blocking(move || bundle::extract(&zip_path, &staging))
            .await
            .map_err(|e| ImageError::Internal(format!("bundle task: {e}")))??;
        drop(zip);
        let parts: Vec<&str> = files.iter().map(|(p, _)| p.file_name()).collect();
        let meta = json!({ "files": parts });
        self.commit(id, files).await?;
        self.event(EventType::ImageBundleUploaded, id, meta);
        Ok(())
    }

    /// Renames checked files into place and records them, after checking again that the image may
    /// still change.
    async fn commit(
        &self,
        id: &str,
        files: Vec<(ImagePart, receive::Received)>,
    ) -> Result<(), ImageError> {
        let _serial = self.inner.commit.lock().await;
        self.writable(id).await?;
        // The templates were made on the files being replaced.
        self.remove_templates(id).await?;
        let dir = self.image_dir(id)?;
        for (part, got) in files {
            let dst = dir.join(part.file_name());
            got.tmp.persist(&dst, 0o444)?;
            sync_dir(&dir)?;
            self.inner
                .db
                .set_image_file(
                    id,
                    part,
                    &dst.to_string_lossy(),
                    &got.file,
                    got.kernel_format.map(KernelFormat::as_str),
                )
                .await?;
        }
        Ok(())
    }

    /// `DELETE /v1/images/:id/initrd`: no initrd is fine too.
    pub async fn remove_initrd(&self, id: &str) -> Result<(), ImageError> {
        let _serial = self.inner.commit.lock().await;
        let image = self.writable(id).await?;
        self.inner.db.clear_image_initrd(id).await?;
        if let Some(path) = image.initrd_path {
            remove_file(Path::new(&path))?;
        }
        self.event(EventType::ImageInitrdDeleted, id, json!({}));
        Ok(())
    }

    pub async fn set_default(&self, id: &str) -> Result<(), ImageError> {
        let image = self.get(id).await?;
        if image.kernel_path.is_none() || image.rootfs_path.is_none() {
            return Err(ImageError::Incomplete);
        }
        self.inner.db.set_default_image(id).await?;
        self.event(EventType::ImageDefaultSet, id, json!({}));
        Ok(())
    }

    /// Removes the row, the default setting if it pointed here, and `IMAGES_DIR/<id>/`.
    pub async fn delete(&self, id: &str) -> Result<(), ImageError> {
        let _serial = self.inner.commit.lock().await;
        let image = self.get(id).await?;
        if self.inner.db.vm_using_image(id).await?.is_some() {
            return Err(ImageError::InUseByVm);
        }
        if let Some(snap) = self.inner.db.user_snapshot_using_image(id).await? {
            return Err(ImageError::InUseBySnapshot(snap));
        }
        let current = self.inner.builtin.lock().expect("builtin lock").clone();
        if image.built_in && current.as_deref() == Some(id) {
            return Err(ImageError::BuiltInCurrent);
        }
        let templates = self.inner.db.template_snapshot_ids(id).await?;
        self.inner.db.delete_image(id).await?;
        self.remove_snapshot_dirs(id, &templates).await;
        // Only the image's own folder: older built-in rows may point at files outside IMAGES_DIR.
        let dir = self.inner.dir.join(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(image_id = %id, error = %e, "image files not removed");
            }
            _ => {}
        }
        self.event(EventType::ImageDeleted, id, json!({ "name": image.name }));
        Ok(())
    }

    /// Drops the image's template snapshots: rows, then files.
    async fn remove_templates(&self, id: &str) -> Result<(), ImageError> {
        let templates = self.inner.db.template_snapshot_ids(id).await?;
        for snap in &templates {
            self.inner.db.delete_snapshot(snap).await?;
        }
        self.remove_snapshot_dirs(id, &templates).await;
        Ok(())
    }

    async fn remove_snapshot_dirs(&self, image_id: &str, ids: &[String]) {
        for snap in ids {
            let dir = self.inner.snapshots.join(snap);
            match tokio::fs::remove_dir_all(&dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(%image_id, snapshot_id = %snap, error = %e, "template files not removed");
                }
                _ => {
                    tracing::info!(%image_id, snapshot_id = %snap, "snapshot.deleted");
                    let draft = Draft::new(
                        EventType::SnapshotDeleted,
                        Some(snap),
                        format!("Template {snap} of image {image_id} deleted"),
                    );
                    let meta = json!({ "kind": "template", "imageId": image_id });
                    self.inner.activity.record(draft.meta(meta));
                }
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io("fsync", dir))
}

fn remove_file(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ImageError::io("remove", path)(e))
        }
        _ => Ok(()),
    }
}
