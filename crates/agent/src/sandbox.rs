//! How every sandboxed process starts (`docs/reference/agent-protocol.md` §5 table): identity
//! 1000:1000 with no groups, no capabilities and `no_new_privs`, its own session, stdin
//! `/dev/null`, `oom_score_adj` 1000, umask 022, core 0 / nofile 65536, a fresh environment, the
//! caller's working directory, and (when available) its own cgroup. Everything that runs between
//! `fork` and `exec` is in [`enter`] and uses raw syscalls only.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;

use rds_protocol::{SANDBOX_HOME, SANDBOX_PATH, SANDBOX_USER};
use tokio::process::Command;

/// Who sandboxed processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Everything needed to start one sandboxed process.
pub struct Launch<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    /// The caller's environment, applied over the base one.
    pub env: &'a [(String, String)],
    /// The shell reported as `SHELL`.
    pub shell: &'a Path,
    /// Working directory handle (from the path policy).
    pub cwd: &'a OwnedFd,
    pub identity: Identity,
    /// `cgroup.procs` of the call's cgroup, when cgroups are in use.
    pub cgroup_procs: Option<&'a Path>,
}

impl<'a> Launch<'a> {
    /// The sandbox shell with `args`, as the agent's identity and shell settings say: how exec,
    /// background processes and warm shells all start.
    pub fn shell(
        state: &'a crate::state::AppState,
        args: &'a [&'a str],
        env: &'a [(String, String)],
        cwd: &'a OwnedFd,
        cgroup_procs: Option<&'a Path>,
    ) -> Launch<'a> {
        Launch {
            program: &state.shell.path,
            args,
            env,
            shell: &state.shell.path,
            cwd,
            identity: state.settings.identity,
            cgroup_procs,
        }
    }
}

/// The environment every sandboxed process starts from, before the caller's own.
pub fn base_env(shell: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("PATH", SANDBOX_PATH.to_string()),
        ("HOME", SANDBOX_HOME.to_string()),
        ("USER", SANDBOX_USER.to_string()),
        ("LOGNAME", SANDBOX_USER.to_string()),
        ("SHELL", shell.display().to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("TMPDIR", "/tmp".to_string()),
    ]
}

/// Where a sandboxed process's standard streams go.
pub enum Streams {
    /// exec and runs: stdin `/dev/null`, stdout and stderr piped.
    Exec,
    /// Background processes: all three piped.
    Piped,
    /// Terminals: all three on this terminal, which becomes the controlling one of the new session.
    Terminal(OwnedFd),
    /// Warm shells: as [`Streams::Exec`], plus this descriptor as fd 3 (where the shell reads its
    /// job from).
    ExecWithJob(RawFd),
}

/// Builds the command: piped stdout/stderr, stdin `/dev/null`, fresh environment, sandbox set up in the
/// child before `exec`.
pub fn command(launch: &Launch<'_>) -> io::Result<Command> {
    command_with(launch, Streams::Exec)
}

/// [`command`] with the standard streams of `streams`.
pub fn command_with(launch: &Launch<'_>, streams: Streams) -> io::Result<Command> {
    let mut cmd = Command::new(launch.program);
    cmd.args(launch.args)
        .env_clear()
        .envs(base_env(launch.shell))
        .envs(launch.env.iter().map(|(k, v)| (k, v)));
    let controlling_tty = matches!(streams, Streams::Terminal(_));
    let job_fd = match streams {
        Streams::ExecWithJob(fd) => Some(fd),
        _ => None,
    };
    match streams {
        Streams::Exec | Streams::ExecWithJob(_) => cmd.stdin(Stdio::null()),
        Streams::Piped => cmd.stdin(Stdio::piped()),
        Streams::Terminal(tty) => cmd
            .stdin(Stdio::from(tty.try_clone()?))
            .stdout(Stdio::from(tty.try_clone()?))
            .stderr(Stdio::from(tty)),
    };
    if !controlling_tty {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let setup = ChildSetup {
        controlling_tty,
        job_fd,
        cwd: launch.cwd.as_raw_fd(),
        uid: launch.identity.uid,
        gid: launch.identity.gid,
        cgroup_procs: launch
            .cgroup_procs
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
            .transpose()
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
    };
    // SAFETY: `enter` only makes async-signal-safe system calls and allocates nothing; the descriptor it
    // uses stays open until the spawn returns because `launch.cwd` outlives this command's spawn.
    unsafe {
        cmd.pre_exec(move || enter(&setup));
    }
    Ok(cmd)
}

/// Values [`enter`] needs, prepared before `fork` so the child allocates nothing.
struct ChildSetup {
    /// Make stdin (a terminal, set up before `pre_exec` runs) the session's controlling terminal.
    controlling_tty: bool,
    /// Descriptor to hand over as fd 3 (after every other one was marked close-on-exec).
    job_fd: Option<RawFd>,
    cwd: RawFd,
    uid: u32,
    gid: u32,
    cgroup_procs: Option<CString>,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `data` to the file at `path`; for `/proc` and cgroup files. Best effort by design of its callers.
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: plain syscalls on a valid C string and buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        n == data.len() as isize
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `RLIMIT_NOFILE` (soft and hard) of sandboxed processes.
const NOFILE: libc::rlim_t = 65536;

/// Runs in the child between `fork` and `exec`. Order matters: work that needs root (cgroup move,
/// raising `RLIMIT_NOFILE`, dropping the bounding set) comes before the identity change.
fn enter(s: &ChildSetup) -> io::Result<()> {
    // SAFETY (whole body): async-signal-safe system calls on values prepared before fork.
    unsafe {
        check(libc::fchdir(s.cwd))?;
        check(libc::setsid())?;
        if s.controlling_tty {
            check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
        }
        // Raising the score needs no privilege, but /proc/self is still ours only before setuid.
        write_file(c"/proc/self/oom_score_adj", b"1000");
        if let Some(procs) = &s.cgroup_procs {
            // "0" moves the writing process; children started later inherit the cgroup.
            write_file(procs, b"0");
        }
        libc::umask(0o022);
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check(libc::setrlimit(libc::RLIMIT_CORE, &core))?;
        let nofile = libc::rlimit {
            rlim_cur: NOFILE,
            rlim_max: NOFILE,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) < 0 {
            // Raising the hard limit needs CAP_SYS_RESOURCE, which the guest agent has; an agent in a
            // confined host test may not, and then gets as close as its own hard limit allows.
            let mut current = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            check(libc::getrlimit(libc::RLIMIT_NOFILE, &mut current))?;
            let capped = NOFILE.min(current.rlim_max);
            check(libc::setrlimit(
                libc::RLIMIT_NOFILE,
                &libc::rlimit {
                    rlim_cur: capped,
                    rlim_max: capped,
                },
            ))?;
        }
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINVAL) {
                    break; // past the last capability this kernel knows
                }
                return Err(err);
            }
        }
        // Older kernels lack ambient capabilities (EINVAL): then there is nothing to clear.
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) < 0
            && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(io::Error::last_os_error());
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(s.gid, s.gid, s.gid))?;
        check(libc::setresuid(s.uid, s.uid, s.uid))?;
        // Leaving uid 0 cleared the permitted, effective and ambient sets; clear inheritable too.
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        if libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        // No descriptor of the agent's may leak into the sandbox, whoever opened it without CLOEXEC.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if let Some(fd) = s.job_fd {
            if fd == 3 {
                check(libc::fcntl(3, libc::F_SETFD, 0))?;
            } else {
                // dup2 leaves the new descriptor without close-on-exec.
                check(libc::dup2(fd, 3))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_env_is_the_spec_list() {
        let env = base_env(Path::new("/bin/bash"));
        let keys: Vec<_> = env.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TMPDIR"]
        );
        assert!(env.contains(&("SHELL", "/bin/bash".to_string())));
        assert!(env.contains(&("HOME", "/home/user".to_string())));
    }
}
