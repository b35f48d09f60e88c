//! Rate limits (`docs/reference/api.md` §1.7): fixed 60-second windows per (route group, key). Runs
//! after routing, so the group is known from the matched route pattern. The key is the principal
//! (`master`, a DB key id, a session), with the VM id on routes that run something in a guest, and
//! the client address on `POST /auth/login`.

use super::error::ApiError;
use super::AppState;
use crate::auth::Principal;
use crate::config::RateLimits;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// (route group, principal) → (window start, requests in it).
type Windows = HashMap<(&'static str, String), (Instant, u64)>;

pub struct Limiter {
    limits: RateLimits,
    windows: Mutex<Windows>,
}

pub enum Verdict {
    Exempt,
    Allowed {
        limit: u64,
        remaining: u64,
        reset: u64,
    },
    Limited {
        limit: u64,
        reset: u64,
    },
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Limiter {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// The group and limit of a route pattern and method; `None` for routes without a limit.
    fn group(&self, method: &http::Method, route: &str) -> Option<(&'static str, u64)> {
        let l = &self.limits;
        Some(match (method.as_str(), route) {
            ("POST", "/auth/login") => ("login", l.login),
            ("POST", "/internal/v1/peer/invoke") => ("peer_invoke", l.peer_invoke),
            (_, r) if !r.starts_with("/v1/") => return None,
            ("POST", "/v1/vms") => ("vm_create", l.vm_create),
            ("POST", "/v1/vms/{id}/exec") => ("exec", l.exec),
            ("POST", "/v1/vms/{id}/run-ts") => ("run_ts", l.run_ts),
            ("POST", "/v1/vms/{id}/run-js") => ("run_js", l.run_js),
            ("POST", "/v1/vms/{id}/files/upload") => ("files_upload", l.files_upload),
            ("GET", "/v1/vms/{id}/files/download") => ("files_download", l.files_download),
            _ => ("global", l.global),
        })
    }

    pub fn check(&self, method: &http::Method, route: &str, key: &RateKey) -> Verdict {
        let Some((group, limit)) = self.group(method, route) else {
            return Verdict::Exempt;
        };
        if limit == 0 {
            return Verdict::Exempt;
        }
        let key = match group {
            // A bridge token is good only from its consumer's address: the address is the consumer.
            "login" | "peer_invoke" => key.client.clone(),
            "exec" | "run_ts" | "run_js" | "files_upload" | "files_download" => {
                format!("{}:vm:{}", key.principal, key.vm)
            }
            _ => key.principal.clone(),
        };
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("rate windows");
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry((group, key)).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        let reset = (WINDOW.saturating_sub(now.duration_since(*start)))
            .as_secs()
            .max(1);
        if *count >= limit {
            return Verdict::Limited { limit, reset };
        }
        *count += 1;
        Verdict::Allowed {
            limit,
            remaining: limit - *count,
            reset,
        }
    }
}

/// What a request may be counted under; the group picks one.
pub struct RateKey {
    pub principal: String,
    /// The `:id` of `/v1/vms/:id/…`, lowercased.
    pub vm: String,
    pub client: String,
}

/// The VM id of a `/vms/<id>/...` path, with or without the `/v1` prefix (the limiter runs inside
/// the `/v1` nest, which strips it); empty for other paths.
fn vm_of_path(path: &str) -> String {
    let mut segs = path.split('/').skip_while(|s| *s != "vms").skip(1);
    segs.next().unwrap_or_default().to_ascii_lowercase()
}

impl RateKey {
    fn of(req: &Request) -> RateKey {
        let principal = req
            .extensions()
            .get::<Principal>()
            .map(Principal::rate_key)
            .unwrap_or_default();
        let vm = vm_of_path(req.uri().path());
        RateKey {
            principal,
            vm,
            client: super::auth::client_address(req.extensions()),
        }
    }
}

pub async fn enforce(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let verdict = st.limiter.check(req.method(), &route, &RateKey::of(&req));
    let set = |resp: &mut Response, limit: u64, remaining: u64, reset: u64| {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    };
    match verdict {
        Verdict::Exempt => next.run(req).await,
        Verdict::Limited { limit, reset } => {
            st.metrics.inc(
                "rds_rate_limited_total",
                &[("route", &super::metrics::route_label(&route))],
            );
            let mut resp = ApiError::too_many_requests(format!(
                "Rate limit exceeded, retry in {reset} seconds"
            ))
            .into_response();
            set(&mut resp, limit, 0, reset);
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(reset));
            resp
        }
        Verdict::Allowed {
            limit,
            remaining,
            reset,
        } => {
            let mut resp = next.run(req).await;
            set(&mut resp, limit, remaining, reset);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(global: u64, exec: u64) -> RateLimits {
        RateLimits {
            global,
            login: 10,
            vm_create: 30,
            exec,
            run_ts: 60,
            run_js: 60,
            files_upload: 30,
            files_download: 60,
            peer_invoke: 300,
        }
    }

    fn key(principal: &str, vm: &str, client: &str) -> RateKey {
        RateKey {
            principal: principal.into(),
            vm: vm.into(),
            client: client.into(),
        }
    }

    #[test]
    fn windows_per_group_and_principal() {
        let l = Limiter::new(limits(2, 0));
        let get = http::Method::GET;
        let a = key("a", "", "1.2.3.4");
        assert!(matches!(
            l.check(&get, "/v1/vms", &a),
            Verdict::Allowed { remaining: 1, .. }
        ));
        assert!(matches!(
            l.check(&get, "/v1/vms/{id}", &a),
            Verdict::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(
            l.check(&get, "/v1/vms", &a),
            Verdict::Limited { limit: 2, .. }
        ));
        assert!(
            matches!(
                l.check(&get, "/v1/vms", &key("b", "", "1.2.3.4")),
                Verdict::Allowed { .. }
            ),
            "per principal"
        );
        let post = http::Method::POST;
        assert!(
            matches!(l.check(&post, "/v1/vms/{id}/exec", &a), Verdict::Exempt),
            "0 disables"
        );
        assert!(matches!(l.check(&get, "/healthz", &a), Verdict::Exempt));
        assert!(matches!(l.check(&get, "/auth/me", &a), Verdict::Exempt));
    }

    #[test]
    fn guest_routes_per_vm_and_login_per_address() {
        let l = Limiter::new(limits(100, 1));
        let post = http::Method::POST;
        let exec = "/v1/vms/{id}/exec";
        assert!(matches!(
            l.check(&post, exec, &key("a", "vm1", "x")),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            l.check(&post, exec, &key("a", "vm1", "x")),
            Verdict::Limited { .. }
        ));
        assert!(
            matches!(
                l.check(&post, exec, &key("a", "vm2", "x")),
                Verdict::Allowed { .. }
            ),
            "another VM has its own budget"
        );
        for _ in 0..10 {
            assert!(matches!(
                l.check(&post, "/auth/login", &key("", "", "10.0.0.1")),
                Verdict::Allowed { .. }
            ));
        }
        assert!(matches!(
            l.check(&post, "/auth/login", &key("", "", "10.0.0.1")),
            Verdict::Limited { limit: 10, .. }
        ));
        assert!(matches!(
            l.check(&post, "/auth/login", &key("", "", "10.0.0.2")),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn the_vm_of_a_path() {
        let id = "3f6c1a2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f";
        assert_eq!(super::vm_of_path(&format!("/vms/{id}/exec")), id);
        assert_eq!(
            super::vm_of_path(&format!("/v1/vms/{}/files/upload", id.to_uppercase())),
            id
        );
        assert_eq!(super::vm_of_path("/vms"), "");
        assert_eq!(super::vm_of_path("/images/x/kernel"), "");
    }
}
