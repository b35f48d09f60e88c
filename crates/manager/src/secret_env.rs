//! secretEnv at rest (`docs/secret-env.md`): AES-256-GCM under a key derived once from
//! `VM_SECRET_KEY` (HKDF-SHA256, salt `run-dat-sheesh`, info `secret-env/v1`), a fresh 96-bit
//! nonce per seal and the VM id as associated data, so a sealed value moved to another VM's row
//! does not open. Stored as `{"v":1,"iv","tag","data"}` (base64). Plain values live only in memory,
//! for the call that needs them.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Most entries a VM takes.
pub const MAX_ENTRIES: usize = 64;
/// A value is empty or at least this many bytes, so that scrubbing it cannot erase common text.
pub const MIN_VALUE_BYTES: usize = 4;

/// The 400 of a create with secretEnv when `VM_SECRET_KEY` is not set.
pub const NEEDS_KEY: &str = "secretEnv requires VM_SECRET_KEY to be configured";

/// `KEY=value` pairs in the order given.
pub type Entries = Vec<(String, String)>;

/// The derived key; its `Debug` shows nothing.
pub struct SecretKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    v: u32,
    iv: String,
    tag: String,
    data: String,
}

#[derive(Debug, thiserror::Error)]
#[error("secretEnv cannot be decrypted (VM {0}; was VM_SECRET_KEY changed?)")]
pub struct OpenError(pub String);

const TAG_LEN: usize = 16;

impl SecretKey {
    pub fn derive(vm_secret_key: &str) -> SecretKey {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"run-dat-sheesh"), vm_secret_key.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"secret-env/v1", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        SecretKey {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// `entries` sealed for `vm_id`.
    pub fn seal(&self, vm_id: &str, entries: &Entries) -> String {
        let plain = serde_json::to_vec(entries).expect("entries serialise");
        let iv: [u8; 12] = rand::random();
        let mut out = self
            .cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &plain,
                    aad: vm_id.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any length we store");
        let tag = out.split_off(out.len() - TAG_LEN);
        serde_json::to_string(&Sealed {
            v: 1,
            iv: B64.encode(iv),
            tag: B64.encode(tag),
            data: B64.encode(out),
        })
        .expect("sealed value serialises")
    }

    /// The entries sealed for `vm_id`.
    pub fn open(&self, vm_id: &str, sealed: &str) -> Result<Entries, OpenError> {
        let err = || OpenError(vm_id.to_string());
        let s: Sealed = serde_json::from_str(sealed).map_err(|_| err())?;
        let iv = B64.decode(&s.iv).map_err(|_| err())?;
        if s.v != 1 || iv.len() != 12 {
            return Err(err());
        }
        let mut msg = B64.decode(&s.data).map_err(|_| err())?;
        msg.extend(B64.decode(&s.tag).map_err(|_| err())?);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &msg,
                    aad: vm_id.as_bytes(),
                },
            )
            .map_err(|_| err())?;
        serde_json::from_slice(&plain).map_err(|_| err())
    }
}

/// The non-empty values: what scrubbing replaces.
pub fn values(entries: &Entries) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

/// Whether `key` is one of the secrets' keys.
pub fn has_key(entries: &Entries, key: &str) -> bool {
    entries.iter().any(|(k, _)| k == key)
}

/// Whether a `KEY=value` env entry (run-ts / run-js) sets one of the secrets' keys.
pub fn sets_key(entries: &Entries, entry: &str) -> bool {
    has_key(entries, entry.split_once('=').map_or(entry, |(k, _)| k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Entries {
        vec![
            ("TOKEN".into(), "s3cret-value".into()),
            ("EMPTY".into(), String::new()),
        ]
    }

    #[test]
    fn seal_then_open_for_the_same_vm_only() {
        let key = SecretKey::derive("a-vm-secret-key-of-at-least-32-chars!!");
        let sealed = key.seal("vm-a", &entries());
        assert!(!sealed.contains("s3cret-value"), "{sealed}");
        assert_eq!(key.open("vm-a", &sealed).unwrap(), entries());
        // Associated data: another VM's id does not open it.
        assert!(key.open("vm-b", &sealed).is_err());
        // Another key does not open it.
        let other = SecretKey::derive("another-vm-secret-key-of-32-chars-long");
        assert!(other.open("vm-a", &sealed).is_err());
        // Fresh nonce per seal.
        assert_ne!(sealed, key.seal("vm-a", &entries()));
        // A flipped byte of the data is refused.
        let mut s: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let mut data = B64.decode(s["data"].as_str().unwrap()).unwrap();
        data[0] ^= 1;
        s["data"] = B64.encode(data).into();
        assert!(key.open("vm-a", &s.to_string()).is_err());
        assert_eq!(values(&entries()), vec!["s3cret-value".to_string()]);
        assert!(has_key(&entries(), "EMPTY") && !has_key(&entries(), "OTHER"));
        assert!(sets_key(&entries(), "TOKEN=x") && !sets_key(&entries(), "TOKENS=x"));
    }
}
