//! `/processes` and `/processes/{id}[/output|/stdin|/signal|/wait]` (`rds_protocol::process`).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rds_protocol::process::{
    signal_number, valid_id, SignalRequest, StartRequest, StdinRequest, MAX_RUNNING,
    MAX_STDIN_BYTES,
};
use rds_protocol::stream::ErrorEvent;

use super::exec::{open_cwd, validate_env};
use crate::error::ApiError;
use crate::http::{self, Body, ChannelBody};
use crate::processes::{Entry, StartError};
use crate::sandbox::{self, Launch, Streams};
use crate::state::AppState;

/// Longest `/wait` honoured in one call.
const MAX_WAIT: Duration = Duration::from_secs(600);

pub async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let rest = path
        .strip_prefix(rds_protocol::paths::PROCESSES)
        .unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let method = req.method().clone();
    match (parts.as_slice(), method) {
        ([], Method::POST) => start(state, req).await,
        ([], Method::GET) => Ok(http::json(StatusCode::OK, &state.processes.list())),
        ([], _) => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
        ([id], Method::GET) => Ok(http::json(StatusCode::OK, &entry(state, id)?.info())),
        ([id, "output"], Method::GET) => output(entry(state, id)?, req).await,
        ([id, "stdin"], Method::POST) => stdin(entry(state, id)?, req).await,
        ([id, "signal"], Method::POST) => signal(entry(state, id)?, req).await,
        ([id, "wait"], Method::POST) => wait(entry(state, id)?, req).await,
        ([_], _) => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        ([_, "output"], _) => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        ([_, "stdin" | "signal" | "wait"], _) => Err(ApiError::MethodNotAllowed { allow: "POST" }),
        _ => Err(ApiError::NotFound),
    }
}

fn entry(state: &AppState, id: &str) -> Result<Arc<Entry>, ApiError> {
    state
        .processes
        .get(id)
        .ok_or_else(|| ApiError::refused(StatusCode::NOT_FOUND, format!("Process {id} not found")))
}

fn start_error(e: StartError, id: &str) -> ApiError {
    match e {
        StartError::TooMany => ApiError::refused(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many processes (at most {MAX_RUNNING} running)"),
        ),
        StartError::Duplicate => {
            ApiError::refused(StatusCode::CONFLICT, format!("Process {id} exists"))
        }
    }
}

async fn start(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: StartRequest = http::read_json(req).await?;
    if !valid_id(&body.id) {
        return Err(ApiError::bad_request("id must be 1-64 of [A-Za-z0-9-]"));
    }
    if body.cmd.is_empty() || body.cmd.contains('\0') {
        return Err(ApiError::bad_request(
            "cmd must be a non-empty string without NUL",
        ));
    }
    let env = validate_env(&body.env)?;
    let timeout = match body.timeout_ms {
        Some(0) => return Err(ApiError::bad_request("timeoutMs must be an integer >= 1")),
        t => t.map(Duration::from_millis),
    };
    let cwd = open_cwd(
        state,
        body.cwd.as_deref().unwrap_or(rds_protocol::WORKSPACE),
    )?;
    state
        .processes
        .admit(&body.id)
        .map_err(|e| start_error(e, &body.id))?;
    let cgroup = state.cgroups.as_ref().and_then(|c| c.create().ok());
    let procs = cgroup.as_ref().map(|c| c.procs_file());
    let shell = &state.shell;
    let args = [shell.command_flag(), body.cmd.as_str()];
    let launch = Launch::shell(state, &args, &env, &cwd, procs.as_deref());
    let child = match sandbox::command_with(&launch, Streams::Piped).and_then(|mut c| c.spawn()) {
        Ok(c) => c,
        Err(e) => {
            if let (Some(s), Some(cg)) = (&state.cgroups, cgroup) {
                s.release(cg);
            }
            return Err(ApiError::internal("cannot start the process", e));
        }
    };
    let entry = state
        .processes
        .insert(
            body.id.clone(),
            body.cmd,
            child,
            timeout,
            cgroup,
            state.clone(),
        )
        .map_err(|e| start_error(e, &body.id))?;
    Ok(http::json(StatusCode::CREATED, &entry.info()))
}

fn offset(req: &Request<Incoming>) -> Result<(u64, bool), ApiError> {
    let q = http::query(req)?;
    let offset = match q.get("offset") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("offset must be a non-negative integer"))?,
    };
    let follow = matches!(q.get("follow").map(String::as_str), Some("true" | "1"));
    Ok((offset, follow))
}

async fn output(entry: Arc<Entry>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (from, follow) = offset(&req)?;
    let past = |total: u64| {
        ApiError::bad_request(format!(
            "offset {from} is past the output ({total} bytes so far)"
        ))
    };
    let first = entry
        .output(from)
        .ok_or_else(|| past(entry.info().output_bytes))?;
    if !follow {
        return Ok(http::json(StatusCode::OK, &first));
    }
    let (body, tx) = ChannelBody::new(crate::stream::DEPTH);
    let sink = crate::stream::Sink::new(tx);
    tokio::spawn(async move {
        let mut changes = entry.subscribe();
        let mut at = from;
        let mut reply = first;
        loop {
            if reply.dropped_bytes > 0
                && !sink
                    .line(&serde_json::json!({"type": "dropped", "bytes": reply.dropped_bytes}))
                    .await
            {
                return;
            }
            for c in &reply.chunks {
                let line =
                    serde_json::json!({"type": c.stream, "offset": c.offset, "data": c.data});
                if !sink.line(&line).await {
                    return;
                }
            }
            at = reply.next_offset.max(at);
            let p = &reply.process;
            if p.exit_code.is_some() && at >= p.output_bytes {
                let exit = serde_json::json!({
                    "type": "exit", "exitCode": p.exit_code, "timedOut": p.timed_out,
                    "stdoutTruncated": false, "stderrTruncated": false,
                    "durationMs": p.ended_at_ms.unwrap_or(p.started_at_ms).saturating_sub(p.started_at_ms),
                    "nextOffset": at,
                });
                sink.line(&exit).await;
                return;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = sink.gone() => return,
            }
            reply = match entry.output(at) {
                Some(r) => r,
                None => {
                    let e = ErrorEvent {
                        kind: "error".into(),
                        message: "output offset lost".into(),
                    };
                    sink.line(&e).await;
                    return;
                }
            };
        }
    });
    Ok(http::ndjson(body))
}

async fn stdin(entry: Arc<Entry>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let id = entry.info().id;
    let body: StdinRequest = http::read_json(req).await?;
    if body.data.len() > MAX_STDIN_BYTES {
        return Err(ApiError::BodyTooLarge);
    }
    let closed = || {
        ApiError::refused(
            StatusCode::CONFLICT,
            format!("stdin of process {id} is closed"),
        )
    };
    if entry.ended() {
        return Err(ApiError::refused(
            StatusCode::CONFLICT,
            format!("Process {id} has exited"),
        ));
    }
    match entry.write_stdin(body.data.as_bytes(), body.eof).await {
        Ok(true) => Ok(http::no_content()),
        Ok(false) | Err(_) => Err(closed()),
    }
}

async fn signal(entry: Arc<Entry>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: SignalRequest = http::read_json(req).await?;
    let n = signal_number(&body.signal).ok_or_else(|| {
        ApiError::bad_request(format!(
            "signal must be one of {}",
            rds_protocol::process::SIGNALS.join(", ")
        ))
    })?;
    if entry.ended() {
        return Err(ApiError::refused(
            StatusCode::CONFLICT,
            format!("Process {} has exited", entry.info().id),
        ));
    }
    entry.signal(n);
    Ok(http::no_content())
}

async fn wait(entry: Arc<Entry>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let q = http::query(&req)?;
    let limit = match q.get("timeoutMs") {
        None => MAX_WAIT,
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms >= 1 => Duration::from_millis(ms).min(MAX_WAIT),
            _ => return Err(ApiError::bad_request("timeoutMs must be an integer >= 1")),
        },
    };
    let mut changes = entry.subscribe();
    let _ = tokio::time::timeout(limit, async {
        while !entry.ended() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    Ok(http::json(StatusCode::OK, &entry.info()))
}
