//! Starts the agent binary on a Unix socket with a temporary workspace owned by uid 1000, and speaks
//! plain HTTP/1.1 to it (one request per connection, as the manager does).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Agent {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub workspace: PathBuf,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// False (after `SKIP <test>: …`) when not root, which tests that drop to uid 1000 need; under
/// `RDS_REQUIRE_E2E=1` (CI) a missing root fails the test instead, like every other prerequisite.
pub fn root_or_skip(test: &str) -> bool {
    is_root() || !rds_testkit::skip(test, "needs root to drop to uid 1000")
}

/// Polls `f` until it returns `Some`, or panics after `deadline`.
pub fn wait_until<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Agent {
    pub fn start(name: &str) -> Agent {
        Agent::start_in(name, &[])
    }

    /// Starts the agent behind `wrapper` (e.g. `unshare -n -u --`), which must exec it in place.
    pub fn start_in(name: &str, wrapper: &[&str]) -> Agent {
        let dir = std::env::temp_dir().join(format!("rds-agent-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let workspace = dir.join("ws");
        std::fs::create_dir_all(&workspace).unwrap();
        std::os::unix::fs::chown(&workspace, Some(1000), Some(1000)).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let socket = dir.join("agent.sock");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let bin = env!("CARGO_BIN_EXE_rds-agent");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .env("RDS_AGENT_RUN_DIR", dir.join("run"))
            .env("RDS_AGENT_ETC", dir.join("etc"))
            .env("RDS_AGENT_LISTEN", format!("unix:{}", socket.display()))
            .env("RDS_AGENT_WORKSPACE", &workspace)
            .env("RDS_AGENT_CGROUP", "off")
            .env("RDS_AGENT_TEST_SECRET", "agent-only-value")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(10), "agent socket", || {
            UnixStream::connect(&socket).ok()
        });
        Agent {
            child,
            dir,
            socket,
            workspace,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request(&self.socket, method, path, headers, body)
    }

    pub fn exec(&self, body: serde_json::Value) -> Reply {
        self.request("POST", "/exec", &[], body.to_string().as_bytes())
    }

    /// `POST /exec` that must succeed; returns the exec result.
    pub fn exec_ok(&self, body: serde_json::Value) -> serde_json::Value {
        let reply = self.exec(body);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = UnixStream::connect(socket).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The agent may answer (413) before reading everything; a refused write is fine then.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    let reply = Reply {
        status,
        headers,
        body,
    };
    if let Some(len) = reply.header("content-length") {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            reply.body.len(),
            "content-length mismatch"
        );
    }
    reply
}

/// Decodes a chunked body; panics on a malformed or unterminated one (a cut-off stream).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n");
        raw = &raw[size + 2..];
    }
}

/// Processes whose command line (argv joined by spaces) starts with `prefix`.
pub fn processes_with(prefix: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.starts_with(prefix) {
            found.push(pid);
        }
    }
    found
}
