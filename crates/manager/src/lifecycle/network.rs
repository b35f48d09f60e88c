//! Guest networking in the lifecycle (`docs/reference/lifecycle.md` §2 steps 5.2, 5.5; §3; §7): the
//! host half through `rds-net` (TAP, bridge port and nftables rules, the authority) and the guest
//! half through the agent (`/net/config`, `/firewall/allowlist`, defence in depth).
//!
//! Host rules go in before a VMM launches and come out after it exited (stop, unexpected exit,
//! failed boot, destroy); the address stays reserved until destroy. A failed host-rule change fails
//! the boot, so a VM never runs with missing rules. Guest firewall failures are warnings.

use super::create::Failed;
use super::VmService;
use crate::model::VmRecord;
use rds_net::{DnsForwarder, HostNet, NetConfig, NetError, VmNet};
use rds_protocol::{paths, FirewallRequest, NetConfigRequest};
use std::net::Ipv4Addr;
use std::path::Path;

/// Where the DNS forwarder finds the host's resolvers.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the manager's networking needs from the configuration.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// Host side: subnet, bridge, TAP owner, manager port, forwarder on/off.
    pub host: NetConfig,
    /// `DNS_SERVER_IP`: written into guests instead of the gateway; the forwarder is off.
    pub dns_server_ip: Option<Ipv4Addr>,
    /// `GUEST_FIREWALL`: apply the guest half (`/firewall/allowlist`) after readiness.
    pub guest_firewall: bool,
}

/// The host network and the DNS forwarder of one manager.
pub struct Network {
    host: HostNet,
    settings: NetworkSettings,
    forwarder: tokio::sync::Mutex<Option<DnsForwarder>>,
}

impl Network {
    /// Host setup (bridge at the gateway, `ip_forward`, empty tables). Acts on the network
    /// namespace of the calling thread. Warns about foreign forward chains with a drop policy.
    pub async fn setup(settings: NetworkSettings) -> Result<Network, NetError> {
        let host = HostNet::setup(settings.host.clone()).await?;
        match host.foreign_forward_drop_chains().await {
            Ok(chains) => {
                for c in chains {
                    tracing::warn!(
                        chain = %c,
                        "a forward-hook chain outside the manager's tables has a drop policy; \
                         guest egress may be blocked"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing nftables chains"),
        }
        Ok(Network {
            host,
            settings,
            forwarder: tokio::sync::Mutex::new(None),
        })
    }

    pub fn host(&self) -> &HostNet {
        &self.host
    }

    pub fn settings(&self) -> &NetworkSettings {
        &self.settings
    }

    /// Starts the DNS forwarder on gateway:53 unless `DNS_SERVER_IP` is set. Idempotent.
    pub async fn start_dns(&self) -> Result<(), NetError> {
        if !self.settings.host.dns_forwarder {
            return Ok(());
        }
        let mut slot = self.forwarder.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let upstreams = rds_net::upstreams_from_resolv_conf(Path::new(RESOLV_CONF))?;
        if upstreams.is_empty() {
            tracing::warn!("no nameserver in {RESOLV_CONF}: the DNS forwarder answers SERVFAIL");
        }
        let fwd = DnsForwarder::spawn(self.settings.host.dns_config(upstreams)).await?;
        tracing::info!(udp = %fwd.udp_addr(), tcp = %fwd.tcp_addr(), "dns forwarder listening");
        *slot = Some(fwd);
        Ok(())
    }

    /// The host's description of a VM: identity from its address, policy from its row.
    /// The host's description of a VM: identity from its address, policy from its row. Peer links
    /// open the manager port on the gateway (`docs/networking.md`).
    pub fn vm_net(&self, ip: Ipv4Addr, outbound: bool, allow_ips: &[String], links: bool) -> VmNet {
        let cfg = &self.settings.host;
        let index = cfg.subnet.guest_index(ip).unwrap_or(0);
        cfg.vm(index, outbound, allow_ips.to_vec(), links)
    }

    fn vm_net_of(&self, vm: &VmRecord) -> VmNet {
        let links = !vm.peer_links.is_empty();
        self.vm_net(vm.guest_ip, vm.outbound_internet, &vm.allow_ips, links)
    }

    /// Kernel command-line argument `ip=<guestIp>::<gateway>:<netmask>::eth0:off`
    /// (`docs/reference/agent-protocol.md` §1).
    pub fn cmdline_arg(&self, vm: &VmRecord) -> String {
        let cidr = self.settings.host.subnet.cidr();
        let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(cidr.prefix())));
        format!(
            "ip={}::{}:{}::eth0:off",
            vm.guest_ip,
            self.settings.host.subnet.gateway(),
            mask
        )
    }

    /// The NIC the backend attaches: the VM's TAP with its MAC.
    pub fn nic(&self, vm: &VmRecord) -> rds_vmm::NetSpec {
        let n = self.vm_net_of(vm);
        rds_vmm::NetSpec {
            tap: n.tap,
            mac: n.mac.to_string(),
        }
    }

    fn net_config(&self, vm: &VmRecord) -> NetConfigRequest {
        let host = &self.settings.host;
        let n = self.vm_net_of(vm);
        let dns = self
            .settings
            .dns_server_ip
            .unwrap_or_else(|| host.subnet.gateway());
        NetConfigRequest {
            iface: "eth0".into(),
            ip: vm.guest_ip.to_string(),
            cidr: Some(host.subnet.cidr().prefix()),
            gateway: host.subnet.gateway().to_string(),
            mac: Some(n.mac.to_string()),
            dns: Some(dns.to_string()),
            dns_only: None,
            hostname: Some(hostname(&vm.id)),
        }
    }

    fn firewall(&self, vm: &VmRecord) -> FirewallRequest {
        let host = &self.settings.host;
        let n = self.vm_net_of(vm);
        FirewallRequest {
            allow_ips: vm.allow_ips.clone(),
            outbound_internet: vm.outbound_internet,
            allow_manager_gateway: n.has_peer_links,
            gateway: host.subnet.gateway().to_string(),
            manager_port: host.manager_port,
            dns_at_gateway: host.dns_forwarder,
        }
    }
}

/// `rds-<first 8 chars of the id>`.
fn hostname(id: &str) -> String {
    let short: String = id.chars().take(8).collect();
    format!("rds-{short}")
}

impl VmService {
    pub(super) fn network(&self) -> &Network {
        &self.inner.net
    }

    /// Starts the DNS forwarder (after reconciliation, `DNS_SERVER_IP` unset only).
    pub async fn start_dns(&self) -> Result<(), NetError> {
        self.network().start_dns().await
    }

    /// Host half before the VMM launches: TAP on the bridge and the VM's rules, in one transaction.
    pub(super) async fn attach_network(&self, vm: &VmRecord) -> Result<(), Failed> {
        let net = self.network();
        net.host.add_vm(&net.vm_net_of(vm)).await.map_err(|e| {
            Failed::host(format!(
                "Host network setup failed: {}",
                crate::error_chain(&e)
            ))
        })
    }

    /// Host half after the VMM exited: rules and TAP go; the address stays reserved. Idempotent.
    pub(super) async fn detach_network(&self, vm: &VmRecord) -> Result<(), NetError> {
        let net = self.network();
        net.host.remove_vm(&net.vm_net_of(vm)).await
    }

    /// As [`VmService::detach_network`], logging a failure (reconciliation removes leftovers).
    pub(super) async fn detach_network_logged(&self, vm: &VmRecord, when: &'static str) {
        if let Err(e) = self.detach_network(vm).await {
            tracing::warn!(vm_id = %vm.id, error = %crate::error_chain(&e), when, "removing host network");
        }
    }

    /// Guest half after readiness and `/time/sync`: `/net/config` (a failure fails the boot), then
    /// `/firewall/allowlist` unless `GUEST_FIREWALL=false` (a failure is a warning).
    pub(super) async fn configure_guest_network(&self, vm: &VmRecord) -> Result<(), Failed> {
        self.guest_net_config(vm).await?;
        self.guest_firewall(vm).await;
        Ok(())
    }

    /// `/net/config`: the VM's address, MAC, gateway, resolver and hostname.
    pub(super) async fn guest_net_config(&self, vm: &VmRecord) -> Result<(), Failed> {
        let net = self.network();
        self.agent_for(&vm.id)
            .call_no_content(paths::NET_CONFIG, Some(&net.net_config(vm)))
            .await?;
        Ok(())
    }

    /// `/firewall/allowlist` unless `GUEST_FIREWALL=false`; a failure is a warning.
    pub(super) async fn guest_firewall(&self, vm: &VmRecord) {
        let net = self.network();
        if !net.settings.guest_firewall {
            tracing::debug!(vm_id = %vm.id, "GUEST_FIREWALL=false: guest rules skipped");
            return;
        }
        if let Err(e) = self
            .agent_for(&vm.id)
            .call_no_content(paths::FIREWALL_ALLOWLIST, Some(&net.firewall(vm)))
            .await
        {
            tracing::warn!(vm_id = %vm.id, error = %e, "guest firewall not applied; host rules stay the authority");
        }
    }

    /// Replaces a running VM's egress policy, which was `before`'s: host rules (one transaction, a
    /// failure fails the call), then the guest's half (a failure is a warning) unless the guest
    /// already has exactly these rules. A warm-pool VM taken by a create.
    pub(super) async fn apply_egress(
        &self,
        vm: &VmRecord,
        before: &VmRecord,
    ) -> Result<(), Failed> {
        let net = self.network();
        net.host.update_vm(&net.vm_net_of(vm)).await.map_err(|e| {
            Failed::host(format!(
                "Host network update failed: {}",
                crate::error_chain(&e)
            ))
        })?;
        if net.firewall(vm) != net.firewall(before) {
            self.guest_firewall(vm).await;
        }
        Ok(())
    }

    /// The VM's TAP administratively up or down. A memory restore keeps it down until the guest
    /// has taken its new address and MAC, so the snapshot's identity never reaches the bridge.
    pub(super) async fn set_tap_up(&self, vm: &VmRecord, up: bool) -> Result<(), Failed> {
        let net = self.network();
        net.host
            .set_tap_up(&net.vm_net_of(vm), up)
            .await
            .map_err(|e| Failed::host(format!("TAP {}: {}", vm.tap_name, crate::error_chain(&e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_uses_the_first_eight_characters() {
        assert_eq!(
            hostname("0f9c2a1b-1111-2222-3333-444455556666"),
            "rds-0f9c2a1b"
        );
        assert_eq!(hostname("abc"), "rds-abc");
    }
}
