//! `rds-image`: builds the default guest image (kernel `vmlinux`, `initrd`,
//! `rootfs.ext4`, `manifest.json`) from package registries only, into
//! `<out-root>/<key>/`, and points `<out-root>/current` at it. The key hashes
//! the recipe and the agent and init binaries, so an unchanged build is
//! instant; heavy downloads and the debootstrapped base are cached apart.

mod cmd;
mod downloads;
mod initramfs;
mod kernel;
mod progress;
mod recipe;
mod rootfs;
mod runtimes;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use progress::Progress;

#[derive(Parser)]
#[command(about = "Builds the run-dat-sheesh guest image from package registries")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build (or find up to date) the default image; prints its directory last.
    Build {
        /// Static rds-agent binary.
        #[arg(long)]
        agent: PathBuf,
        /// Static rds-init binary.
        #[arg(long)]
        init: PathBuf,
        #[arg(long, default_value = "/var/cache/run-dat-sheesh")]
        cache_dir: PathBuf,
        /// Default: <cache-dir>/images.
        #[arg(long)]
        out_root: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let Cmd::Build {
        agent,
        init,
        cache_dir,
        out_root,
    } = Cli::parse().command;
    let out_root = out_root.unwrap_or_else(|| cache_dir.join("images"));
    let dir = build(&agent, &init, &cache_dir, &out_root)?;
    println!("{}", dir.display());
    Ok(())
}

fn build(agent: &Path, init: &Path, cache: &Path, out_root: &Path) -> Result<PathBuf> {
    let p = Progress::new();
    for (what, path) in [("agent", agent), ("init", init)] {
        if !path.is_file() {
            bail!("{what} binary {} not found", path.display());
        }
    }
    p.step("resolving the kernel package");
    let kernel = recipe::resolve_kernel_cached(cache)?;
    let mirror = recipe::debian_mirror();
    let agent_sha = recipe::sha256_file(agent)?;
    let init_sha = recipe::sha256_file(init)?;
    let key = recipe::image_key(&mirror, &kernel, &agent_sha, &init_sha);
    let dest = out_root.join(&key);
    p.step(format!(
        "kernel {} ({}), image key {key}",
        kernel.release, kernel.version
    ));
    fs::create_dir_all(out_root)?;
    if dest.join("manifest.json").is_file() {
        point_current(out_root, &key)?;
        p.step("up to date");
        return Ok(dest);
    }

    let work = cache
        .join("work")
        .join(format!("{key}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let result = assemble(
        &p,
        cache,
        out_root,
        &work,
        &key,
        &kernel,
        &mirror,
        [agent, init],
        [&agent_sha, &init_sha],
    );
    let _ = fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = fs::remove_dir_all(out_root.join(format!(".tmp-{key}-{}", std::process::id())));
    }
    result?;
    point_current(out_root, &key)?;
    p.step(format!("done: {}", dest.display()));
    Ok(dest)
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    p: &Progress,
    cache: &Path,
    out_root: &Path,
    work: &Path,
    key: &str,
    kernel: &recipe::Kernel,
    mirror: &str,
    [agent, init]: [&Path; 2],
    [agent_sha, init_sha]: [&str; 2],
) -> Result<()> {
    let note = |m: &str| p.step(m);
    p.step("fetching downloads (cached by version)");
    let dl = downloads::fetch_all(&cache.join("downloads"), kernel, &note)?;
    let base = rootfs::base_tarball(cache, work, mirror, &note)?;

    let tmp = out_root.join(format!(".tmp-{key}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;

    p.step("unpacking the kernel, depmod");
    let kroot = work.join("kernel");
    let modules = kernel::unpack(&dl.kernel_deb, &kroot, kernel)?;
    p.step("extracting vmlinux");
    let vmlinuz = kroot
        .join("boot")
        .join(format!("vmlinuz-{}", kernel.release));
    kernel::extract_vmlinux(&vmlinuz, &tmp.join("vmlinux"))?;
    p.step("building the initramfs");
    let n = initramfs::build(&kroot, kernel, &work.join("initramfs"), &tmp.join("initrd"))?;
    p.step(format!("initramfs has {n} modules"));

    p.step("unpacking the base tree");
    let root = work.join("rootfs");
    rootfs::extract(&base, &root)?;
    p.step("adding user, modules, runtimes, agent and init");
    rootfs::add_user(&root)?;
    rootfs::keep_path_in_profile(&root)?;
    rootfs::add_modules(&root, &modules)?;
    let versions = runtimes::install_all(&root, &dl, &work.join("runtimes"))?;
    rootfs::install(agent, &root.join("usr/local/sbin/rds-agent"), 0o700)?;
    rootfs::install(init, &root.join("usr/local/sbin/rds-init"), 0o755)?;
    for fixed in rootfs::fix_permissions(&root)? {
        p.step(format!("removed world write permission from {fixed}"));
    }
    p.step(format!("mkfs.ext4 ({})", recipe::ROOTFS_SIZE));
    rootfs::make_ext4(&root, &tmp.join("rootfs.ext4"))?;

    let manifest = serde_json::json!({
        "key": key,
        "recipeVersion": recipe::RECIPE_VERSION,
        "kernel": { "package": kernel.package, "version": kernel.version, "release": kernel.release },
        "debian": { "suite": recipe::SUITE, "mirror": mirror, "include": recipe::INCLUDE },
        "initramfsModules": recipe::INITRAMFS_MODULES,
        "node": versions.node,
        "npm": versions.npm,
        "deno": versions.deno,
        "agentSha256": agent_sha,
        "initSha256": init_sha,
        "files": ["vmlinux", "initrd", "rootfs.ext4"],
    });
    for f in ["vmlinux", "initrd", "rootfs.ext4"] {
        fs::set_permissions(tmp.join(f), fs::Permissions::from_mode(0o444))?;
    }
    fs::write(
        tmp.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    let dest = out_root.join(key);
    fs::rename(&tmp, &dest).with_context(|| format!("rename to {}", dest.display()))?;
    p.step(format!(
        "node {}, npm {}, deno {}",
        versions.node, versions.npm, versions.deno
    ));
    Ok(())
}

/// Points `<out-root>/current` at `key` atomically (symlink + rename).
fn point_current(out_root: &Path, key: &str) -> Result<()> {
    let tmp = out_root.join(format!(".current-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    symlink(key, &tmp)?;
    fs::rename(&tmp, out_root.join("current"))?;
    Ok(())
}
