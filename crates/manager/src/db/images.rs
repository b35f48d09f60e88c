//! `guest_images`, the default-image setting and the digest cache of the built-in image's sources.

use super::{flag, Db, DbError};
use crate::model::{now_rfc3339, ImageFile, ImagePart, ImageRecord, ImageSeed, NewBuiltinImage};
use sqlx::any::AnyRow;
use sqlx::Row;

const COLUMNS: &str = "id, name, description, built_in, kernel_path, initrd_path, rootfs_path, \
    created_at, kernel_format, kernel_sha256, kernel_bytes, kernel_uploaded_at, initrd_sha256, \
    initrd_bytes, initrd_uploaded_at, rootfs_sha256, rootfs_bytes, rootfs_uploaded_at, \
    seed_snapshot_id, seed_status, seed_updated_at, seed_error";

/// The recorded file of `part`, if its path, digest, size and time are all there.
fn file_of(r: &AnyRow, part: &str) -> Result<Option<ImageFile>, sqlx::Error> {
    let path: Option<String> = r.try_get(format!("{part}_path").as_str())?;
    let sha: Option<String> = r.try_get(format!("{part}_sha256").as_str())?;
    let bytes: Option<i64> = r.try_get(format!("{part}_bytes").as_str())?;
    let at: Option<String> = r.try_get(format!("{part}_uploaded_at").as_str())?;
    Ok(match (path, sha, bytes, at) {
        (Some(_), Some(sha256), Some(bytes), Some(uploaded_at)) => Some(ImageFile {
            bytes: bytes.max(0) as u64,
            sha256,
            uploaded_at,
        }),
        _ => None,
    })
}

fn from_row(r: &AnyRow) -> Result<ImageRecord, sqlx::Error> {
    let seed = r
        .try_get::<Option<String>, _>("seed_status")?
        .map(|status| -> Result<ImageSeed, sqlx::Error> {
            Ok(ImageSeed {
                snapshot_id: r.try_get("seed_snapshot_id")?,
                status,
                updated_at: r.try_get("seed_updated_at")?,
                error: r.try_get("seed_error")?,
            })
        })
        .transpose()?;
    Ok(ImageRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        built_in: r.try_get::<i64, _>("built_in")? != 0,
        kernel_path: r.try_get("kernel_path")?,
        initrd_path: r.try_get("initrd_path")?,
        rootfs_path: r.try_get("rootfs_path")?,
        created_at: r.try_get("created_at")?,
        kernel: file_of(r, "kernel")?,
        initrd: file_of(r, "initrd")?,
        rootfs: file_of(r, "rootfs")?,
        kernel_format: r.try_get("kernel_format")?,
        seed,
    })
}

/// The default, if set; else the newest built-in image with both files. One expression, used both
/// to resolve creates and to mark `isDefault`, so the two always agree.
const EFFECTIVE_DEFAULT: &str = "COALESCE((SELECT value FROM settings WHERE key = \
     'defaultGuestImageId' AND value IN (SELECT id FROM guest_images)), (SELECT id FROM guest_images \
     WHERE built_in = 1 AND kernel_path IS NOT NULL AND rootfs_path IS NOT NULL \
     ORDER BY created_at DESC, id DESC LIMIT 1))";

impl Db {
    /// The built-in image for these files, found by path if registered before, else inserted
    /// without digests. It becomes the default when no default is set. (Startup registers by digest
    /// through [`Db::find_builtin_image`] and [`Db::insert_builtin_image`]; this stays for
    /// path-only callers.)
    pub async fn ensure_builtin_image(
        &self,
        kernel: &str,
        initrd: Option<&str>,
        rootfs: &str,
    ) -> Result<ImageRecord, DbError> {
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guest_images WHERE built_in = 1 AND kernel_path = $1 \
             AND rootfs_path = $2 AND COALESCE(initrd_path, '') = $3"
        ))
        .bind(kernel)
        .bind(rootfs)
        .bind(initrd.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        let id = match found {
            Some(row) => from_row(&row)?.id,
            None => {
                let id = format!("img-{}", uuid::Uuid::new_v4());
                sqlx::query(
                    "INSERT INTO guest_images (id, name, description, built_in, kernel_path, \
                     initrd_path, rootfs_path, created_at) VALUES ($1, 'built-in', \
                     'Image from KERNEL_PATH and BASE_ROOTFS_PATH', $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(flag(true))
                .bind(kernel)
                .bind(initrd)
                .bind(rootfs)
                .bind(now_rfc3339())
                .execute(&self.pool)
                .await?;
                id
            }
        };
        self.default_if_unset(&id).await?;
        self.get_image(&id)
            .await?
            .ok_or_else(|| DbError::Conflict(format!("image {id} vanished after insert")))
    }

    /// The built-in image holding exactly these contents, if one was registered.
    pub async fn find_builtin_image(
        &self,
        kernel_sha256: &str,
        initrd_sha256: Option<&str>,
        rootfs_sha256: &str,
    ) -> Result<Option<ImageRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guest_images WHERE built_in = 1 AND kernel_sha256 = $1 \
             AND rootfs_sha256 = $2 AND COALESCE(initrd_sha256, '') = $3 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(kernel_sha256)
        .bind(rootfs_sha256)
        .bind(initrd_sha256.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Inserts a read-only image named `built-in`; it becomes the default when none is set.
    pub async fn insert_builtin_image(&self, img: &NewBuiltinImage) -> Result<(), DbError> {
        let initrd = img.initrd.as_ref();
        sqlx::query(
            "INSERT INTO guest_images (id, name, description, built_in, created_at, kernel_path, \
             kernel_format, kernel_sha256, kernel_bytes, kernel_uploaded_at, initrd_path, \
             initrd_sha256, initrd_bytes, initrd_uploaded_at, rootfs_path, rootfs_sha256, \
             rootfs_bytes, rootfs_uploaded_at) VALUES ($1, 'built-in', \
             'Image from KERNEL_PATH and BASE_ROOTFS_PATH', 1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15)",
        )
        .bind(&img.id)
        .bind(now_rfc3339())
        .bind(&img.kernel.path)
        .bind(&img.kernel_format)
        .bind(&img.kernel.file.sha256)
        .bind(img.kernel.file.bytes as i64)
        .bind(&img.kernel.file.uploaded_at)
        .bind(initrd.map(|f| f.path.clone()))
        .bind(initrd.map(|f| f.file.sha256.clone()))
        .bind(initrd.map(|f| f.file.bytes as i64))
        .bind(initrd.map(|f| f.file.uploaded_at.clone()))
        .bind(&img.rootfs.path)
        .bind(&img.rootfs.file.sha256)
        .bind(img.rootfs.file.bytes as i64)
        .bind(&img.rootfs.file.uploaded_at)
        .execute(&self.pool)
        .await?;
        self.default_if_unset(&img.id).await
    }

    /// A user image without files (`POST /v1/images`).
    pub async fn insert_image(
        &self,
        id: &str,
        name: &str,
        description: &str,
    ) -> Result<ImageRecord, DbError> {
        sqlx::query(
            "INSERT INTO guest_images (id, name, description, built_in, created_at) \
             VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(id)
        .bind(name)
        .bind(description)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        self.get_image(id)
            .await?
            .ok_or_else(|| DbError::Conflict(format!("image {id} vanished after insert")))
    }

    /// Records an accepted upload of `part` at `path`; the image's template is discarded.
    pub async fn set_image_file(
        &self,
        id: &str,
        part: ImagePart,
        path: &str,
        file: &ImageFile,
        kernel_format: Option<&str>,
    ) -> Result<(), DbError> {
        let sql = match part {
            ImagePart::Kernel => {
                "UPDATE guest_images SET kernel_path = $2, kernel_sha256 = $3, kernel_bytes = $4, \
                 kernel_uploaded_at = $5, kernel_format = $6"
            }
            ImagePart::Initrd => {
                "UPDATE guest_images SET initrd_path = $2, initrd_sha256 = $3, initrd_bytes = $4, \
                 initrd_uploaded_at = $5, kernel_format = COALESCE($6, kernel_format)"
            }
            ImagePart::Rootfs => {
                "UPDATE guest_images SET rootfs_path = $2, rootfs_sha256 = $3, rootfs_bytes = $4, \
                 rootfs_uploaded_at = $5, kernel_format = COALESCE($6, kernel_format)"
            }
        };
        sqlx::query(&format!(
            "{sql}, seed_snapshot_id = NULL, seed_status = NULL, seed_updated_at = NULL, \
             seed_error = NULL WHERE id = $1"
        ))
        .bind(id)
        .bind(path)
        .bind(&file.sha256)
        .bind(file.bytes as i64)
        .bind(&file.uploaded_at)
        .bind(kernel_format)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The image's template is `snapshot_id` and ready (`docs/snapshots.md` Templates).
    pub async fn set_image_seed_ready(&self, id: &str, snapshot_id: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE guest_images SET seed_snapshot_id = $1, seed_status = 'ready', \
             seed_updated_at = $2, seed_error = NULL WHERE id = $3",
        )
        .bind(snapshot_id)
        .bind(now_rfc3339())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the image's initrd; the template is discarded as for an upload.
    pub async fn clear_image_initrd(&self, id: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE guest_images SET initrd_path = NULL, initrd_sha256 = NULL, initrd_bytes = NULL, \
             initrd_uploaded_at = NULL, seed_snapshot_id = NULL, seed_status = NULL, \
             seed_updated_at = NULL, seed_error = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the row, its template rows and the default setting if it pointed here, together.
    pub async fn delete_image(&self, id: &str) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM settings WHERE key = 'defaultGuestImageId' AND value = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM guest_images WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM snapshots WHERE image_id = $1 AND kind = 'template'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A non-deleted user VM on this image, if any.
    pub async fn vm_using_image(&self, id: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query(
            "SELECT id FROM vms WHERE image_id = $1 AND state <> $2 AND pool_role IS NULL \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(id)
        .bind(crate::model::VmState::Deleted.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// One upsert statement, so concurrent callers cannot trip over the `settings` key.
    pub async fn set_default_image(&self, id: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('defaultGuestImageId', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn default_if_unset(&self, id: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('defaultGuestImageId', $1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The image creates use without an `imageId`: the default if set, else the newest built-in.
    pub async fn default_image(&self) -> Result<Option<ImageRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guest_images WHERE id = {EFFECTIVE_DEFAULT}"
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The id of [`Db::default_image`], for `isDefault`.
    pub async fn default_image_id(&self) -> Result<Option<String>, DbError> {
        let row = sqlx::query(&format!("SELECT {EFFECTIVE_DEFAULT} AS id"))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM guest_images WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Every image, newest first.
    pub async fn list_images(&self) -> Result<Vec<ImageRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guest_images ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The cached SHA-256 of `path` if it was computed for this size and mtime.
    pub async fn cached_digest(
        &self,
        path: &str,
        size: u64,
        mtime_ns: i64,
    ) -> Result<Option<String>, DbError> {
        let row = sqlx::query(
            "SELECT sha256 FROM file_digests WHERE path = $1 AND size = $2 AND mtime_ns = $3",
        )
        .bind(path)
        .bind(size as i64)
        .bind(mtime_ns)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("sha256")).transpose()?)
    }

    pub async fn store_digest(
        &self,
        path: &str,
        size: u64,
        mtime_ns: i64,
        sha256: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO file_digests (path, size, mtime_ns, sha256) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, \
             sha256 = excluded.sha256",
        )
        .bind(path)
        .bind(size as i64)
        .bind(mtime_ns)
        .bind(sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
