//! All SQL lives here. One schema for SQLite and Postgres (numbered `$n` parameters work on both);
//! migrations are embedded per dialect and run at start.

mod images;
mod vms;

pub use vms::{CreateVmError, NewVm};

use crate::config::DbSettings;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::os::unix::fs::OpenOptionsExt;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
}

impl Db {
    pub async fn connect(settings: &DbSettings) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let url = match settings.dialect {
            "postgres" => settings.database_url.clone().unwrap_or_default(),
            _ => {
                let path = &settings.sqlite_path;
                let file_err = |source| DbError::File {
                    path: path.display().to_string(),
                    source,
                };
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(file_err)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(file_err)?;
                format!("sqlite://{}?mode=rwc", path.display())
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await?;
        if settings.dialect == "sqlite" {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(Db { pool })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}
