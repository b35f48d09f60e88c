//! Host networking for guests (`docs/reference/lifecycle.md` §7): the bridge at the gateway address
//! of `VM_SUBNET`, one persistent TAP per VM attached as an isolated bridge port, the nftables
//! tables `bridge rds`, `inet rds` and `ip rds_nat` (anti-spoofing, deny-by-default egress,
//! no inbound, NAT), the DNS forwarder on gateway:53 and the address derivations.
//!
//! The crate knows nothing of the manager: the caller hands it typed values ([`NetConfig`],
//! [`VmNet`]) and calls, in order, [`HostNet::setup`] at start, [`HostNet::reconcile`] with the
//! VMs that are still alive, [`HostNet::add_vm`] before a VMM starts, [`HostNet::remove_vm`] on
//! destroy, and [`HostNet::teardown`] only to remove everything. Links are managed over
//! rtnetlink and TAPs through `/dev/net/tun`; every nftables change is one `nft -f -`
//! transaction, so a failed change leaves the previous rules in force and fails the call.
//!
//! Everything acts on the network namespace of the thread that called [`HostNet::setup`] (the
//! netlink socket is bound there; `nft` and `/proc/sys/net` are reached from the calling
//! thread, so use the handle from threads of that namespace).

mod addr;
mod dns;
mod link;
mod nft;
mod tap;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tokio::sync::Mutex;

pub use addr::{AllowEntry, Ipv4Cidr, MacAddr, Subnet, VmIdentity};
pub use dns::{upstreams_from_resolv_conf, DnsConfig, DnsForwarder};
pub use link::LinkState;
pub use nft::{RuleContext, METADATA_ADDR};

/// Script generation, exposed for inspection and tests.
pub mod script {
    pub use crate::nft::{
        base_script, foreign_drop_forward_chains, full_script, teardown_script, vm_add_script,
        vm_remove_script,
    };
}

/// TAP helpers: [`open`](tap::open) attaches to a TAP like a VMM does (tests and benches
/// use it to carry frames through a real TAP).
pub mod tap_dev {
    pub use crate::tap::{create_persistent, open};
}

/// Errors of this crate; each names the thing that failed and keeps the cause.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A value the crate cannot use.
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: String },
    /// A netlink request failed.
    #[error("netlink: {op} {name}")]
    Netlink {
        op: &'static str,
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// The netlink socket could not be opened.
    #[error("netlink socket")]
    NetlinkSocket(#[source] io::Error),
    /// A link that should exist does not.
    #[error("link {0} not found")]
    LinkMissing(String),
    /// Creating or configuring a TAP failed.
    #[error("TAP {name}")]
    Tap {
        name: String,
        #[source]
        source: io::Error,
    },
    /// Writing a sysctl failed.
    #[error("sysctl {path}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `nft` could not be run.
    #[error("running nft")]
    NftSpawn(#[source] io::Error),
    /// The nftables transaction was rejected; nothing of it was applied.
    #[error("nftables transaction failed ({status}): {stderr}")]
    Nft { status: String, stderr: String },
    /// The DNS forwarder could not bind.
    #[error("DNS forwarder bind {addr}")]
    DnsBind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Other I/O.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn invalid(what: &'static str, value: impl Into<String>) -> Self {
        NetError::Invalid {
            what,
            value: value.into(),
        }
    }
}

/// Owner of TAP devices: the uid/gid the VMM runs as (`JAILER_UID`/`JAILER_GID`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapOwner {
    pub uid: u32,
    pub gid: u32,
}

/// Host-side settings, parsed once by the manager and handed down.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// `VM_SUBNET`.
    pub subnet: Subnet,
    /// Bridge name (`rds-br0`).
    pub bridge: String,
    /// TAP name prefix (`rds-tap`); links named `<prefix><digits>` belong to the product.
    pub tap_prefix: String,
    /// Owner of every TAP.
    pub tap_owner: TapOwner,
    /// Port of `MANAGER_INTERNAL_BASE_URL`, opened on the gateway to VMs with peer links.
    pub manager_port: Option<u16>,
    /// Whether the DNS forwarder runs (`DNS_SERVER_IP` unset): opens gateway:53 to VMs with
    /// `outboundInternet`.
    pub dns_forwarder: bool,
    /// The `nft` binary.
    pub nft_bin: String,
}

impl NetConfig {
    /// Defaults of the spec: `rds-br0`, `rds-tap<i>`, forwarder on, no manager port.
    pub fn new(subnet: Subnet, tap_owner: TapOwner) -> Self {
        Self {
            subnet,
            bridge: "rds-br0".into(),
            tap_prefix: "rds-tap".into(),
            tap_owner,
            manager_port: None,
            dns_forwarder: true,
            nft_bin: "nft".into(),
        }
    }

    /// What the rule generator needs.
    pub fn rule_context(&self) -> RuleContext {
        RuleContext {
            bridge: self.bridge.clone(),
            tap_prefix: self.tap_prefix.clone(),
            subnet: self.subnet.cidr(),
            gateway: self.subnet.gateway(),
            manager_port: self.manager_port,
            dns_forwarder: self.dns_forwarder,
        }
    }

    /// The forwarder's settings for this subnet (gateway:53, VM_SUBNET sources, 100 q/s).
    pub fn dns_config(&self, upstreams: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig::new(self.subnet.gateway(), self.subnet.cidr(), upstreams)
    }

    /// A VM's network description with the derived address, MAC and TAP name.
    pub fn vm(
        &self,
        index: u32,
        outbound_internet: bool,
        allow_ips: Vec<String>,
        has_peer_links: bool,
    ) -> VmNet {
        let id = self.subnet.identity(index, &self.tap_prefix);
        VmNet {
            index,
            ip: id.ip,
            mac: id.mac,
            tap: id.tap,
            outbound_internet,
            allow_ips,
            has_peer_links,
        }
    }

    fn is_product_tap(&self, name: &str) -> bool {
        name.strip_prefix(self.tap_prefix.as_str())
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// One VM's network: identity and policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmNet {
    /// Host index of the guest address.
    pub index: u32,
    /// Guest address.
    pub ip: Ipv4Addr,
    /// Guest MAC.
    pub mac: MacAddr,
    /// TAP name.
    pub tap: String,
    /// `outboundInternet`.
    pub outbound_internet: bool,
    /// `allowIps`, normalised CIDR/IP strings (IPv4 or IPv6).
    pub allow_ips: Vec<String>,
    /// Whether the VM has peer links (opens the manager port on the gateway).
    pub has_peer_links: bool,
}

impl VmNet {
    /// The parsed `allowIps`.
    pub fn allow_entries(&self) -> Result<Vec<AllowEntry>, NetError> {
        self.allow_ips.iter().map(|s| s.parse()).collect()
    }
}

/// What [`HostNet::reconcile`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Orphan TAPs deleted.
    pub removed_taps: Vec<String>,
    /// TAPs of live VMs that were missing and created again.
    pub recreated_taps: Vec<String>,
}

/// The host side of guest networking. Cheap to share behind an `Arc`; calls are serialised.
pub struct HostNet {
    cfg: NetConfig,
    handle: rtnetlink::Handle,
    bridge_index: u32,
    lock: Mutex<()>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for HostNet {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetError> {
    std::fs::write(path, value).map_err(|source| NetError::Sysctl {
        path: path.into(),
        source,
    })
}

impl HostNet {
    /// Idempotent host setup: bridge with the gateway address, IPv6 off on it,
    /// `net.ipv4.ip_forward=1`, and the three tables installed empty (every TAP denied).
    /// Call [`HostNet::reconcile`] with the live VMs right after.
    pub async fn setup(cfg: NetConfig) -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::NetlinkSocket)?;
        let conn = tokio::spawn(conn);
        let mut this = Self {
            cfg,
            handle,
            bridge_index: 0,
            lock: Mutex::new(()),
            conn,
        };
        let br = this.cfg.bridge.clone();
        this.bridge_index = link::ensure_bridge(&this.handle, &br).await?;
        let mac = MacAddr::for_bridge(this.cfg.subnet.gateway());
        link::set_address(&this.handle, this.bridge_index, &br, mac.0).await?;
        let v6 = format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6");
        if std::path::Path::new(&v6).exists() {
            write_sysctl(&v6, "1")?;
        }
        let subnet = this.cfg.subnet;
        link::ensure_addr(
            &this.handle,
            this.bridge_index,
            &br,
            subnet.gateway(),
            subnet.cidr().prefix(),
        )
        .await?;
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        nft::apply(
            &this.cfg.nft_bin,
            &nft::base_script(&this.cfg.rule_context()),
        )
        .await?;
        Ok(this)
    }

    /// The settings this handle was built with.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    async fn ensure_tap(&self, vm: &VmNet) -> Result<bool, NetError> {
        let owner = self.cfg.tap_owner;
        let created = match link::get(&self.handle, &vm.tap).await? {
            Some(l) if l.kind.as_deref() == Some("tun") => false,
            Some(_) => return Err(NetError::invalid("TAP (exists but is not a TAP)", &vm.tap)),
            None => {
                let name = vm.tap.clone();
                tap::create_persistent(&name, owner.uid, owner.gid)
                    .map_err(|source| NetError::Tap { name, source })?;
                true
            }
        };
        let l = link::get(&self.handle, &vm.tap)
            .await?
            .ok_or_else(|| NetError::LinkMissing(vm.tap.clone()))?;
        if let Err(e) =
            link::attach_isolated(&self.handle, l.index, &vm.tap, self.bridge_index).await
        {
            if created {
                let _ = link::delete(&self.handle, &vm.tap).await;
            }
            return Err(e);
        }
        Ok(created)
    }

    fn check_vm(&self, vm: &VmNet) -> Result<(), NetError> {
        if self.cfg.subnet.guest_index(vm.ip) != Some(vm.index) {
            return Err(NetError::invalid("guest address", vm.ip.to_string()));
        }
        if !self.cfg.is_product_tap(&vm.tap) {
            return Err(NetError::invalid("TAP name", &vm.tap));
        }
        vm.allow_entries()?;
        Ok(())
    }

    /// Creates the VM's TAP (persistent, owned by the VMM's uid, isolated bridge port, up) and
    /// installs its rules in one transaction. Idempotent; on failure nothing new is left.
    pub async fn add_vm(&self, vm: &VmNet) -> Result<(), NetError> {
        self.check_vm(vm)?;
        let _g = self.lock.lock().await;
        let script = nft::vm_add_script(&self.cfg.rule_context(), vm)?;
        let created = self.ensure_tap(vm).await?;
        if let Err(e) = nft::apply(&self.cfg.nft_bin, &script).await {
            if created {
                let _ = link::delete(&self.handle, &vm.tap).await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Sets the VM's TAP administratively up or down; the port stays on the bridge and its rules
    /// stay in place (a restored guest keeps it down until it has its new identity).
    pub async fn set_tap_up(&self, vm: &VmNet, up: bool) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let l = link::get(&self.handle, &vm.tap)
            .await?
            .ok_or_else(|| NetError::LinkMissing(vm.tap.clone()))?;
        link::set_up(&self.handle, l.index, &vm.tap, up).await
    }

    /// Replaces the VM's policy (allow list, peer links) in one transaction; links untouched.
    pub async fn update_vm(&self, vm: &VmNet) -> Result<(), NetError> {
        self.check_vm(vm)?;
        let _g = self.lock.lock().await;
        let script = nft::vm_add_script(&self.cfg.rule_context(), vm)?;
        nft::apply(&self.cfg.nft_bin, &script).await
    }

    /// Removes the VM's rules (one transaction) and its TAP. Succeeds when they are already gone.
    pub async fn remove_vm(&self, vm: &VmNet) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        nft::apply(&self.cfg.nft_bin, &nft::vm_remove_script(vm)).await?;
        link::delete(&self.handle, &vm.tap).await
    }

    /// Makes the host match exactly `live`: their TAPs exist and are attached, the three tables
    /// are rebuilt from them in one transaction, and every other `<prefix><digits>` link is
    /// deleted.
    pub async fn reconcile(&self, live: &[VmNet]) -> Result<ReconcileReport, NetError> {
        for vm in live {
            self.check_vm(vm)?;
        }
        let _g = self.lock.lock().await;
        let script = nft::full_script(&self.cfg.rule_context(), live)?;
        let mut report = ReconcileReport::default();
        for vm in live {
            if self.ensure_tap(vm).await? {
                report.recreated_taps.push(vm.tap.clone());
            }
        }
        nft::apply(&self.cfg.nft_bin, &script).await?;
        for l in link::list(&self.handle).await? {
            if self.cfg.is_product_tap(&l.name) && !live.iter().any(|v| v.tap == l.name) {
                link::delete(&self.handle, &l.name).await?;
                report.removed_taps.push(l.name);
            }
        }
        Ok(report)
    }

    /// Removes every product TAP, the three tables and the bridge. `ip_forward` is left as is.
    pub async fn teardown(self) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        for l in link::list(&self.handle).await? {
            if self.cfg.is_product_tap(&l.name) {
                link::delete(&self.handle, &l.name).await?;
            }
        }
        nft::apply(&self.cfg.nft_bin, nft::teardown_script()).await?;
        link::delete(&self.handle, &self.cfg.bridge).await
    }

    /// State of link `name` (tests, diagnostics).
    pub async fn link_state(&self, name: &str) -> Result<Option<LinkState>, NetError> {
        link::get(&self.handle, name).await
    }

    /// Forward-hook chains of other tables with a drop policy (for the startup warning).
    pub async fn foreign_forward_drop_chains(&self) -> Result<Vec<String>, NetError> {
        let listing = nft::list(&self.cfg.nft_bin, &["list", "chains"]).await?;
        Ok(nft::foreign_drop_forward_chains(&listing))
    }

    /// `nft list table <family> <name>` output, for the operator docs and tests.
    pub async fn list_table(&self, family: &str, name: &str) -> Result<String, NetError> {
        nft::list(&self.cfg.nft_bin, &["list", "table", family, name]).await
    }
}
