//! Guest system calls the manager makes after readiness: firewall, network, clock, entropy
//! (`docs/reference/agent-protocol.md` §8–10).

use serde::{Deserialize, Serialize};

/// `POST /firewall/allowlist`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallRequest {
    pub allow_ips: Vec<String>,
    pub outbound_internet: bool,
    pub allow_manager_gateway: bool,
    pub gateway: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_port: Option<u16>,
    pub dns_at_gateway: bool,
}

/// `POST /net/config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConfigRequest {
    pub iface: String,
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<u8>,
    pub gateway: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// `POST /time/sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeSyncRequest {
    pub unix_time_ms: u64,
}

/// `POST /entropy/reseed`: base64 of 32..512 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntropyReseedRequest {
    pub seed: String,
}
