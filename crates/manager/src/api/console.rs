//! The admin console (`docs/reference/api-admin.md` Console, `docs/reference/security.md` §3):
//! static files embedded at build time (`build/console.rs`), the navigation rules (`/console*`
//! without a session → 302 `/login/`, unknown HTML navigation → the app, anything else unknown →
//! 404 JSON) and the console's security headers.

use super::{ApiError, AppState};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One built file; `gzip` is its precompressed twin.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
}

#[cfg(rds_console_assets)]
static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
#[cfg(not(rds_console_assets))]
static ASSETS: &[Asset] = &[];

/// Same-origin scripts, styles and connections only; no framing. The app has no inline script or
/// style, so nothing needs `'unsafe-inline'`.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const NOT_BUILT: &str =
    "The admin console was not built into this manager (run scripts/build-console.sh, then rebuild)";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(app))
        .route("/index.html", get(app))
        .route("/login/", get(app))
        .route("/console", get(console))
        .route("/console/", get(console))
        .route("/console/{*rest}", get(console))
        .route("/assets/{file}", get(asset))
        .route("/favicon.svg", get(favicon))
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|e| {
                let mut parts = e.split(';').map(str::trim);
                parts.next() == Some("gzip") && !parts.any(|p| p == "q=0" || p == "q=0.0")
            })
        })
}

fn is_html_navigation(headers: &HeaderMap) -> bool {
    let dest = headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok());
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    dest == Some("document") || accept.contains("text/html")
}

/// The console's headers, on every page and file it serves.
pub(super) fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn serve(a: &Asset, headers: &HeaderMap, cache: &'static str) -> Response {
    let mut resp = match a.gzip.filter(|_| accepts_gzip(headers)) {
        Some(gz) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            gz,
        )
            .into_response(),
        None => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    secure(resp)
}

/// The app's page: every console address is the same document; the app routes by path. Revalidated
/// on every load so a new build's asset names are picked up.
fn index(headers: &HeaderMap) -> Response {
    match find("index.html") {
        Some(a) => serve(a, headers, "no-cache"),
        None => ApiError::not_found(NOT_BUILT).into_response(),
    }
}

async fn app(headers: HeaderMap) -> Response {
    index(&headers)
}

async fn console(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // Only picks between the page and a redirect: every API call the page makes is checked itself.
    if find("index.html").is_some() && !state.auth.has_session(&headers).await {
        let mut resp = (StatusCode::FOUND, [(header::LOCATION, "/login/")]).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return secure(resp);
    }
    index(&headers)
}

fn file(path: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    match find(path) {
        Some(a) => serve(a, headers, cache),
        None => ApiError::not_found("Not Found").into_response(),
    }
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // Content-hashed names: a changed file gets a new name.
    let cache = "public, max-age=31536000, immutable";
    file(&format!("assets/{name}"), &headers, cache)
}

async fn favicon(headers: HeaderMap) -> Response {
    file("favicon.svg", &headers, "public, max-age=86400")
}

/// Every path no route claims: the app for a browser navigating (its router shows the right page),
/// 404 JSON for anything else.
pub async fn fallback(req: Request) -> Response {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if get && is_html_navigation(req.headers()) {
        return index(req.headers());
    }
    ApiError::not_found("Not Found").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn gzip_negotiation() {
        for (value, gzip) in [
            ("gzip, deflate, br", true),
            ("br;q=1, gzip;q=0.5", true),
            ("gzip;q=0", false),
            ("br", false),
        ] {
            assert_eq!(
                accepts_gzip(&one("accept-encoding", value)),
                gzip,
                "{value}"
            );
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn html_navigation() {
        for (name, value, html) in [
            ("sec-fetch-dest", "document", true),
            ("accept", "text/html,application/xhtml+xml", true),
            ("accept", "*/*", false),
            ("accept", "application/json", false),
        ] {
            assert_eq!(
                is_html_navigation(&one(name, value)),
                html,
                "{name}: {value}"
            );
        }
    }
}
