//! Credentials on requests (docs/reference/api.md §1.2–1.3). Every `/v1` route needs a principal,
//! found before routing so an unknown `/v1` path answers 401 without one and 404 with one: a valid
//! `X-API-Key` (master or DB key) wins; otherwise the `rds_session` cookie. The principal travels
//! as a request extension to the CSRF check, the rate limiter and the [`AdminSession`] guard.

use super::{error::ApiError, AppState};
use crate::auth::{csrf, KeyError, Principal, Session};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

fn unauthorized() -> ApiError {
    ApiError::unauthorized("Unauthorized")
}

/// The principal of a request: its API keys in order (`X-API-Key`, then, for scrapers, a bearer
/// token), then its session cookie. A verification that found the pool busy answers 503 only if
/// no other credential is valid.
async fn principal(
    st: &AppState,
    headers: &HeaderMap,
    bearer: bool,
) -> Result<Option<Principal>, ApiError> {
    let mut keys = vec![headers.get("x-api-key").map(|v| v.as_bytes())];
    if bearer {
        keys.push(
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")),
        );
    }
    let mut verifier_busy = None;
    for key in keys.into_iter().flatten() {
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        match st.auth.api_key(key).await {
            Ok(Some(p)) => return Ok(Some(p)),
            Ok(None) => {}
            Err(KeyError::Busy(b)) => verifier_busy = Some(b),
            Err(KeyError::Db(e)) => return Err(e.into()),
        }
    }
    if let Some(s) = st.auth.session(headers).await? {
        return Ok(Some(Principal::Session(s)));
    }
    match verifier_busy {
        Some(b) => Err(b.into()),
        None => Ok(None),
    }
}

async fn authenticated(st: &AppState, mut req: Request, next: Next, bearer: bool) -> Response {
    match principal(st, req.headers(), bearer).await {
        Ok(Some(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(None) => unauthorized().into_response(),
        Err(e) => e.into_response(),
    }
}

/// Whether a request on an open route carries a valid credential (API key, bearer key or session):
/// such routes show reasons only to those (`/readyz`). Any failure to check counts as none.
pub async fn is_known(st: &AppState, headers: &HeaderMap) -> bool {
    matches!(principal(st, headers, true).await, Ok(Some(_)))
}

/// Every `/v1` route: an API key or a session.
pub async fn require_principal(State(st): State<AppState>, req: Request, next: Next) -> Response {
    authenticated(&st, req, next, false).await
}

/// `/metrics` also takes any API key as `Authorization: Bearer <key>`, which scrapers send.
pub async fn require_scraper(State(st): State<AppState>, req: Request, next: Next) -> Response {
    authenticated(&st, req, next, true).await
}

/// After routing (docs/reference/api.md §1.1): a write authenticated by the cookie alone must prove
/// it came from the console's origin (docs/reference/api.md §1.3).
pub async fn check_csrf(req: Request, next: Next) -> Response {
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if let (true, Some(Principal::Session(s))) = (writes, req.extensions().get::<Principal>()) {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok());
        if !csrf::passes(req.headers(), host, &s.csrf_token) {
            return ApiError::forbidden("CSRF check failed").into_response();
        }
    }
    next.run(req).await
}

/// The guard of session-only routes (`/v1/admin/events`, `/v1/admin/api-keys*`,
/// `/v1/admin/webhooks*`): put it first among a handler's arguments. A caller with only an API key
/// gets 403 `Admin session required`.
pub struct AdminSession(pub Session);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        if let Some(Principal::Session(s)) = parts.extensions.get::<Principal>() {
            return Ok(AdminSession(s.clone()));
        }
        // Authenticated by a key; a valid cookie sent beside it still makes an admin.
        match st.auth.session(&parts.headers).await? {
            Some(s) => Ok(AdminSession(s)),
            None => Err(ApiError::forbidden("Admin session required")),
        }
    }
}

/// The client's address as the connection shows it (no proxy headers are trusted), or `unknown`
/// when the server was not given connection info.
pub fn client_address(extensions: &http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// [`client_address`] as an extractor.
pub struct ClientAddress(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(&parts.extensions)))
    }
}
