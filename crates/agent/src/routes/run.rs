//! `POST /run-ts` (Deno) and `POST /run-js` (Node) (`docs/reference/agent-protocol.md` §6):
//! validate, write the snippet, wrapper and result files (owned by the sandbox user), run the
//! runtime through the exec runner, read the recorded result, and remove the files whatever
//! happened.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rds_protocol::{
    is_valid_env_key, messages, RunRequest, RunResult, FORBIDDEN_DENO_FLAGS, FORBIDDEN_NODE_FLAGS,
    MAX_RUN_ARGS, MAX_RUN_ENV, MAX_RUN_FLAGS, MAX_RUN_FLAG_CHARS, RESULT_CAP_BYTES, SANDBOX_PATH,
    SANDBOX_UID,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::http::{self, Body, ChannelBody};
use crate::output;
use crate::paths::{self, OpenError, PathError, Resolver};
use crate::runner;
use crate::sandbox::Launch;
use crate::state::AppState;
use crate::stream::{self, Sink};
use crate::wrapper;
use rds_protocol::stream::ExitEvent;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Deno,
    Node,
}

impl Runtime {
    fn program(self) -> &'static str {
        match self {
            Runtime::Deno => "deno",
            Runtime::Node => "node",
        }
    }
    fn missing(self) -> &'static str {
        match self {
            Runtime::Deno => messages::DENO_MISSING,
            Runtime::Node => messages::NODE_MISSING,
        }
    }
    fn flags_field(self) -> &'static str {
        match self {
            Runtime::Deno => "denoFlags",
            Runtime::Node => "nodeFlags",
        }
    }
    fn forbidden(self) -> &'static [&'static str] {
        match self {
            Runtime::Deno => FORBIDDEN_DENO_FLAGS,
            Runtime::Node => FORBIDDEN_NODE_FLAGS,
        }
    }
    /// `(snippet, wrapper, result)` file names for one call.
    fn file_names(self, id: &str) -> [String; 3] {
        match self {
            Runtime::Deno => [
                format!(".run-ts-snippet-{id}.ts"),
                format!(".run-ts-wrapper-{id}.ts"),
                format!(".run-ts-result-{id}.json"),
            ],
            Runtime::Node => [
                format!(".run-js-snippet-{id}.js"),
                format!(".run-js-wrapper-{id}.cjs"),
                format!(".run-js-result-{id}.json"),
            ],
        }
    }
}

/// Where a runtime is installed: the first executable file named `program` on the sandbox `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    SANDBOX_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `KEY=value` entries → pairs; 400 `env entry <i> must be KEY=value with a valid KEY`.
fn validate_env(env: &[String]) -> Result<Vec<(String, String)>, ApiError> {
    if env.len() > MAX_RUN_ENV {
        return Err(ApiError::bad_request(format!(
            "env has more than {MAX_RUN_ENV} entries"
        )));
    }
    env.iter()
        .enumerate()
        .map(|(i, entry)| match entry.split_once('=') {
            Some((k, v)) if is_valid_env_key(k) && !v.contains('\0') => {
                Ok((k.to_string(), v.to_string()))
            }
            _ => Err(ApiError::bad_request(format!(
                "env entry {i} must be KEY=value with a valid KEY"
            ))),
        })
        .collect()
}

fn validate_flags(runtime: Runtime, flags: &[String]) -> Result<(), ApiError> {
    let field = runtime.flags_field();
    if flags.len() > MAX_RUN_FLAGS {
        return Err(ApiError::bad_request(format!(
            "{field} has more than {MAX_RUN_FLAGS} entries"
        )));
    }
    for f in flags {
        if !f.starts_with('-') {
            return Err(ApiError::bad_request(format!(
                "{field} entry '{f}' must start with '-'"
            )));
        }
        if f.chars().count() > MAX_RUN_FLAG_CHARS || f.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "{field} entry must be at most {MAX_RUN_FLAG_CHARS} characters without NUL"
            )));
        }
        let name = f.split_once('=').map_or(f.as_str(), |(n, _)| n);
        let combined_eval = runtime == Runtime::Node && (name == "-pe" || name == "-ep");
        if runtime.forbidden().contains(&name) || combined_eval {
            return Err(ApiError::bad_request(format!(
                "{field} entry '{f}' is not allowed"
            )));
        }
    }
    Ok(())
}

fn validate_args(args: &[String]) -> Result<(), ApiError> {
    if args.len() > MAX_RUN_ARGS {
        return Err(ApiError::bad_request(format!(
            "args has more than {MAX_RUN_ARGS} entries"
        )));
    }
    if let Some(i) = args.iter().position(|a| a.contains('\0')) {
        return Err(ApiError::bad_request(format!(
            "args entry {i} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Deno's permission flags, in the spec's order. `workspace` is the real directory behind `/workspace`.
fn deno_permissions(workspace: &str, env_keys: &[&str], allow_net: bool) -> Vec<String> {
    let mut flags = vec![
        format!("--allow-read={workspace},/tmp,/var/tmp,/etc/resolv.conf,/etc/hosts,/etc/nsswitch.conf,/etc/ssl/certs"),
        format!("--allow-write={workspace},/tmp,/var/tmp"),
    ];
    if env_keys.is_empty() {
        flags.push("--allow-env".into());
    } else {
        let mut keys: Vec<&str> = Vec::new();
        for k in env_keys {
            if !keys.contains(k) {
                keys.push(k);
            }
        }
        flags.push(format!("--allow-env={}", keys.join(",")));
    }
    if allow_net {
        flags.push("--allow-net".into());
    }
    flags
}

/// The call's files in the workspace root; removed on drop, whatever happened.
struct CallFiles {
    root: OwnedFd,
    names: Vec<CString>,
}

impl CallFiles {
    /// Creates `name` (exclusively, never through a symlink) with `content`, owned by the sandbox user.
    fn create(&mut self, name: &str, content: &[u8]) -> io::Result<()> {
        let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: valid descriptor and C string.
        let fd = unsafe { libc::openat(self.root.as_raw_fd(), c.as_ptr(), flags, 0o644) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.names.push(c);
        // SAFETY: a descriptor the kernel just returned.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: valid descriptor.
        if unsafe { libc::fchown(file.as_raw_fd(), SANDBOX_UID, SANDBOX_UID) } != 0 {
            return Err(io::Error::last_os_error());
        }
        file.write_all(content)
    }

    /// The result file's text, if it is still a plain file of the sandbox user's: `Err(())` when over the
    /// cap, `Ok(None)` when missing or unusable.
    fn read_result(&self, name: &str) -> Result<Option<Vec<u8>>, ()> {
        let Ok(c) = CString::new(name) else {
            return Ok(None);
        };
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: valid descriptor and C string.
        let fd = unsafe { libc::openat(self.root.as_raw_fd(), c.as_ptr(), flags) };
        if fd < 0 {
            return Ok(None);
        }
        // SAFETY: a descriptor the kernel just returned.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        match paths::stat_fd(&fd) {
            // A hard link to someone else's file, or anything but a regular file, is not a result.
            Ok(st)
                if st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && st.st_uid == SANDBOX_UID
                    && st.st_nlink == 1 => {}
            _ => return Ok(None),
        }
        let mut text = Vec::new();
        let read = std::fs::File::from(fd)
            .take(RESULT_CAP_BYTES + 1)
            .read_to_end(&mut text);
        match read {
            Ok(_) if text.len() as u64 > RESULT_CAP_BYTES => Err(()),
            Ok(_) => Ok(Some(text)),
            Err(_) => Ok(None),
        }
    }
}

impl Drop for CallFiles {
    fn drop(&mut self) {
        for name in &self.names {
            // SAFETY: valid descriptor and C string; unlinking a name never follows it.
            unsafe { libc::unlinkat(self.root.as_raw_fd(), name.as_ptr(), 0) };
        }
    }
}

/// What the wrapper recorded.
#[derive(Deserialize)]
struct Recorded {
    #[serde(rename = "hasResult")]
    has_result: bool,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Box<RawValue>>,
}

fn too_large_error() -> Box<RawValue> {
    RawValue::from_string(format!(
        r#"{{"name":"ResultTooLarge","message":"result exceeds {RESULT_CAP_BYTES} bytes"}}"#
    ))
    .expect("valid JSON")
}

/// `(result, error)` from the result file's content.
fn parse_recorded(
    read: Result<Option<Vec<u8>>, ()>,
) -> (Option<Box<RawValue>>, Option<Box<RawValue>>) {
    let text = match read {
        Err(()) => return (None, Some(too_large_error())),
        Ok(None) => return (None, None),
        Ok(Some(t)) => t,
    };
    match serde_json::from_slice::<Recorded>(&text) {
        Ok(r) => {
            let result = r.has_result.then(|| {
                r.result
                    .unwrap_or_else(|| RawValue::from_string("null".into()).expect("valid JSON"))
            });
            (result, r.error)
        }
        Err(_) => (None, None),
    }
}

fn path_error(e: PathError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

pub async fn post(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    runtime: Runtime,
) -> Result<Response<Body>, ApiError> {
    let slot = state
        .exec_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyExecs)?;
    let budget = http::max_response_bytes(req.headers());
    let streamed = http::wants_ndjson(req.headers());
    let body: RunRequest = http::read_json(req).await?;

    let source = match (&body.code, &body.path) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request(messages::CODE_AND_PATH_EXCLUSIVE)),
        (None, None) => return Err(ApiError::bad_request(messages::CODE_OR_PATH_REQUIRED)),
        (Some(code), None) => Ok(code.as_str()),
        (None, Some(path)) => Err(path.as_str()),
    };
    let env = validate_env(&body.env)?;
    let flags = match runtime {
        Runtime::Deno => &body.deno_flags,
        Runtime::Node => &body.node_flags,
    };
    validate_flags(runtime, flags)?;
    validate_args(&body.args)?;
    let timeout = super::exec::validate_timeout(body.timeout_ms)?;
    let program =
        find_on_path(runtime.program()).ok_or_else(|| ApiError::bad_request(runtime.missing()))?;

    let workspace = &state.settings.workspace;
    let ws_bytes = workspace.as_os_str().as_bytes();
    // The target module's absolute path and the directory the runtime starts in.
    let id = uuid::Uuid::new_v4().to_string();
    let [snippet, wrapper_name, result_name] = runtime.file_names(&id);
    let (target, cwd) = match source {
        Ok(_) => {
            let cwd = paths::open_dir(
                workspace,
                &paths::normalize("").map_err(path_error)?,
                Resolver::Auto,
            )
            .map_err(|e| open_error(e, "/workspace"))?;
            (workspace.join(&snippet), cwd)
        }
        Err(text) => {
            let path = paths::normalize(text).map_err(path_error)?;
            let not_found = || ApiError::bad_request(format!("path not found: {text}"));
            let fd = paths::open_any(workspace, &path, Resolver::Auto).map_err(|e| match e {
                OpenError::NotADirectory => not_found(),
                e => open_error(e, text),
            })?;
            let st = paths::stat_fd(&fd).map_err(|e| ApiError::internal("cannot stat path", e))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(not_found());
            }
            let parent = path.parent().unwrap_or(path.clone());
            let cwd = paths::open_dir(workspace, &parent, Resolver::Auto)
                .map_err(|e| open_error(e, text))?;
            (workspace.join(path.relative()), cwd)
        }
    };

    let root = std::fs::File::open(workspace)
        .map_err(|e| ApiError::internal("cannot open the workspace", e))?;
    let mut files = CallFiles {
        root: OwnedFd::from(root),
        names: Vec::new(),
    };
    let result_path = workspace.join(&result_name);
    let wrapper_path = workspace.join(&wrapper_name);
    let url = wrapper::file_url(target.as_os_str().as_bytes());
    let wrapper_text = match runtime {
        Runtime::Deno => wrapper::deno(&result_path.to_string_lossy(), &url),
        Runtime::Node => wrapper::node(&result_path.to_string_lossy(), &url),
    };
    let written = (|| {
        if let Ok(code) = source {
            files.create(&snippet, code.as_bytes())?;
        }
        files.create(&result_name, b"")?;
        files.create(&wrapper_name, wrapper_text.as_bytes())
    })();
    written.map_err(|e| ApiError::internal("cannot write the run files", e))?;

    let ws_text = String::from_utf8_lossy(ws_bytes).into_owned();
    let mut args: Vec<String> = Vec::new();
    let mut launch_env: Vec<(String, String)> = vec![
        ("NO_COLOR".into(), "1".into()),
        ("TERM".into(), "dumb".into()),
    ];
    match runtime {
        Runtime::Deno => {
            launch_env.push(("DENO_DIR".into(), format!("{ws_text}/.deno")));
            launch_env.push(("DENO_NO_UPDATE_CHECK".into(), "1".into()));
            args.extend(["run".into(), "--quiet".into(), "--no-prompt".into()]);
            let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
            args.extend(deno_permissions(&ws_text, &keys, body.allow_net));
        }
        Runtime::Node => {}
    }
    args.extend(flags.iter().cloned());
    args.push(wrapper_path.to_string_lossy().into_owned());
    args.extend(body.args.iter().cloned());
    launch_env.extend(env.iter().cloned());

    let state = state.clone();
    let (stream_body, mut sink) = if streamed {
        let (b, tx) = ChannelBody::new(stream::DEPTH);
        (Some(b), Some(Sink::new(tx)))
    } else {
        (None, None)
    };
    // Everything the call needs is owned here: a streamed call runs on after the handler returned.
    let work = async move {
        let _slot = slot;
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let cgroup = state.cgroups.as_ref().and_then(|c| match c.create() {
            Ok(cg) => Some(cg),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "running without a call cgroup");
                None
            }
        });
        let procs = cgroup.as_ref().map(|c| c.procs_file());
        let launch = Launch {
            program: &program,
            args: &arg_refs,
            env: &launch_env,
            shell: &state.shell.path,
            cwd: &cwd,
            identity: state.settings.identity,
            cgroup_procs: procs.as_deref(),
        };
        let outcome = runner::run(&launch, timeout, cgroup.as_ref(), sink.as_mut()).await;
        if let (Some(sandboxes), Some(cg)) = (&state.cgroups, cgroup) {
            sandboxes.release(cg);
        }
        let (result, error) = parse_recorded(files.read_result(&result_name));
        drop(files);
        if let Some(sink) = &sink {
            let r = &outcome.result;
            sink.line(&ExitEvent {
                kind: "exit".into(),
                exit_code: r.exit_code,
                result: result.as_deref(),
                error: error.as_deref(),
                stdout_truncated: r.stdout_truncated,
                stderr_truncated: r.stderr_truncated,
                timed_out: r.timed_out,
                duration_ms: r.duration_ms,
            })
            .await;
        }
        (outcome, result, error)
    };
    if let Some(body) = stream_body {
        tokio::spawn(work);
        return Ok(http::ndjson(body));
    }
    let (outcome, result, error) = work.await;

    let mut exec = outcome.result;
    if let Some(budget) = budget {
        // `,"result":` and `,"error":` plus the values travel untouched; the output gives way.
        let extra = result.as_ref().map_or(0, |r| r.get().len() + 10)
            + error.as_ref().map_or(0, |e| e.get().len() + 9);
        output::fit_to_budget(
            &mut exec,
            budget.saturating_sub(extra),
            outcome.stderr_note_len,
        );
    }
    let reply = RunResult {
        exit_code: exec.exit_code,
        stdout: exec.stdout,
        stderr: exec.stderr,
        result,
        error,
        stdout_truncated: exec.stdout_truncated,
        stderr_truncated: exec.stderr_truncated,
        timed_out: exec.timed_out,
        duration_ms: exec.duration_ms,
    };
    Ok(http::json(StatusCode::OK, &reply))
}

fn open_error(e: OpenError, shown: &str) -> ApiError {
    match e {
        OpenError::Escapes => ApiError::bad_request(e.to_string()),
        OpenError::NotADirectory => ApiError::bad_request(format!("path not found: {shown}")),
        OpenError::Root { source, .. } | OpenError::Io(source) => {
            ApiError::internal("cannot resolve path", source)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: ApiError) -> String {
        e.body().message
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_entries() {
        let ok = validate_env(&strings(&["A=1", "B=x=y", "_C="])).unwrap();
        assert_eq!(ok[1], ("B".into(), "x=y".into()));
        assert_eq!(
            message(validate_env(&strings(&["A=1", "1A=2"])).unwrap_err()),
            "env entry 1 must be KEY=value with a valid KEY"
        );
        assert!(validate_env(&strings(&["NOEQUALS"])).is_err());
        assert!(validate_env(&strings(&["=x"])).is_err());
        assert!(validate_env(&strings(&["A=\0"])).is_err());
        assert!(validate_env(&vec!["A=1".to_string(); 257]).is_err());
    }

    #[test]
    fn flags() {
        assert!(validate_flags(
            Runtime::Node,
            &strings(&["--max-old-space-size=64", "-r", "x"])
        )
        .is_err());
        assert_eq!(
            message(validate_flags(Runtime::Node, &strings(&["x"])).unwrap_err()),
            "nodeFlags entry 'x' must start with '-'"
        );
        for bad in [
            "-e",
            "--eval",
            "--eval=1",
            "-p",
            "--print",
            "-c",
            "--check",
            "-i",
            "--interactive",
            "--test",
            "-pe",
        ] {
            assert_eq!(
                message(validate_flags(Runtime::Node, &strings(&[bad])).unwrap_err()),
                format!("nodeFlags entry '{bad}' is not allowed")
            );
        }
        assert!(validate_flags(
            Runtime::Node,
            &strings(&["--test-reporter=spec", "--enable-source-maps"])
        )
        .is_ok());
        assert_eq!(
            message(validate_flags(Runtime::Deno, &strings(&["-A"])).unwrap_err()),
            "denoFlags entry '-A' is not allowed"
        );
        assert!(validate_flags(Runtime::Deno, &strings(&["--allow-run=ls"])).is_err());
        assert!(validate_flags(
            Runtime::Deno,
            &strings(&["--allow-read=/etc", "--unstable-kv"])
        )
        .is_ok());
        assert!(validate_flags(Runtime::Deno, &vec!["-q".to_string(); 65]).is_err());
        assert!(validate_flags(Runtime::Deno, &[format!("-{}", "x".repeat(256))]).is_err());
        assert!(validate_args(&vec![String::new(); 257]).is_err());
        assert!(validate_args(&strings(&["a\0"])).is_err());
    }

    #[test]
    fn deno_permission_order() {
        assert_eq!(
            deno_permissions("/workspace", &[], false),
            [
                "--allow-read=/workspace,/tmp,/var/tmp,/etc/resolv.conf,/etc/hosts,/etc/nsswitch.conf,/etc/ssl/certs",
                "--allow-write=/workspace,/tmp,/var/tmp",
                "--allow-env",
            ]
        );
        let p = deno_permissions("/workspace", &["A", "B", "A"], true);
        assert_eq!(p[2], "--allow-env=A,B");
        assert_eq!(p[3], "--allow-net");
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn recorded_results() {
        let (r, e) = parse_recorded(Ok(Some(
            br#"{"hasResult":true,"result":12345678901234567890,"error":null}"#.to_vec(),
        )));
        assert_eq!(r.unwrap().get(), "12345678901234567890");
        assert!(e.is_none());
        let (r, e) = parse_recorded(Ok(Some(
            br#"{"hasResult":true,"result":null,"error":{"name":"E","message":"m"}}"#.to_vec(),
        )));
        assert_eq!(r.unwrap().get(), "null");
        assert_eq!(e.unwrap().get(), r#"{"name":"E","message":"m"}"#);
        let (r, e) = parse_recorded(Ok(Some(
            br#"{"hasResult":false,"result":null,"error":null}"#.to_vec(),
        )));
        assert!(r.is_none() && e.is_none());
        let (r, e) = parse_recorded(Ok(Some(b"garbage".to_vec())));
        assert!(r.is_none() && e.is_none());
        let (r, e) = parse_recorded(Err(()));
        assert!(r.is_none());
        assert_eq!(
            e.unwrap().get(),
            r#"{"name":"ResultTooLarge","message":"result exceeds 1000000 bytes"}"#
        );
        assert_eq!(
            parse_recorded(Ok(None)).0.map(|r| r.get().to_string()),
            None
        );
    }

    #[test]
    fn file_names_follow_the_spec() {
        assert_eq!(
            Runtime::Deno.file_names("u"),
            [
                ".run-ts-snippet-u.ts",
                ".run-ts-wrapper-u.ts",
                ".run-ts-result-u.json"
            ]
        );
        assert_eq!(
            Runtime::Node.file_names("u"),
            [
                ".run-js-snippet-u.js",
                ".run-js-wrapper-u.cjs",
                ".run-js-result-u.json"
            ]
        );
    }
}
