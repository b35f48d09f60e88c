//! DB API keys (docs/reference/api.md §1.2, docs/reference/security.md §3): `rds_` + 12 hex (the
//! prefix) + `_` + base64url secret, stored as an argon2id hash of the whole key. A key is found by
//! prefix among usable keys (unknown prefix: refused without hashing), verified on the bounded
//! pool, and the answer (either way) kept for 60 s under the SHA-256 of the key. Revoking drops the
//! key's cache entries at once.

use super::hashing::{self, Busy, Pool};
use crate::db::{ApiKeyRecord, Db, DbError, InsertKeyError};
use crate::model::now_rfc3339;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 10_000;
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The prefix and secret of a well-formed key (split on the first two `_`; the secret may hold
/// `_`).
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("rds_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let prefix_ok = prefix.len() == 12
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (prefix_ok && secret_ok).then_some((prefix, secret))
}

/// A new key and its prefix: 6 random bytes as hex, 24 random bytes as unpadded base64url.
pub fn generate() -> (String, String) {
    let prefix = hashing::hex(&hashing::random_bytes::<6>());
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hashing::random_bytes::<24>());
    let key = format!("rds_{prefix}_{secret}");
    (prefix, key)
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A verification result: the key's id and expiry, or a refusal.
#[derive(Clone)]
struct Cached {
    at: Instant,
    key: Option<(String, Option<String>)>,
}

pub struct Keys {
    db: Db,
    pool: Pool,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    /// Bumped by every revocation: a verification that overlapped one is not cached, so it cannot
    /// put back an entry the revocation removed.
    epoch: AtomicU64,
    /// When `last_used_at` was last written, per key id.
    touched: Mutex<HashMap<String, Instant>>,
}

impl Keys {
    pub fn new(db: Db, pool: Pool) -> Keys {
        Keys {
            db,
            pool,
            cache: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// The id of the usable DB key `presented`, or `None`.
    pub async fn check(&self, presented: &str) -> Result<Option<String>, KeyError> {
        let Some((prefix, _)) = parse(presented) else {
            return Ok(None);
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let now = now_rfc3339();
        let cached = self.cached(&digest);
        let key = match cached {
            Some(key) => key,
            None => {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let Some(row) = self.db.usable_api_key(prefix, &now).await? else {
                    return Ok(None);
                };
                let ok = self
                    .pool
                    .verify(row.hash.clone(), presented.as_bytes().to_vec())
                    .await?;
                let key = ok.then(|| (row.id.clone(), row.expires_at.clone()));
                self.remember(digest, key.clone(), epoch);
                key
            }
        };
        match key {
            Some((id, expires_at)) if expires_at.as_deref().is_none_or(|e| e > now.as_str()) => {
                self.touch(&id, &now).await;
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Option<(String, Option<String>)>> {
        let cache = self.cache.lock().expect("key cache");
        cache
            .get(digest)
            .filter(|c| c.at.elapsed() < CACHE_TTL)
            .map(|c| c.key.clone())
    }

    fn remember(&self, digest: [u8; 32], key: Option<(String, Option<String>)>, epoch: u64) {
        let mut cache = self.cache.lock().expect("key cache");
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            digest,
            Cached {
                at: Instant::now(),
                key,
            },
        );
    }

    /// `last_used_at` = now, at most once a minute per key; a failed write only warns.
    async fn touch(&self, id: &str, now: &str) {
        {
            let mut touched = self.touched.lock().expect("key touches");
            if touched.get(id).is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
                return;
            }
            touched.insert(id.to_string(), Instant::now());
        }
        if let Err(e) = self.db.touch_api_key(id, now).await {
            tracing::warn!(key_id = %id, error = %e, "lastUsedAt not updated");
        }
    }

    /// Drops every cached answer about key `id`.
    fn forget(&self, id: &str) {
        let mut cache = self.cache.lock().expect("key cache");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        cache.retain(|_, c| c.key.as_ref().is_none_or(|(k, _)| k != id));
    }

    /// A new key: its record and the plaintext, which exists only in this answer.
    pub async fn create(
        &self,
        name: &str,
        expires_at: Option<String>,
    ) -> Result<(ApiKeyRecord, String), KeyError> {
        loop {
            let (prefix, key) = generate();
            let record = ApiKeyRecord {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.to_string(),
                prefix,
                hash: self.pool.hash(key.as_bytes().to_vec()).await?,
                created_at: now_rfc3339(),
                expires_at: expires_at.clone(),
                revoked_at: None,
                last_used_at: None,
            };
            match self.db.insert_api_key(&record).await {
                Ok(()) => return Ok((record, key)),
                // 48 random bits: a collision is rare enough that trying again is the answer.
                Err(InsertKeyError::PrefixTaken(_)) => continue,
                Err(InsertKeyError::Db(e)) => return Err(e.into()),
            }
        }
    }

    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, DbError> {
        self.db.list_api_keys().await
    }

    /// Revokes key `id` (keeping an earlier revocation time); `None` if there is no such key.
    /// The flag says whether this call revoked it.
    pub async fn revoke(&self, id: &str) -> Result<Option<(ApiKeyRecord, bool)>, DbError> {
        let revoked = self.db.revoke_api_key(id, &now_rfc3339()).await?;
        self.forget(id);
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format() {
        let (prefix, key) = generate();
        assert_eq!(parse(&key), Some((prefix.as_str(), &key[17..])));
        assert_eq!(key.len(), 4 + 12 + 1 + 32);
        assert!(
            parse("rds_0123456789ab_se_cr-et").is_some(),
            "secret may hold _"
        );
        for bad in [
            "",
            "rds_",
            "rds_0123456789ab_",
            "rds_0123456789AB_x",
            "rds_0123456789a_x",
            "rds_0123456789abc_x",
            "xds_0123456789ab_x",
            "rds_0123456789ab_a=b",
            &format!("rds_0123456789ab_{}", "a".repeat(257)),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
