//! The root filesystem: a debootstrapped minbase tree (cached as a tarball
//! keyed by the package list), the user, `/workspace`, kernel modules, the
//! binaries, permission checks, then `mkfs.ext4 -d` (no mount, no loop device).

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{quote, run, sh};
use crate::recipe::{base_key, INCLUDE, ROOTFS_SIZE, SUITE};

/// Returns the cached base tarball, running debootstrap if it is missing.
pub fn base_tarball(
    cache: &Path,
    work: &Path,
    mirror: &str,
    note: &dyn Fn(&str),
) -> Result<std::path::PathBuf> {
    let dir = cache.join("base");
    fs::create_dir_all(&dir)?;
    let tar = dir.join(format!("{SUITE}-minbase-{}.tar", base_key(mirror)));
    if tar.exists() {
        return Ok(tar);
    }
    note(&format!(
        "debootstrap {SUITE} minbase from {mirror} (about a minute)"
    ));
    let tree = work.join("base");
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={}", INCLUDE.join(",")),
            SUITE,
        ])
        .arg(&tree)
        .arg(mirror))?;
    sh(
        &tree,
        "rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/*.log \
         var/cache/debconf/*-old debootstrap",
    )?;
    note("saving the base tree as a tarball");
    let tmp = dir.join(format!(".tmp-{}.tar", std::process::id()));
    sh(
        &tree,
        &format!(
            "tar --numeric-owner --xattrs --xattrs-include='*' -cf {} .",
            quote(&tmp)
        ),
    )?;
    fs::rename(&tmp, &tar)?;
    fs::remove_dir_all(&tree)?;
    Ok(tar)
}

pub fn extract(tar: &Path, root: &Path) -> Result<()> {
    fs::create_dir_all(root)?;
    sh(
        root,
        &format!(
            "tar --numeric-owner --xattrs --xattrs-include='*' -xpf {}",
            quote(tar)
        ),
    )?;
    Ok(())
}

/// User `user` 1000:1000 with home /home/user, and /workspace owned by it.
pub fn add_user(root: &Path) -> Result<()> {
    run(Command::new("chroot")
        .arg(root)
        .args(["groupadd", "-g", "1000", "user"]))?;
    run(Command::new("chroot").arg(root).args([
        "useradd",
        "-u",
        "1000",
        "-g",
        "1000",
        "-m",
        "-d",
        "/home/user",
        "-s",
        "/bin/bash",
        "user",
    ]))?;
    let ws = root.join("workspace");
    fs::create_dir_all(&ws)?;
    chown(&ws, Some(1000), Some(1000))?;
    fs::set_permissions(&ws, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Debian's /etc/profile overwrites PATH for non-root users, which would undo the PATH the agent
/// gives every sandboxed `bash -lc` (docs/reference/agent-protocol.md §5). Keep the caller's PATH
/// when one is set.
pub fn keep_path_in_profile(root: &Path) -> Result<()> {
    let profile = root.join("etc/profile");
    let text = fs::read_to_string(&profile)?;
    let patched = text.replacen(
        "if [ \"$(id -u)\" -eq 0 ]; then",
        "if [ -n \"${PATH:-}\" ]; then\n  :\nelif [ \"$(id -u)\" -eq 0 ]; then",
        1,
    );
    anyhow::ensure!(
        patched != text,
        "unexpected /etc/profile: PATH block not found"
    );
    fs::write(&profile, patched)?;
    Ok(())
}

/// Copies the kernel's modules to /lib/modules/<release> (nf_tables and the
/// like are loaded from there later).
pub fn add_modules(root: &Path, modules: &Path) -> Result<()> {
    let dest = root.join("usr/lib/modules");
    fs::create_dir_all(&dest)?;
    run(Command::new("cp").arg("-a").arg(modules).arg(&dest))?;
    Ok(())
}

/// Installs a file with a mode (owner root).
pub fn install(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dest.parent().expect("absolute path"))?;
    fs::copy(src, dest).with_context(|| format!("copy {} to {}", src.display(), dest.display()))?;
    chown(dest, Some(0), Some(0))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// /tmp and /var/tmp 1777; every other world-writable directory or file loses
/// o+w. Returns what was fixed.
pub fn fix_permissions(root: &Path) -> Result<Vec<String>> {
    for t in ["tmp", "var/tmp"] {
        fs::create_dir_all(root.join(t))?;
        fs::set_permissions(root.join(t), fs::Permissions::from_mode(0o1777))?;
    }
    let found = sh(
        root,
        "find . -xdev \\( -type d -o -type f \\) -perm -0002 ! -path ./tmp ! -path ./var/tmp -print",
    )?;
    let mut fixed = Vec::new();
    for rel in found.lines().filter(|l| !l.is_empty()) {
        let p = root.join(rel);
        let mode = fs::symlink_metadata(&p)?.permissions().mode() & 0o7777;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode & !0o002))?;
        fixed.push(rel.trim_start_matches('.').to_string());
    }
    Ok(fixed)
}

/// `truncate -s 2G` + `mkfs.ext4 -d` into `out`.
pub fn make_ext4(root: &Path, out: &Path) -> Result<()> {
    let _ = fs::remove_file(out);
    run(Command::new("truncate").args(["-s", ROOTFS_SIZE]).arg(out))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-d"])
        .arg(root)
        .arg(out))?;
    Ok(())
}
