//! `POST /exec`: validate the request, run the command in the sandbox, shape the reply
//! (`docs/reference/agent-protocol.md` §5).

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rds_protocol::{is_valid_env_key, ExecRequest, DEFAULT_TIMEOUT_MS, WORKSPACE};

use crate::error::ApiError;
use crate::http::{self, Body, ChannelBody};
use crate::output;
use crate::paths::{self, OpenError, PathError, Resolver};
use crate::runner;
use crate::sandbox::Launch;
use crate::state::AppState;
use crate::stream::{self, Sink};
use rds_protocol::stream::ExitEvent;
use std::sync::Arc;

pub async fn post(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let slot = state
        .exec_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyExecs)?;
    let budget = http::max_response_bytes(req.headers());
    let streamed = http::wants_ndjson(req.headers());
    let body: ExecRequest = http::read_json(req).await?;

    let env = validate_env(&body.env)?;
    let timeout = validate_timeout(body.timeout_ms)?;
    if body.cmd.contains('\0') {
        return Err(ApiError::bad_request("cmd contains a NUL byte"));
    }
    let cwd_text = body.cwd.as_deref().unwrap_or(WORKSPACE);
    let cwd = open_cwd(state, cwd_text)?;

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
        let started = std::time::Instant::now();
        // A warm shell when the call is one it can stand in for (module docs of `warm`).
        let warm = if env.is_empty() {
            state.warm.take(&state)
        } else {
            None
        };
        if let Some(w) = warm {
            match w.start(&cwd, &body.cmd) {
                Ok((child, cgroup)) => {
                    let outcome = runner::run_spawned(
                        Ok(child),
                        started,
                        timeout,
                        cgroup.as_ref(),
                        sink.as_mut(),
                    )
                    .await;
                    if let (Some(sandboxes), Some(cg)) = (&state.cgroups, cgroup) {
                        sandboxes.release(cg);
                    }
                    finish(sink.as_ref(), &outcome).await;
                    state.warm.refill(&state);
                    return outcome;
                }
                Err(e) => tracing::warn!(error = %e, "a warm shell refused its job; starting cold"),
            }
        }
        let cgroup = state.cgroups.as_ref().and_then(|c| match c.create() {
            Ok(cg) => Some(cg),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "running without a call cgroup");
                None
            }
        });
        let procs = cgroup.as_ref().map(|c| c.procs_file());
        let shell = &state.shell;
        let args = [shell.command_flag(), body.cmd.as_str()];
        let launch = Launch::shell(&state, &args, &env, &cwd, procs.as_deref());
        let outcome = runner::run(&launch, timeout, cgroup.as_ref(), sink.as_mut()).await;
        if let (Some(sandboxes), Some(cg)) = (&state.cgroups, cgroup) {
            sandboxes.release(cg);
        }
        finish(sink.as_ref(), &outcome).await;
        if env.is_empty() {
            state.warm.refill(&state);
        }
        outcome
    };
    if let Some(body) = stream_body {
        tokio::spawn(work);
        return Ok(http::ndjson(body));
    }
    let outcome = work.await;
    let mut result = outcome.result;
    if let Some(budget) = budget {
        output::fit_to_budget(&mut result, budget, outcome.stderr_note_len);
    }
    Ok(http::json(StatusCode::OK, &result))
}

/// The last line of a streamed call.
async fn finish(sink: Option<&Sink>, outcome: &runner::Outcome) {
    if let Some(sink) = sink {
        let r = &outcome.result;
        sink.line(&ExitEvent::<()> {
            kind: "exit".into(),
            exit_code: r.exit_code,
            result: None,
            error: None,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            timed_out: r.timed_out,
            duration_ms: r.duration_ms,
        })
        .await;
    }
}

/// Keys must match `^[A-Za-z_][A-Za-z0-9_]*$`; values may not hold NUL.
pub(crate) fn validate_env(
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ApiError> {
    env.iter()
        .map(|(k, v)| {
            if !is_valid_env_key(k) {
                return Err(ApiError::bad_request(format!("env key '{k}' is invalid")));
            }
            if v.contains('\0') {
                return Err(ApiError::bad_request(format!(
                    "env value of '{k}' contains a NUL byte"
                )));
            }
            Ok((k.clone(), v.clone()))
        })
        .collect()
}

pub(super) fn validate_timeout(ms: Option<u64>) -> Result<Duration, ApiError> {
    match ms.unwrap_or(DEFAULT_TIMEOUT_MS) {
        0 => Err(ApiError::bad_request("timeoutMs must be an integer >= 1")),
        ms => Ok(Duration::from_millis(ms)),
    }
}

pub(crate) fn open_cwd(state: &AppState, cwd: &str) -> Result<std::os::fd::OwnedFd, ApiError> {
    let not_a_dir =
        || ApiError::bad_request(format!("cwd must be a directory under /workspace: {cwd}"));
    let path = paths::normalize(cwd).map_err(|e| match e {
        PathError::Nul | PathError::TooLong => ApiError::BadRequest {
            message: e.to_string(),
            detail: None,
        },
        PathError::OutsideWorkspace | PathError::Escapes => ApiError::bad_request(e.to_string()),
    })?;
    paths::open_dir(&state.settings.workspace, &path, Resolver::Auto).map_err(|e| match e {
        OpenError::Escapes => ApiError::bad_request(e.to_string()),
        OpenError::NotADirectory => not_a_dir(),
        OpenError::Root { source, .. } | OpenError::Io(source) => {
            ApiError::internal("cannot open cwd", source)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// An env map is accepted exactly when every key matches `^[A-Za-z_][A-Za-z0-9_]*$` and no
        /// value holds NUL; a refusal names the problem.
        #[test]
        fn env_maps_are_accepted_exactly_when_valid(
            pairs in proptest::collection::btree_map("[A-Za-z0-9_=\\- ]{0,6}", "[a-z\\x00]{0,4}", 0..5)
        ) {
            let valid = pairs.iter().all(|(k, v)| {
                let mut chars = k.chars();
                chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !v.contains('\0')
            });
            match validate_env(&pairs) {
                Ok(out) => {
                    prop_assert!(valid);
                    prop_assert_eq!(out.len(), pairs.len());
                }
                Err(e) => {
                    prop_assert!(!valid);
                    prop_assert!(message(e).starts_with("env "));
                }
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn message(e: ApiError) -> String {
        e.body().message
    }

    #[test]
    fn env_validation() {
        assert_eq!(
            validate_env(&env(&[("A", "1"), ("_b2", "")]))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            message(validate_env(&env(&[("1A", "x")])).unwrap_err()),
            "env key '1A' is invalid"
        );
        assert_eq!(
            message(validate_env(&env(&[("A-B", "x")])).unwrap_err()),
            "env key 'A-B' is invalid"
        );
        assert_eq!(
            message(validate_env(&env(&[("", "x")])).unwrap_err()),
            "env key '' is invalid"
        );
        assert!(validate_env(&env(&[("A", "x\0y")])).is_err());
        assert!(validate_env(&env(&[("A", "é=\n")])).is_ok());
    }

    #[test]
    fn timeout_validation() {
        assert_eq!(validate_timeout(None).unwrap(), Duration::from_secs(30));
        assert_eq!(validate_timeout(Some(1)).unwrap(), Duration::from_millis(1));
        assert!(validate_timeout(Some(0)).is_err());
    }
}
