use super::{flag, Db, DbError};
use crate::model::{now_rfc3339, ImageRecord};
use sqlx::any::AnyRow;
use sqlx::Row;

const COLUMNS: &str = "id, name, built_in, kernel_path, initrd_path, rootfs_path, created_at";

fn from_row(r: &AnyRow) -> Result<ImageRecord, sqlx::Error> {
    Ok(ImageRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        built_in: r.try_get::<i64, _>("built_in")? != 0,
        kernel_path: r.try_get("kernel_path")?,
        initrd_path: r.try_get("initrd_path")?,
        rootfs_path: r.try_get("rootfs_path")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Db {
    /// The built-in image for these files: found if registered before, else inserted. It becomes the
    /// default when no default is set.
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
        let image = match found {
            Some(row) => from_row(&row)?,
            None => {
                let id = format!("img-{}", uuid::Uuid::new_v4());
                let now = now_rfc3339();
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
                .bind(&now)
                .execute(&self.pool)
                .await?;
                ImageRecord {
                    id,
                    name: "built-in".into(),
                    built_in: true,
                    kernel_path: Some(kernel.into()),
                    initrd_path: initrd.map(Into::into),
                    rootfs_path: Some(rootfs.into()),
                    created_at: now,
                }
            }
        };
        if self.default_image().await?.is_none() {
            self.set_default_image(&image.id).await?;
        }
        Ok(image)
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

    pub async fn default_image(&self) -> Result<Option<ImageRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM guest_images WHERE id = \
             (SELECT value FROM settings WHERE key = 'defaultGuestImageId')"
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM guest_images WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }
}
