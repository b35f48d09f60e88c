//! DNS forwarder on gateway:53 (UDP and TCP) relaying guests' queries to the host's resolvers
//! (`docs/reference/lifecycle.md` §7, "DNS"). Serves only sources inside `VM_SUBNET`, at most
//! `rate_per_sec` queries per second per source address. Messages are parsed with
//! `hickory-proto`: only well-formed queries are relayed, only well-formed answers whose id
//! matches are returned.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Ipv4Cidr, NetError};

/// How the forwarder runs.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Address to listen on (the gateway); port 53 in production, 0 allowed in tests.
    pub listen: SocketAddr,
    /// Only sources inside this network are served.
    pub allowed: Ipv4Cidr,
    /// Upstream resolvers, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Queries per second per source (burst of the same size).
    pub rate_per_sec: u32,
    /// Time allowed for one upstream to answer.
    pub upstream_timeout: Duration,
}

impl DnsConfig {
    /// The spec's defaults: gateway:53, 100 queries/s, 2 s per upstream.
    pub fn new(gateway: Ipv4Addr, allowed: Ipv4Cidr, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(gateway), 53),
            allowed,
            upstreams,
            rate_per_sec: 100,
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// `nameserver` lines of a resolv.conf file, as port-53 socket addresses.
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, NetError> {
    let text = std::fs::read_to_string(path).map_err(|source| NetError::Io {
        what: format!("read {}", path.display()),
        source,
    })?;
    Ok(parse_resolv_conf(&text))
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("nameserver"))
                .then(|| it.next())
                .flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Per-source token buckets.
struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn allow(&self, src: IpAddr) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 4096 {
            // Forget sources idle for over a second (their buckets are full again anyway).
            b.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(1));
        }
        let (tokens, last) = b.entry(src).or_insert((self.rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Shared {
    cfg: DnsConfig,
    limiter: RateLimiter,
}

impl Shared {
    fn admit(&self, src: SocketAddr) -> bool {
        let inside = matches!(src.ip(), IpAddr::V4(ip) if self.cfg.allowed.contains(ip));
        inside && self.limiter.allow(src.ip())
    }
}

/// A running forwarder; dropping it (or [`DnsForwarder::shutdown`]) stops it.
pub struct DnsForwarder {
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl DnsForwarder {
    /// Binds UDP and TCP on `cfg.listen` and starts serving.
    pub async fn spawn(cfg: DnsConfig) -> Result<Self, NetError> {
        let bind_err = |source| NetError::DnsBind {
            addr: cfg.listen,
            source,
        };
        let udp = UdpSocket::bind(cfg.listen).await.map_err(bind_err)?;
        let udp_addr = udp.local_addr().map_err(bind_err)?;
        // Same port for TCP when the caller asked for an ephemeral one.
        let tcp = TcpListener::bind(SocketAddr::new(cfg.listen.ip(), udp_addr.port()))
            .await
            .map_err(bind_err)?;
        let tcp_addr = tcp.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared {
            limiter: RateLimiter::new(cfg.rate_per_sec),
            cfg,
        });
        let (stop, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(Arc::new(udp), shared.clone(), rx.clone()));
        tasks.spawn(serve_tcp(tcp, shared, rx));
        Ok(Self {
            udp_addr,
            tcp_addr,
            stop,
            tasks,
        })
    }

    /// The bound UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Stops serving and waits for the listeners to close.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Parses a client query; `None` for anything that is not a well-formed query.
fn parse_query(buf: &[u8]) -> Option<Message> {
    let msg = Message::from_vec(buf).ok()?;
    (msg.metadata.message_type == MessageType::Query && !msg.queries.is_empty()).then_some(msg)
}

/// Checks an upstream answer against the query it answers.
fn valid_answer(query: &Message, buf: &[u8]) -> bool {
    match Message::from_vec(buf) {
        Ok(m) => {
            m.metadata.message_type == MessageType::Response
                && m.metadata.id == query.metadata.id
                && m.queries == query.queries
        }
        Err(_) => false,
    }
}

fn servfail(query: &Message) -> Option<Vec<u8>> {
    let mut m = Message::error_msg(
        query.metadata.id,
        query.metadata.op_code,
        ResponseCode::ServFail,
    );
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.add_queries(query.queries.clone());
    m.to_vec().ok()
}

fn refused(query: &Message) -> Option<Vec<u8>> {
    let mut m = Message::error_msg(
        query.metadata.id,
        query.metadata.op_code,
        ResponseCode::Refused,
    );
    m.add_queries(query.queries.clone());
    m.to_vec().ok()
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 4096];
    let mut inflight = JoinSet::new();
    loop {
        let (n, src) = tokio::select! {
            _ = stop.changed() => break,
            Some(_) = inflight.join_next(), if !inflight.is_empty() => continue,
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "dns udp receive");
                    continue;
                }
            },
        };
        if !shared.admit(src) {
            continue;
        }
        let Some(query) = parse_query(&buf[..n]) else {
            continue;
        };
        let raw = buf[..n].to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        inflight.spawn(async move {
            let answer = match relay_udp(&shared.cfg, &query, &raw).await {
                Some(a) => Some(a),
                None => servfail(&query),
            };
            if let Some(a) = answer {
                let _ = sock.send_to(&a, src).await;
            }
        });
    }
}

async fn relay_udp(cfg: &DnsConfig, query: &Message, raw: &[u8]) -> Option<Vec<u8>> {
    for up in &cfg.upstreams {
        let local: SocketAddr = match up {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let Ok(s) = UdpSocket::bind(local).await else {
            continue;
        };
        if s.connect(up).await.is_err() || s.send(raw).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + cfg.upstream_timeout;
        loop {
            match tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
                Ok(Ok(n)) if valid_answer(query, &buf[..n]) => return Some(buf[..n].to_vec()),
                Ok(Ok(_)) => continue, // stray or malformed datagram: keep waiting
                _ => break,
            }
        }
    }
    None
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, src) = tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "dns tcp accept");
                    continue;
                }
            },
        };
        let inside = matches!(src.ip(), IpAddr::V4(ip) if shared.cfg.allowed.contains(ip));
        if !inside || conns.len() >= 256 {
            continue;
        }
        let shared = shared.clone();
        conns.spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(30), tcp_conn(stream, src, &shared)).await;
        });
    }
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| io::ErrorKind::InvalidData)?;
    let mut out = Vec::with_capacity(data.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    stream.write_all(&out).await
}

async fn tcp_conn(mut stream: TcpStream, src: SocketAddr, shared: &Shared) -> io::Result<()> {
    loop {
        let raw = match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream)).await
        {
            Ok(r) => r?,
            Err(_) => return Ok(()), // idle
        };
        let Some(query) = parse_query(&raw) else {
            return Ok(());
        };
        let answer = if shared.limiter.allow(src.ip()) {
            match relay_tcp(&shared.cfg, &query, &raw).await {
                Some(a) => Some(a),
                None => servfail(&query),
            }
        } else {
            refused(&query)
        };
        match answer {
            Some(a) => write_frame(&mut stream, &a).await?,
            None => return Ok(()),
        }
    }
}

async fn relay_tcp(cfg: &DnsConfig, query: &Message, raw: &[u8]) -> Option<Vec<u8>> {
    for up in &cfg.upstreams {
        let attempt = async {
            let mut s = TcpStream::connect(up).await.ok()?;
            write_frame(&mut s, raw).await.ok()?;
            let a = read_frame(&mut s).await.ok()?;
            valid_answer(query, &a).then_some(a)
        };
        if let Ok(Some(a)) = tokio::time::timeout(cfg.upstream_timeout, attempt).await {
            return Some(a);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn resolv_conf_parsing() {
        let t = "# c\nsearch x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn rate_limiter_caps_a_burst_per_source() {
        let l = RateLimiter::new(100);
        let a: IpAddr = "172.16.0.2".parse().unwrap();
        let b: IpAddr = "172.16.0.3".parse().unwrap();
        let ok = (0..150).filter(|_| l.allow(a)).count();
        assert!((100..=102).contains(&ok), "{ok}");
        assert!(l.allow(b), "other sources keep their own budget");
    }

    #[test]
    fn only_queries_are_relayed_and_answers_must_match() {
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("example.test.").unwrap(),
            RecordType::A,
        ));
        let raw = q.to_vec().unwrap();
        let parsed = parse_query(&raw).unwrap();
        assert!(parse_query(b"\x00\x01garbage").is_none());

        let mut resp = q.clone().into_response();
        assert!(valid_answer(&parsed, &resp.to_vec().unwrap()));
        resp.metadata.id = resp.metadata.id.wrapping_add(1);
        assert!(!valid_answer(&parsed, &resp.to_vec().unwrap()));
        assert!(parse_query(&q.clone().into_response().to_vec().unwrap()).is_none());
        let sf = Message::from_vec(&servfail(&parsed).unwrap()).unwrap();
        assert_eq!(sf.metadata.response_code, ResponseCode::ServFail);
    }
}
