//! Helpers shared by the project's tests: finding the guest image and helper binaries, a fresh Postgres
//! database per test (or a Postgres server of a test's own), network namespaces and a fake "internet" in one, skipping with a printed reason
//! (or failing under `RDS_REQUIRE_E2E=1`), and deadline-bounded polling.

mod pg_cluster;
mod postgres;

pub use pg_cluster::PgCluster;
pub use postgres::{TestPostgres, TEST_DATABASE_URL};
pub mod internet;
pub mod netns;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `scripts/build-image.sh` leaves the default image.
pub const DEFAULT_IMAGE_DIR: &str = "/var/cache/run-dat-sheesh/images/current";
const VHOST_FALLBACK: &str =
    "/var/cache/run-dat-sheesh/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock";

/// The files of a built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: PathBuf,
}

/// `RDS_TEST_IMAGE_DIR` or the default cache location, if it holds a kernel and a rootfs.
pub fn guest_image() -> Result<GuestImage, String> {
    let dir = std::env::var("RDS_TEST_IMAGE_DIR").unwrap_or_else(|_| DEFAULT_IMAGE_DIR.into());
    let dir = Path::new(&dir);
    let kernel = dir.join("vmlinux");
    let rootfs = dir.join("rootfs.ext4");
    if !kernel.is_file() || !rootfs.is_file() {
        return Err(format!(
            "no guest image in {} (run scripts/build-image.sh or set RDS_TEST_IMAGE_DIR)",
            dir.display()
        ));
    }
    let initrd = Some(dir.join("initrd")).filter(|p| p.is_file());
    Ok(GuestImage {
        kernel,
        initrd,
        rootfs,
    })
}

/// `VHOST_VSOCK_BIN`, else `vhost-device-vsock` on PATH, else the cache the setup script installs to.
pub fn vhost_vsock_bin() -> Result<String, String> {
    if let Ok(v) = std::env::var("VHOST_VSOCK_BIN") {
        return Ok(v);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("vhost-device-vsock").is_file()))
        .unwrap_or(false);
    if on_path {
        return Ok("vhost-device-vsock".into());
    }
    if Path::new(VHOST_FALLBACK).is_file() {
        return Ok(VHOST_FALLBACK.into());
    }
    Err("vhost-device-vsock not found (run scripts/install-deps.sh)".into())
}

/// Everything an end-to-end VM test needs, or the reason it cannot run here.
pub fn e2e_prerequisites() -> Result<(GuestImage, String), String> {
    if !nix_is_root() {
        return Err("not running as root".into());
    }
    Ok((guest_image()?, vhost_vsock_bin()?))
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Prints `SKIP <test>: <reason>` and returns true, or panics when `RDS_REQUIRE_E2E=1` (CI), so a
/// missing prerequisite can never pass silently there.
pub fn skip(test: &str, reason: &str) -> bool {
    if std::env::var("RDS_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{test} cannot run and RDS_REQUIRE_E2E=1: {reason}");
    }
    println!("SKIP {test}: {reason}");
    true
}

/// Polls `f` every 50 ms until it returns Some or `limit` passes.
pub async fn wait_until<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pids whose command line contains `needle` (for leak checks).
pub fn pids_matching(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}
