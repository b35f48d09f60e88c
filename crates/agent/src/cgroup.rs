//! Optional cgroup v2 confinement (`docs/reference/agent-protocol.md` §5): every call gets its own
//! child of `/sys/fs/cgroup/rds-sandbox`, whose limits (`memory.max` = guest RAM − 64 MiB,
//! `pids.max` = 4096) bound all sandboxed work together. When cgroup2 or its `memory`/`pids`
//! controllers are missing, the agent runs without (the spec's "should"), and [`Sandboxes::setup`]
//! says so once.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// `pids.max` of the sandbox cgroup and of each call's cgroup.
const PIDS_MAX: u32 = 4096;
/// RAM kept out of the sandbox's reach for init and the agent.
const RESERVED_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cgroup {}: {what}", .path.display())]
pub struct CgroupError {
    path: PathBuf,
    what: &'static str,
    #[source]
    source: io::Error,
}

fn err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// The sandbox cgroup (`.../rds-sandbox`) and the per-call children currently in use.
#[derive(Debug)]
pub struct Sandboxes {
    dir: PathBuf,
    memory_max: String,
    next: AtomicU64,
    active: Mutex<HashSet<PathBuf>>,
}

/// One call's cgroup; [`Sandboxes::release`] removes it when it is empty.
#[derive(Debug)]
pub struct CallCgroup {
    dir: PathBuf,
}

impl CallCgroup {
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Kills every process in the cgroup: `cgroup.kill` (Linux ≥ 5.14), else one by one.
    pub fn kill_all(&self) {
        if fs::write(self.dir.join("cgroup.kill"), b"1").is_ok() {
            return;
        }
        if let Ok(pids) = fs::read_to_string(self.procs_file()) {
            for pid in pids
                .lines()
                .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
            {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Sandboxes {
    /// Prepares `dir` (normally `/sys/fs/cgroup/rds-sandbox`): enables `memory` and `pids` on its parent,
    /// creates it, enables them for its children and sets the limits.
    pub fn setup(dir: &Path) -> Result<Sandboxes, CgroupError> {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let controllers_file = parent.join("cgroup.controllers");
        let controllers =
            fs::read_to_string(&controllers_file).map_err(err(&controllers_file, "not cgroup2"))?;
        let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
        if !has("memory") || !has("pids") {
            let e = io::Error::new(
                io::ErrorKind::Unsupported,
                "memory or pids controller missing",
            );
            return Err(err(&controllers_file, "controllers")(e));
        }
        enable_controllers(parent)?;
        match fs::create_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(err(dir, "create")(e))
            }
            _ => {}
        }
        enable_controllers(dir)?;
        let memory_max = memory_max();
        write_limits(dir, &memory_max)?;
        Ok(Sandboxes {
            dir: dir.to_path_buf(),
            memory_max,
            next: AtomicU64::new(0),
            active: Mutex::default(),
        })
    }

    /// Creates the cgroup of one call, after removing children left by earlier calls that have emptied.
    pub fn create(&self) -> Result<CallCgroup, CgroupError> {
        self.sweep();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("call-{}-{n}", std::process::id()));
        fs::create_dir(&dir).map_err(err(&dir, "create"))?;
        if let Err(e) = write_limits(&dir, &self.memory_max) {
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.clone());
        Ok(CallCgroup { dir })
    }

    /// Ends the call's use of its cgroup; removed now if empty, else by a later sweep (descendants that
    /// outlive the call keep it populated).
    pub fn release(&self, call: CallCgroup) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&call.dir);
        let _ = fs::remove_dir(&call.dir);
    }

    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && !active.contains(&path) {
                // Fails with EBUSY while populated; that is the point.
                let _ = fs::remove_dir(&path);
            }
        }
    }
}

fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).map_err(err(&file, "read"))?;
    if ["memory", "pids"]
        .iter()
        .all(|c| current.split_whitespace().any(|x| x == *c))
    {
        return Ok(());
    }
    fs::write(&file, b"+memory +pids").map_err(err(&file, "enable controllers"))
}

fn write_limits(dir: &Path, memory_max: &str) -> Result<(), CgroupError> {
    let pids = dir.join("pids.max");
    fs::write(&pids, PIDS_MAX.to_string()).map_err(err(&pids, "write"))?;
    let memory = dir.join("memory.max");
    fs::write(&memory, memory_max).map_err(err(&memory, "write"))
}

/// Guest RAM minus the reserve, or `max` when RAM is unknown or too small to split.
fn memory_max() -> String {
    let total = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total_bytes(&m));
    match total {
        Some(t) if t > 2 * RESERVED_BYTES => (t - RESERVED_BYTES).to_string(),
        _ => "max".to_string(),
    }
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m = "MemTotal:        1024000 kB\nMemFree:          512 kB\n";
        assert_eq!(mem_total_bytes(m), Some(1_048_576_000));
        assert_eq!(mem_total_bytes("nothing"), None);
    }

    /// A directory that looks like a cgroup2 mount with `memory` and `pids` (plain files, so only the
    /// agent's own bookkeeping is exercised; the kernel side is covered in the guest).
    #[test]
    fn setup_and_calls_on_a_fake_hierarchy() {
        let root = std::env::temp_dir().join(format!("rds-cg-fake-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("rds-sandbox")).unwrap();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        fs::write(
            root.join("rds-sandbox/cgroup.subtree_control"),
            "memory pids\n",
        )
        .unwrap();
        let sandboxes = Sandboxes::setup(&root.join("rds-sandbox")).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
        assert_eq!(
            fs::read_to_string(root.join("rds-sandbox/pids.max")).unwrap(),
            "4096"
        );
        let memory = fs::read_to_string(root.join("rds-sandbox/memory.max")).unwrap();
        assert!(memory == "max" || memory.parse::<u64>().is_ok(), "{memory}");

        let call = sandboxes.create().unwrap();
        assert!(call.procs_file().starts_with(root.join("rds-sandbox")));
        assert_eq!(
            fs::read_to_string(call.dir.join("pids.max")).unwrap(),
            "4096"
        );
        let second = sandboxes.create().unwrap();
        assert_ne!(call.dir, second.dir);
        assert_eq!(sandboxes.active.lock().unwrap().len(), 2);
        sandboxes.release(call);
        sandboxes.release(second);
        assert!(sandboxes.active.lock().unwrap().is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn setup_refuses_a_non_cgroup_directory() {
        let dir = std::env::temp_dir().join(format!("rds-cg-{}", std::process::id()));
        assert!(Sandboxes::setup(&dir.join("rds-sandbox")).is_err());
        assert!(!dir.exists());
    }
}
