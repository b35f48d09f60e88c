//! Log FIFO drains (`docs/reference/vmm-backends.md` §4.1). Firecracker opens its log, metrics and
//! serial outputs read-write without append, so a plain file would be overwritten from byte 0 by
//! every run; the jail holds FIFOs instead, and one task per FIFO appends what arrives to the VM's
//! `logs/` file, moving it to `<name>.1` past 16 MiB. While no drain runs, Firecracker's
//! non-blocking writes past the 64 KiB pipe buffer are dropped, never blocking the VMM.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Log files are moved to `<name>.1` past this size (`docs/reference/lifecycle.md` §8).
pub const ROTATE_AT: u64 = 16 << 20;
/// How often a drain checks that its FIFO still exists (the jail may be removed under it).
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// One VM's drains.
struct Drains {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The drains of every VM this manager runs, by VM id.
#[derive(Default)]
pub struct DrainSet {
    vms: Mutex<HashMap<String, Drains>>,
}

impl DrainSet {
    /// Starts a drain for each `(fifo, log file)` pair unless this VM's drains still run. Must be called
    /// inside a Tokio runtime.
    pub fn ensure(&self, vm_id: &str, pairs: &[(PathBuf, PathBuf)]) {
        let mut vms = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = vms.get(vm_id) {
            if d.tasks.iter().any(|t| !t.is_finished()) {
                return;
            }
        }
        let (stop, rx) = watch::channel(false);
        // Opened here, not in the task, so the FIFO has its reader before the caller goes on to launch
        // the VMM. Read-write, so a drain never sees end-of-file while Firecracker is not writing.
        let mut tasks = Vec::new();
        for (fifo, out) in pairs {
            let opened = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(fifo);
            match opened {
                Ok(pipe) => tasks.push(tokio::spawn(drain(
                    pipe,
                    fifo.clone(),
                    out.clone(),
                    rx.clone(),
                ))),
                Err(e) => {
                    tracing::warn!(fifo = %fifo.display(), error = %e, "cannot open log FIFO")
                }
            }
        }
        vms.insert(vm_id.to_string(), Drains { stop, tasks });
    }

    /// Stops this VM's drains after they moved what is buffered; bounded to a second.
    pub async fn stop(&self, vm_id: &str) {
        let d = self
            .vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(vm_id);
        if let Some(d) = d {
            let _ = d.stop.send(true);
            for t in d.tasks {
                let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
            }
        }
    }
}

async fn drain(
    mut rx: tokio::net::unix::pipe::Receiver,
    fifo: PathBuf,
    out: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut sink = Sink::new(out);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) => return,
                Ok(n) => sink.write(&buf[..n]),
                Err(e) => {
                    tracing::debug!(fifo = %fifo.display(), error = %e, "log FIFO read failed");
                    return;
                }
            },
            _ = stop.changed() => {
                while let Ok(n) = rx.try_read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.write(&buf[..n]);
                }
                return;
            }
            _ = tokio::time::sleep(CHECK_EVERY) => {
                if !fifo.exists() {
                    return;
                }
            }
        }
    }
}

/// Moves whatever `fifo` holds right now into `out` (without blocking). Used before quoting the log in
/// an error, so the message has Firecracker's latest lines even when a drain task has not run yet.
pub fn drain_now(fifo: &Path, out: &Path) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
    else {
        return;
    };
    let mut sink = Sink::new(out.to_path_buf());
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        sink.write(&buf[..n]);
    }
}

/// An appending log file that rotates to `<name>.1`.
struct Sink {
    path: PathBuf,
    file: Option<File>,
}

impl Sink {
    fn new(path: PathBuf) -> Sink {
        Sink { path, file: None }
    }

    /// Logging never fails an operation: errors drop the bytes.
    fn write(&mut self, data: &[u8]) {
        if self.file.is_none() {
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        let _ = f.write_all(data);
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len >= ROTATE_AT {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wait_for(path: &Path, want: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(want) || std::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn drains_append_across_writers_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("log.fifo");
        let out = dir.path().join("vmm.log");
        std::fs::write(&out, "kept\n").unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let set = DrainSet::default();
        set.ensure("vm", &[(fifo.clone(), out.clone())]);
        set.ensure("vm", &[(fifo.clone(), out.clone())]); // no second drain

        // Firecracker's way: read-write, non-blocking, no append; twice, as after a restart.
        for line in ["one\n", "two\n"] {
            let mut w = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap();
            w.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(wait_for(&out, "two").await, "kept\none\ntwo\n");
        set.stop("vm").await;
        set.stop("vm").await;
    }

    #[test]
    fn drain_now_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("c.fifo");
        let out = dir.path().join("console.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        drain_now(&fifo, &out); // nothing buffered, no writer: returns at once
        let mut w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        w.write_all(b"boot\n").unwrap();
        drain_now(&fifo, &out);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "boot\n");

        let mut s = Sink::new(out.clone());
        s.write(&vec![b'x'; ROTATE_AT as usize]);
        s.write(b"fresh\n");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "fresh\n");
        let old = std::fs::metadata(dir.path().join("console.log.1")).unwrap();
        assert_eq!(old.len(), ROTATE_AT + 5);
    }
}
