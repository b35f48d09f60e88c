//! Background processes (`rds_protocol::process`): commands started by one request and driven by
//! later ones. Each runs under the sandbox rules of exec (identity, session, call cgroup) with its
//! stdin open; its output goes into a bounded buffer that readers page through by offset or
//! follow. The table lives as long as the guest: after a reboot it is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rds_protocol::process::{
    Chunk, OutputReply, ProcessInfo, MAX_KEPT_ENDED, MAX_RUNNING, OUTPUT_BUFFER_BYTES,
};
use rds_protocol::stream::complete_utf8_len;
use rds_protocol::EXEC_PIPE_GRACE_MS;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::watch;

use crate::cgroup::CallCgroup;
use crate::runner::exit_code;

const STREAMS: [&str; 2] = ["stdout", "stderr"];
const READ_CHUNK: usize = 16 * 1024;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a start was refused.
pub enum StartError {
    TooMany,
    Duplicate,
}

/// Output kept for one process: whole characters, oldest dropped first past the cap.
#[derive(Default)]
struct Buffer {
    chunks: VecDeque<Chunk>,
    kept: usize,
    /// Bytes produced so far (the next chunk's offset).
    total: u64,
    /// Bytes of a character split between two reads, per stream.
    pending: [Vec<u8>; 2],
}

impl Buffer {
    fn push(&mut self, stream: usize, bytes: &[u8], flush: bool) {
        let buf = &mut self.pending[stream];
        buf.extend_from_slice(bytes);
        let n = if flush {
            buf.len()
        } else {
            complete_utf8_len(buf)
        };
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        buf.drain(..n);
        let len = text.len();
        self.chunks.push_back(Chunk {
            stream: STREAMS[stream].into(),
            offset: self.total,
            data: text,
        });
        self.total += len as u64;
        self.kept += len;
        while self.kept > OUTPUT_BUFFER_BYTES {
            match self.chunks.pop_front() {
                Some(c) => self.kept -= c.data.len(),
                None => break,
            }
        }
    }

    /// Chunks from `offset` on (the first one cut at a character boundary at or after it), and how
    /// many bytes from `offset` on are no longer held.
    fn from(&self, offset: u64) -> (Vec<Chunk>, u64) {
        let first = self.chunks.front().map_or(self.total, |c| c.offset);
        let dropped = first.saturating_sub(offset);
        let mut out = Vec::new();
        for c in &self.chunks {
            let end = c.offset + c.data.len() as u64;
            if end <= offset {
                continue;
            }
            if c.offset >= offset {
                out.push(c.clone());
                continue;
            }
            let cut = c.data.ceil_char_boundary((offset - c.offset) as usize);
            if cut < c.data.len() {
                out.push(Chunk {
                    stream: c.stream.clone(),
                    offset: c.offset + cut as u64,
                    data: c.data[cut..].to_string(),
                });
            }
        }
        (out, dropped)
    }
}

struct Status {
    buffer: Buffer,
    exit_code: Option<i32>,
    timed_out: bool,
    ended_at_ms: Option<u64>,
}

pub struct Entry {
    id: String,
    cmd: String,
    pid: Option<u32>,
    started_at_ms: u64,
    status: Mutex<Status>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    /// Bumped on every change (output, exit); followers wait on it.
    changed: watch::Sender<u64>,
}

impl Entry {
    pub fn info(&self) -> ProcessInfo {
        let s = self.status.lock().expect("process status");
        ProcessInfo {
            id: self.id.clone(),
            cmd: self.cmd.clone(),
            state: if s.exit_code.is_some() {
                "exited"
            } else {
                "running"
            }
            .into(),
            pid: self.pid,
            exit_code: s.exit_code,
            timed_out: s.timed_out,
            started_at_ms: self.started_at_ms,
            ended_at_ms: s.ended_at_ms,
            output_bytes: s.buffer.total,
            stdin_open: s.exit_code.is_none()
                && self.stdin.try_lock().map(|g| g.is_some()).unwrap_or(true),
        }
    }

    pub fn ended(&self) -> bool {
        self.status
            .lock()
            .expect("process status")
            .exit_code
            .is_some()
    }

    /// Output from `offset`; `None` when `offset` is past what was produced.
    pub fn output(&self, offset: u64) -> Option<OutputReply> {
        let (chunks, dropped, total) = {
            let s = self.status.lock().expect("process status");
            if offset > s.buffer.total {
                return None;
            }
            let (chunks, dropped) = s.buffer.from(offset);
            (chunks, dropped, s.buffer.total)
        };
        Some(OutputReply {
            chunks,
            next_offset: total,
            dropped_bytes: dropped,
            process: self.info(),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Writes to stdin (and closes it with `eof`); false when it is already closed.
    pub async fn write_stdin(&self, data: &[u8], eof: bool) -> std::io::Result<bool> {
        use tokio::io::AsyncWriteExt;
        let mut guard = self.stdin.lock().await;
        let Some(stdin) = guard.as_mut() else {
            return Ok(false);
        };
        let written = async {
            stdin.write_all(data).await?;
            stdin.flush().await
        }
        .await;
        if eof || written.is_err() {
            *guard = None;
        }
        written.map(|()| true)
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) of the group the process leads (it called setsid).
            unsafe { libc::kill(-(pid as libc::pid_t), signal) };
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

#[derive(Default)]
pub struct Processes {
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl Processes {
    pub fn list(&self) -> Vec<ProcessInfo> {
        let entries = self.entries.lock().expect("process table").clone();
        entries.iter().map(|e| e.info()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().expect("process table");
        entries.iter().find(|e| e.id == id).cloned()
    }

    /// Takes a started child into the table and runs its reader until it ends. Checked before the
    /// spawn with [`Processes::admit`]; checked again here against a racing start.
    pub fn insert(
        self: &Arc<Self>,
        id: String,
        cmd: String,
        mut child: Child,
        timeout: Option<Duration>,
        cgroup: Option<CallCgroup>,
        state: Arc<crate::state::AppState>,
    ) -> Result<Arc<Entry>, StartError> {
        let (changed, _) = watch::channel(0);
        let entry = Arc::new(Entry {
            id,
            cmd,
            pid: child.id(),
            started_at_ms: now_ms(),
            status: Mutex::new(Status {
                buffer: Buffer::default(),
                exit_code: None,
                timed_out: false,
                ended_at_ms: None,
            }),
            stdin: tokio::sync::Mutex::new(child.stdin.take()),
            changed,
        });
        {
            let mut entries = self.entries.lock().expect("process table");
            if let Err(e) = admit_locked(&entries, &entry.id) {
                entry.signal(libc::SIGKILL);
                return Err(e);
            }
            let ended: Vec<usize> = (0..entries.len()).filter(|i| entries[*i].ended()).collect();
            if ended.len() >= MAX_KEPT_ENDED {
                entries.remove(ended[0]);
            }
            entries.push(entry.clone());
        }
        tokio::spawn(drive(entry.clone(), child, timeout, cgroup, state));
        Ok(entry)
    }

    /// Whether a process `id` may start now.
    pub fn admit(&self, id: &str) -> Result<(), StartError> {
        admit_locked(&self.entries.lock().expect("process table"), id)
    }
}

fn admit_locked(entries: &[Arc<Entry>], id: &str) -> Result<(), StartError> {
    if entries.iter().any(|e| e.id == id) {
        return Err(StartError::Duplicate);
    }
    if entries.iter().filter(|e| !e.ended()).count() >= MAX_RUNNING {
        return Err(StartError::TooMany);
    }
    Ok(())
}

/// Reads both pipes into the buffer until the process ended (and its pipes closed, or
/// [`EXEC_PIPE_GRACE_MS`] later), killing its group at the timeout; then releases its cgroup.
async fn drive(
    entry: Arc<Entry>,
    mut child: Child,
    timeout: Option<Duration>,
    cgroup: Option<CallCgroup>,
    state: Arc<crate::state::AppState>,
) {
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return;
    };
    let (mut ob, mut eb) = (vec![0u8; READ_CHUNK], vec![0u8; READ_CHUNK]);
    let (mut out_open, mut err_open) = (true, true);
    let mut code = None;
    let mut timed_out = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let deadline = timeout.map_or(far, |t| tokio::time::Instant::now() + t);
    let mut give_up = far;
    let push = |i: usize, bytes: &[u8]| {
        entry
            .status
            .lock()
            .expect("process status")
            .buffer
            .push(i, bytes, false);
        entry.bump();
    };
    while out_open || err_open || code.is_none() {
        tokio::select! {
            r = out.read(&mut ob), if out_open => match r {
                Ok(n) if n > 0 => push(0, &ob[..n]),
                _ => out_open = false,
            },
            r = err.read(&mut eb), if err_open => match r {
                Ok(n) if n > 0 => push(1, &eb[..n]),
                _ => err_open = false,
            },
            s = child.wait(), if code.is_none() => {
                code = Some(s.map(exit_code).unwrap_or(-1));
                give_up = tokio::time::Instant::now() + Duration::from_millis(EXEC_PIPE_GRACE_MS);
            }
            _ = tokio::time::sleep_until(deadline), if !timed_out && code.is_none() => {
                timed_out = true;
                entry.signal(libc::SIGKILL);
            }
            _ = tokio::time::sleep_until(give_up), if code.is_some() => break,
        }
    }
    if let (Some(cg), Some(sandboxes)) = (cgroup, &state.cgroups) {
        cg.kill_all();
        sandboxes.release(cg);
    }
    *entry.stdin.lock().await = None;
    {
        let mut s = entry.status.lock().expect("process status");
        s.buffer.push(0, &[], true);
        s.buffer.push(1, &[], true);
        s.exit_code = Some(if timed_out { -1 } else { code.unwrap_or(-1) });
        s.timed_out = timed_out;
        s.ended_at_ms = Some(now_ms());
    }
    entry.bump();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_drops_oldest_and_reads_from_any_offset() {
        let mut b = Buffer::default();
        b.push(0, "héllo ".as_bytes(), false);
        b.push(1, b"err", false);
        assert_eq!(b.total, 10);
        let (c, dropped) = b.from(2);
        assert_eq!(dropped, 0);
        // Offset 2 is inside "é": the read starts at the next character.
        assert_eq!((c[0].offset, c[0].data.as_str()), (3, "llo "));
        assert_eq!(
            (c[1].stream.as_str(), c[1].data.as_str()),
            ("stderr", "err")
        );
        assert!(b.from(10).0.is_empty());
        let big = vec![b'x'; OUTPUT_BUFFER_BYTES];
        b.push(0, &big, false);
        let (c, dropped) = b.from(0);
        assert_eq!(dropped, 10, "the first two chunks are gone");
        assert_eq!(c.len(), 1);
        assert_eq!(b.total, 10 + OUTPUT_BUFFER_BYTES as u64);
    }

    #[test]
    fn split_characters_wait_for_their_rest() {
        let mut b = Buffer::default();
        let e = "é".as_bytes();
        b.push(0, &[b'a', e[0]], false);
        b.push(0, &[e[1]], false);
        let text: String = b.from(0).0.into_iter().map(|c| c.data).collect();
        assert_eq!(text, "aé");
    }
}
