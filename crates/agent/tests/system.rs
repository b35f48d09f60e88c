//! `/firewall/allowlist`, `/net/config`, `/time/sync`, `/entropy/reseed`, `/fs/sync`. The host's clock,
//! firewall and network are never touched: nft and netlink run only in a network (and UTS) namespace
//! this test creates with `unshare`, files go to the agent's test `/etc`, and the clock is set only when
//! `RDS_AGENT_TEST_SET_CLOCK=1`.

mod common;

use std::process::Command;

use common::Agent;
use serde_json::{json, Value};

fn post(agent: &Agent, path: &str, body: Value) -> (u16, String) {
    let r = agent.request("POST", path, &[], body.to_string().as_bytes());
    let message = if r.body.is_empty() {
        String::new()
    } else {
        r.message()
    };
    (r.status, message)
}

fn firewall_body() -> Value {
    json!({
        "allowIps": ["1.2.3.4", "10.1.0.0/16", "2001:db8::/32"],
        "outboundInternet": true,
        "allowManagerGateway": true,
        "gateway": "172.16.0.1",
        "managerPort": 3000,
        "dnsAtGateway": true
    })
}

fn net_body() -> Value {
    json!({"iface": "eth0", "ip": "10.9.0.2", "cidr": 24, "gateway": "10.9.0.1",
           "mac": "02:00:0a:09:00:02", "hostname": "vm-test"})
}

#[test]
fn invalid_requests_are_400_and_touch_nothing() {
    let agent = Agent::start("system-validation");
    let mut fw = firewall_body();
    fw["allowIps"] = json!(["example.com"]);
    assert_eq!(
        post(&agent, "/firewall/allowlist", fw),
        (
            400,
            "allowIps entry 'example.com' is not an IP address or CIDR".into()
        )
    );
    let mut fw = firewall_body();
    fw["allowIps"] = json!(["1.2.3.4/33"]);
    assert_eq!(post(&agent, "/firewall/allowlist", fw).0, 400);
    let mut fw = firewall_body();
    fw.as_object_mut().unwrap().remove("managerPort");
    assert_eq!(
        post(&agent, "/firewall/allowlist", fw),
        (
            400,
            "managerPort is required when allowManagerGateway is true".into()
        )
    );
    let mut net = net_body();
    net["gateway"] = json!("10.9.1.1");
    assert_eq!(
        post(&agent, "/net/config", net),
        (400, "gateway must be inside ip/cidr".into())
    );
    let mut net = net_body();
    net["hostname"] = json!("bad_name");
    assert!(post(&agent, "/net/config", net).1.starts_with("hostname"));
    for body in [
        json!({}),
        json!({"unixTimeMs": 0}),
        json!({"unixTimeMs": "1"}),
    ] {
        assert_eq!(
            post(&agent, "/time/sync", body),
            (400, "unixTimeMs is required".into())
        );
    }
    for body in [json!({}), json!({"seed": "AAAA"}), json!({"seed": "***"})] {
        assert_eq!(
            post(&agent, "/entropy/reseed", body),
            (400, "seed must be base64 of 32 to 512 bytes".into())
        );
    }
    assert!(!agent.etc().join("resolv.conf").exists());
    assert_eq!(agent.request("GET", "/fs/sync", &[], b"").status, 405);
    assert_eq!(post(&agent, "/fs/sync", json!({})).0, 204);
}

#[test]
fn dns_only_writes_the_resolver() {
    let agent = Agent::start("system-dns");
    let mut net = net_body();
    net["dnsOnly"] = json!(true);
    net["dns"] = json!("10.9.0.53");
    net.as_object_mut().unwrap().remove("hostname");
    assert_eq!(post(&agent, "/net/config", net).0, 204);
    let resolv = agent.etc().join("resolv.conf");
    assert!(std::fs::symlink_metadata(&resolv)
        .unwrap()
        .file_type()
        .is_file());
    assert_eq!(
        std::fs::read_to_string(resolv).unwrap(),
        "nameserver 10.9.0.53\noptions timeout:1 attempts:2\n"
    );
}

fn in_netns(pid: u32, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "-u", "--"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Firewall and network configuration in a namespace of the test's own.
#[test]
fn firewall_and_network_in_a_private_namespace() {
    let test = "firewall_and_network_in_a_private_namespace";
    if !common::root_or_skip(test) {
        return;
    }
    let probe = Command::new("unshare").args(["-n", "-u", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) && rds_testkit::skip(test, "cannot create namespaces here")
    {
        return;
    }
    let agent = Agent::start_in("system-netns", &["unshare", "-n", "-u", "--"]);
    let pid = agent.pid();

    let (status, message) = post(&agent, "/firewall/allowlist", firewall_body());
    if status == 500
        && !Command::new("nft")
            .arg("--version")
            .status()
            .is_ok_and(|s| s.success())
    {
        eprintln!("SKIP firewall part: nft is not installed ({message})");
    } else {
        assert_eq!(status, 204, "{message}");
        let table = in_netns(pid, &["nft", "list", "table", "inet", "rds_guest"]);
        for rule in [
            "policy drop",
            "oif \"lo\" accept",
            "ip daddr 169.254.169.254 drop",
            "ip daddr 172.16.0.1 udp dport 53 accept",
            "ip daddr 172.16.0.1 tcp dport 3000 accept",
            "ip daddr 10.1.0.0/16 accept",
            "ip6 daddr 2001:db8::/32 accept",
        ] {
            assert!(table.contains(rule), "{rule} missing in\n{table}");
        }
        // Replaced whole, not appended to.
        let mut closed = firewall_body();
        closed["outboundInternet"] = json!(false);
        assert_eq!(post(&agent, "/firewall/allowlist", closed).0, 204);
        let table = in_netns(pid, &["nft", "list", "table", "inet", "rds_guest"]);
        assert!(
            !table.contains("1.2.3.4") && !table.contains("dport 53"),
            "{table}"
        );
        assert_eq!(table.matches("chain output").count(), 1);
    }

    // No eth0 yet: netlink failure is a 500 naming the step.
    let (status, message) = post(&agent, "/net/config", net_body());
    assert_eq!(status, 500);
    assert!(
        message.starts_with("Network configuration failed: find eth0"),
        "{message}"
    );

    in_netns(
        pid,
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ],
    );
    in_netns(pid, &["ip", "link", "set", "peer0", "up"]);
    in_netns(pid, &["ip", "addr", "add", "192.168.5.5/24", "dev", "eth0"]);
    let (status, message) = post(&agent, "/net/config", net_body());
    assert_eq!(status, 204, "{message}");
    let addrs = in_netns(pid, &["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.9.0.2/24"), "{addrs}");
    assert!(
        !addrs.contains("192.168.5.5"),
        "old addresses flushed: {addrs}"
    );
    let link = in_netns(pid, &["ip", "link", "show", "dev", "eth0"]);
    assert!(
        link.contains("02:00:0a:09:00:02") && link.contains(",UP"),
        "{link}"
    );
    let routes = in_netns(pid, &["ip", "route", "show", "default"]);
    assert!(routes.contains("default via 10.9.0.1 dev eth0"), "{routes}");
    assert_eq!(in_netns(pid, &["hostname"]).trim(), "vm-test");
    let hosts = std::fs::read_to_string(agent.etc().join("hosts")).unwrap();
    assert!(hosts.contains("127.0.1.1\tvm-test"), "{hosts}");
    assert_eq!(
        std::fs::read_to_string(agent.etc().join("resolv.conf")).unwrap(),
        "nameserver 10.9.0.1\noptions timeout:1 attempts:2\n"
    );
    // Idempotent: the same call again succeeds (route replaced, not duplicated).
    assert_eq!(post(&agent, "/net/config", net_body()).0, 204);
}

#[test]
fn entropy_reseed_writes_a_new_machine_id() {
    if !common::root_or_skip("entropy_reseed_writes_a_new_machine_id") {
        return;
    }
    let agent = Agent::start("system-entropy");
    let mut seed = [0u8; 64];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut seed)
        .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(seed);
    let (status, message) = post(&agent, "/entropy/reseed", json!({"seed": b64}));
    if status == 500 {
        eprintln!("SKIP entropy_reseed_writes_a_new_machine_id: the kernel refused ({message})");
        return;
    }
    assert_eq!(status, 204, "{message}");
    let id = std::fs::read_to_string(agent.etc().join("machine-id")).unwrap();
    assert_eq!(id.len(), 33);
    assert_eq!(post(&agent, "/entropy/reseed", json!({"seed": b64})).0, 204);
    assert_ne!(
        std::fs::read_to_string(agent.etc().join("machine-id")).unwrap(),
        id
    );
}

#[test]
fn time_sync_sets_the_clock_only_when_asked() {
    if std::env::var("RDS_AGENT_TEST_SET_CLOCK").as_deref() != Ok("1") {
        eprintln!("SKIP time_sync_sets_the_clock_only_when_asked: set RDS_AGENT_TEST_SET_CLOCK=1 to let it set this host's clock");
        return;
    }
    let agent = Agent::start("system-time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        post(&agent, "/time/sync", json!({"unixTimeMs": now})).0,
        204
    );
}
