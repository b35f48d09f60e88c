//! Host networking with real QEMU guests (`docs/reference/lifecycle.md` §7): the egress policy seen
//! from inside a guest, through the manager's bridge, TAPs, nftables rules and DNS forwarder.
//!
//! Namespaces only: the manager runs in a namespace of its own (see `common/netns.rs`); a second one
//! plays "the internet" (`rds_testkit::internet`: 198.18.0.10, .11, .53 and 169.254.169.254 on a veth,
//! HTTP answering `from=<peer> to=<local>`, DNS on .53 answering `example.test. A 198.18.0.10`). The
//! manager's forwarder relays to it (the manager sees a private `/etc/resolv.conf`). No packet can
//! leave the two namespaces. At most two guests run at once.

mod common;

use common::{Opts, TestManager};
use http::{Method, StatusCode};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::Instant;

use rds_testkit::internet::{Internet, HOST_UPLINK, INET_A, INET_B, INET_DNS, METADATA};

fn prerequisites(test: &str) -> Option<(rds_testkit::GuestImage, String)> {
    // The manager's warnings (e.g. a guest firewall that failed) go to the test output.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    common::guest_prerequisites(test)
}

/// What a guest command saw.
#[derive(Debug)]
struct Probe {
    code: i64,
    stdout: String,
    stderr: String,
    ms: u128,
}

async fn sh(tm: &TestManager, id: &str, cmd: &str) -> Probe {
    let t = Instant::now();
    let r = tm.exec(id, json!({ "cmd": cmd, "timeoutMs": 20000 })).await;
    assert_eq!(r.status, StatusCode::OK, "{cmd}: {}", r.json);
    Probe {
        code: r.json["exitCode"].as_i64().unwrap_or(-1),
        stdout: r.json["stdout"].as_str().unwrap_or("").to_string(),
        stderr: r.json["stderr"].as_str().unwrap_or("").to_string(),
        ms: t.elapsed().as_millis(),
    }
}

/// `curl -m 2` from inside the guest: exit 0 with the body, 28 on timeout (dropped), 7 when refused
/// (reachable, nobody listening) or locally denied.
async fn curl(tm: &TestManager, id: &str, url: &str) -> Probe {
    let p = sh(tm, id, &format!("curl -sS -m 2 {url}")).await;
    println!(
        "  {id:.8} curl {url} → exit {} in {} ms {}",
        p.code, p.ms, p.stdout
    );
    p
}

async fn resolve(tm: &TestManager, id: &str) -> Probe {
    let p = sh(tm, id, "getent hosts example.test").await;
    println!(
        "  {id:.8} getent hosts example.test → exit {} in {} ms {}",
        p.code,
        p.ms,
        p.stdout.trim()
    );
    p
}

/// One UDP datagram from the guest (bash `/dev/udp`): a local drop by the guest's nftables output
/// chain fails the write with EPERM; a drop on the host is invisible to the sender.
async fn udp_send(tm: &TestManager, id: &str, to: Ipv4Addr) -> Probe {
    let p = sh(tm, id, &format!("echo x > /dev/udp/{to}/9")).await;
    println!("  {id:.8} udp → {to}:9 exit {} {}", p.code, p.stderr.trim());
    p
}

fn assert_reaches(p: &Probe, to: Ipv4Addr, what: &str) {
    assert_eq!(p.code, 0, "{what}: {p:?}");
    assert_eq!(
        p.stdout,
        format!("from={HOST_UPLINK} to={to}"),
        "{what} (masqueraded to the uplink address)"
    );
}

fn assert_blocked(p: &Probe, what: &str) {
    assert_eq!(p.code, 28, "{what}: expected a timeout (dropped): {p:?}");
}

async fn create(tm: &TestManager, outbound: bool, allow: &[&str]) -> (String, String) {
    let t = Instant::now();
    let r = tm
        .call(
            Method::POST,
            "/v1/vms",
            Some(json!({"cpu": 1, "memMb": 512, "outboundInternet": outbound, "allowIps": allow})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    let ip = r.json["guestIp"].as_str().unwrap().to_string();
    println!(
        "created {id:.8} ({ip}) outbound={outbound} allowIps={allow:?} in {:?}",
        t.elapsed()
    );
    (id, ip)
}

async fn destroy(tm: &TestManager, id: &str, ip: &str, tap: &str) {
    let r = tm
        .call(Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let rules = tm.ns.output(&["nft", "list", "ruleset"]);
    assert!(
        !mentions(&rules, ip) && !rules.contains(&format!("\"{tap}\"")),
        "rules of {ip} left after destroy:\n{rules}"
    );
    let links = tm.ns.output(&["ip", "-o", "link", "show"]);
    assert!(
        !links.contains(&format!("{tap}:")),
        "{tap} left after destroy:\n{links}"
    );
}

/// Whether `text` names address `ip` (not merely a longer one starting with it).
fn mentions(text: &str, ip: &str) -> bool {
    text.match_indices(ip).any(|(i, _)| {
        !text[i + ip.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Tests of this file run one at a time (each boots two guests).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn manager(
    image: &rds_testkit::GuestImage,
    vhost: &str,
    extra: &[(&str, &str)],
) -> (TestManager, Internet) {
    let tm = TestManager::start_with(
        Some(image),
        vhost,
        extra,
        Opts {
            resolv_conf: Some(format!("nameserver {INET_DNS}\n")),
            ..Opts::default()
        },
    )
    .await;
    let inet = Internet::new(&tm.ns);
    (tm, inet)
}

/// 1,000 DNS queries sent as fast as the guest can to the forwarder: at most its burst (100) plus
/// 100 per second of sending are answered, the rest dropped, and the guest still resolves after.
async fn dns_flood_is_rate_limited(tm: &TestManager, id: &str) {
    let gateway = tm.settings.vm_subnet.gateway();
    let script = format!(
        r#"perl <<'EOF'
use Socket; use Time::HiRes qw(time);
socket(S, PF_INET, SOCK_DGRAM, 0) or die "socket: $!";
my $to = sockaddr_in(53, inet_aton("{gateway}"));
my $q = pack("n6", 0, 0x0100, 1, 0, 0, 0) . "\x07example\x04test\x00" . pack("n2", 1, 1);
my ($sent, $got) = (0, 0);
my $t0 = time;
for my $i (1 .. 1000) {{ substr($q, 0, 2) = pack("n", $i); $sent++ if send(S, $q, 0, $to); }}
my $secs = time - $t0;
my $rin = ''; vec($rin, fileno(S), 1) = 1;
while (select(my $r = $rin, undef, undef, 1.5)) {{ recv(S, my $buf, 512, 0); $got++; }}
printf "%d %d %.3f\n", $sent, $got, $secs;
EOF"#
    );
    let p = sh(tm, id, &script).await;
    assert_eq!(p.code, 0, "{p:?}");
    let f: Vec<f64> = p
        .stdout
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let (sent, answered, secs) = (f[0], f[1], f[2]);
    println!("DNS flood: {sent} sent in {secs:.3} s, {answered} answered");
    assert_eq!(sent, 1000.0, "{p:?}");
    assert!(answered >= 1.0, "the forwarder answers within its rate");
    let bound = 100.0 + 100.0 * secs + 10.0;
    assert!(answered <= bound, "{answered} answers, more than {bound}");
    assert!(answered < sent, "nothing was dropped");
    // The bucket refills: the guest resolves again.
    let again = rds_testkit::wait_until(std::time::Duration::from_secs(10), || async {
        (resolve(tm, id).await.code == 0).then_some(())
    })
    .await;
    assert!(again.is_some(), "resolves after the flood");
}

/// The host rules alone (`GUEST_FIREWALL=false`) enforce the whole policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_alone_enforce_the_policy() {
    let Some((image, vhost)) = prerequisites("host_rules_alone_enforce_the_policy") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let (tm, _inet) = manager(&image, &vhost, &[("GUEST_FIREWALL", "false")]).await;
    let (a, ip_a) = create(&tm, false, &[]).await;
    let (b, ip_b) = create(&tm, true, &["198.18.0.10/32"]).await;
    println!(
        "nft list ruleset with two VMs:\n{}",
        tm.ns.output(&["nft", "list", "ruleset"])
    );

    // outboundInternet=false reaches nothing: internet, DNS, the gateway's services.
    assert_blocked(
        &curl(&tm, &a, &format!("http://{INET_A}/")).await,
        "A → .10",
    );
    assert_ne!(resolve(&tm, &a).await.code, 0, "A resolves nothing");
    assert_blocked(&curl(&tm, &a, "http://172.16.0.1:1/").await, "A → gateway");
    // No guest rules: the send leaves the guest and is dropped on the host.
    assert_eq!(
        udp_send(&tm, &a, INET_A).await.code,
        0,
        "GUEST_FIREWALL=false"
    );

    // true + ["198.18.0.10/32"]: .10 only; DNS through the gateway's forwarder.
    assert_reaches(
        &curl(&tm, &b, &format!("http://{INET_A}/")).await,
        INET_A,
        "B → .10",
    );
    assert_blocked(
        &curl(&tm, &b, &format!("http://{INET_B}/")).await,
        "B → .11",
    );
    let d = resolve(&tm, &b).await;
    assert_eq!(d.code, 0, "B resolves through the forwarder: {d:?}");
    assert!(d.stdout.starts_with(&INET_A.to_string()), "{d:?}");
    dns_flood_is_rate_limited(&tm, &b).await;

    // VMs never reach each other (a port nobody listens on would answer RST if reachable).
    assert_blocked(&curl(&tm, &a, &format!("http://{ip_b}:1/")).await, "A → B");
    assert_blocked(&curl(&tm, &b, &format!("http://{ip_a}:1/")).await, "B → A");

    destroy(&tm, &a, &ip_a, "rds-tap2").await;

    // ["0.0.0.0/0"]: every outside address, but never the metadata address nor another VM.
    let (c, ip_c) = create(&tm, true, &["0.0.0.0/0"]).await;
    assert_eq!(ip_c, ip_a, "lowest free address again");
    assert_reaches(
        &curl(&tm, &c, &format!("http://{INET_A}/")).await,
        INET_A,
        "C → .10",
    );
    assert_reaches(
        &curl(&tm, &c, &format!("http://{INET_B}/")).await,
        INET_B,
        "C → .11",
    );
    assert_blocked(
        &curl(&tm, &c, &format!("http://{METADATA}/")).await,
        "C → metadata",
    );
    assert_blocked(&curl(&tm, &c, &format!("http://{ip_b}:1/")).await, "C → B");

    // run-ts gets network access exactly when the policy allows egress.
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{c}/run-ts"),
            Some(json!({"code": format!("const r = await fetch('http://{INET_A}/'); console.log(await r.text());"), "timeoutMs": 60000})),
        )
        .await;
    println!("  run-ts fetch → {} {}", r.status, r.json);
    if r.status == StatusCode::OK {
        assert!(
            r.json["stdout"]
                .as_str()
                .unwrap_or("")
                .contains("to=198.18.0.10"),
            "{}",
            r.json
        );
    }

    destroy(&tm, &b, &ip_b, "rds-tap3").await;
    destroy(&tm, &c, &ip_c, "rds-tap2").await;
    let links = tm.ns.output(&["ip", "-o", "link", "show"]);
    assert!(!links.contains("rds-tap"), "{links}");
}

/// With the guest half on (the default) the same policy holds, and the guest's own rules are in
/// force: a denied UDP send fails inside the guest (EPERM) instead of being dropped on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_firewall_matches_the_host_policy() {
    let Some((image, vhost)) = prerequisites("guest_firewall_matches_the_host_policy") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let (tm, _inet) = manager(&image, &vhost, &[]).await;
    let (d, ip_d) = create(&tm, true, &["198.18.0.10/32"]).await;
    let (e, ip_e) = create(&tm, false, &[]).await;
    assert_reaches(
        &curl(&tm, &d, &format!("http://{INET_A}/")).await,
        INET_A,
        "D → .10",
    );
    let p = curl(&tm, &d, &format!("http://{INET_B}/")).await;
    assert_ne!(p.code, 0, "D → .11: {p:?}");
    assert_eq!(resolve(&tm, &d).await.code, 0, "D resolves");
    assert_blocked(
        &curl(&tm, &e, &format!("http://{INET_A}/")).await,
        "E → .10",
    );
    assert_ne!(resolve(&tm, &e).await.code, 0, "E resolves nothing");
    // The guest's own output chain refuses a UDP send locally (EPERM); the host alone cannot.
    let p = udp_send(&tm, &e, INET_A).await;
    assert!(
        p.code != 0 && p.stderr.contains("not permitted"),
        "E: {p:?}"
    );
    let p = udp_send(&tm, &d, INET_B).await;
    assert!(
        p.code != 0 && p.stderr.contains("not permitted"),
        "D → .11: {p:?}"
    );
    assert_eq!(udp_send(&tm, &d, INET_A).await.code, 0, "D → .10 allowed");
    destroy(&tm, &d, &ip_d, "rds-tap2").await;
    destroy(&tm, &e, &ip_e, "rds-tap3").await;
}
