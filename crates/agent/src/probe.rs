//! What the image offers, probed once at start: the shell (at once) and the Deno/Node versions (in the
//! background, so the listener is not delayed).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rds_protocol::{Runtimes, Shell, SANDBOX_PATH};
use tokio::process::Command;
use tokio::sync::watch;

const BASH: &str = "/bin/bash";
const SH: &str = "/bin/sh";
/// A runtime that cannot print its version within this time is reported absent.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The shell exec uses: `/bin/bash -lc` when bash is an executable file, else `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellInfo {
    pub kind: Shell,
    pub path: PathBuf,
}

impl ShellInfo {
    pub fn probe() -> ShellInfo {
        let bash = Path::new(BASH);
        let executable = bash
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
            ShellInfo {
                kind: Shell::Bash,
                path: bash.to_path_buf(),
            }
        } else {
            ShellInfo {
                kind: Shell::Sh,
                path: PathBuf::from(SH),
            }
        }
    }

    /// The flag that precedes the command.
    pub fn command_flag(&self) -> &'static str {
        match self.kind {
            Shell::Bash => "-lc",
            Shell::Sh => "-c",
        }
    }
}

/// Starts probing `deno --version` and `node --version`; the receiver holds `Some` once both answered.
pub fn spawn_runtime_probe() -> watch::Receiver<Option<Runtimes>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let (deno, node) = tokio::join!(version_of("deno"), version_of("node"));
        let _ = tx.send(Some(Runtimes {
            deno: deno.as_deref().and_then(parse_deno_version),
            node: node.as_deref().and_then(parse_node_version),
        }));
    });
    rx
}

/// First line of `<program> --version`, found on the sandbox `PATH`; `None` if absent or failing.
async fn version_of(program: &str) -> Option<String> {
    let child = Command::new(program)
        .arg("--version")
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let out = tokio::time::timeout(VERSION_TIMEOUT, child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()
        .map(str::to_string)
}

/// `deno 2.1.4 (stable, release, x86_64-unknown-linux-gnu)` → `2.1.4`.
fn parse_deno_version(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    (words.next()? == "deno").then_some(())?;
    words.next().map(str::to_string)
}

/// `v22.11.0` → `22.11.0`.
fn parse_node_version(line: &str) -> Option<String> {
    let v = line.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    (!v.is_empty() && !v.contains(char::is_whitespace)).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_deno_version("deno 2.1.4 (stable, release, x86_64-unknown-linux-gnu)").as_deref(),
            Some("2.1.4")
        );
        assert_eq!(parse_deno_version("node 1"), None);
        assert_eq!(parse_node_version("v22.11.0\n").as_deref(), Some("22.11.0"));
        assert_eq!(parse_node_version(""), None);
    }

    #[test]
    fn shell_flags() {
        let bash = ShellInfo {
            kind: Shell::Bash,
            path: BASH.into(),
        };
        assert_eq!(bash.command_flag(), "-lc");
        let sh = ShellInfo {
            kind: Shell::Sh,
            path: SH.into(),
        };
        assert_eq!(sh.command_flag(), "-c");
    }
}
