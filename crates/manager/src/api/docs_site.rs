//! The user docs at `/docs/`: `docs/**/*.md` rendered at build time (`build/docs.rs`). Public like
//! `/swagger`, sent with the console's security headers, gzipped where accepted.

use super::console::{accepts_gzip, secure, Asset};
use super::{ApiError, AppState};
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

static PAGES: &[Asset] = include!(concat!(env!("OUT_DIR"), "/docs_pages.rs"));

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route(
            "/docs/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route("/docs/{*path}", get(page))
}

async fn page(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    // A lookup in the embedded table, never a file path: `..` and anything unlisted just miss.
    let Some(a) = PAGES.iter().find(|a| a.path == path) else {
        return ApiError::not_found("Not Found").into_response();
    };
    let ct = (header::CONTENT_TYPE, a.content_type);
    let mut resp = match a.gzip.filter(|_| accepts_gzip(headers)) {
        Some(gz) => ([ct, (header::CONTENT_ENCODING, "gzip")], gz).into_response(),
        None => ([ct], a.body).into_response(),
    };
    let h = resp.headers_mut();
    // Not content-hashed: revalidate so a new build's pages show up.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    secure(resp)
}
