//! `POST /net/config` (`docs/reference/agent-protocol.md` §9): address, MAC and default route of
//! `eth0` through netlink (no `ip` process), then the resolver, hostname and `/etc/hosts`.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use futures::TryStreamExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use rds_protocol::{messages, NetConfigRequest};
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::error::ApiError;
use crate::http::{self, Body};
use crate::state::AppState;

const IFACE: &str = "eth0";

/// The validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    ip: Ipv4Addr,
    cidr: u8,
    gateway: Ipv4Addr,
    mac: Option<[u8; 6]>,
    dns: Ipv4Addr,
    dns_only: bool,
    hostname: Option<String>,
}

fn bad(message: &str) -> ApiError {
    ApiError::bad_request(message)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *slot = u8::from_str_radix(part, 16).ok()?;
    }
    // Unicast: the group bit of the first octet is clear; all-zero is no address at all.
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

/// An RFC 1123 label: letters, digits and inner hyphens, 1..63 characters.
pub fn is_hostname_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn validate(req: &NetConfigRequest) -> Result<NetConfig, ApiError> {
    if req.iface != IFACE {
        return Err(bad("iface must be \"eth0\""));
    }
    let ip: Ipv4Addr = req
        .ip
        .parse()
        .map_err(|_| bad("ip must be an IPv4 address"))?;
    let cidr = req.cidr.unwrap_or(24);
    if !(1..=32).contains(&cidr) {
        return Err(bad("cidr must be an integer from 1 to 32"));
    }
    let gateway: Ipv4Addr = req
        .gateway
        .parse()
        .map_err(|_| bad("gateway must be an IPv4 address"))?;
    let mask = u32::MAX << (32 - cidr);
    if u32::from(gateway) & mask != u32::from(ip) & mask {
        return Err(bad("gateway must be inside ip/cidr"));
    }
    let mac = match &req.mac {
        None => None,
        Some(m) => Some(
            parse_mac(m).ok_or_else(|| bad("mac must be a unicast address xx:xx:xx:xx:xx:xx"))?,
        ),
    };
    let dns = match &req.dns {
        None => gateway,
        Some(d) => d.parse().map_err(|_| bad("dns must be an IPv4 address"))?,
    };
    let hostname = match &req.hostname {
        None => None,
        Some(h) if is_hostname_label(h) => Some(h.clone()),
        Some(_) => {
            return Err(bad(
                "hostname must be an RFC 1123 label of at most 63 characters",
            ))
        }
    };
    Ok(NetConfig {
        ip,
        cidr,
        gateway,
        mac,
        dns,
        dns_only: req.dns_only.unwrap_or(false),
        hostname,
    })
}

fn failed(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Failed {
        message: format!("{}: {what}: {e}", messages::NET_CONFIG_FAILED_PREFIX),
    }
}

/// Link down, MAC, flush addresses, add `ip/cidr`, link up, replace the default route.
async fn configure_link(c: &NetConfig) -> Result<(), ApiError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| failed("netlink socket", e))?;
    let task = tokio::spawn(connection);
    let outcome = async {
        let mut links = handle.link().get().match_name(IFACE.to_string()).execute();
        let link = links
            .try_next()
            .await
            .map_err(|e| failed("find eth0", e))?
            .ok_or_else(|| failed("find eth0", "no such interface"))?;
        let index = link.header.index;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(|e| failed("link down", e))?;
        if let Some(mac) = c.mac {
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| failed("set mac", e))?;
        }
        let mut addrs = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut old = Vec::new();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(|e| failed("list addresses", e))?
        {
            old.push(a);
        }
        for a in old {
            handle
                .address()
                .del(a)
                .execute()
                .await
                .map_err(|e| failed("flush addresses", e))?;
        }
        handle
            .address()
            .add(index, c.ip.into(), c.cidr)
            .execute()
            .await
            .map_err(|e| failed("add address", e))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| failed("link up", e))?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(c.gateway)
            .output_interface(index)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| failed("default route", e))?;
        Ok(())
    }
    .await;
    task.abort();
    outcome
}

/// Writes `path` as a new regular file (replacing a symlink rather than following it).
pub fn write_file(path: &Path, content: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.rds-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        uuid::Uuid::new_v4()
    ));
    let written = (|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

pub fn resolv_conf(dns: Ipv4Addr) -> String {
    format!("nameserver {dns}\noptions timeout:1 attempts:2\n")
}

/// `/etc/hosts` with one `127.0.1.1 <hostname>` line (replacing any earlier one) and localhost kept.
pub fn hosts_with(existing: &str, hostname: &str) -> String {
    let mut out = String::new();
    let mut has_localhost = false;
    for line in existing.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first == "127.0.1.1" {
            continue;
        }
        if first == "127.0.0.1" {
            has_localhost = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !has_localhost {
        out.insert_str(0, "127.0.0.1\tlocalhost\n");
    }
    out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    out
}

fn set_hostname(etc: &Path, hostname: &str) -> io::Result<()> {
    // SAFETY: valid buffer and length.
    if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let hosts = etc.join("hosts");
    let existing = std::fs::read_to_string(&hosts).unwrap_or_default();
    write_file(&hosts, &hosts_with(&existing, hostname))?;
    write_file(&etc.join("hostname"), &format!("{hostname}\n"))
}

pub async fn post(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: NetConfigRequest = http::read_json(req).await?;
    let config = validate(&body)?;
    if !config.dns_only {
        configure_link(&config).await?;
    }
    let etc = &state.settings.etc;
    write_file(&etc.join("resolv.conf"), &resolv_conf(config.dns))
        .map_err(|e| failed("write resolv.conf", e))?;
    if let Some(h) = &config.hostname {
        set_hostname(etc, h).map_err(|e| failed("set hostname", e))?;
    }
    Ok(http::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> NetConfigRequest {
        NetConfigRequest {
            iface: "eth0".into(),
            ip: "172.16.0.2".into(),
            cidr: Some(24),
            gateway: "172.16.0.1".into(),
            mac: Some("02:00:ac:10:00:02".into()),
            dns: None,
            dns_only: None,
            hostname: Some("vm-1".into()),
        }
    }

    fn message(r: NetConfigRequest) -> String {
        validate(&r).unwrap_err().body().message
    }

    #[test]
    fn valid_request() {
        let c = validate(&request()).unwrap();
        assert_eq!(c.dns, Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(c.mac, Some([2, 0, 0xac, 0x10, 0, 2]));
        assert!(!c.dns_only);
        let mut r = request();
        r.cidr = None;
        r.mac = None;
        r.hostname = None;
        assert_eq!(validate(&r).unwrap().cidr, 24);
    }

    #[test]
    fn each_field_is_named() {
        let mut r = request();
        r.iface = "eth1".into();
        assert!(message(r).starts_with("iface"));
        let mut r = request();
        r.ip = "1.2.3".into();
        assert!(message(r).starts_with("ip "));
        let mut r = request();
        r.cidr = Some(0);
        assert!(message(r).starts_with("cidr"));
        let mut r = request();
        r.cidr = Some(33);
        assert!(message(r).starts_with("cidr"));
        let mut r = request();
        r.gateway = "172.16.1.1".into();
        assert_eq!(message(r), "gateway must be inside ip/cidr");
        for mac in [
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "02:00:00:00:00",
            "zz:00:00:00:00:01",
            "002:00:00:00:00:01",
        ] {
            let mut r = request();
            r.mac = Some(mac.into());
            assert!(message(r).starts_with("mac"), "{mac}");
        }
        let mut r = request();
        r.dns = Some("x".into());
        assert!(message(r).starts_with("dns"));
        for h in ["", "-a", "a-", "a.b", &"a".repeat(64), "a_b"] {
            let mut r = request();
            r.hostname = Some(h.to_string());
            assert!(message(r).starts_with("hostname"), "{h}");
        }
    }

    #[test]
    fn files() {
        assert_eq!(
            resolv_conf(Ipv4Addr::new(10, 0, 0, 1)),
            "nameserver 10.0.0.1\noptions timeout:1 attempts:2\n"
        );
        assert_eq!(
            hosts_with(
                "127.0.0.1 localhost\n127.0.1.1 old\n::1 localhost\n",
                "vm-1"
            ),
            "127.0.0.1 localhost\n::1 localhost\n127.0.1.1\tvm-1\n"
        );
        assert_eq!(hosts_with("", "a"), "127.0.0.1\tlocalhost\n127.0.1.1\ta\n");
    }
}
