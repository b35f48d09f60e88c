//! `VM_SUBNET`: the guest network and the addresses derived from it
//! (`docs/reference/lifecycle.md` §7).

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    /// IPv4 CIDR with prefix 16..29 and host bits zero.
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or("must be an IPv4 CIDR such as 172.16.0.0/24")?;
        let network: Ipv4Addr = ip.parse().map_err(|_| "must be an IPv4 CIDR".to_string())?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (16..=29).contains(p))
            .ok_or("prefix must be between 16 and 29")?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            return Err("host bits must be zero".into());
        }
        Ok(Subnet { network, prefix })
    }

    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.prefix))
    }

    /// Guest addresses: every host address but the gateway and broadcast (2^(32-p) − 3).
    pub fn usable_guests(&self) -> u64 {
        u64::from(self.size()) - 3
    }

    /// The guest address with host index `i` (2 = first guest), if inside the usable range.
    pub fn guest(&self, i: u32) -> Option<Ipv4Addr> {
        (2..self.size() - 1)
            .contains(&i)
            .then(|| Ipv4Addr::from(u32::from(self.network) + i))
    }

    /// Host index of an address inside the subnet.
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(u32::from(self.network))?;
        (off < self.size()).then_some(off)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.index_of(ip).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_subnet() {
        let s = Subnet::parse("172.16.0.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.usable_guests(), 253);
        assert_eq!(s.guest(2), Some(Ipv4Addr::new(172, 16, 0, 2)));
        assert_eq!(s.guest(254), Some(Ipv4Addr::new(172, 16, 0, 254)));
        assert_eq!(s.guest(255), None);
        assert_eq!(s.guest(1), None);
        assert_eq!(s.index_of(Ipv4Addr::new(172, 16, 0, 9)), Some(9));
        assert!(!s.contains(Ipv4Addr::new(172, 16, 1, 0)));
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in [
            "172.16.0.0",
            "172.16.0.1/24",
            "10.0.0.0/8",
            "10.0.0.0/30",
            "x/24",
            "10.0.0.0/abc",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }
}
