//! Real packets between network namespaces created by the tests (see `common` for the
//! topology). Needs root, `/dev/net/tun`, `ip` and `nft`; otherwise each test prints
//! `SKIP <test>: <reason>` and passes.

mod common;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{Guest, Internet, Listener, Ns, HOST_UPLINK, INET_A, INET_B, INET_DNS};
use rds_net::{DnsForwarder, HostNet, MacAddr, NetConfig, Subnet, TapOwner, VmNet};

const GW: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

fn config() -> NetConfig {
    let subnet = Subnet::new("172.16.0.0/24".parse().unwrap()).unwrap();
    let mut cfg = NetConfig::new(
        subnet,
        TapOwner {
            uid: 1234,
            gid: 1234,
        },
    );
    cfg.manager_port = Some(7001);
    cfg
}

fn vm(cfg: &NetConfig, index: u32, outbound: bool, allow: &[&str], peers: bool) -> VmNet {
    cfg.vm(
        index,
        outbound,
        allow.iter().map(|s| s.to_string()).collect(),
        peers,
    )
}

/// Runs `fut` on the host namespace's runtime (its worker threads live in that namespace).
fn on_host<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(fut)).expect("host task panicked")
}

fn add(rt: &tokio::runtime::Runtime, net: &Arc<HostNet>, v: &VmNet) {
    let (n, v) = (net.clone(), v.clone());
    on_host(rt, async move { n.add_vm(&v).await }).expect("add_vm");
}

fn ok(r: Result<String, String>, what: &str) -> String {
    r.unwrap_or_else(|e| panic!("{what}: expected to connect, got {e}"))
}

fn blocked<T: std::fmt::Debug>(r: Result<T, String>, what: &str) {
    assert!(r.is_err(), "{what}: expected to be blocked, got {r:?}");
}

#[test]
fn egress_policy_with_real_packets() {
    if !common::can_run("egress_policy_with_real_packets") {
        return;
    }
    let host = Ns::new("host");
    let inet = Internet::new(&host);
    let rt = host.run(common::runtime);
    let cfg = config();
    let net = Arc::new(on_host(&rt, HostNet::setup(cfg.clone())).expect("setup"));

    let a = vm(&cfg, 2, false, &["0.0.0.0/0"], false);
    let b = vm(&cfg, 3, true, &["198.18.0.10/32"], false);
    let c = vm(&cfg, 4, true, &["0.0.0.0/0"], false);
    let d = vm(&cfg, 5, true, &["198.18.0.1/32"], true);
    for v in [&a, &b, &c, &d] {
        add(&rt, &net, v);
    }
    let (ga, gb, gc, gd) = (
        Guest::new(&host, &a, GW),
        Guest::new(&host, &b, GW),
        Guest::new(&host, &c, GW),
        Guest::new(&host, &d, GW),
    );
    let _host_svc = Listener::http(&host, SocketAddr::from(([0, 0, 0, 0], 7000)));
    let _mgr = Listener::http(&host, SocketAddr::from((GW, 7001)));
    let _b_svc = Listener::http(&gb.ns, SocketAddr::from(([0, 0, 0, 0], 8000)));
    let _c_svc = Listener::http(&gc.ns, SocketAddr::from(([0, 0, 0, 0], 8000)));

    // outboundInternet=false reaches nothing, whatever its allowIps.
    blocked(ga.http(INET_A, 80), "A -> .10");
    blocked(ga.http(INET_B, 80), "A -> .11");
    blocked(ga.http(GW, 7000), "A -> gateway");
    blocked(ga.http(GW, 7001), "A -> manager port without peer links");

    // allowIps ["198.18.0.10/32"]: .10 yes (masqueraded behind the uplink), .11 no.
    let body = ok(gb.http(INET_A, 80), "B -> .10");
    assert!(body.ends_with("from=198.18.0.1 to=198.18.0.10"), "{body}");
    blocked(gb.http(INET_B, 80), "B -> .11");

    // 0.0.0.0/0: both; never the metadata address, the host's addresses or other VMs.
    ok(gc.http(INET_A, 80), "C -> .10");
    ok(gc.http(INET_B, 80), "C -> .11");
    blocked(gc.http(METADATA, 80), "C -> 169.254.169.254");
    ok(
        inet.ns.run(|| common::http_get(None, METADATA, 80)),
        "metadata server is up",
    );
    blocked(gc.http(GW, 7000), "C -> gateway:7000");
    blocked(gc.http(HOST_UPLINK, 7000), "C -> host uplink address");
    blocked(gc.http(b.ip, 8000), "C -> VM B (same L2, isolated ports)");
    gc.ns.ip(&[
        "route",
        "add",
        &format!("{}/32", b.ip),
        "via",
        &GW.to_string(),
    ]);
    blocked(gc.http(b.ip, 8000), "C -> VM B routed via the gateway");
    ok(
        host.run(move || common::http_get(None, Ipv4Addr::new(172, 16, 0, 3), 8000)),
        "B's listener is up (host -> B)",
    );

    // Host address named exactly: reachable; the manager port only with peer links.
    ok(
        gd.http(HOST_UPLINK, 7000),
        "D -> 198.18.0.1/32 host address",
    );
    blocked(gd.http(GW, 7000), "D -> gateway other port");
    ok(gd.http(GW, 7001), "D (peer links) -> manager port");
    blocked(gd.http(INET_A, 80), "D -> .10 not listed");

    // No inbound connections from outside.
    inet.ns
        .ip(&["route", "add", "172.16.0.0/24", "via", "198.18.0.1"]);
    blocked(
        inet.ns
            .run(move || common::http_get(None, Ipv4Addr::new(172, 16, 0, 4), 8000)),
        "internet -> C",
    );

    // Spoofing: another source address from C is dropped at the bridge.
    gc.ns.ip(&["addr", "add", "172.16.0.9/32", "dev", "eth0"]);
    blocked(
        gc.http_from(Some(Ipv4Addr::new(172, 16, 0, 9)), INET_A, 80),
        "C spoofing 172.16.0.9",
    );
    blocked(
        gc.http_from(Some(b.ip), INET_A, 80),
        "C spoofing B's address",
    );
    ok(gc.http(INET_A, 80), "C from its own address still works");

    // A policy update applies atomically to the running VM.
    let mut b2 = b.clone();
    b2.allow_ips = vec!["198.18.0.11/32".into()];
    let n = net.clone();
    on_host(&rt, async move { n.update_vm(&b2).await }).unwrap();
    blocked(gb.http(INET_A, 80), "B after update -> .10");
    ok(gb.http(INET_B, 80), "B after update -> .11");

    drop((ga, gb, gc, gd));
    let n = Arc::try_unwrap(net).ok().expect("single owner");
    on_host(&rt, n.teardown()).unwrap();
}

#[test]
fn dns_forwarder_answers_allowed_vms_only() {
    if !common::can_run("dns_forwarder_answers_allowed_vms_only") {
        return;
    }
    let host = Ns::new("host");
    let inet = Internet::new(&host);
    let rt = host.run(common::runtime);
    let cfg = config();
    let net = Arc::new(on_host(&rt, HostNet::setup(cfg.clone())).expect("setup"));
    let dns_cfg = cfg.dns_config(vec![SocketAddr::from((INET_DNS, 53))]);
    let fwd = on_host(&rt, DnsForwarder::spawn(dns_cfg)).expect("forwarder");
    assert_eq!(fwd.udp_addr(), SocketAddr::from((GW, 53)));

    let allowed = vm(&cfg, 2, true, &["198.18.0.10/32"], false);
    let denied = vm(&cfg, 3, false, &[], false);
    add(&rt, &net, &allowed);
    add(&rt, &net, &denied);
    let (g_ok, g_no) = (
        Guest::new(&host, &allowed, GW),
        Guest::new(&host, &denied, GW),
    );

    assert_eq!(g_ok.dns(GW, false), Ok(vec![INET_A]), "UDP via forwarder");
    assert_eq!(g_ok.dns(GW, true), Ok(vec![INET_A]), "TCP via forwarder");
    blocked(g_no.dns(GW, false), "DNS for outboundInternet=false");
    blocked(
        g_ok.dns(INET_DNS, false),
        "upstream directly, not in allowIps",
    );

    // Sources outside VM_SUBNET get no answer even when the firewall lets them reach it.
    inet.ns
        .ip(&["route", "add", "172.16.0.0/24", "via", "198.18.0.1"]);
    blocked(
        inet.ns
            .run(|| common::dns_query(SocketAddr::from((GW, 53)), common::TEST_NAME, false)),
        "query from outside VM_SUBNET",
    );

    // At most ~100 queries/s per VM: a burst of 150 gets at most the bucket's 100 (+ refill).
    let answered = g_ok.ns.run(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut q = hickory_proto::op::Message::query();
        q.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(common::TEST_NAME).unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        let raw = q.to_vec().unwrap();
        for _ in 0..150 {
            s.send_to(&raw, (GW, 53)).unwrap();
        }
        let mut buf = [0u8; 1500];
        let mut n = 0;
        while s.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    assert!((50..=110).contains(&answered), "answered {answered} of 150");

    drop((g_ok, g_no));
    on_host(&rt, fwd.shutdown());
    let n = Arc::try_unwrap(net).ok().unwrap();
    on_host(&rt, n.teardown()).unwrap();
}

fn holds_nothing_of(host: &Ns, v: &VmNet) {
    let rules = host.output(&["nft", "list", "ruleset"]);
    let key = v.ip.to_string().replace('.', "_");
    for needle in [v.ip.to_string(), key, v.tap.clone(), v.mac.to_string()] {
        assert!(
            !rules.contains(&needle),
            "ruleset still holds {needle}:\n{rules}"
        );
    }
    let links = host.output(&["ip", "-o", "link"]);
    assert!(
        !links.contains(&format!("{}:", v.tap)) && !links.contains(&format!("{}@", v.tap)),
        "ip link still holds {}:\n{links}",
        v.tap
    );
}

fn holds(host: &Ns, v: &VmNet) {
    let rules = host.output(&["nft", "list", "ruleset"]);
    assert!(
        rules.contains(&format!("{} : jump vm_eg_", v.ip)),
        "{rules}"
    );
    assert!(host.output(&["ip", "-o", "link"]).contains(&v.tap));
}

#[test]
fn destroy_and_crash_reconcile_leave_nothing() {
    if !common::can_run("destroy_and_crash_reconcile_leave_nothing") {
        return;
    }
    let host = Ns::new("host");
    let rt = host.run(common::runtime);
    let cfg = config();
    let net = on_host(&rt, HostNet::setup(cfg.clone())).expect("setup");
    // Setup is idempotent.
    drop(net);
    let net = Arc::new(on_host(&rt, HostNet::setup(cfg.clone())).expect("setup again"));
    assert_eq!(
        host.output(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .trim(),
        "1"
    );
    assert_eq!(
        host.output(&["ip", "-6", "addr", "show", "dev", "rds-br0"]),
        ""
    );
    assert!(host
        .output(&["ip", "-4", "addr", "show", "dev", "rds-br0"])
        .contains("172.16.0.1/24"));

    let x = vm(&cfg, 2, true, &["198.18.0.10/32", "198.18.0.1/32"], true);
    let y = vm(&cfg, 3, true, &["0.0.0.0/0"], false);
    add(&rt, &net, &x);
    add(&rt, &net, &x); // idempotent
    add(&rt, &net, &y);
    holds(&host, &x);
    holds(&host, &y);
    println!(
        "--- nft list ruleset with two VMs ---\n{}",
        host.output(&["nft", "list", "ruleset"])
    );

    // Destroy.
    let (n, xx) = (net.clone(), x.clone());
    on_host(&rt, async move { n.remove_vm(&xx).await }).expect("remove_vm");
    holds_nothing_of(&host, &x);
    holds(&host, &y);
    let (n, xx) = (net.clone(), x.clone());
    on_host(&rt, async move { n.remove_vm(&xx).await }).expect("remove_vm twice");

    // Crash: z is added, then the manager dies without cleaning up (the handle is dropped).
    let z = vm(&cfg, 4, false, &[], true);
    add(&rt, &net, &z);
    holds(&host, &z);
    drop(net);
    let net = on_host(&rt, HostNet::setup(cfg.clone())).expect("setup after crash");
    let live = vec![y.clone()];
    let (net, report) = on_host(&rt, async move {
        let r = net.reconcile(&live).await;
        (net, r)
    });
    let report = report.expect("reconcile");
    assert_eq!(report.removed_taps, vec![z.tap.clone()]);
    assert!(report.recreated_taps.is_empty());
    holds_nothing_of(&host, &z);
    holds(&host, &y);

    // A live VM whose TAP vanished gets it back.
    host.ip(&["link", "del", &y.tap]);
    let live = vec![y.clone()];
    let (net, report) = on_host(&rt, async move {
        let r = net.reconcile(&live).await;
        (net, r)
    });
    assert_eq!(report.unwrap().recreated_taps, vec![y.tap.clone()]);

    on_host(&rt, net.teardown()).expect("teardown");
    let rules = host.output(&["nft", "list", "ruleset"]);
    assert!(!rules.contains("rds"), "{rules}");
    assert!(!host.output(&["ip", "-o", "link"]).contains("rds-"));
}

#[test]
fn tap_is_persistent_owned_single_queue_and_isolated() {
    if !common::can_run("tap_is_persistent_owned_single_queue_and_isolated") {
        return;
    }
    let host = Ns::new("host");
    let rt = host.run(common::runtime);
    let cfg = config();
    let net = Arc::new(on_host(&rt, HostNet::setup(cfg.clone())).expect("setup"));
    let v = vm(&cfg, 7, true, &["0.0.0.0/0"], false);
    add(&rt, &net, &v);

    let (n, tap, br) = (net.clone(), v.tap.clone(), cfg.bridge.clone());
    let (t, b) = on_host(&rt, async move {
        (
            n.link_state(&tap).await.unwrap().unwrap(),
            n.link_state(&br).await.unwrap().unwrap(),
        )
    });
    assert_eq!(t.kind.as_deref(), Some("tun"));
    assert_eq!(t.controller, Some(b.index), "attached to the bridge");
    assert_eq!(t.isolated, Some(true), "isolated bridge port");
    assert!(t.up && b.up);
    let sys = |f: &str| host.output(&["cat", &format!("/sys/class/net/{}/{f}", v.tap)]);
    assert_eq!(sys("owner").trim(), "1234");
    assert_eq!(sys("group").trim(), "1234");
    let flags = u32::from_str_radix(sys("tun_flags").trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x0002, 0x0002, "IFF_TAP");
    assert_eq!(flags & 0x0100, 0, "single queue (no IFF_MULTI_QUEUE)");
    assert_ne!(flags & 0x0800, 0, "IFF_PERSIST");

    // The bridge keeps its own fixed address while TAPs come and go (a bridge left alone takes
    // its lowest port's address, and guests' ARP entries for the gateway would go stale).
    let bridge_mac = || host.output(&["cat", &format!("/sys/class/net/{}/address", cfg.bridge)]);
    let fixed = MacAddr::for_bridge(GW).to_string();
    assert_eq!(bridge_mac().trim(), fixed);
    let other = vm(&cfg, 8, false, &[], false);
    add(&rt, &net, &other);
    assert_eq!(bridge_mac().trim(), fixed, "after a TAP joined");
    let (n, o) = (net.clone(), other.clone());
    on_host(&rt, async move { n.remove_vm(&o).await }).unwrap();
    assert_eq!(bridge_mac().trim(), fixed, "after a TAP left");

    // The VMM's uid can attach to it without privileges; another uid cannot. /dev/net/tun is
    // opened before the credentials drop (it may be 0600 on the host; the jailer provides its
    // own node), the TUNSETIFF that checks the TAP's owner runs with the dropped ones.
    let open_as = |uid: u32| {
        let tap = v.tap.clone();
        host.run(move || {
            use std::os::fd::AsRawFd;
            let tun = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap();
            // SAFETY: raw setresgid/setresuid change the credentials of this thread only.
            let rc = unsafe { libc::syscall(libc::SYS_setresgid, uid, uid, uid) };
            assert_eq!(rc, 0);
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
            assert_eq!(rc, 0);
            let mut req = [0u8; 40];
            req[..tap.len()].copy_from_slice(tap.as_bytes());
            let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
            req[16..18].copy_from_slice(&flags.to_ne_bytes());
            // SAFETY: `req` is a 40-byte struct ifreq with the name and flags filled in.
            let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error().kind())
            }
        })
    };
    assert_eq!(open_as(1234), Ok(()));
    assert_eq!(open_as(4321), Err(std::io::ErrorKind::PermissionDenied));

    // Setup fails when nft fails or is missing.
    let mut bad = cfg.clone();
    bad.nft_bin = "false".into();
    let n2 = on_host(&rt, async move {
        // Host links already exist; only the nft part of setup fails.
        HostNet::setup(bad).await
    });
    assert!(n2.is_err(), "setup must fail when nft fails");
    let mut bad = cfg.clone();
    bad.nft_bin = "/nonexistent/nft".into();
    assert!(on_host(&rt, HostNet::setup(bad)).is_err());

    let n = Arc::try_unwrap(net).ok().unwrap();
    on_host(&rt, n.teardown()).unwrap();
}

#[test]
fn failed_rules_leave_no_tap() {
    if !common::can_run("failed_rules_leave_no_tap") {
        return;
    }
    let host = Ns::new("host");
    let rt = host.run(common::runtime);
    let cfg = config();
    let net = on_host(&rt, HostNet::setup(cfg.clone())).expect("setup");
    drop(net);
    // Same host, but nft now fails: the handle is built by hand through a wrapper script.
    let dir = std::env::temp_dir().join(format!("rds-net-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("nft");
    // Fails only on per-VM transactions (those contain "vm_ports {"), passes setup through.
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ns=$(cat)\ncase \"$s\" in *'add element bridge rds vm_ports'*) echo 'injected failure' >&2; exit 1;; esac\nprintf '%s\\n' \"$s\" | nft \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = cfg.clone();
    c.nft_bin = wrapper.to_string_lossy().into_owned();
    let net = on_host(&rt, HostNet::setup(c.clone())).expect("setup through wrapper");
    let v = vm(&c, 9, true, &["0.0.0.0/0"], false);
    let vv = v.clone();
    let (net, r) = on_host(&rt, async move {
        let r = net.add_vm(&vv).await;
        (net, r)
    });
    let err = r.expect_err("add_vm must fail with the transaction");
    assert!(format!("{err}").contains("injected failure"), "{err}");
    holds_nothing_of(&host, &v);
    on_host(&rt, net.teardown()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
