//! Names of the files in a QEMU VM's run directory (its chroot) and `logs/`
//! (`docs/reference/vmm-backends.md` §6).

use crate::fsutil::check_socket_path;
use crate::{VmRuntime, VmSpec, VmmError, LOG_CONSOLE, LOG_VMM, LOG_VMM_STDERR};
use std::path::PathBuf;

/// Name of the hard link to the writable disk inside the run directory, QEMU's working directory
/// and chroot.
pub(crate) const DISK_LINK: &str = "disk.ext4";

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub run_dir: PathBuf,
    pub logs_dir: PathBuf,
}

impl Layout {
    pub fn of_spec(spec: &VmSpec) -> Self {
        Layout {
            run_dir: spec.run_dir.clone(),
            logs_dir: spec.logs_dir.clone(),
        }
    }

    pub fn of_runtime(vm: &VmRuntime) -> Self {
        Layout {
            run_dir: vm.run_dir.clone(),
            logs_dir: vm.logs_dir.clone(),
        }
    }

    /// QMP control socket (0600, root).
    pub fn qmp_sock(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    /// The writable disk as QEMU opens it (a hard link to the VM's disk).
    pub fn disk_link(&self) -> PathBuf {
        self.run_dir.join(DISK_LINK)
    }

    /// vhost-user socket between QEMU and the vsock helper.
    pub fn vhost_sock(&self) -> PathBuf {
        self.run_dir.join("vhost.sock")
    }

    /// The hybrid-vsock socket the manager connects to.
    pub fn agent_sock(&self) -> PathBuf {
        crate::agent_socket(&self.run_dir)
    }

    /// Pid (and start time) of the vsock helper.
    pub fn helper_pid_file(&self) -> PathBuf {
        self.run_dir.join("vsock.pid")
    }

    pub fn vmm_log(&self) -> PathBuf {
        self.logs_dir.join(LOG_VMM)
    }

    pub fn console_log(&self) -> PathBuf {
        self.logs_dir.join(LOG_CONSOLE)
    }

    pub fn stderr_log(&self) -> PathBuf {
        self.logs_dir.join(LOG_VMM_STDERR)
    }

    /// Fails when a socket this VM will use cannot fit in `sun_path`. The longest is the listener a guest
    /// connection to host port 65535 arrives at: `<run>/v.sock_65535`.
    pub fn check_socket_paths(&self) -> Result<(), VmmError> {
        let mut longest = self.agent_sock().into_os_string();
        longest.push("_65535");
        for path in [PathBuf::from(longest), self.vhost_sock(), self.qmp_sock()] {
            check_socket_path(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(run: &str) -> Layout {
        Layout {
            run_dir: run.into(),
            logs_dir: "/l".into(),
        }
    }

    #[test]
    fn socket_path_limit_is_107_bytes_for_the_longest_listener() {
        // "/v.sock_65535" is 13 bytes: a 94-byte run dir gives exactly 107.
        let ok = format!("/{}", "a".repeat(93));
        assert_eq!(ok.len(), 94);
        layout(&ok).check_socket_paths().unwrap();

        let long = format!("/{}", "a".repeat(94));
        match layout(&long).check_socket_paths() {
            Err(VmmError::SocketPathTooLong { path, len }) => {
                assert_eq!(len, 108);
                assert!(
                    path.to_string_lossy().ends_with("/v.sock_65535"),
                    "{path:?}"
                );
            }
            other => panic!("expected SocketPathTooLong, got {other:?}"),
        }
    }

    #[test]
    fn typical_storage_layout_fits() {
        let run = "/var/lib/run-dat-sheesh/vms/6f1d2c1e-8f0a-4b8e-9a57-0c2f7d3b9e11/run";
        layout(run).check_socket_paths().unwrap();
    }
}
