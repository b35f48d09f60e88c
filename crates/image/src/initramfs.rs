//! The initramfs: busybox-static with its applet links, the kernel modules
//! the boot needs (resolved with `modprobe --show-depends`, loaded in that
//! order), and an `/init` that mounts `/dev/vda` read-only and switches root
//! to the `init=` program. Uncompressed newc cpio: gzip costs 0.5–1 s per TCG boot.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{quote, run, sh};
use crate::recipe::{Kernel, INITRAMFS_MODULES};

const BUSYBOX: &str = "/bin/busybox";

pub const INIT_SCRIPT: &str = r#"#!/bin/sh
# rds initramfs: load modules, mount the read-only base root, switch to init=.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t devtmpfs -o mode=0755 devtmpfs /dev
mount -t proc proc /proc
fail() { echo "rds-initramfs: $*"; sync; reboot -f; sleep 5; }
while read -r m; do
  insmod "/$m" || echo "rds-initramfs: insmod $m failed"
done < /etc/modules.list
init=/sbin/init
for a in $(cat /proc/cmdline); do
  case "$a" in init=*) init="${a#init=}" ;; esac
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
[ -b /dev/vda ] || fail "root disk /dev/vda missing"
mount -t ext4 -o ro /dev/vda /newroot || fail "cannot mount /dev/vda"
[ -x "/newroot$init" ] || fail "$init not found on /dev/vda"
umount /proc
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
"#;

/// Builds `out` (cpio) from a staging tree at `stage`.
pub fn build(kernel_root: &Path, kernel: &Kernel, stage: &Path, out: &Path) -> Result<usize> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "newroot", "etc",
    ] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::copy(BUSYBOX, stage.join("bin/busybox")).context("copy busybox (busybox-static)")?;
    let list = run(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let link = stage.join(applet);
        if applet != "bin/busybox" && !link.exists() {
            symlink("/bin/busybox", &link).with_context(|| format!("link {applet}"))?;
        }
    }
    run(Command::new("mknod")
        .arg(stage.join("dev/console"))
        .args(["c", "5", "1"]))?;
    run(Command::new("mknod")
        .arg(stage.join("dev/null"))
        .args(["c", "1", "3"]))?;

    let modules = resolve_modules(kernel_root, kernel)?;
    for rel in &modules {
        let dest = stage.join(rel);
        fs::create_dir_all(dest.parent().expect("module path has a parent"))?;
        fs::copy(kernel_root.join(rel), &dest).with_context(|| format!("copy {rel}"))?;
    }
    fs::write(stage.join("etc/modules.list"), modules.join("\n") + "\n")?;
    fs::write(stage.join("init"), INIT_SCRIPT)?;
    fs::set_permissions(stage.join("init"), fs::Permissions::from_mode(0o755))?;

    sh(
        stage,
        &format!(
            "find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 > {}",
            quote(out)
        ),
    )?;
    Ok(modules.len())
}

/// Module files (relative to `kernel_root`) in load order, without repeats.
fn resolve_modules(kernel_root: &Path, kernel: &Kernel) -> Result<Vec<String>> {
    let prefix = format!("{}/", kernel_root.display());
    let mut files: Vec<String> = Vec::new();
    for name in INITRAMFS_MODULES {
        let out = run(Command::new("modprobe").arg("-d").arg(kernel_root).args([
            "-S",
            &kernel.release,
            "--show-depends",
            name,
        ]))?;
        for line in out.lines() {
            let Some(path) = line.trim().strip_prefix("insmod ") else {
                continue; // "builtin <name>"
            };
            let path = path.split_whitespace().next().unwrap_or_default();
            let Some(rel) = path.strip_prefix(&prefix) else {
                bail!("modprobe named {path}, outside {prefix}");
            };
            if !rel.ends_with(".ko") {
                bail!("compressed module {rel}: not supported by busybox insmod here");
            }
            if !files.iter().any(|f| f == rel) {
                files.push(rel.to_string());
            }
        }
    }
    Ok(files)
}
