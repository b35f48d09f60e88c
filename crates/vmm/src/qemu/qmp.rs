//! A small QMP client over QEMU's Unix control socket: greeting, `qmp_capabilities`, commands with ids,
//! events. Every message sent or received is recorded as one timestamped line in `logs/vmm.log`.
//!
//! QEMU serves one QMP client at a time, so callers connect per operation and drop the client soon.

pub(crate) use crate::transcript::Transcript;
use crate::VmmError;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Bound on any single read or write; QMP answers in milliseconds even under TCG.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// `lastError` keeps at most 2 KiB; a QMP description is cut well below that.
const MAX_MESSAGE: usize = 1024;

pub(crate) struct Qmp {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    transcript: Transcript,
    next_id: u64,
    /// Events that arrived while waiting for a reply.
    events: VecDeque<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub async fn connect(sock: &Path, transcript: Transcript) -> Result<Qmp, VmmError> {
        let stream = tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(sock))
            .await
            .map_err(|_| timeout("QMP connect"))?
            .map_err(|e| VmmError::io("connect to QMP socket", sock, e))?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            lines: BufReader::new(r).lines(),
            writer: w,
            transcript,
            next_id: 1,
            events: VecDeque::new(),
        };
        let greeting = qmp.read_message("QMP greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(protocol(format!("unexpected QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value; a QMP `error` becomes [`VmmError::Rejected`].
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, VmmError> {
        self.run(command, args, None).await
    }

    /// As [`Qmp::execute`], passing `fd` along with the command (`SCM_RIGHTS`), as `getfd` expects.
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        args: Option<Value>,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, VmmError> {
        self.run(command, args, Some(fd)).await
    }

    async fn run(
        &mut self,
        command: &str,
        args: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, VmmError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = args {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        self.transcript.record("->", &line);
        line.push('\n');
        let send = async {
            let mut rest = line.as_bytes();
            if let Some(fd) = fd {
                let sent = self.send_fd(rest, fd).await?;
                rest = &rest[sent..];
            }
            self.writer.write_all(rest).await
        };
        tokio::time::timeout(IO_TIMEOUT, send)
            .await
            .map_err(|_| timeout(&format!("QMP send of {command}")))?
            .map_err(|e| VmmError::io("write to QMP socket for", command, e))?;
        loop {
            let reply = self.read_message(command).await?;
            if reply.get("event").is_some() {
                self.events.push_back(reply);
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                // A reply to someone else's command cannot happen on our own connection; skip it.
                continue;
            }
            if let Some(err) = reply.get("error") {
                let class = err.get("class").and_then(Value::as_str).unwrap_or("Error");
                let desc = err.get("desc").and_then(Value::as_str).unwrap_or("");
                return Err(VmmError::Rejected {
                    command: command.to_string(),
                    message: truncate(format!("{class}: {desc}")),
                });
            }
            return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Sends a first part of `bytes` with `fd` attached; returns how many bytes went.
    async fn send_fd(&mut self, bytes: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<usize> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let stream = self.writer.as_ref();
        loop {
            stream.writable().await?;
            let raw = stream.as_raw_fd();
            let fds = [fd.as_raw_fd()];
            let attempt = stream.try_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(
                    raw,
                    &[std::io::IoSlice::new(bytes)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match attempt {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits up to `within` for event `name` whose `data` satisfies `matches`; other events are kept.
    pub async fn wait_event(
        &mut self,
        name: &str,
        matches: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Result<Value, VmmError> {
        let wanted = |ev: &Value| {
            ev.get("event").and_then(Value::as_str) == Some(name)
                && matches(ev.get("data").unwrap_or(&Value::Null))
        };
        if let Some(i) = self.events.iter().position(wanted) {
            return Ok(self.events.remove(i).expect("index from position"));
        }
        let wait = async {
            loop {
                let msg = self.read_message(name).await?;
                if wanted(&msg) {
                    return Ok(msg);
                }
                if msg.get("event").is_some() {
                    self.events.push_back(msg);
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| VmmError::Timeout {
                what: format!("QMP event {name}"),
                ms: within.as_millis() as u64,
            })?
    }

    /// The next asynchronous event (`{"event": ..., "data": ..., "timestamp": ...}`).
    #[allow(dead_code)] // kept for callers that watch events (e.g. snapshot progress)
    pub async fn next_event(&mut self) -> Result<Value, VmmError> {
        if let Some(ev) = self.events.pop_front() {
            return Ok(ev);
        }
        loop {
            let msg = self.read_message("QMP event").await?;
            if msg.get("event").is_some() {
                return Ok(msg);
            }
        }
    }

    async fn read_message(&mut self, waiting_for: &str) -> Result<Value, VmmError> {
        loop {
            let line = tokio::time::timeout(IO_TIMEOUT, self.lines.next_line())
                .await
                .map_err(|_| timeout(&format!("QMP reply to {waiting_for}")))?
                .map_err(|e| VmmError::io("read from QMP socket for", waiting_for, e))?;
            let Some(line) = line else {
                return Err(VmmError::io(
                    "QMP socket closed while waiting for",
                    waiting_for,
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|e| {
                protocol(format!(
                    "unparsable QMP message: {e}: {}",
                    truncate(line.into())
                ))
            })?;
            let dir = if value.get("event").is_some() {
                "event"
            } else {
                "<-"
            };
            self.transcript.record(dir, line);
            return Ok(value);
        }
    }
}

fn timeout(what: &str) -> VmmError {
    VmmError::Timeout {
        what: what.to_string(),
        ms: IO_TIMEOUT.as_millis() as u64,
    }
}

fn protocol(message: String) -> VmmError {
    VmmError::Rejected {
        command: "QMP".into(),
        message,
    }
}

fn truncate(s: String) -> String {
    crate::fsutil::ellipsize(s, MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    /// A fake QEMU: greeting, then answers each command from a script.
    async fn fake_qemu(listener: UnixListener) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(
            b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, \"capabilities\": []}}\r\n",
        )
        .await
        .unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            let msg: Value = serde_json::from_str(&line).unwrap();
            let id = msg["id"].clone();
            let reply = match msg["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}, "id": id}),
                "stop" => {
                    let ev =
                        json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}});
                    w.write_all(format!("{ev}\r\n").as_bytes()).await.unwrap();
                    json!({"return": {}, "id": id})
                }
                "query-status" => {
                    json!({"return": {"status": "paused", "running": false}, "id": id})
                }
                other => json!({"error": {"class": "CommandNotFound",
                                          "desc": format!("The command {other} has not been found")},
                                "id": id}),
            };
            w.write_all(format!("{reply}\r\n").as_bytes())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn client_negotiates_executes_and_keeps_events() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let log = dir.path().join("vmm.log");
        let server = tokio::spawn(fake_qemu(UnixListener::bind(&sock).unwrap()));

        let mut qmp = Qmp::connect(&sock, Transcript::new(log.clone()))
            .await
            .unwrap();
        qmp.execute("stop", None).await.unwrap();
        let status = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(status["status"], "paused");
        match qmp.execute("bogus", Some(json!({"x": 1}))).await {
            Err(VmmError::Rejected { command, message }) => {
                assert_eq!(command, "bogus");
                assert!(message.starts_with("CommandNotFound: "), "{message}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(qmp.next_event().await.unwrap()["event"], "STOP");
        drop(qmp);
        server.await.unwrap();

        let mut text = String::new();
        tokio::fs::File::open(&log)
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // greeting, caps ->/<-, stop ->, event, <-, query-status ->/<-, bogus ->/<-
        assert_eq!(lines.len(), 10, "{text}");
        assert!(
            lines[1].contains(" -> {") && lines[1].contains("\"qmp_capabilities\""),
            "{text}"
        );
        assert!(lines[4].contains(" event {"), "{text}");
        assert!(lines[8].contains("\"arguments\":{\"x\":1}"), "{text}");
        assert!(
            lines
                .iter()
                .all(|l| l.len() > 24 && l.as_bytes()[23] == b'Z'),
            "{text}"
        );
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Qmp::connect(
            &dir.path().join("none.sock"),
            Transcript::new(dir.path().join("l")),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, VmmError::Io { .. }), "{err:?}");
    }
}
