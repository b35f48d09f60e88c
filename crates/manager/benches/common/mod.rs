//! Shared by the benches that drive the real `run-dat-sheesh` binary over TCP: starting it on a free
//! port with scratch storage, one-shot HTTP calls, percentiles and process memory.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;

pub const KEY: &str = "bench-key-0123456789abcdef";

pub async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let data = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(data)))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn call_raw(
    port: u16,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("x-api-key", KEY)
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// A tar.gz holding one file of `n` pseudo-random (incompressible) bytes.
pub fn random_targz(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("blob.bin").unwrap();
    h.set_size(n as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, data.as_slice()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// One result line: label, unit, p50 and p90 of the samples.
pub fn row(label: &str, unit: &str, samples: &mut [f64]) {
    let (p50, p90) = (pct(samples, 0.5), pct(samples, 0.9));
    println!("{label:<23} p50 {p50:.2} {unit}  p90 {p90:.2} {unit}");
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// A release manager process on a free port, in a scratch directory.
pub struct Manager {
    pub port: u16,
    pub storage: std::path::PathBuf,
    pub child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Manager {
    /// Starts the binary with the default guest image and `extra` settings; waits until it listens.
    pub async fn start(
        image: &rds_testkit::GuestImage,
        vhost: &str,
        extra: &[(&str, &str)],
    ) -> Manager {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let storage = dir.path().join("s");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run-dat-sheesh"));
        cmd.env("API_KEY", KEY)
            .env("ADMIN_EMAIL", "a@b.c")
            .env("ADMIN_PASSWORD", "bench-password-1")
            .env("PORT", port.to_string())
            .env("STORAGE_ROOT", &storage)
            .env("SQLITE_PATH", dir.path().join("m.db"))
            .env("KERNEL_PATH", &image.kernel)
            .env("BASE_ROOTFS_PATH", &image.rootfs)
            .env("VHOST_VSOCK_BIN", vhost)
            .env("VSOCK_HEALTH_TIMEOUT_MS", "120000")
            .env("RATE_LIMIT_EXEC", "0")
            .env("RATE_LIMIT_VM_CREATE", "0")
            .env("RUST_LOG", "warn");
        if let Some(i) = &image.initrd {
            cmd.env("INITRD_PATH", i);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start manager");
        let up = rds_testkit::wait_until(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(up.is_some(), "manager did not start");
        tokio::time::sleep(Duration::from_millis(500)).await;
        Manager {
            port,
            storage,
            child,
            _dir: dir,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(self.port, method, path, body).await
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // VMs run in sessions of their own: a bench that stopped half-way leaves them behind.
        for pid in rds_testkit::pids_matching(&self.storage.display().to_string()) {
            // SAFETY: kill(2) on a pid we just read; at worst it is gone already.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Sum of RssAnon, RssFile, RssShmem (MiB) of the QEMU and helper processes of `ids`.
pub fn vmm_memory(ids: &[String]) -> (f64, f64, f64, usize) {
    let (mut anon, mut file, mut shmem, mut n) = (0.0, 0.0, 0.0, 0);
    for id in ids {
        for pid in rds_testkit::pids_matching(id) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kb = |key: &str| -> f64 {
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    .unwrap_or(0.0)
            };
            anon += kb("RssAnon:") / 1024.0;
            file += kb("RssFile:") / 1024.0;
            shmem += kb("RssShmem:") / 1024.0;
            n += 1;
        }
    }
    (anon, file, shmem, n)
}
