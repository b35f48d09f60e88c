//! "The internet" for network tests and benches: a namespace joined by a veth to a host namespace
//! (`upl0` 198.18.0.1 ⇄ `eth0` with 198.18.0.10, .11, .53 and 169.254.169.254). No packet leaves
//! the two namespaces. Its servers, on threads that stop when it drops:
//!
//! - HTTP on port 80 of every address (HTTP/1.0, `Content-Length`): `GET /bytes/<n>` answers `n`
//!   bytes of `x`, anything else `from=<peer> to=<local>`;
//! - echo on port 7, discard on port 9 (answers the byte count, big-endian u64, at EOF);
//! - authoritative DNS on 198.18.0.53 (UDP and TCP): `example.test. A 198.18.0.10`, an empty answer
//!   for its other types, NXDOMAIN for any other name.

use crate::netns::Ns;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub const HOST_UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const INET_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const INET_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const INET_DNS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const TEST_NAME: &str = "example.test.";

pub struct Internet {
    pub ns: Ns,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Internet {
    /// Creates the namespace and its veth peer `upl0` in `host`, with a route to the metadata
    /// address through it (so only the product's rules keep guests away from it).
    pub fn new(host: &Ns) -> Internet {
        let ns = Ns::new("inet");
        host.ip(&[
            "link", "add", "upl0", "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        host.ip(&["addr", "add", &format!("{HOST_UPLINK}/24"), "dev", "upl0"]);
        host.ip(&["link", "set", "upl0", "up"]);
        host.ip(&["route", "add", &format!("{METADATA}/32"), "dev", "upl0"]);
        for a in [INET_A, INET_B, INET_DNS] {
            ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"]);
        }
        ns.ip(&["addr", "add", &format!("{METADATA}/32"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &HOST_UPLINK.to_string()]);

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut tcp = |port: u16, handle: fn(TcpStream)| {
            let l = ns.run(move || TcpListener::bind(("0.0.0.0", port)).unwrap());
            threads.push(serve_tcp(l, stop.clone(), handle));
        };
        tcp(80, http);
        tcp(7, echo);
        tcp(9, discard);
        let dns_tcp = ns.run(|| TcpListener::bind((INET_DNS, 53)).unwrap());
        threads.push(serve_tcp(dns_tcp, stop.clone(), dns_over_tcp));
        let udp = ns.run(|| UdpSocket::bind((INET_DNS, 53)).unwrap());
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, src)) = udp.recv_from(&mut buf) {
                    if let Some(a) = dns_answer(&buf[..n]) {
                        let _ = udp.send_to(&a, src);
                    }
                }
            }
        }));
        Internet { ns, stop, threads }
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn http(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let size = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok());
    if let Some(mut left) = size {
        // Streamed from one buffer: a download measures the network, not an allocation.
        let chunk = [b'x'; 64 * 1024];
        let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {left}\r\n\r\n");
        if s.write_all(head.as_bytes()).is_err() {
            return;
        }
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
        return;
    }
    let body = format!(
        "from={} to={}",
        s.peer_addr().unwrap().ip(),
        s.local_addr().unwrap().ip()
    );
    let _ = s.write_all(
        format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

fn echo(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn discard(mut s: TcpStream) {
    let mut buf = vec![0u8; 65536];
    let mut total: u64 = 0;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let _ = s.write_all(&total.to_be_bytes());
}

fn dns_over_tcp(mut s: TcpStream) {
    let mut len = [0u8; 2];
    if s.read_exact(&mut len).is_err() {
        return;
    }
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    if s.read_exact(&mut buf).is_err() {
        return;
    }
    if let Some(a) = dns_answer(&buf) {
        let mut out = (a.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&a);
        let _ = s.write_all(&out);
    }
}

fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(q).ok()?;
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.authoritative = true;
    r.add_queries(q.queries.clone());
    let query = q.queries.first()?;
    if query.name().to_ascii() == TEST_NAME {
        if query.query_type() == RecordType::A {
            r.add_answer(Record::from_rdata(
                query.name().clone(),
                60,
                RData::A(INET_A.into()),
            ));
        }
    } else {
        r.metadata.response_code = ResponseCode::NXDomain;
    }
    r.to_vec().ok()
}

/// Serves `listener` (already bound in its namespace) with `handle` per connection until `stop`.
pub fn serve_tcp(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream) + Send + Sync + Copy + 'static,
) -> JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || handle(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}
