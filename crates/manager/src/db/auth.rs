//! `sessions` and `api_keys` (docs/reference/security.md §3). Sessions are keyed by the SHA-256 of
//! the cookie value; keys are found by prefix and carry an argon2id hash, never the key.

use super::{is_unique_violation, Db, DbError};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A stored admin session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Hex SHA-256 of the cookie value.
    pub id_hash: String,
    pub email: String,
    pub csrf_token: String,
    pub credential_fingerprint: String,
    pub created_at: String,
    pub expires_at: String,
}

/// A DB API key as the API shows it, plus its hash.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// What a key create collided on.
#[derive(Debug, thiserror::Error)]
pub enum InsertKeyError {
    #[error("an API key with prefix {0} exists")]
    PrefixTaken(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

const SESSION_COLUMNS: &str =
    "id_hash, email, csrf_token, credential_fingerprint, created_at, expires_at";
const KEY_COLUMNS: &str =
    "id, name, prefix, hash, created_at, expires_at, revoked_at, last_used_at";

fn session_from_row(r: &AnyRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id_hash: r.try_get("id_hash")?,
        email: r.try_get("email")?,
        csrf_token: r.try_get("csrf_token")?,
        credential_fingerprint: r.try_get("credential_fingerprint")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

fn key_from_row(r: &AnyRow) -> Result<ApiKeyRecord, sqlx::Error> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        hash: r.try_get("hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

impl Db {
    pub async fn insert_session(&self, s: &SessionRecord) -> Result<(), DbError> {
        sqlx::query(&format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&s.id_hash)
        .bind(&s.email)
        .bind(&s.csrf_token)
        .bind(&s.credential_fingerprint)
        .bind(&s.created_at)
        .bind(&s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id hash if it has not expired at `now` and was made under the
    /// credentials of `fingerprint`.
    pub async fn live_session(
        &self,
        id_hash: &str,
        fingerprint: &str,
        now: &str,
    ) -> Result<Option<SessionRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1 \
             AND credential_fingerprint = $2 AND expires_at > $3"
        ))
        .bind(id_hash)
        .bind(fingerprint)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes sessions expired at `now`; returns how many.
    pub async fn purge_sessions(&self, now: &str) -> Result<u64, DbError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn insert_api_key(&self, k: &ApiKeyRecord) -> Result<(), InsertKeyError> {
        let done = sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&k.created_at)
        .bind(&k.expires_at)
        .bind(&k.revoked_at)
        .bind(&k.last_used_at)
        .execute(&self.pool)
        .await;
        match done {
            Err(e) if is_unique_violation(&e) => Err(InsertKeyError::PrefixTaken(k.prefix.clone())),
            Err(e) => Err(DbError::from(e).into()),
            Ok(_) => Ok(()),
        }
    }

    /// Every key, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, DbError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(key_from_row).transpose()?)
    }

    /// The key with this prefix if it is neither revoked nor expired at `now`.
    pub async fn usable_api_key(
        &self,
        prefix: &str,
        now: &str,
    ) -> Result<Option<ApiKeyRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)"
        ))
        .bind(prefix)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(key_from_row).transpose()?)
    }

    /// Sets `revoked_at` unless already set (the first revocation time stays). Returns the record
    /// and whether this call revoked it; `None` when there is no such key.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now: &str,
    ) -> Result<Option<(ApiKeyRecord, bool)>, DbError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        let revoked = done.rows_affected() > 0;
        Ok(self.get_api_key(id).await?.map(|r| (r, revoked)))
    }

    pub async fn touch_api_key(&self, id: &str, now: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
