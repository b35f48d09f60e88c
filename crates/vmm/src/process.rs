//! Host processes behind a VM: detached spawning, identity checks that survive pid reuse, exit watching
//! through pidfds (which also works for processes a restarted manager did not spawn).

use crate::ExitStatus;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tokio::io::unix::AsyncFd;

/// The host's boot id; stored with a pid so a reboot cannot make an old pid look alive.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| io::Error::other(format!("unparsable /proc/{pid}/stat")))
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is the process that was started at `start_time` in boot `boot`, and its command
/// line contains `needle`.
pub fn is_same_process(pid: u32, start: u64, boot: &str, needle: &str) -> bool {
    if pid == 0 || boot_id().ok().as_deref() != Some(boot) || start_time(pid).ok() != Some(start) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => raw
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle)),
        Err(_) => false,
    }
}

/// Starts `cmd` in its own session with stdin from `/dev/null` and output appended to `log`, so it
/// survives the manager. Returns the pid; the caller reaps it through [`wait_exit`].
pub fn spawn_detached(cmd: &mut Command, log: &Path) -> io::Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(child.id())
}

/// Makes `fd` the child's descriptor `target` (without close-on-exec), for a program that opens
/// `/proc/self/fd/<target>`. `fd` must stay open until the spawn returned.
pub fn inherit_fd(cmd: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) {
    // SAFETY: dup2 and fcntl are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the returned descriptor is ours to own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Resolves when `pid` has exited. Reaps it when it is our child; otherwise the status is unknown.
pub async fn wait_exit(pid: u32) -> ExitStatus {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(_) => return reap(pid, None),
    };
    // SAFETY: the AsyncFd owns `fd` (an OwnedFd), which stays open and unchanged until it is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    if let Ok(afd) = registered {
        let _ = afd.readable().await;
        return reap(pid, Some(afd.get_ref().as_raw_fd()));
    }
    ExitStatus::Unknown
}

fn reap(pid: u32, pidfd: Option<i32>) -> ExitStatus {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = match pidfd {
        // SAFETY: valid pidfd and a valid out pointer.
        Some(fd) => unsafe {
            libc::waitid(libc::P_PIDFD, fd as libc::id_t, &mut info, libc::WEXITED)
        },
        // SAFETY: as above, for a pid.
        None => unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG) },
    };
    if rc != 0 {
        return ExitStatus::Unknown;
    }
    // SAFETY: waitid succeeded, so the child fields are initialised.
    let (code, status) = unsafe { (info.si_code, info.si_status()) };
    match code {
        libc::CLD_EXITED => ExitStatus::Code(status),
        libc::CLD_KILLED | libc::CLD_DUMPED => ExitStatus::Signal(status),
        _ => ExitStatus::Unknown,
    }
}

/// SIGKILL, only if `pid` is still the process we started.
pub fn kill_if_same(pid: u32, start: u64, boot: &str, needle: &str) {
    if is_same_process(pid, start, boot, needle) {
        // SAFETY: plain syscall on a pid we verified.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// Sends `sig` to `pid` (no identity check; for processes we just spawned).
/// A host process as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct HostProcess {
    pub pid: u32,
    /// Its argument vector (`/proc/<pid>/cmdline`).
    pub args: Vec<String>,
}

impl HostProcess {
    /// The argument after `flag`, if any.
    pub fn arg_after(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }
}

/// Every process with a readable, non-empty command line, this process excluded.
pub fn list() -> Vec<HostProcess> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (!args.is_empty()).then_some(HostProcess { pid, args })
        })
        .collect()
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Up to `max` bytes from the end of a text file, lossily decoded; empty when unreadable.
pub fn tail_file(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        assert_eq!(parse_start_time(stat), Some(123456));
    }

    #[test]
    fn own_process_is_recognised() {
        let me = std::process::id();
        let st = start_time(me).unwrap();
        let boot = boot_id().unwrap();
        let exe = std::env::args().next().unwrap();
        assert!(is_same_process(me, st, &boot, &exe));
        assert!(!is_same_process(me, st + 1, &boot, &exe));
        assert!(!is_same_process(me, st, "other-boot", &exe));
        assert!(!is_same_process(me, st, &boot, "no-such-marker-in-cmdline"));
    }

    #[tokio::test]
    async fn wait_exit_reaps_a_detached_child() {
        let dir = tempfile::tempdir().unwrap();
        let pid = spawn_detached(
            Command::new("sh").args(["-c", "echo hi; exit 7"]),
            &dir.path().join("out.log"),
        )
        .unwrap();
        assert_eq!(wait_exit(pid).await, ExitStatus::Code(7));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
            "hi\n"
        );
        let pid =
            spawn_detached(Command::new("sleep").arg("30"), &dir.path().join("s.log")).unwrap();
        signal(pid, libc::SIGKILL);
        assert_eq!(wait_exit(pid).await, ExitStatus::Signal(libc::SIGKILL));
    }
}
