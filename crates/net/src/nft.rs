//! nftables: the product's tables `bridge rds`, `inet rds` and `ip rds_nat`
//! (`docs/reference/lifecycle.md` §7), generated as scripts and applied with `nft -f -`, one
//! atomic transaction per call.
//!
//! Per-VM state is keyed by the guest address only: an element of `bridge rds vm_ports`
//! (TAP . MAC . address), and two verdict-map elements in `inet rds` (`egress`,
//! `host_access`) pointing at the VM's chains `vm_eg_<addr>` and `vm_in_<addr>`. Adding or
//! removing a VM touches only those, and removal needs nothing but the VM's address, TAP
//! and MAC (no memory of its allow list).
//!
//! The maps use `jump`, never `goto`: the VM chains are reached from `from_vm`/`vm_to_host`,
//! themselves jumped to from the base chains (policy accept, so that other tables' traffic is
//! untouched); a VM chain that ends must return into `from_vm` and hit its final `drop`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::addr::{AllowEntry, MacAddr};
use crate::{NetError, VmNet};

/// The metadata address, dropped for every VM whatever its policy.
pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// What the rule set needs to know about the host side.
#[derive(Clone, Debug)]
pub struct RuleContext {
    /// Bridge name (`rds-br0`).
    pub bridge: String,
    /// TAP name prefix (`rds-tap`); frames from `<prefix>*` ports are checked.
    pub tap_prefix: String,
    /// `VM_SUBNET`.
    pub subnet: crate::Ipv4Cidr,
    /// Gateway address on the bridge.
    pub gateway: Ipv4Addr,
    /// TCP port of `MANAGER_INTERNAL_BASE_URL`, opened to VMs with peer links.
    pub manager_port: Option<u16>,
    /// Whether the DNS forwarder runs on gateway:53.
    pub dns_forwarder: bool,
}

fn key(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "_")
}

fn eg_chain(ip: Ipv4Addr) -> String {
    format!("vm_eg_{}", key(ip))
}

fn in_chain(ip: Ipv4Addr) -> String {
    format!("vm_in_{}", key(ip))
}

fn port_elem(tap: &str, mac: MacAddr, ip: Ipv4Addr) -> String {
    format!("{{ \"{tap}\" . {mac} . {ip} }}")
}

/// The three tables with empty per-VM sets, replacing whatever was there (the idiom
/// `add table` + `delete table` makes the delete succeed when the table is absent).
pub fn base_script(ctx: &RuleContext) -> String {
    let RuleContext {
        bridge,
        tap_prefix,
        subnet,
        ..
    } = ctx;
    format!(
        r#"add table bridge rds
delete table bridge rds
add table inet rds
delete table inet rds
add table ip rds_nat
delete table ip rds_nat
table bridge rds {{
	set vm_ports {{
		type ifname . ether_addr . ipv4_addr
	}}
	chain prerouting {{
		type filter hook prerouting priority filter; policy accept;
		iifname != "{tap_prefix}*" accept
		ether type ip iifname . ether saddr . ip saddr @vm_ports accept
		ether type arp iifname . ether saddr . arp saddr ip @vm_ports iifname . arp saddr ether . arp saddr ip @vm_ports accept
		drop
	}}
}}
table inet rds {{
	map egress {{
		type ipv4_addr : verdict
	}}
	map host_access {{
		type ipv4_addr : verdict
	}}
	chain forward {{
		type filter hook forward priority filter; policy accept;
		iifname "{bridge}" jump from_vm
		oifname "{bridge}" jump to_vm
	}}
	chain input {{
		type filter hook input priority filter; policy accept;
		iifname "{bridge}" jump vm_to_host
	}}
	chain from_vm {{
		ct state established,related accept
		ip daddr {METADATA_ADDR} drop
		ip daddr {subnet} drop
		meta nfproto != ipv4 drop
		ip saddr vmap @egress
		drop
	}}
	chain to_vm {{
		ct state established,related accept
		drop
	}}
	chain vm_to_host {{
		ct state established,related accept
		ip daddr {METADATA_ADDR} drop
		meta nfproto != ipv4 drop
		ip saddr vmap @host_access
		drop
	}}
}}
table ip rds_nat {{
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr {subnet} oifname != "{bridge}" masquerade
	}}
}}
"#
    )
}

/// Statements that install (or replace) one VM's elements and chains. Idempotent: chains
/// are flushed before their rules are added, and re-adding an identical element is a no-op.
pub fn vm_add_script(ctx: &RuleContext, vm: &VmNet) -> Result<String, NetError> {
    let entries = vm.allow_entries()?;
    let ip = vm.ip;
    let (eg, inc) = (eg_chain(ip), in_chain(ip));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "add element bridge rds vm_ports {}",
        port_elem(&vm.tap, vm.mac, ip)
    );

    // Forward path: destinations that are not host addresses.
    let _ = writeln!(s, "add chain inet rds {eg}");
    let _ = writeln!(s, "flush chain inet rds {eg}");
    if vm.outbound_internet {
        let v4: Vec<String> = entries
            .iter()
            .filter(|&e| matches!(e, AllowEntry::V4(_)))
            .map(|e| e.to_string())
            .collect();
        let v6: Vec<String> = entries
            .iter()
            .filter(|&e| matches!(e, AllowEntry::V6(..)))
            .map(|e| e.to_string())
            .collect();
        if !v4.is_empty() {
            let _ = writeln!(
                s,
                "add rule inet rds {eg} ip daddr {{ {} }} accept",
                v4.join(", ")
            );
        }
        if !v6.is_empty() {
            let _ = writeln!(
                s,
                "add rule inet rds {eg} ip6 daddr {{ {} }} accept",
                v6.join(", ")
            );
        }
    }

    // Input path: host addresses (gateway included), evaluated in the spec's row order.
    let gw = ctx.gateway;
    let _ = writeln!(s, "add chain inet rds {inc}");
    let _ = writeln!(s, "flush chain inet rds {inc}");
    if vm.has_peer_links {
        if let Some(port) = ctx.manager_port {
            let _ = writeln!(
                s,
                "add rule inet rds {inc} ip daddr {gw} tcp dport {port} accept"
            );
        }
    }
    if vm.outbound_internet {
        if ctx.dns_forwarder {
            let _ = writeln!(
                s,
                "add rule inet rds {inc} ip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 accept"
            );
        }
        let exact: Vec<String> = entries
            .iter()
            .filter_map(|e| match e {
                AllowEntry::V4(n) if n.prefix() == 32 => Some(n.network().to_string()),
                _ => None,
            })
            .collect();
        if !exact.is_empty() {
            let _ = writeln!(
                s,
                "add rule inet rds {inc} ip daddr {{ {} }} accept",
                exact.join(", ")
            );
        }
    }
    let _ = writeln!(
        s,
        "add element inet rds egress {{ {ip} : jump {eg} }}\nadd element inet rds host_access {{ {ip} : jump {inc} }}"
    );
    Ok(s)
}

/// Statements that remove one VM's elements and chains, succeeding whether or not they exist
/// (each object is added first, then deleted, inside the same transaction).
pub fn vm_remove_script(vm: &VmNet) -> String {
    let ip = vm.ip;
    let elem = port_elem(&vm.tap, vm.mac, ip);
    let mut s = format!(
        "add element bridge rds vm_ports {elem}\ndelete element bridge rds vm_ports {elem}\n"
    );
    for (map, chain) in [("egress", eg_chain(ip)), ("host_access", in_chain(ip))] {
        let _ = write!(
            s,
            "add chain inet rds {chain}
add element inet rds {map} {{ {ip} : jump {chain} }}
delete element inet rds {map} {{ {ip} }}
flush chain inet rds {chain}
delete chain inet rds {chain}
"
        );
    }
    s
}

/// The whole rule set for exactly `vms`: fresh tables plus each VM's part.
pub fn full_script(ctx: &RuleContext, vms: &[VmNet]) -> Result<String, NetError> {
    let mut s = base_script(ctx);
    for vm in vms {
        s.push_str(&vm_add_script(ctx, vm)?);
    }
    Ok(s)
}

/// Deletes the product's tables (and nothing else); succeeds when they are absent.
pub fn teardown_script() -> &'static str {
    "add table bridge rds\ndelete table bridge rds\nadd table inet rds\ndelete table inet rds\nadd table ip rds_nat\ndelete table ip rds_nat\n"
}

/// Applies `script` as one transaction with `nft -f -`; any failure is returned with nft's
/// message, and then nothing of the script is in effect.
pub async fn apply(nft_bin: &str, script: &str) -> Result<(), NetError> {
    let mut child = tokio::process::Command::new(nft_bin)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NetError::NftSpawn)?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(NetError::NftSpawn)?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(NetError::NftSpawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Nft {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `nft <args>` and returns its standard output (for listings).
pub async fn list(nft_bin: &str, args: &[&str]) -> Result<String, NetError> {
    let out = tokio::process::Command::new(nft_bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(NetError::NftSpawn)?;
    if !out.status.success() {
        return Err(NetError::Nft {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Forward-hook base chains outside the product's tables whose policy is drop, from the
/// text of `nft list chains` (a startup warning, `docs/reference/configuration.md` §4).
pub fn foreign_drop_forward_chains(listing: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut table = String::new();
    let mut chain = String::new();
    for line in listing.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = t.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
        } else if t.contains("hook forward") && t.contains("policy drop") {
            let ours = matches!(table.as_str(), "bridge rds" | "inet rds" | "ip rds_nat");
            if !ours {
                found.push(format!("table {table} chain {chain}"));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RuleContext {
        RuleContext {
            bridge: "rds-br0".into(),
            tap_prefix: "rds-tap".into(),
            subnet: "172.16.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 0, 1),
            manager_port: Some(8080),
            dns_forwarder: true,
        }
    }

    fn vm(outbound: bool, allow: &[&str], peers: bool) -> VmNet {
        let ip = Ipv4Addr::new(172, 16, 0, 2);
        VmNet {
            index: 2,
            ip,
            mac: MacAddr::for_guest(ip),
            tap: "rds-tap2".into(),
            outbound_internet: outbound,
            allow_ips: allow.iter().map(|s| s.to_string()).collect(),
            has_peer_links: peers,
        }
    }

    #[test]
    fn base_replaces_the_three_tables_only() {
        let s = base_script(&ctx());
        for t in ["bridge rds", "inet rds", "ip rds_nat"] {
            assert!(
                s.contains(&format!("add table {t}\ndelete table {t}\n")),
                "{t}"
            );
            assert!(s.contains(&format!("table {t} {{")), "{t}");
        }
        assert_eq!(s.matches("delete table").count(), 3);
        assert!(s.contains("iifname != \"rds-tap*\" accept"));
        assert!(s.contains("ip daddr 169.254.169.254 drop\n\t\tip daddr 172.16.0.0/24 drop"));
        assert!(s.contains("ip saddr 172.16.0.0/24 oifname != \"rds-br0\" masquerade"));
        assert!(!s.contains("chain fwd"), "fwd is an nft keyword");
    }

    #[test]
    fn outbound_false_opens_nothing() {
        let s = vm_add_script(&ctx(), &vm(false, &["0.0.0.0/0", "172.16.0.1/32"], false)).unwrap();
        assert!(!s.contains("accept"), "{s}");
        assert!(s.contains("add element inet rds egress { 172.16.0.2 : jump vm_eg_172_16_0_2 }"));
        assert!(s.contains(
            "add element bridge rds vm_ports { \"rds-tap2\" . 02:00:ac:10:00:02 . 172.16.0.2 }"
        ));
    }

    #[test]
    fn outbound_true_lists_entries_and_exact_host_addresses() {
        let s = vm_add_script(
            &ctx(),
            &vm(
                true,
                &["198.18.0.10/32", "10.0.0.0/8", "2001:db8::/32"],
                false,
            ),
        )
        .unwrap();
        assert!(s.contains(
            "add rule inet rds vm_eg_172_16_0_2 ip daddr { 198.18.0.10/32, 10.0.0.0/8 } accept"
        ));
        assert!(s.contains("add rule inet rds vm_eg_172_16_0_2 ip6 daddr { 2001:db8::/32 } accept"));
        assert!(s.contains("add rule inet rds vm_in_172_16_0_2 ip daddr { 198.18.0.10 } accept"));
        assert!(s.contains("ip daddr 172.16.0.1 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(!s.contains("dport 8080"));
    }

    #[test]
    fn dns_rule_only_with_forwarder_and_peer_port_only_with_links() {
        let mut c = ctx();
        c.dns_forwarder = false;
        let s = vm_add_script(&c, &vm(true, &["0.0.0.0/0"], true)).unwrap();
        assert!(!s.contains("dport 53"));
        assert!(s.contains(
            "add rule inet rds vm_in_172_16_0_2 ip daddr 172.16.0.1 tcp dport 8080 accept"
        ));
        // broad entries never open host addresses
        assert!(!s.contains("vm_in_172_16_0_2 ip daddr { 0.0.0.0"));
        let s = vm_add_script(&c, &vm(false, &[], true)).unwrap();
        assert!(s.contains("tcp dport 8080 accept"));
    }

    #[test]
    fn verdict_maps_jump_so_the_final_drop_applies() {
        // `goto` from a chain reached by `jump` would return to the base chain (policy
        // accept) when the VM's chain ends: an empty allow list would then allow everything.
        let s = vm_add_script(&ctx(), &vm(false, &[], false)).unwrap();
        assert!(!s.contains("goto"), "{s}");
        assert!(!vm_remove_script(&vm(false, &[], false)).contains("goto"));
    }

    #[test]
    fn remove_is_keyed_by_address_and_idempotent() {
        let s = vm_remove_script(&vm(true, &["1.2.3.4/32"], true));
        assert!(
            !s.contains("1.2.3.4"),
            "removal must not depend on the allow list"
        );
        assert!(s.contains(
            "delete element bridge rds vm_ports { \"rds-tap2\" . 02:00:ac:10:00:02 . 172.16.0.2 }"
        ));
        assert!(s.contains("delete element inet rds egress { 172.16.0.2 }"));
        assert!(s.contains("delete chain inet rds vm_in_172_16_0_2"));
        // every delete is preceded by an add of the same object
        assert_eq!(s.matches("delete ").count(), 5);
        assert_eq!(s.matches("add ").count(), 5);
    }

    #[test]
    fn bad_entries_fail_generation() {
        assert!(vm_add_script(&ctx(), &vm(true, &["abc"], false)).is_err());
    }

    #[test]
    fn foreign_drop_policies_are_found() {
        let listing = "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\ntable inet rds {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
        assert_eq!(
            foreign_drop_forward_chains(listing),
            vec!["table ip filter chain FORWARD".to_string()]
        );
    }
}
