//! How the Firecracker process gets started. Production always goes through the jailer
//! ([`JailerLauncher`]); the indirection exists so contract tests can serve a fake API on the jail's
//! socket without a jailer or KVM.

use crate::{process, VmmError};
use async_trait::async_trait;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Everything a launcher needs for one VM.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub vm_id: String,
    /// The jail's root on the host (`<base>/firecracker/<vmId>/root`).
    pub jail_root: PathBuf,
    /// Host path of the API socket Firecracker will create (`<jail_root>/api.sock`).
    pub api_sock: PathBuf,
    /// Host path of the pid file the jailer writes.
    pub pid_file: PathBuf,
    /// `logs/vmm.stderr.log`: the jailer's and Firecracker's stdout and stderr, appended.
    pub stderr_log: PathBuf,
    /// The jailer's arguments (`args::jailer_args`).
    pub jailer_args: Vec<OsString>,
}

#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Starts the VMM and returns the host pid of the **Firecracker** process (not the jailer's). The
    /// API socket appears later; the backend waits for it.
    async fn launch(&self, plan: &LaunchPlan) -> Result<u32, VmmError>;
}

/// How long the jailer may take to set up the jail and hand over to Firecracker.
const JAILER_WAIT: Duration = Duration::from_secs(10);
const STDERR_TAIL: u64 = 1536;

/// Runs `JAILER_BIN` in its own session (stdin `/dev/null`, output appended to `vmm.stderr.log`), waits
/// for it to exit after spawning Firecracker into its new PID namespace, and reads `firecracker.pid`.
pub struct JailerLauncher {
    pub jailer_bin: PathBuf,
}

impl JailerLauncher {
    /// Makes this process a child subreaper, so a Firecracker orphaned by the exiting jailer is
    /// re-parented here and its exit status can be read (`docs/reference/vmm-backends.md` §6). The
    /// manager then reaps it through `wait_exit`.
    pub fn new(jailer_bin: PathBuf) -> JailerLauncher {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot become a child subreaper: Firecracker exit statuses will read as unknown"
            );
        }
        JailerLauncher { jailer_bin }
    }
}

#[async_trait]
impl Launcher for JailerLauncher {
    async fn launch(&self, plan: &LaunchPlan) -> Result<u32, VmmError> {
        let mut cmd = Command::new(&self.jailer_bin);
        cmd.args(&plan.jailer_args);
        let jailer = process::spawn_detached(&mut cmd, &plan.stderr_log).map_err(|source| {
            VmmError::Spawn {
                program: self.jailer_bin.display().to_string(),
                source,
            }
        })?;
        let status = tokio::time::timeout(JAILER_WAIT, process::wait_exit(jailer)).await;
        let status = match status {
            Ok(s) => s,
            Err(_) => {
                process::signal(jailer, libc::SIGKILL);
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), process::wait_exit(jailer)).await;
                return Err(VmmError::Timeout {
                    what: format!("jailer exit for {}", plan.vm_id),
                    ms: JAILER_WAIT.as_millis() as u64,
                });
            }
        };
        if status != crate::ExitStatus::Code(0) {
            return Err(VmmError::DiedDuringLaunch {
                status,
                stderr_tail: format!(
                    "jailer failed: {}",
                    process::tail_file(&plan.stderr_log, STDERR_TAIL).trim()
                ),
            });
        }
        read_pid_file(&plan.pid_file).await
    }
}

/// The jailer writes the pid before it exits; a short poll covers a slow filesystem.
async fn read_pid_file(path: &std::path::Path) -> Result<u32, VmmError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(pid) = text.trim().parse::<u32>() {
                    if pid > 0 {
                        return Ok(pid);
                    }
                }
                if Instant::now() > deadline {
                    return Err(VmmError::io(
                        "unparsable pid file",
                        path,
                        std::io::ErrorKind::InvalidData.into(),
                    ));
                }
            }
            Err(e) if Instant::now() > deadline => {
                return Err(VmmError::io("read jailer pid file", path, e))
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &std::path::Path, args: &[&str]) -> LaunchPlan {
        LaunchPlan {
            vm_id: "t".into(),
            jail_root: dir.to_path_buf(),
            api_sock: dir.join("api.sock"),
            pid_file: dir.join("firecracker.pid"),
            stderr_log: dir.join("vmm.stderr.log"),
            jailer_args: args.iter().map(OsString::from).collect(),
        }
    }

    /// `sh` stands in for the jailer: it writes a pid file and exits, or fails loudly.
    #[tokio::test]
    async fn jailer_exit_and_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let l = JailerLauncher {
            jailer_bin: "sh".into(),
        };
        let p = plan(dir.path(), &["-c", "echo 4242 > \"$0\"", ""]);
        let mut p = p;
        p.jailer_args[2] = p.pid_file.clone().into();
        assert_eq!(l.launch(&p).await.unwrap(), 4242);

        let p = plan(
            dir.path(),
            &["-c", "echo 'Failed to exec into Firecracker' >&2; exit 3"],
        );
        let err = l.launch(&p).await.unwrap_err().to_string();
        assert!(
            err.contains("exit code 3") && err.contains("Failed to exec into Firecracker"),
            "{err}"
        );
    }
}
