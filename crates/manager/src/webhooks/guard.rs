//! The webhook SSRF guard (`docs/reference/security.md` §6): targets in private, loopback,
//! link-local, multicast and reserved ranges, the VMs' subnet and `localhost` names are refused
//! unless `WEBHOOK_ALLOW_PRIVATE=true`; the metadata address always. A URL is checked literally on
//! create and patch; on every delivery the host name is resolved by [`VettingResolver`], every
//! answer must pass, and the connection goes to those vetted addresses (the HTTP client does no
//! lookup of its own).

use crate::config::Subnet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// What the guard allows, fixed at startup.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub allow_private: bool,
    pub vm_subnet: Subnet,
}

/// Why a URL cannot be a webhook target (the 400 messages of `docs/reference/api-admin.md`
/// Webhooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadUrl,
    Blocked,
}

const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

impl Policy {
    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            // IPv4-mapped and -compatible forms are judged as the IPv4 address they carry.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        if ip == IpAddr::V4(METADATA) {
            return false;
        }
        self.allow_private || !self.private(ip)
    }

    fn private(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let in_net = |net: [u8; 4], prefix: u32| {
                    let mask = if prefix == 0 {
                        0
                    } else {
                        u32::MAX << (32 - prefix)
                    };
                    u32::from(v4) & mask == u32::from(Ipv4Addr::from(net)) & mask
                };
                [
                    ([0, 0, 0, 0], 8),
                    ([10, 0, 0, 0], 8),
                    ([100, 64, 0, 0], 10),
                    ([127, 0, 0, 0], 8),
                    ([169, 254, 0, 0], 16),
                    ([172, 16, 0, 0], 12),
                    ([192, 168, 0, 0], 16),
                    ([224, 0, 0, 0], 4),
                    ([240, 0, 0, 0], 4),
                ]
                .iter()
                .any(|(net, p)| in_net(*net, *p))
                    || self.vm_subnet.contains(v4)
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                v6 == Ipv6Addr::UNSPECIFIED
                    || v6 == Ipv6Addr::LOCALHOST
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || (first & 0xff00) == 0xff00
            }
        }
    }

    /// Checks a webhook URL as written: `http`/`https`, a host, and no refused literal address or
    /// `localhost` name. Returns the parsed URL.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, Refusal> {
        let parsed = reqwest::Url::parse(url).map_err(|_| Refusal::BadUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") || url.len() > 2048 {
            return Err(Refusal::BadUrl);
        }
        match parsed.host() {
            None => Err(Refusal::BadUrl),
            Some(url::Host::Ipv4(v4)) if !self.allows(IpAddr::V4(v4)) => Err(Refusal::Blocked),
            Some(url::Host::Ipv6(v6)) if !self.allows(IpAddr::V6(v6)) => Err(Refusal::Blocked),
            Some(url::Host::Domain(name)) if !self.allow_private && is_localhost(name) => {
                Err(Refusal::Blocked)
            }
            Some(_) => Ok(parsed),
        }
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The error a delivery reports when a name resolved to a refused address.
#[derive(Debug, thiserror::Error)]
#[error("blocked address")]
pub struct BlockedAddress;

/// reqwest's resolver for webhook deliveries: the system's lookup, then every answer through the
/// policy; one refused answer refuses them all.
pub struct VettingResolver(pub Policy);

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            if !policy.allow_private && is_localhost(&host) {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            let answers: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            if answers.iter().any(|a| !policy.allows(a.ip())) {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(answers.into_iter()) as Addrs)
        })
    }
}

impl VettingResolver {
    pub fn shared(policy: Policy) -> Arc<Self> {
        Arc::new(VettingResolver(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_private: bool) -> Policy {
        Policy {
            allow_private,
            vm_subnet: Subnet::parse("172.30.0.0/24").unwrap(),
        }
    }

    #[test]
    fn ranges() {
        let p = policy(false);
        for blocked in [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.allows(blocked.parse().unwrap()), "{blocked} allowed");
        }
        for allowed in [
            "1.1.1.1",
            "198.18.0.10",
            "172.32.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.allows(allowed.parse().unwrap()), "{allowed} blocked");
        }
        // VM_SUBNET even when it is not a private range.
        let odd = Policy {
            allow_private: false,
            vm_subnet: Subnet::parse("198.51.100.0/24").unwrap(),
        };
        assert!(!odd.allows("198.51.100.7".parse().unwrap()));
        // Allowing private targets never allows the metadata address.
        let open = policy(true);
        assert!(open.allows("10.0.0.1".parse().unwrap()));
        assert!(!open.allows("169.254.169.254".parse().unwrap()));
        assert!(!open.allows("::ffff:169.254.169.254".parse().unwrap()));
    }

    #[test]
    fn urls() {
        let p = policy(false);
        for bad in [
            "",
            "ftp://example.com/",
            "not a url",
            "http://",
            "file:///etc/passwd",
        ] {
            assert_eq!(p.check_url(bad), Err(Refusal::BadUrl), "{bad}");
        }
        for blocked in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "https://localhost/",
            "http://api.LOCALHOST./",
            "http://169.254.169.254/latest",
            "http://10.0.0.5/",
        ] {
            assert_eq!(p.check_url(blocked), Err(Refusal::Blocked), "{blocked}");
        }
        assert!(p.check_url("https://hooks.example.com/rds?x=1").is_ok());
        let open = policy(true);
        assert!(open.check_url("http://localhost:9000/").is_ok());
        assert_eq!(
            open.check_url("http://169.254.169.254/"),
            Err(Refusal::Blocked)
        );
    }

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_to_blocked_addresses() {
        let r = VettingResolver(policy(false));
        let name: Name = "localhost".parse().unwrap();
        assert!(r.resolve(name).await.is_err());
        // A name of the host's own (resolves to loopback here, through /etc/hosts or the system).
        let open = VettingResolver(policy(true));
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = open.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
