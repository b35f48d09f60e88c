//! Peers (`docs/peers.md`): a consumer VM calls functions a provider VM declares in its manifest,
//! through the manager. This module holds what does not touch a VM: the manifest's rules
//! (`manifest`), the files generated for a consumer (`render`) and the archives moved between
//! guests (`archive`). The lifecycle side is `lifecycle/peers.rs`, the invoke route's
//! `lifecycle/invoke.rs`.

pub mod archive;
pub mod manifest;
pub mod render;

use serde::{Deserialize, Serialize};

/// Where the provider's manifest lives in its workspace.
pub const MANIFEST_PATH: &str = ".rds-peer/manifest.json";
/// At most this many links per VM.
pub const MAX_LINKS: usize = 16;

/// Whether the consumer also gets a copy of the provider's sources under `peers/<alias>/source/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    #[default]
    Hidden,
    Mounted,
}

impl SourceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceMode::Hidden => "hidden",
            SourceMode::Mounted => "mounted",
        }
    }

    pub fn parse(s: &str) -> Option<SourceMode> {
        match s {
            "hidden" => Some(SourceMode::Hidden),
            "mounted" => Some(SourceMode::Mounted),
            _ => None,
        }
    }
}

/// One link of a consumer: `alias` names the provider `vm_id` in the consumer's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerLink {
    pub alias: String,
    pub vm_id: String,
    pub source_mode: SourceMode,
}

/// `^[A-Za-z0-9_-]{1,64}$`.
pub fn valid_alias(alias: &str) -> bool {
    (1..=64).contains(&alias.len())
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A JavaScript export name the invoke route accepts: `^[A-Za-z_$][A-Za-z0-9_$]*$`.
pub fn valid_export_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b'$')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}
