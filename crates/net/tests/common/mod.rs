//! Namespace harness for the real-packet tests and the bench.
//!
//! Topology (every namespace is created here and deleted on drop; no packet leaves them):
//!
//! ```text
//!  guest ns "vmN"            host ns (HostNet runs here)                 "internet" ns
//!  eth0 (TAP, 172.16.0.N) ⇄ rds-tapN (TAP) ─ rds-br0 172.16.0.1   upl0 198.18.0.1 ═ eth0 198.18.0.10/.11/.53,
//!        └── frames copied by a Wire thread, as a VMM would ──┘          (veth)        169.254.169.254
//! ```
//!
//! A TAP carries packets only while a process holds it open, so each "VM" is a namespace
//! whose own TAP (`eth0`) is joined to the product's TAP by a thread that copies frames both
//! ways — what QEMU does with its virtio-net queue.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

// Shared with the bench, which uses only some of these.
#[allow(unused_imports)]
pub use rds_testkit::internet::{
    serve_tcp, Internet, HOST_UPLINK, INET_A, INET_B, INET_DNS, TEST_NAME,
};

/// Whether this process may run the namespace tests; prints `SKIP <test>: <reason>` if not.
pub fn can_run(test: &str) -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not root")
    } else if !std::path::Path::new("/dev/net/tun").exists() {
        Some("no /dev/net/tun")
    } else if Command::new("nft").arg("--version").output().is_err() {
        Some("nft not installed")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("ip (iproute2) not installed")
    } else {
        None
    };
    match reason {
        Some(r) => {
            // Straight to the stderr handle: libtest's capture only covers the print macros.
            let _ = std::io::stderr().write_all(format!("SKIP {test}: {r}\n").as_bytes());
            false
        }
        None => true,
    }
}

pub use rds_testkit::netns::Ns;

/// Copies Ethernet frames between two TAP descriptors until dropped.
pub struct Wire {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Wire {
    /// Joins the product's TAP `tap` in `host` to a new TAP `eth0` in `guest`.
    pub fn connect(host: &Ns, tap: &str, guest: &Ns) -> Self {
        let t = tap.to_string();
        let a: OwnedFd = host.run(move || rds_net::tap_dev::open(&t).expect("open host TAP"));
        let b: OwnedFd = guest.run(|| rds_net::tap_dev::open("eth0").expect("open guest TAP"));
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || pump(a, b, &s));
        Wire {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(a: OwnedFd, b: OwnedFd, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    let fds = [a.as_raw_fd(), b.as_raw_fd()];
    while !stop.load(Ordering::Relaxed) {
        let mut p = [
            libc::pollfd {
                fd: fds[0],
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fds[1],
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `p` is a valid array of two pollfd structures.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, 50) };
        if n <= 0 {
            continue;
        }
        for (i, pfd) in p.iter().enumerate() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            let (from, to) = (fds[i], fds[1 - i]);
            // SAFETY: reading into / writing from a live buffer of the stated length.
            let len = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
            if len > 0 {
                unsafe { libc::write(to, buf.as_ptr().cast(), len as usize) };
            }
        }
    }
}

/// A "VM": a namespace with `eth0` wired to the product TAP and configured like the agent does.
pub struct Guest {
    pub ns: Ns,
    pub ip: Ipv4Addr,
    _wire: Wire,
}

impl Guest {
    pub fn new(host: &Ns, vm: &rds_net::VmNet, gateway: Ipv4Addr) -> Self {
        let ns = Ns::new(&format!("vm{}", vm.index));
        let wire = Wire::connect(host, &vm.tap, &ns);
        let mac = vm.mac.to_string();
        ns.ip(&["link", "set", "eth0", "address", &mac, "up"]);
        ns.ip(&["addr", "add", &format!("{}/24", vm.ip), "dev", "eth0"]);
        ns.ip(&["route", "add", "default", "via", &gateway.to_string()]);
        Guest {
            ns,
            ip: vm.ip,
            _wire: wire,
        }
    }

    /// HTTP GET from inside the guest; `Err` on timeout or refusal.
    pub fn http(&self, to: Ipv4Addr, port: u16) -> Result<String, String> {
        self.http_from(None, to, port)
    }

    pub fn http_from(
        &self,
        from: Option<Ipv4Addr>,
        to: Ipv4Addr,
        port: u16,
    ) -> Result<String, String> {
        self.ns.run(move || http_get(from, to, port))
    }

    pub fn dns(&self, server: Ipv4Addr, tcp: bool) -> Result<Vec<Ipv4Addr>, String> {
        self.ns
            .run(move || dns_query(SocketAddr::from((server, 53)), TEST_NAME, tcp))
    }
}

pub const TIMEOUT: Duration = Duration::from_millis(800);

pub fn http_get(from: Option<Ipv4Addr>, to: Ipv4Addr, port: u16) -> Result<String, String> {
    let dest = SocketAddr::from((to, port));
    let mut s = match from {
        None => TcpStream::connect_timeout(&dest, TIMEOUT).map_err(|e| e.to_string())?,
        Some(src) => {
            // Bind an explicit (spoofed) source address with a raw socket2-free approach.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0);
            let one: libc::c_int = 1;
            // SAFETY: valid fd and option buffer. IP_FREEBIND lets us bind any address.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_FREEBIND,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sa` is a valid sockaddr_in.
            let rc = unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind {src}");
            use std::os::fd::FromRawFd;
            // SAFETY: we own `fd`.
            let sock = unsafe { std::net::TcpStream::from_raw_fd(fd) };
            connect_owned(sock, dest)?
        }
    };
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn connect_owned(sock: TcpStream, dest: SocketAddr) -> Result<TcpStream, String> {
    let fd = sock.as_raw_fd();
    let SocketAddr::V4(d) = dest else {
        unreachable!()
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: d.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*d.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: TIMEOUT.as_micros() as libc::suseconds_t,
    };
    // SAFETY: valid fd, option and address buffers. SO_SNDTIMEO bounds a blocking connect.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        if libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(sock)
}

/// Resolves `name` (A) at `server`; `Err` on timeout or error code.
pub fn dns_query(server: SocketAddr, name: &str, tcp: bool) -> Result<Vec<Ipv4Addr>, String> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let raw = q.to_vec().unwrap();
    let answer = if tcp {
        let mut s = TcpStream::connect_timeout(&server, TIMEOUT).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut framed = (raw.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&raw);
        s.write_all(&framed).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        buf
    } else {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s.send_to(&raw, server).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        buf.truncate(n);
        buf
    };
    let m = Message::from_vec(&answer).map_err(|e| e.to_string())?;
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(format!("rcode {:?}", m.metadata.response_code));
    }
    Ok(m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

/// A TCP listener in `ns` on `addr` answering like the HTTP server; stops on drop.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn http(ns: &Ns, addr: SocketAddr) -> Self {
        let l = ns.run(move || TcpListener::bind(addr).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = serve_tcp(l, stop.clone(), |mut s| {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost");
        });
        Listener {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A multi-thread tokio runtime whose threads live in `ns` (build it from a thread there).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
