//! Who a request acts as (docs/reference/api.md §1.2, docs/reference/security.md §3): the master
//! key, a DB API key, or an admin session. Knows nothing of routes; `api::auth` applies it to
//! requests.

pub mod csrf;
pub mod hashing;
pub mod keys;
mod password;
pub mod sessions;

pub use hashing::{is_argon2id_phc, Busy};
pub use keys::KeyError;

use crate::activity::{Activity, Draft, EventType};
use crate::db::{ApiKeyRecord, Db, DbError, SessionRecord};
use crate::model::now_rfc3339;
use http::HeaderMap;
use password::AdminCredentials;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// What the auth service needs from the configuration.
pub struct AuthSettings<'a> {
    pub api_key: &'a str,
    pub admin_email: &'a str,
    pub admin_password: &'a str,
    pub session_ttl_hours: u64,
    pub cookie_secure: bool,
}

/// A live admin session. Holds the CSRF token, so it is never logged (no `Debug`).
#[derive(Clone)]
pub struct Session {
    /// SHA-256 (hex) of the cookie value: the session's name in the DB and in rate limits.
    pub id_hash: String,
    pub email: String,
    pub csrf_token: String,
    pub expires_at: String,
}

impl Session {
    /// Time left before it expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        chrono::DateTime::parse_from_rfc3339(&self.expires_at)
            .ok()
            .and_then(|t| {
                (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            })
            .unwrap_or(Duration::ZERO)
    }
}

impl From<SessionRecord> for Session {
    fn from(r: SessionRecord) -> Self {
        Session {
            id_hash: r.id_hash,
            email: r.email,
            csrf_token: r.csrf_token,
            expires_at: r.expires_at,
        }
    }
}

/// The credential a request was authenticated by.
#[derive(Clone)]
pub enum Principal {
    Master,
    /// A DB API key, by id.
    Key(String),
    Session(Session),
}

impl Principal {
    /// The rate-limit key (docs/reference/api.md §1.7): `master`, the key id, or the session.
    pub fn rate_key(&self) -> String {
        match self {
            Principal::Master => "master".to_string(),
            Principal::Key(id) => format!("key:{id}"),
            Principal::Session(s) => format!("session:{}", s.id_hash),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("Invalid credentials")]
    Invalid,
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<KeyError> for LoginError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Busy(b) => LoginError::Busy(b),
            KeyError::Db(d) => LoginError::Db(d),
        }
    }
}

/// A new session and the cookie value naming it.
pub struct LoggedIn {
    pub token: String,
    pub session: Session,
}

#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    activity: Activity,
    master: [u8; 32],
    admin: AdminCredentials,
    ttl: Duration,
    cookie_secure: bool,
    pool: hashing::Pool,
    keys: keys::Keys,
}

impl AuthService {
    pub async fn new(db: Db, activity: Activity, s: AuthSettings<'_>) -> AuthService {
        let pool = hashing::Pool::default();
        AuthService {
            inner: Arc::new(Inner {
                keys: keys::Keys::new(db.clone(), pool.clone()),
                admin: AdminCredentials::new(s.admin_email, s.admin_password).await,
                master: Sha256::digest(s.api_key.as_bytes()).into(),
                ttl: Duration::from_secs(s.session_ttl_hours * 3600),
                cookie_secure: s.cookie_secure,
                db,
                activity,
                pool,
            }),
        }
    }

    /// Whether `key` is the master key (SHA-256 digests compared in constant time).
    pub fn is_master(&self, key: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(key).into();
        bool::from(d.ct_eq(&self.inner.master))
    }

    /// The principal of an API key: the master key or a usable DB key.
    pub async fn api_key(&self, key: &str) -> Result<Option<Principal>, KeyError> {
        if self.is_master(key.as_bytes()) {
            return Ok(Some(Principal::Master));
        }
        Ok(self.inner.keys.check(key).await?.map(Principal::Key))
    }

    /// The live session named by the request's `rds_session` cookie, if any (the check behind
    /// the console's `/console*` → `/login/` rule, `/auth/me` and every cookie-authenticated call).
    pub async fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, DbError> {
        let Some(token) = sessions::token(headers) else {
            return Ok(None);
        };
        self.session_by_hash(&sessions::id_hash(token)).await
    }

    /// Whether the request's cookie names a live admin session: the console's `/console*` →
    /// `/login/` rule. A database failure counts as no session (and is logged).
    pub async fn has_session(&self, headers: &HeaderMap) -> bool {
        match self.session(headers).await {
            Ok(s) => s.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "session lookup failed");
                false
            }
        }
    }

    /// The session stored under `id_hash` if it is still live (not expired, not logged out, made
    /// under the current admin credentials).
    pub async fn session_by_hash(&self, id_hash: &str) -> Result<Option<Session>, DbError> {
        let row = self
            .inner
            .db
            .live_session(id_hash, self.inner.admin.fingerprint(), &now_rfc3339())
            .await?;
        Ok(row.map(Session::from))
    }

    /// Checks the admin's email and password; on success stores a new session. Records
    /// `auth.login` or `auth.login_failed` with the client address (never the password or the
    /// email tried).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client_address: &str,
    ) -> Result<LoggedIn, LoginError> {
        let inner = &self.inner;
        if !inner.admin.check(&inner.pool, email, password).await? {
            inner.activity.record(
                Draft::new(EventType::AuthLoginFailed, None, "Admin login failed")
                    .meta(json!({ "clientAddress": client_address })),
            );
            return Err(LoginError::Invalid);
        }
        let token = sessions::new_token();
        let now = chrono::Utc::now();
        let expires = now + chrono::Duration::from_std(inner.ttl).expect("TTL fits");
        let ms = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let record = SessionRecord {
            id_hash: sessions::id_hash(&token),
            email: inner.admin.email().to_string(),
            csrf_token: sessions::new_token(),
            credential_fingerprint: inner.admin.fingerprint().to_string(),
            created_at: ms(now),
            expires_at: ms(expires),
        };
        inner.db.insert_session(&record).await?;
        inner.activity.record(
            Draft::new(
                EventType::AuthLogin,
                Some(inner.admin.email()),
                "Admin logged in",
            )
            .meta(json!({ "clientAddress": client_address })),
        );
        Ok(LoggedIn {
            token,
            session: record.into(),
        })
    }

    /// Deletes the session the request's cookie names, if any.
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), DbError> {
        match sessions::token(headers) {
            Some(token) => {
                self.inner
                    .db
                    .delete_session(&sessions::id_hash(token))
                    .await
            }
            None => Ok(()),
        }
    }

    /// `Set-Cookie` of a new session.
    pub fn set_cookie(&self, token: &str) -> String {
        sessions::set_cookie(token, self.inner.ttl.as_secs(), self.inner.cookie_secure)
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        sessions::clear_cookie(self.inner.cookie_secure)
    }

    /// A new DB API key (its plaintext is only in this answer); records `apikey.created`.
    pub async fn create_key(
        &self,
        name: &str,
        expires_at: Option<String>,
    ) -> Result<(ApiKeyRecord, String), KeyError> {
        let (record, key) = self.inner.keys.create(name, expires_at).await?;
        self.inner.activity.record(
            Draft::new(
                EventType::ApikeyCreated,
                Some(&record.id),
                format!("API key {} created", record.name),
            )
            .meta(json!({ "name": record.name, "prefix": record.prefix, "expiresAt": record.expires_at })),
        );
        Ok((record, key))
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, DbError> {
        self.inner.keys.list().await
    }

    /// Revokes key `id` (idempotent); records `apikey.revoked` the first time. `None`: no such key.
    pub async fn revoke_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, DbError> {
        let Some((record, revoked)) = self.inner.keys.revoke(id).await? else {
            return Ok(None);
        };
        if revoked {
            self.inner.activity.record(
                Draft::new(
                    EventType::ApikeyRevoked,
                    Some(&record.id),
                    format!("API key {} revoked", record.name),
                )
                .meta(json!({ "name": record.name, "prefix": record.prefix })),
            );
        }
        Ok(Some(record))
    }

    /// The argon2 pool, for tests that need it busy.
    #[doc(hidden)]
    pub fn verification_pool(&self) -> &hashing::Pool {
        &self.inner.pool
    }

    /// Purges expired sessions now and then every hour.
    pub fn start_maintenance(&self) {
        let db = self.inner.db.clone();
        crate::spawn_cleanup("expired sessions purged", PURGE_EVERY, move || {
            let db = db.clone();
            async move { db.purge_sessions(&now_rfc3339()).await }
        });
    }
}
