//! The admin login (docs/reference/security.md §3): `ADMIN_EMAIL` compared exactly,
//! `ADMIN_PASSWORD` in constant time, or by argon2id verification when it is a PHC hash. Both
//! checks always run, so a wrong email and a wrong password take the same time and get the same
//! answer.

use super::hashing::{self, Busy, Pool};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

enum Password {
    /// SHA-256 of the plain password: compared as digests, so the length does not leak.
    Plain([u8; 32]),
    Phc(String),
}

pub struct AdminCredentials {
    email: String,
    password: Password,
    /// Identifies this email/password pair; sessions made under another pair are invalid.
    fingerprint: String,
}

impl AdminCredentials {
    /// From `ADMIN_EMAIL` and `ADMIN_PASSWORD` (validated by the configuration). Computes the
    /// fingerprint, an argon2id derivation, on the blocking pool.
    pub async fn new(email: &str, password: &str) -> AdminCredentials {
        let pw = if password.starts_with("$argon2id$") {
            Password::Phc(password.to_string())
        } else {
            Password::Plain(Sha256::digest(password.as_bytes()).into())
        };
        let (e, p) = (email.to_string(), password.to_string());
        let fingerprint = tokio::task::spawn_blocking(move || {
            hashing::derive(format!("{e}\n{p}").as_bytes(), &e)
        })
        .await
        .expect("fingerprint task");
        AdminCredentials {
            email: email.to_string(),
            password: pw,
            fingerprint,
        }
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `email` and `password` are the admin's.
    pub async fn check(&self, pool: &Pool, email: &str, password: &str) -> Result<bool, Busy> {
        let email_ok = self.email.as_bytes() == email.as_bytes();
        let password_ok = match &self.password {
            Password::Plain(digest) => {
                let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                bool::from(given.ct_eq(digest))
            }
            Password::Phc(phc) => {
                pool.verify(phc.clone(), password.as_bytes().to_vec())
                    .await?
            }
        };
        Ok(email_ok && password_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_and_hashed_passwords() {
        let pool = Pool::default();
        let plain = AdminCredentials::new("a@b.c", "pw-123456789").await;
        assert!(plain.check(&pool, "a@b.c", "pw-123456789").await.unwrap());
        assert!(!plain.check(&pool, "a@b.c", "pw-12345678").await.unwrap());
        assert!(!plain.check(&pool, "A@b.c", "pw-123456789").await.unwrap());
        let phc = pool.hash(b"hashed-pw".to_vec()).await.unwrap();
        let hashed = AdminCredentials::new("a@b.c", &phc).await;
        assert!(hashed.check(&pool, "a@b.c", "hashed-pw").await.unwrap());
        assert!(!hashed.check(&pool, "a@b.c", &phc).await.unwrap());
        assert_ne!(plain.fingerprint(), hashed.fingerprint());
        let again = AdminCredentials::new("a@b.c", "pw-123456789").await;
        assert_eq!(plain.fingerprint(), again.fingerprint());
    }
}
