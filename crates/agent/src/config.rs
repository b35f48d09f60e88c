//! Settings, read once from the environment in `main` and handed down.
//!
//! In the guest, init sets only `PORT`. The other variables are **test hooks** for running the agent on a
//! host without a VM; nothing in the guest sets them:
//!
//! | Variable | Meaning | Default |
//! |---|---|---|
//! | `PORT` | vsock port to listen on (any CID, peers other than CID 2 refused) | 8080 |
//! | `RDS_AGENT_LISTEN` | test hook: `unix:<path>` or `tcp:<loopback ip>:<port>` instead of vsock | vsock |
//! | `RDS_AGENT_WORKSPACE` | test hook: directory that stands for `/workspace` | `/workspace` |
//! | `RDS_AGENT_CGROUP` | test hook: sandbox cgroup directory, or `off` | `/sys/fs/cgroup/rds-sandbox` |
//! | `RDS_AGENT_RUN_DIR` | test hook: the agent's private directory (upload spool) | `/run/rds-agent` |
//! | `RDS_AGENT_ETC` | test hook: directory holding `resolv.conf`, `hosts`, `machine-id` | `/etc` |

use std::net::SocketAddr;
use std::path::PathBuf;

use rds_protocol::{DEFAULT_AGENT_PORT, SANDBOX_UID, WORKSPACE};

use crate::sandbox::Identity;

pub const ENV_PORT: &str = "PORT";
pub const ENV_LISTEN: &str = "RDS_AGENT_LISTEN";
pub const ENV_WORKSPACE: &str = "RDS_AGENT_WORKSPACE";
pub const ENV_CGROUP: &str = "RDS_AGENT_CGROUP";
pub const ENV_RUN_DIR: &str = "RDS_AGENT_RUN_DIR";
pub const ENV_ETC: &str = "RDS_AGENT_ETC";
const DEFAULT_CGROUP: &str = "/sys/fs/cgroup/rds-sandbox";
const DEFAULT_RUN_DIR: &str = "/run/rds-agent";
const DEFAULT_ETC: &str = "/etc";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// The real transport: `AF_VSOCK`, any CID.
    Vsock { port: u32 },
    /// Test hook.
    Unix(PathBuf),
    /// Test hook; loopback addresses only.
    Tcp(SocketAddr),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Listen,
    /// Directory that stands for `/workspace`.
    pub workspace: PathBuf,
    /// Sandbox cgroup directory; `None` runs without cgroups.
    pub cgroup: Option<PathBuf>,
    pub identity: Identity,
    /// The agent's private directory (0700 root); uploads are spooled here.
    pub run_dir: PathBuf,
    /// Where `resolv.conf`, `hosts` and `machine-id` are written.
    pub etc: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{ENV_PORT} must be a port number, got {0:?}")]
    Port(String),
    #[error("{ENV_LISTEN} must be unix:<path> or tcp:<loopback ip>:<port>, got {0:?}")]
    Listen(String),
    #[error("{ENV_WORKSPACE} must be an absolute path, got {0:?}")]
    Workspace(String),
    #[error("{0} must be an absolute path, got {1:?}")]
    NotAbsolute(&'static str, String),
}

impl Settings {
    /// Reads the settings through `var` (the process environment in `main`, a map in tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let listen = match var(ENV_LISTEN) {
            Some(spec) => parse_listen(&spec)?,
            None => {
                let port = match var(ENV_PORT) {
                    Some(p) => p.trim().parse().map_err(|_| ConfigError::Port(p))?,
                    None => DEFAULT_AGENT_PORT,
                };
                Listen::Vsock { port }
            }
        };
        let workspace = PathBuf::from(var(ENV_WORKSPACE).unwrap_or_else(|| WORKSPACE.to_string()));
        if !workspace.is_absolute() {
            return Err(ConfigError::Workspace(workspace.display().to_string()));
        }
        let cgroup = match var(ENV_CGROUP).as_deref() {
            Some("off") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => Some(PathBuf::from(DEFAULT_CGROUP)),
        };
        let absolute = |name: &'static str, default: &str| {
            let path = PathBuf::from(var(name).unwrap_or_else(|| default.to_string()));
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(ConfigError::NotAbsolute(name, path.display().to_string()))
            }
        };
        let run_dir = absolute(ENV_RUN_DIR, DEFAULT_RUN_DIR)?;
        let etc = absolute(ENV_ETC, DEFAULT_ETC)?;
        Ok(Settings {
            listen,
            workspace,
            cgroup,
            run_dir,
            etc,
            identity: Identity {
                uid: SANDBOX_UID,
                gid: SANDBOX_UID,
            },
        })
    }
}

fn parse_listen(spec: &str) -> Result<Listen, ConfigError> {
    let bad = || ConfigError::Listen(spec.to_string());
    if let Some(path) = spec.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = spec.strip_prefix("tcp:") {
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        if !addr.ip().is_loopback() {
            return Err(bad());
        }
        return Ok(Listen::Tcp(addr));
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_guest_ones() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.listen, Listen::Vsock { port: 8080 });
        assert_eq!(s.workspace, PathBuf::from("/workspace"));
        assert_eq!(s.cgroup, Some(PathBuf::from("/sys/fs/cgroup/rds-sandbox")));
        assert_eq!(s.run_dir, PathBuf::from("/run/rds-agent"));
        assert_eq!(s.etc, PathBuf::from("/etc"));
        assert_eq!(
            s.identity,
            Identity {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            settings(&[("PORT", "9000")]).unwrap().listen,
            Listen::Vsock { port: 9000 }
        );
        assert!(settings(&[("PORT", "x")]).is_err());
    }

    #[test]
    fn test_hooks() {
        let s = settings(&[
            ("RDS_AGENT_LISTEN", "unix:/tmp/a.sock"),
            ("RDS_AGENT_CGROUP", "off"),
        ])
        .unwrap();
        assert_eq!(s.listen, Listen::Unix("/tmp/a.sock".into()));
        assert_eq!(s.cgroup, None);
        let s = settings(&[("RDS_AGENT_LISTEN", "tcp:127.0.0.1:0")]).unwrap();
        assert_eq!(s.listen, Listen::Tcp("127.0.0.1:0".parse().unwrap()));
        for bad in ["tcp:0.0.0.0:80", "tcp:nope", "unix:", "vsock:1", ""] {
            assert!(settings(&[("RDS_AGENT_LISTEN", bad)]).is_err(), "{bad}");
        }
        assert!(settings(&[("RDS_AGENT_WORKSPACE", "rel")]).is_err());
        assert!(settings(&[("RDS_AGENT_ETC", "etc")]).is_err());
        let s = settings(&[("RDS_AGENT_RUN_DIR", "/tmp/r"), ("RDS_AGENT_ETC", "/tmp/e")]).unwrap();
        assert_eq!(
            (s.run_dir.to_str(), s.etc.to_str()),
            (Some("/tmp/r"), Some("/tmp/e"))
        );
    }
}
