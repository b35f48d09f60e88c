//! argon2id hashing (docs/reference/security.md §3): 19 MiB, 2 passes, 1 lane, 16-byte random salt.
//! Every hash and verification runs on the blocking pool, at most two at once; a caller that waits
//! longer than the bound for a slot is told the verifier is busy (503) instead of queueing without
//! end. The pool also owns the argon2 work memory (19 MiB per slot), reused by every computation:
//! allocated per call on whichever blocking thread ran it, it stayed in that thread's malloc arena,
//! and a burst of verifications left the manager hundreds of MiB larger.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Verifications (and hashes) running at once.
pub const SLOTS: usize = 2;
/// How long a request may wait for a slot.
pub const WAIT: Duration = Duration::from_secs(2);

/// No slot within [`WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Credential verification busy, retry shortly")]
pub struct Busy;

/// The argon2id instance of new hashes.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// `n` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// Whether `s` is an argon2id PHC string whose parameters argon2 accepts.
pub fn is_argon2id_phc(s: &str) -> bool {
    PasswordHash::new(s).is_ok_and(|h| {
        h.algorithm.as_str() == "argon2id" && Params::try_from(&h).is_ok() && h.hash.is_some()
    })
}

/// The bounded pool every argon2 computation goes through.
#[derive(Clone)]
pub struct Pool {
    slots: Arc<Semaphore>,
    /// Work memory of finished computations; at most [`SLOTS`] run, so at most that many exist.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(SLOTS)),
            memory: Arc::default(),
        }
    }
}

/// Runs `f` with work memory from `memory` (grown to `blocks`) and puts the memory back.
fn with_memory<R>(
    memory: &Mutex<Vec<Vec<Block>>>,
    blocks: usize,
    f: impl FnOnce(&mut [Block]) -> R,
) -> R {
    let mut mem = memory
        .lock()
        .expect("argon2 memory")
        .pop()
        .unwrap_or_default();
    if mem.len() < blocks {
        mem.resize(blocks, Block::default());
    }
    let r = f(&mut mem[..blocks]);
    memory.lock().expect("argon2 memory").push(mem);
    r
}

/// Recomputes the hash of `phc` for `secret` in `mem`; false for a malformed or non-argon2 string.
fn verify_in(phc: &str, secret: &[u8], memory: &Mutex<Vec<Vec<Block>>>) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let parts = (
        Algorithm::try_from(h.algorithm),
        Version::try_from(h.version.unwrap_or(0x13)),
        Params::try_from(&h),
        h.salt,
        h.hash,
    );
    let (Ok(alg), Ok(version), Ok(params), Some(salt), Some(expected)) = parts else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let argon = Argon2::new(alg, version, params);
    let ok = with_memory(memory, blocks, |mem| {
        argon
            .hash_password_into_with_memory(secret, salt, &mut out, mem)
            .is_ok()
    });
    // `Output`'s equality is constant-time.
    ok && Output::new(&out).is_ok_and(|o| o == expected)
}

impl Pool {
    async fn slot(&self) -> Result<OwnedSemaphorePermit, Busy> {
        match tokio::time::timeout(WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Busy),
        }
    }

    /// Takes `n` slots and holds them until the permit drops: lets tests make the pool busy.
    #[doc(hidden)]
    pub async fn occupy(&self, n: u32) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("slots never close")
    }

    /// Whether `secret` matches the PHC string `phc` (false for a malformed one).
    pub async fn verify(&self, phc: String, secret: Vec<u8>) -> Result<bool, Busy> {
        let _slot = self.slot().await?;
        let memory = self.memory.clone();
        let ok = tokio::task::spawn_blocking(move || verify_in(&phc, &secret, &memory))
            .await
            .unwrap_or(false);
        Ok(ok)
    }

    /// A new argon2id PHC string of `secret` with a fresh 16-byte salt.
    pub async fn hash(&self, secret: Vec<u8>) -> Result<String, Busy> {
        let _slot = self.slot().await?;
        let memory = self.memory.clone();
        let phc = tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16-byte salt");
            let argon = argon2();
            let params = argon.params().clone();
            let mut salt_buf = [0u8; 16];
            let salt_bytes = Salt::from(&salt)
                .decode_b64(&mut salt_buf)
                .expect("16-byte salt");
            let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
            with_memory(&memory, params.block_count(), |mem| {
                argon.hash_password_into_with_memory(&secret, salt_bytes, &mut out, mem)
            })
            .expect("argon2 hashes any input");
            PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(&params).expect("static argon2 parameters"),
                salt: Some(Salt::from(&salt)),
                hash: Some(Output::new(&out).expect("32-byte output")),
            }
            .to_string()
        })
        .await
        .expect("argon2 task");
        Ok(phc)
    }
}

/// argon2id of `secret` with a salt derived from `context`, hex-encoded: deterministic, so the same
/// inputs give the same fingerprint in every process, and as slow to invert as a stored hash.
/// Blocking: call from the blocking pool.
pub fn derive(secret: &[u8], context: &str) -> String {
    use sha2::{Digest, Sha256};
    let salt = Sha256::digest(format!("rds-fingerprint\0{context}").as_bytes());
    let mut out = [0u8; 32];
    argon2()
        .hash_password_into(secret, &salt[..16], &mut out)
        .expect("argon2 derives any input");
    hex(&out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_carry_the_parameters() {
        let pool = Pool::default();
        let phc = pool.hash(b"s3cret".to_vec()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(is_argon2id_phc(&phc));
        assert!(pool.verify(phc.clone(), b"s3cret".to_vec()).await.unwrap());
        assert!(!pool.verify(phc, b"other".to_vec()).await.unwrap());
        assert!(!pool.verify("garbage".into(), b"x".to_vec()).await.unwrap());
        assert!(!is_argon2id_phc(
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA"
        ));
    }

    /// Our hashes are standard PHC strings, and standard ones (other parameters, e.g. from the
    /// `argon2` CLI for ADMIN_PASSWORD) verify with the reused memory.
    #[tokio::test]
    async fn interoperates_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let pool = Pool::default();
        let ours = pool.hash(b"pw".to_vec()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        let params = Params::new(8 * 1024, 3, 2, Some(24)).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = other.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(pool.verify(theirs.clone(), b"pw".to_vec()).await.unwrap());
        assert!(!pool.verify(theirs, b"pW".to_vec()).await.unwrap());
        // The bigger block count of our own hash after the smaller one: memory grows and is reused.
        assert!(pool.verify(ours, b"pw".to_vec()).await.unwrap());
        assert_eq!(pool.memory.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_full_pool_answers_busy_after_the_wait() {
        let pool = Pool::default();
        let held = pool.occupy(SLOTS as u32).await;
        let started = std::time::Instant::now();
        assert_eq!(pool.slot().await.err(), Some(Busy));
        assert!(started.elapsed() >= WAIT);
        drop(held);
        assert!(pool.slot().await.is_ok());
    }

    #[test]
    fn derive_is_deterministic() {
        assert_eq!(derive(b"a", "x"), derive(b"a", "x"));
        assert_ne!(derive(b"a", "x"), derive(b"a", "y"));
        assert_ne!(derive(b"a", "x"), derive(b"b", "x"));
    }
}
