//! Cgroup v2 for Firecracker VMs (`docs/reference/vmm-backends.md` §4.1, §7): the parent group
//! `rds` with the `memory`, `pids` (and, where offered, `cpu`) controllers, under which the jailer
//! makes `rds/<vmId>` and writes the limits. Hosts without those v2 controllers (a v1 or hybrid
//! hierarchy, as on the build machines) get no limits and a startup warning.

use std::path::PathBuf;
use std::time::Duration;

/// The parent cgroup of every VM, passed to the jailer as `--parent-cgroup`.
pub const PARENT: &str = "rds";

/// A usable cgroup v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupV2 {
    /// Where cgroup2 is mounted (`/sys/fs/cgroup` on a pure v2 host).
    pub mount: PathBuf,
    /// The `cpu` controller is offered too (`cpu.max` is then set).
    pub cpu: bool,
}

impl CgroupV2 {
    /// The host's cgroup2 mount if it offers `memory` and `pids`, else why not.
    pub fn detect() -> Result<CgroupV2, String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let mount = cgroup2_mount(&info).ok_or("no cgroup2 filesystem is mounted")?;
        let controllers = std::fs::read_to_string(mount.join("cgroup.controllers"))
            .map_err(|e| format!("{}/cgroup.controllers: {e}", mount.display()))?;
        from_controllers(mount, &controllers)
    }

    /// Makes `rds` and enables the controllers for its children. Idempotent.
    pub fn ensure_parent(&self) -> Result<(), String> {
        let parent = self.mount.join(PARENT);
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let enable = self.enable_line();
        for dir in [&self.mount, &parent] {
            let f = dir.join("cgroup.subtree_control");
            std::fs::write(&f, &enable).map_err(|e| format!("{} {enable:?}: {e}", f.display()))?;
        }
        Ok(())
    }

    fn enable_line(&self) -> String {
        if self.cpu {
            "+memory +pids +cpu".into()
        } else {
            "+memory +pids".into()
        }
    }

    /// `<mount>/rds/<vmId>`, made by the jailer.
    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.mount.join(PARENT).join(vm_id)
    }

    /// Removes `rds/<vmId>` once its processes are gone (the kernel refuses while any remain, so this
    /// retries for up to a second). Absent is fine.
    pub async fn remove_vm(&self, vm_id: &str) -> Result<(), std::io::Error> {
        let dir = self.vm_dir(vm_id);
        let mut last = None;
        for _ in 0..20 {
            match std::fs::remove_dir(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("cgroup busy")))
    }
}

fn from_controllers(mount: PathBuf, controllers: &str) -> Result<CgroupV2, String> {
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let missing: Vec<&str> = ["memory", "pids"].into_iter().filter(|c| !has(c)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "cgroup v2 at {} lacks the {} controller(s) (offered: {:?})",
            mount.display(),
            missing.join(" and "),
            controllers.trim()
        ));
    }
    Ok(CgroupV2 {
        cpu: has("cpu"),
        mount,
    })
}

/// The mount point of the first cgroup2 filesystem in `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(unescape(left.split_whitespace().nth(4)?)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
";

    #[test]
    fn finds_the_cgroup2_mount() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
        let esc = "40 1 0:5 / /mnt/cg\\040two rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(esc), Some(PathBuf::from("/mnt/cg two")));
    }

    #[test]
    fn controllers_decide() {
        let m = PathBuf::from("/sys/fs/cgroup");
        let err = from_controllers(m.clone(), "hugetlb\n").unwrap_err();
        assert!(err.contains("lacks the memory and pids"), "{err}");
        assert_eq!(
            from_controllers(m.clone(), "cpuset cpu io memory pids\n").unwrap(),
            CgroupV2 {
                mount: m.clone(),
                cpu: true
            }
        );
        let cg = from_controllers(m.clone(), "memory pids").unwrap();
        assert!(!cg.cpu);
        assert_eq!(cg.enable_line(), "+memory +pids");
        assert_eq!(cg.vm_dir("abc"), m.join("rds/abc"));
    }
}
