//! All SQL lives here. One schema for SQLite and Postgres, reached through sqlx's `Any` driver with
//! numbered `$n` parameters (both dialects accept them); migrations are embedded per dialect and
//! run at start. Portable on purpose: integers and 0/1 flags are BIGINT and bound as `i64`,
//! timestamps are fixed-width RFC 3339 TEXT (so they sort as text), and `ON CONFLICT` is the only
//! upsert used.

mod activity;
mod auth;
mod images;
mod internal;
mod lifetimes;
pub mod reconcile;
mod snapshots;
mod vms;
mod webhooks;

pub use activity::ActivityEvent;
pub use auth::{ApiKeyRecord, InsertKeyError, SessionRecord};
pub use snapshots::SnapshotScope;
pub use vms::{CreateVmError, NewVm, PoolRole};
pub use webhooks::{AttemptOutcome, DeliveryRecord, WebhookRecord};

use crate::config::DbSettings;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection};
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
    /// A write that kept colliding with concurrent writers.
    #[error("database conflict: {0}")]
    Conflict(String),
    /// A state change the transition table refuses: a bug in the caller, never input.
    #[error("illegal VM state transition {from} -> {to}")]
    Transition {
        from: crate::model::VmState,
        to: crate::model::VmState,
    },
    /// A driver message with `DATABASE_URL` (or its password) removed.
    #[error("{0}")]
    Redacted(String),
}

impl DbError {
    /// Whether the database could not be reached at all (server down, restarting, refusing
    /// connections, pool starved) rather than refusing a statement: the API answers these with 503
    /// `Database unavailable`, a condition the caller may retry, instead of a 500.
    pub fn is_unavailable(&self) -> bool {
        use sqlx::Error as E;
        match self {
            DbError::Sql(
                E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed,
            ) => true,
            // SQLSTATE class 08 (connection exception) and 57P01–57P03 (admin or crash shutdown,
            // cannot connect now: a server stopping or starting).
            DbError::Sql(E::Database(d)) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        }
    }
}

/// Which database a [`Db`] talks to; only the few statements that cannot be portable look at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

impl Db {
    /// Opens the database of `settings` and applies the embedded migrations. Errors never contain
    /// `DATABASE_URL` or its password (`docs/reference/configuration.md` §1), whatever the driver
    /// put in its message.
    pub async fn connect(settings: &DbSettings) -> Result<Db, DbError> {
        if settings.dialect == "postgres" {
            let url = settings.database_url.as_deref().unwrap_or_default();
            return Db::open(url, Dialect::Postgres)
                .await
                .map_err(|e| redact(e, url));
        }
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
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Db::open(&url, Dialect::Sqlite).await
    }

    async fn open(url: &str, dialect: Dialect) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        if dialect == Dialect::Postgres {
            // One plain attempt first: the pool would retry a refused connection until its acquire
            // timeout, and a startup check should say at once that the server is not there.
            sqlx::AnyConnection::connect(url).await?.close().await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(15))
            .connect(url)
            .await?;
        match dialect {
            Dialect::Sqlite => {
                sqlx::query("PRAGMA journal_mode=WAL")
                    .execute(&pool)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            }
            Dialect::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        Ok(Db { pool, dialect })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
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

/// Whether `e` is a unique-key violation (Postgres 23505, SQLite's UNIQUE/PRIMARY KEY constraint).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The error of a Postgres connect with the URL and its password cut out of the message. sqlx does
/// not echo the URL today; this keeps it that way if a driver ever does.
fn redact(e: DbError, url: &str) -> DbError {
    let text = e.to_string();
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|auth| auth.rsplit_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
        .map(|(_, pw)| pw)
        .filter(|pw| !pw.is_empty());
    let leaks =
        (!url.is_empty() && text.contains(url)) || password.is_some_and(|p| text.contains(p));
    if !leaks {
        return e;
    }
    let mut clean = text.replace(url, "<DATABASE_URL>");
    if let Some(p) = password {
        clean = clean.replace(p, "<password>");
    }
    DbError::Redacted(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_cuts_url_and_password() {
        let url = "postgres://rds:s3cret@db.example:5432/rds";
        let e = DbError::Corrupt {
            table: "x",
            detail: format!("cannot reach {url}, password s3cret"),
        };
        let text = redact(e, url).to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("db.example"),
            "{text}"
        );
        let plain = redact(
            DbError::Corrupt {
                table: "x",
                detail: "connection refused".into(),
            },
            url,
        );
        assert!(matches!(plain, DbError::Corrupt { .. }));
    }
}
