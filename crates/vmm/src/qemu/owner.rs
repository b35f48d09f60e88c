//! Which VM a host process of the QEMU backend belongs to, from the marks its command lines carry:
//! QEMU's `-name rds-<id>` together with a path under the manager's `vms/`, or a vsock helper whose
//! `--socket` lies under it. Reconciliation kills the ones of VMs that are not live.

use crate::process::HostProcess;
use std::path::Path;

pub fn owner_of(p: &HostProcess, vms_dir: &Path) -> Option<String> {
    let prefix = format!("{}/", vms_dir.display());
    if let Some(name) = p.arg_after("-name") {
        let id = name.strip_prefix("rds-")?;
        // Another manager's QEMU (another storage root) names the same way.
        let ours = p.args.iter().any(|a| a.contains(&prefix));
        return ours.then(|| id.to_string());
    }
    let rest = p.arg_after("--socket")?.strip_prefix(&prefix)?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> HostProcess {
        HostProcess {
            pid: 1,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn marks_of_qemu_and_its_helper() {
        let vms = Path::new("/srv/rds/vms");
        let qemu = p(&[
            "qemu-system-x86_64",
            "-name",
            "rds-abc",
            "-drive",
            "id=disk,file=/srv/rds/vms/abc/disk.ext4,format=raw",
        ]);
        assert_eq!(owner_of(&qemu, vms).as_deref(), Some("abc"));
        let other = p(&[
            "qemu-system-x86_64",
            "-name",
            "rds-abc",
            "-drive",
            "file=/other/vms/abc/disk.ext4",
        ]);
        assert_eq!(owner_of(&other, vms), None);
        let helper = p(&[
            "vhost-device-vsock",
            "--guest-cid",
            "10002",
            "--socket",
            "/srv/rds/vms/xyz/run/vhost.sock",
            "--uds-path",
            "/srv/rds/vms/xyz/run/v.sock",
        ]);
        assert_eq!(owner_of(&helper, vms).as_deref(), Some("xyz"));
        let foreign = p(&["vhost-device-vsock", "--socket", "/tmp/x/vhost.sock"]);
        assert_eq!(owner_of(&foreign, vms), None);
        assert_eq!(owner_of(&p(&["bash", "-c", "true"]), vms), None);
    }
}
