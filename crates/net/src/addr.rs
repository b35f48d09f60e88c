//! Addresses: the guest subnet, the identity derived from a host index (address, MAC, TAP name,
//! vsock CID) and the lowest-free pick used by the manager's allocation table
//! (`docs/reference/lifecycle.md` §7, "Addressing").

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::NetError;

/// An IPv4 network in CIDR notation (`172.16.0.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// A network from an address and a prefix length; host bits are cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        if prefix > 32 {
            return Err(NetError::invalid("IPv4 prefix", prefix.to_string()));
        }
        let bits = u32::from(addr) & mask(prefix);
        Ok(Self {
            addr: Ipv4Addr::from(bits),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Number of addresses in the network (2^(32-prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = NetError;

    /// `a.b.c.d/n` or a bare address (taken as `/32`). Host bits must be zero.
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::invalid("IPv4 CIDR", s);
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, p.parse::<u8>().map_err(|_| bad())?),
            None => (s, 32),
        };
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let net = Self::new(ip, prefix).map_err(|_| bad())?;
        if net.addr != ip {
            return Err(bad());
        }
        Ok(net)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// One `allowIps` entry, already normalised by the manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    /// An IPv4 network (`/32` for a single address).
    V4(Ipv4Cidr),
    /// An IPv6 network: stored and programmed, reaches nothing today (guests are IPv4 only).
    V6(Ipv6Addr, u8),
}

impl AllowEntry {
    /// Whether the entry names exactly one address (`/32`, `/128`): only those open host addresses.
    pub fn is_single_address(&self) -> bool {
        match self {
            AllowEntry::V4(n) => n.prefix() == 32,
            AllowEntry::V6(_, p) => *p == 128,
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::V4(n) => n.fmt(f),
            AllowEntry::V6(a, p) => write!(f, "{a}/{p}"),
        }
    }
}

impl FromStr for AllowEntry {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => Ok(AllowEntry::V4(s.parse()?)),
            Ok(IpAddr::V6(a)) => {
                let p = match prefix {
                    Some(p) => p
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p <= 128)
                        .ok_or_else(|| NetError::invalid("allowIps entry", s))?,
                    None => 128,
                };
                Ok(AllowEntry::V6(a, p))
            }
            Err(_) => Err(NetError::invalid("allowIps entry", s)),
        }
    }
}

/// The guest network (`VM_SUBNET`) and everything derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    net: Ipv4Cidr,
}

/// What the manager derives from a guest's host index *i*.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmIdentity {
    /// Host index of the guest address inside the subnet (2.. for guests).
    pub index: u32,
    /// Guest address.
    pub ip: Ipv4Addr,
    /// `02:00:` followed by the four address octets.
    pub mac: MacAddr,
    /// `rds-tap<i>` (with the configured prefix).
    pub tap: String,
    /// `10000 + i`.
    pub cid: u32,
}

impl Subnet {
    /// Wraps a network; the prefix must leave room for a gateway and one guest (≤ /30).
    pub fn new(net: Ipv4Cidr) -> Result<Self, NetError> {
        if net.prefix() > 30 {
            return Err(NetError::invalid("VM subnet", net.to_string()));
        }
        Ok(Self { net })
    }

    /// The network.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.net
    }

    /// The gateway: the first host address, placed on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// The address with host index `index` (no range check beyond the network size).
    pub fn addr(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net.network()).wrapping_add(index))
    }

    /// Host index of `ip`, if it is a guest address (not network, gateway or broadcast).
    pub fn guest_index(&self, ip: Ipv4Addr) -> Option<u32> {
        if !self.net.contains(ip) {
            return None;
        }
        let i = u32::from(ip) - u32::from(self.net.network());
        (self.guest_range().contains(&i)).then_some(i)
    }

    /// Host indexes usable by guests: 2 ..= size-2.
    pub fn guest_range(&self) -> std::ops::RangeInclusive<u32> {
        2..=(self.net.size() - 2) as u32
    }

    /// Number of guest addresses (2^(32−prefix) − 3).
    pub fn guest_capacity(&self) -> u32 {
        (self.net.size() - 3) as u32
    }

    /// The lowest guest index not in `used` (the DB's allocation rule), if any is left.
    pub fn lowest_free(&self, used: impl IntoIterator<Item = u32>) -> Option<u32> {
        let mut used: Vec<u32> = used.into_iter().collect();
        used.sort_unstable();
        used.dedup();
        let mut candidate = *self.guest_range().start();
        for u in used {
            if u < candidate {
                continue;
            }
            if u > candidate {
                break;
            }
            candidate += 1;
        }
        self.guest_range().contains(&candidate).then_some(candidate)
    }

    /// Address, MAC, TAP name and CID for host index `index`.
    pub fn identity(&self, index: u32, tap_prefix: &str) -> VmIdentity {
        let ip = self.addr(index);
        VmIdentity {
            index,
            ip,
            mac: MacAddr::for_guest(ip),
            tap: format!("{tap_prefix}{index}"),
            cid: 10_000 + index,
        }
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `02:00:` + the four octets of the guest address.
    pub fn for_guest(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x02, 0x00, o[0], o[1], o[2], o[3]])
    }

    /// The bridge's own address: `02:01:` + the four octets of the gateway. Set explicitly, because
    /// a Linux bridge left with its generated address takes the lowest address of its ports and
    /// changes it whenever a TAP comes or goes, leaving every guest's ARP entry for the gateway
    /// stale (its traffic to the host and beyond is lost until the entry is re-resolved).
    pub fn for_bridge(gateway: Ipv4Addr) -> Self {
        let o = gateway.octets();
        MacAddr([0x02, 0x01, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::invalid("MAC address", s);
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_contains() {
        let n: Ipv4Cidr = "172.16.0.0/24".parse().unwrap();
        assert!(n.contains("172.16.0.200".parse().unwrap()));
        assert!(!n.contains("172.16.1.1".parse().unwrap()));
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 16, 0, 255));
        assert!("172.16.0.1/24".parse::<Ipv4Cidr>().is_err(), "host bits");
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().size(), 1 << 32);
        assert_eq!("1.2.3.4".parse::<Ipv4Cidr>().unwrap().prefix(), 32);
    }

    #[test]
    fn identity_follows_the_spec() {
        let s = Subnet::new("172.16.0.0/24".parse().unwrap()).unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 16, 0, 1));
        let id = s.identity(2, "rds-tap");
        assert_eq!(id.ip, Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(id.mac.to_string(), "02:00:ac:10:00:02");
        assert_eq!(id.tap, "rds-tap2");
        assert_eq!(id.cid, 10_002);
        assert_eq!(s.guest_capacity(), 253);
        assert_eq!(s.guest_range(), 2..=254);
        assert_eq!(s.guest_index("172.16.0.254".parse().unwrap()), Some(254));
        assert_eq!(s.guest_index("172.16.0.255".parse().unwrap()), None);
        assert_eq!(s.guest_index("172.16.0.1".parse().unwrap()), None);
    }

    #[test]
    fn lowest_free_fills_holes() {
        let s = Subnet::new("10.9.0.0/29".parse().unwrap()).unwrap();
        assert_eq!(s.lowest_free([]), Some(2));
        assert_eq!(s.lowest_free([2, 3, 5]), Some(4));
        assert_eq!(s.lowest_free([2, 3, 4, 5, 6]), None);
    }

    #[test]
    fn allow_entries() {
        assert!(matches!(
            "198.18.0.10/32".parse::<AllowEntry>().unwrap(),
            AllowEntry::V4(n) if n.prefix() == 32
        ));
        assert!("2001:db8::/32".parse::<AllowEntry>().is_ok());
        assert!("2001:db8::1"
            .parse::<AllowEntry>()
            .unwrap()
            .is_single_address());
        assert!("abc".parse::<AllowEntry>().is_err());
        assert!("999.1.1.1".parse::<AllowEntry>().is_err());
    }

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "02:00:ac:10:00:0a".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:ac:10:00:0a");
        assert!("02:00:ac:10:00".parse::<MacAddr>().is_err());
    }
}
