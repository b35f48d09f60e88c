//! `POST /firewall/allowlist` (`docs/reference/agent-protocol.md` §8): one nftables transaction
//! that replaces the table `inet rds_guest` with an output chain of policy drop. The ruleset goes
//! to `nft -f -` on stdin; the request's values are parsed into addresses first, so nothing from
//! the caller reaches nft as text.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use rds_protocol::{messages, FirewallRequest};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::ApiError;
use crate::http::{self, Body};

const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// More entries than any manager sends (its `MAX_ALLOW_IPS` is far lower).
const MAX_ALLOW_IPS: usize = 4096;
const METADATA_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// An address or network, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

pub fn parse_net(text: &str) -> Option<Net> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 {
                return None;
            }
            (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?))
        }
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(full);
    if prefix > full {
        return None;
    }
    let addr = match addr {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    Some(Net { addr, prefix })
}

/// The validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    allow: Vec<Net>,
    outbound_internet: bool,
    gateway: Ipv4Addr,
    manager_port: Option<u16>,
    dns_at_gateway: bool,
}

pub fn validate(req: &FirewallRequest) -> Result<Rules, ApiError> {
    if req.allow_ips.len() > MAX_ALLOW_IPS {
        return Err(ApiError::bad_request(format!(
            "allowIps has more than {MAX_ALLOW_IPS} entries"
        )));
    }
    let mut allow: Vec<Net> = Vec::new();
    for entry in &req.allow_ips {
        let net = parse_net(entry.trim()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "allowIps entry '{entry}' is not an IP address or CIDR"
            ))
        })?;
        if !allow.contains(&net) {
            allow.push(net);
        }
    }
    let gateway: Ipv4Addr = req
        .gateway
        .parse()
        .map_err(|_| ApiError::bad_request("gateway must be an IPv4 address"))?;
    let manager_port = if req.allow_manager_gateway {
        match req.manager_port {
            Some(p) if p > 0 => Some(p),
            _ => {
                return Err(ApiError::bad_request(
                    "managerPort is required when allowManagerGateway is true",
                ))
            }
        }
    } else {
        None
    };
    Ok(Rules {
        allow,
        outbound_internet: req.outbound_internet,
        gateway,
        manager_port,
        dns_at_gateway: req.dns_at_gateway,
    })
}

/// The nft script: create-then-delete makes the replacement work whether or not the table exists, and
/// `nft -f` applies the whole file as one transaction.
pub fn ruleset(r: &Rules) -> String {
    let mut rules = vec![
        "oif \"lo\" accept".to_string(),
        "ct state established,related accept".to_string(),
        format!("ip daddr {METADATA_ADDRESS} drop"),
    ];
    if r.dns_at_gateway && r.outbound_internet {
        rules.push(format!("ip daddr {} udp dport 53 accept", r.gateway));
        rules.push(format!("ip daddr {} tcp dport 53 accept", r.gateway));
    }
    if let Some(port) = r.manager_port {
        rules.push(format!("ip daddr {} tcp dport {port} accept", r.gateway));
    }
    if r.outbound_internet {
        for net in &r.allow {
            let family = if net.addr.is_ipv4() { "ip" } else { "ip6" };
            rules.push(format!("{family} daddr {net} accept"));
        }
    }
    rules.push("drop".to_string());
    let mut out = String::from(
        "table inet rds_guest {}\ndelete table inet rds_guest\ntable inet rds_guest {\n\tchain output {\n\t\ttype filter hook output priority 0; policy drop;\n",
    );
    for rule in rules {
        out.push_str("\t\t");
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("\t}\n}\n");
    out
}

fn failed(reason: impl std::fmt::Display) -> ApiError {
    let reason = reason.to_string();
    let reason: String = reason.trim().chars().take(400).collect();
    ApiError::Failed {
        message: format!("{}: {reason}", messages::FIREWALL_FAILED_PREFIX),
    }
}

/// Runs `nft -f -` with `script` on stdin.
async fn apply(script: &str) -> Result<(), ApiError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .env_clear()
        .env("PATH", rds_protocol::SANDBOX_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| failed(format!("cannot write to nft: {e}")))?;
    }
    let out = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed("nft did not finish in time"))?
        .map_err(|e| failed(format!("nft: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| l.contains("Error"))
        .or_else(|| stderr.lines().next())
        .unwrap_or("nft failed");
    Err(failed(first))
}

pub async fn post(req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: FirewallRequest = http::read_json(req).await?;
    let rules = validate(&body)?;
    apply(&ruleset(&rules)).await?;
    Ok(http::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        assert_eq!(parse_net("1.2.3.4").unwrap().to_string(), "1.2.3.4");
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            parse_net("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1");
        for bad in [
            "",
            "example.com",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "::/129",
            "1.2.3/8",
            "1.2.3.4/ 8",
        ] {
            assert!(parse_net(bad).is_none(), "{bad}");
        }
    }

    fn request() -> FirewallRequest {
        FirewallRequest {
            allow_ips: vec![
                "1.2.3.4".into(),
                "10.0.0.0/8".into(),
                "2001:db8::/32".into(),
            ],
            outbound_internet: true,
            allow_manager_gateway: true,
            gateway: "172.16.0.1".into(),
            manager_port: Some(3000),
            dns_at_gateway: true,
        }
    }

    #[test]
    fn ruleset_has_the_spec_order() {
        let script = ruleset(&validate(&request()).unwrap());
        let rules: Vec<&str> = script.lines().map(str::trim).collect();
        let expected = [
            "table inet rds_guest {}",
            "delete table inet rds_guest",
            "table inet rds_guest {",
            "chain output {",
            "type filter hook output priority 0; policy drop;",
            "oif \"lo\" accept",
            "ct state established,related accept",
            "ip daddr 169.254.169.254 drop",
            "ip daddr 172.16.0.1 udp dport 53 accept",
            "ip daddr 172.16.0.1 tcp dport 53 accept",
            "ip daddr 172.16.0.1 tcp dport 3000 accept",
            "ip daddr 1.2.3.4 accept",
            "ip daddr 10.0.0.0/8 accept",
            "ip6 daddr 2001:db8::/32 accept",
            "drop",
            "}",
            "}",
        ];
        assert_eq!(rules, expected);

        let mut closed = request();
        closed.outbound_internet = false;
        closed.allow_manager_gateway = false;
        let script = ruleset(&validate(&closed).unwrap());
        assert!(!script.contains("dport 53"));
        assert!(!script.contains("1.2.3.4"));
        assert!(!script.contains("3000"));
    }

    #[test]
    fn validation_messages() {
        let mut r = request();
        r.allow_ips.push("example.com".into());
        assert_eq!(
            validate(&r).unwrap_err().body().message,
            "allowIps entry 'example.com' is not an IP address or CIDR"
        );
        let mut r = request();
        r.gateway = "nope".into();
        assert_eq!(
            validate(&r).unwrap_err().body().message,
            "gateway must be an IPv4 address"
        );
        let mut r = request();
        r.manager_port = None;
        assert_eq!(
            validate(&r).unwrap_err().body().message,
            "managerPort is required when allowManagerGateway is true"
        );
    }
}
