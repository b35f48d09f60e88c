//! Links over rtnetlink: the bridge, its gateway address, TAP ports (attach, isolate, up),
//! listing and deletion. No `ip` processes.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoKind, InfoPortData, InfoPortKind, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::NetError;

/// What the crate reports about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the controller (bridge), if attached.
    pub controller: Option<u32>,
    /// Link kind (`bridge`, `tun`, `veth`, …) when the kernel reports one.
    pub kind: Option<String>,
    /// Bridge-port `isolated` flag, when the link is a bridge port.
    pub isolated: Option<bool>,
}

fn nl<'a>(op: &'static str, name: &'a str) -> impl FnOnce(rtnetlink::Error) -> NetError + 'a {
    move |source| NetError::Netlink {
        op,
        name: name.to_string(),
        source,
    }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-errno))
}

fn state(msg: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        controller: None,
        kind: None,
        isolated: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Controller(c) if *c != 0 => s.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => s.kind = Some(kind_name(k)),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                if let InfoBridgePort::Isolated(v) = p {
                                    s.isolated = Some(*v);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn kind_name(k: &InfoKind) -> String {
    k.to_string()
}

/// The link called `name`, if it exists.
pub async fn get(handle: &Handle, name: &str) -> Result<Option<LinkState>, NetError> {
    let mut req = handle.link().get().match_name(name.to_string()).execute();
    match req.try_next().await {
        Ok(Some(msg)) => Ok(Some(state(&msg))),
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(nl("get link", name)(e)),
    }
}

/// Every link in the namespace.
pub async fn list(handle: &Handle) -> Result<Vec<LinkState>, NetError> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links", "*"))?;
    Ok(msgs.iter().map(state).collect())
}

/// Creates bridge `name` when missing and brings it up; returns its index.
pub async fn ensure_bridge(handle: &Handle, name: &str) -> Result<u32, NetError> {
    if get(handle, name).await?.is_none() {
        match handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            Err(e) => return Err(nl("create bridge", name)(e)),
        }
    }
    let link = get(handle, name)
        .await?
        .ok_or_else(|| NetError::LinkMissing(name.to_string()))?;
    if link.kind.as_deref() != Some("bridge") {
        return Err(NetError::invalid(
            "bridge (exists but is not a bridge)",
            name,
        ));
    }
    set_up(handle, link.index, name, true).await?;
    Ok(link.index)
}

/// Gives link `index` the fixed Ethernet address `mac` (a bridge keeps an address set this way
/// instead of following its ports).
pub async fn set_address(
    handle: &Handle,
    index: u32,
    name: &str,
    mac: [u8; 6],
) -> Result<(), NetError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(nl("set address", name))
}

/// Adds `addr/prefix` to link `index` unless it is already there.
pub async fn ensure_addr(
    handle: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    let existing: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses", name))?;
    let present = existing.iter().any(|m| {
        m.header.prefix_len == prefix
            && m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) if *a == addr))
    });
    if present {
        return Ok(());
    }
    match handle
        .address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        Err(e) => Err(nl("add address", name)(e)),
    }
}

/// Sets link `index` up or down.
pub async fn set_up(handle: &Handle, index: u32, name: &str, up: bool) -> Result<(), NetError> {
    let b = LinkUnspec::new_with_index(index);
    let msg = if up { b.up() } else { b.down() }.build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(nl(if up { "set up" } else { "set down" }, name))
}

/// Attaches link `index` to the bridge as an isolated port and brings it up.
pub async fn attach_isolated(
    handle: &Handle,
    index: u32,
    name: &str,
    bridge_index: u32,
) -> Result<(), NetError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .build(),
        )
        .execute()
        .await
        .map_err(nl("attach to bridge", name))?;
    handle
        .link()
        .set_port(
            LinkUnspec::new_with_index(index)
                .set_port_kind(InfoPortKind::Bridge)
                .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                    true,
                )]))
                .build(),
        )
        .execute()
        .await
        .map_err(nl("isolate bridge port", name))?;
    set_up(handle, index, name, true).await
}

/// Deletes link `name`; absent links are not an error.
pub async fn delete(handle: &Handle, name: &str) -> Result<(), NetError> {
    let Some(link) = get(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
        Err(e) => Err(nl("delete link", name)(e)),
    }
}
