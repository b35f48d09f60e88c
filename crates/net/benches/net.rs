//! `cargo bench -p rds-net`: per-VM network setup + teardown (add_vm + remove_vm), and TCP round
//! trip and throughput guest → "internet" namespace through TAP, bridge, nftables and NAT.
//! Needs root (prints `SKIP` otherwise). The guest side is a namespace whose TAP is joined to
//! the product's TAP by a frame-copying thread, as a VMM does.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Guest, Internet, Ns, INET_A};
use rds_net::{HostNet, NetConfig, Subnet, TapOwner};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !common::can_run("bench net") {
        return;
    }
    let host = Ns::new("host");
    let _inet = Internet::new(&host);
    let rt = host.run(common::runtime);
    let cfg = NetConfig::new(
        Subnet::new("172.16.0.0/24".parse().unwrap()).unwrap(),
        TapOwner {
            uid: 1234,
            gid: 1234,
        },
    );
    let c = cfg.clone();
    let (net, setup) = rt
        .block_on(rt.spawn(async move {
            let t = Instant::now();
            let n = HostNet::setup(c).await.unwrap();
            (n, t.elapsed())
        }))
        .unwrap();
    let net = Arc::new(net);
    println!("host setup (bridge, sysctls, empty tables): {setup:?}");

    // Per-VM setup + teardown, with 10 other VMs present.
    let others: Vec<_> = (10..20)
        .map(|i| cfg.vm(i, true, vec!["198.18.0.0/15".into()], false))
        .collect();
    let n = net.clone();
    rt.block_on(rt.spawn(async move {
        for v in &others {
            n.add_vm(v).await.unwrap();
        }
    }))
    .unwrap();
    let vm = cfg.vm(
        2,
        true,
        vec!["198.18.0.10/32".into(), "10.0.0.0/8".into()],
        true,
    );
    let (n, v) = (net.clone(), vm.clone());
    let (mut add, mut remove, mut both) = rt
        .block_on(rt.spawn(async move {
            let (mut a, mut r, mut b) = (vec![], vec![], vec![]);
            for _ in 0..40 {
                let t0 = Instant::now();
                n.add_vm(&v).await.unwrap();
                let t1 = Instant::now();
                n.remove_vm(&v).await.unwrap();
                let t2 = Instant::now();
                a.push(t1 - t0);
                r.push(t2 - t1);
                b.push(t2 - t0);
            }
            (a, r, b)
        }))
        .unwrap();
    println!(
        "per-VM network, 40 runs: add_vm p50 {:?} (p90 {:?}); remove_vm p50 {:?} (p90 {:?}); setup+teardown p50 {:?}",
        pct(&mut add, 0.5),
        pct(&mut add, 0.9),
        pct(&mut remove, 0.5),
        pct(&mut remove, 0.9),
        pct(&mut both, 0.5)
    );

    // Data path.
    let (n, v) = (net.clone(), vm.clone());
    rt.block_on(rt.spawn(async move { n.add_vm(&v).await.unwrap() }))
        .unwrap();
    let g = Guest::new(&host, &vm, cfg.subnet.gateway());
    let (mut rtt, secs, bytes) = g.ns.run(|| {
        let mut s = TcpStream::connect((INET_A, 7)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        let mut v = Vec::new();
        for i in 0..2000 {
            let t = Instant::now();
            s.write_all(&[i as u8]).unwrap();
            s.read_exact(&mut b).unwrap();
            if i >= 100 {
                v.push(t.elapsed());
            }
        }
        let mut s = TcpStream::connect(SocketAddr::from((INET_A, 9))).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let total: u64 = 256 * 1024 * 1024;
        let t = Instant::now();
        let mut sent = 0;
        while sent < total {
            s.write_all(&chunk).unwrap();
            sent += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = [0u8; 8];
        s.read_exact(&mut got).unwrap();
        assert_eq!(u64::from_be_bytes(got), total);
        (v, t.elapsed().as_secs_f64(), total)
    });
    println!(
        "TCP round trip guest -> 198.18.0.10 (1 byte, 1900 samples): p50 {:?}, p90 {:?}",
        pct(&mut rtt, 0.5),
        pct(&mut rtt, 0.9)
    );
    println!(
        "TCP stream guest -> 198.18.0.10: {} MiB in {:.2} s = {:.0} MiB/s",
        bytes >> 20,
        secs,
        bytes as f64 / secs / 1048576.0
    );
    drop(g);
    let n = Arc::try_unwrap(net).ok().unwrap();
    rt.block_on(rt.spawn(n.teardown())).unwrap().unwrap();
}
