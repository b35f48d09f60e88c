//! Terminals (`POST /pty`, `rds_protocol::pty`): a login shell of the sandbox user on a fresh
//! pseudo-terminal, in a session and call cgroup of its own, fed by `Input` and `Resize` frames and
//! read into `Output` frames until it exits (`Exit`), or until the manager goes away (then its
//! whole process group and cgroup are killed).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rds_protocol::pty::{Exit, Frame, FrameReader, Kind, Open, Size, MAX_PAYLOAD};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::sandbox::{self, Identity, Launch, Streams};
use crate::state::AppState;

/// The first frame must arrive by then.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Output still in the terminal when the shell exits is read for at most this long.
const DRAIN: Duration = Duration::from_millis(200);

/// A terminal pair: the side the agent reads and writes, and the side the shell gets.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a terminal pair of `size`, the shell's side owned by `owner`.
pub fn open_pty(size: Size, owner: Identity) -> io::Result<Pty> {
    let ptmx: &CStr = if std::path::Path::new("/dev/pts/ptmx").exists() {
        c"/dev/pts/ptmx"
    } else {
        c"/dev/ptmx"
    };
    // SAFETY: open(2), ioctl(2) and fchown(2) on descriptors owned here.
    unsafe {
        let fd = cvt(libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let master = OwnedFd::from_raw_fd(fd);
        let unlock: libc::c_int = 0;
        cvt(libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock))?;
        let sfd = cvt(libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let slave = OwnedFd::from_raw_fd(sfd);
        cvt(libc::fchown(slave.as_raw_fd(), owner.uid, owner.gid))?;
        set_size(&master, size)?;
        let flags = cvt(libc::fcntl(master.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(
            master.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        ))?;
        Ok(Pty { master, slave })
    }
}

pub fn set_size(master: &impl AsRawFd, size: Size) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

/// SIGKILL to every process of session `sid` (found through `/proc/<pid>/stat`), scanning again
/// while a scan still found some: a process forking while it is being killed can add a member the
/// scan had passed.
fn kill_session(sid: libc::pid_t) {
    for _ in 0..10 {
        if kill_session_once(sid) == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// One scan; how many members it signalled.
fn kill_session_once(sid: libc::pid_t) -> usize {
    let mut found = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in dir.flatten() {
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces) start after its closing parenthesis:
        // state, ppid, pgrp, session.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().take(4).collect())
            .unwrap_or_default();
        // A zombie is dead already; only its parent's wait removes it.
        let live = fields.first().is_some_and(|state| *state != "Z");
        let session = fields.get(3).and_then(|s| s.parse::<libc::pid_t>().ok());
        if live && session == Some(sid) {
            // SAFETY: kill(2) of a process of the terminal's session.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                found += 1;
            }
        }
    }
    found
}

/// Reads what the terminal has; `Ok(0)` once the shell's side is closed everywhere (EIO).
async fn read_master(master: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        let r = guard.try_io(|fd| {
            // SAFETY: read(2) into a buffer of the given length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_master(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| {
            // SAFETY: write(2) from a buffer of the given length.
            let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// The next frame from the manager; `None` when it closed the connection or broke the framing.
async fn next_frame<R: AsyncRead + Unpin>(rd: &mut R, frames: &mut FrameReader) -> Option<Frame> {
    let mut buf = [0u8; 8192];
    loop {
        match frames.next_frame() {
            Ok(Some(f)) => return Some(f),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "terminal connection closed");
                return None;
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => frames.push(&buf[..n]),
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(wr: &mut W, frame: &Frame) -> bool {
    wr.write_all(&frame.encode()).await.is_ok() && wr.flush().await.is_ok()
}

/// Serves one terminal connection after the upgrade.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(state: Arc<AppState>, stream: S) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut frames = FrameReader::default();
    let open = match tokio::time::timeout(OPEN_TIMEOUT, next_frame(&mut rd, &mut frames)).await {
        Ok(Some(f)) if f.kind == Kind::Open => serde_json::from_slice::<Open>(&f.payload).ok(),
        _ => None,
    };
    let refuse = |message: String| {
        Frame::json(
            Kind::Exit,
            &Exit {
                exit_code: -1,
                error: Some(message),
            },
        )
    };
    let Some(open) = open else {
        send(
            &mut wr,
            &refuse("the first frame must be a valid open frame".into()),
        )
        .await;
        return;
    };
    let session = match Session::start(&state, &open) {
        Ok(s) => s,
        Err(message) => {
            send(&mut wr, &refuse(message)).await;
            return;
        }
    };
    let code = session.run(&mut rd, &mut wr, &mut frames).await;
    if let Some(code) = code {
        let exit = Frame::json(
            Kind::Exit,
            &Exit {
                exit_code: code,
                error: None,
            },
        );
        send(&mut wr, &exit).await;
    }
    let _ = wr.shutdown().await;
}

struct Session {
    master: AsyncFd<OwnedFd>,
    child: tokio::process::Child,
    pgid: Option<libc::pid_t>,
    cgroup: Option<crate::cgroup::CallCgroup>,
    state: Arc<AppState>,
}

impl Session {
    fn start(state: &Arc<AppState>, open: &Open) -> Result<Session, String> {
        if !open.size.valid() {
            return Err("cols and rows must be at least 1".into());
        }
        let mut env = crate::routes::validate_env(&open.env).map_err(|e| e.body().message)?;
        if !env.iter().any(|(k, _)| k == "TERM") {
            env.push(("TERM".into(), "xterm-256color".into()));
        }
        let cwd = crate::routes::open_cwd(
            state,
            open.cwd.as_deref().unwrap_or(rds_protocol::WORKSPACE),
        )
        .map_err(|e| e.body().message)?;
        let identity = state.settings.identity;
        let pty =
            open_pty(open.size, identity).map_err(|e| format!("cannot open a terminal: {e}"))?;
        let cgroup = state.cgroups.as_ref().and_then(|c| c.create().ok());
        let procs = cgroup.as_ref().map(|c| c.procs_file());
        let shell = &state.shell;
        let launch = Launch {
            program: &shell.path,
            args: &["-l"],
            env: &env,
            shell: &shell.path,
            cwd: &cwd,
            identity,
            cgroup_procs: procs.as_deref(),
        };
        let spawned = sandbox::command_with(&launch, Streams::Terminal(pty.slave))
            .and_then(|mut cmd| cmd.spawn());
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let (Some(s), Some(cg)) = (&state.cgroups, cgroup) {
                    s.release(cg);
                }
                return Err(format!("cannot start the shell: {e}"));
            }
        };
        // SAFETY: an OwnedFd keeps its descriptor open and the same for as long as it lives.
        let master =
            unsafe { AsyncFd::register(pty.master) }.map_err(|e| format!("terminal: {e}"))?;
        Ok(Session {
            master,
            pgid: child.id().map(|p| p as libc::pid_t),
            child,
            cgroup,
            state: state.clone(),
        })
    }

    /// Relays until the shell exits (its exit code) or the manager goes away (`None`).
    async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        mut self,
        rd: &mut R,
        wr: &mut W,
        frames: &mut FrameReader,
    ) -> Option<i32> {
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let mut code = None;
        let mut output_open = true;
        loop {
            tokio::select! {
                f = next_frame(rd, frames) => match f {
                    Some(f) if f.kind == Kind::Input => {
                        if write_master(&self.master, &f.payload).await.is_err() {
                            output_open = false;
                        }
                    }
                    Some(f) if f.kind == Kind::Resize => {
                        match serde_json::from_slice::<Size>(&f.payload) {
                            Ok(size) if size.valid() => { let _ = set_size(&self.master, size); }
                            _ => tracing::debug!("ignored an invalid resize frame"),
                        }
                    }
                    Some(_) => tracing::debug!("ignored an unexpected terminal frame"),
                    None => break,
                },
                r = read_master(&self.master, &mut buf), if output_open => match r {
                    Ok(n) if n > 0 => {
                        if !send(wr, &Frame::new(Kind::Output, buf[..n].to_vec())).await {
                            break;
                        }
                    }
                    _ => output_open = false,
                },
                s = self.child.wait() => {
                    code = Some(s.map(crate::runner::exit_code).unwrap_or(-1));
                    break;
                }
            }
        }
        if code.is_some() {
            // What the shell wrote just before it exited.
            let deadline = tokio::time::Instant::now() + DRAIN;
            while output_open {
                output_open =
                    match tokio::time::timeout_at(deadline, read_master(&self.master, &mut buf))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => {
                            send(wr, &Frame::new(Kind::Output, buf[..n].to_vec())).await
                        }
                        _ => false,
                    };
            }
        }
        self.end().await;
        code
    }

    async fn end(mut self) {
        if let Some(sid) = self.pgid {
            // An interactive shell puts each job in a process group of its own: the session
            // (which the shell leads) is what holds them all.
            // /proc scans and short waits: off the async workers.
            let _ = tokio::task::spawn_blocking(move || kill_session(sid)).await;
        }
        if let Some(cg) = self.cgroup.take() {
            cg.kill_all();
            if let Some(s) = &self.state.cgroups {
                s.release(cg);
            }
        }
        let _ = self.child.wait().await;
    }
}
