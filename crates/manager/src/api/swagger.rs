//! Swagger UI at `/swagger`, from assets embedded at build time (no external fetches).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>run-dat-sheesh API</title>
<link rel="stylesheet" href="/swagger/swagger-ui.css"><link rel="icon" href="/swagger/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/swagger/swagger-ui-bundle.js"></script>
<script src="/swagger/swagger-init.js"></script>
</body></html>
"#;

/// A separate file rather than an inline script, so a strict Content-Security-Policy can apply.
const INIT: &str =
    "window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui' });\n";

#[cfg(rds_swagger_assets)]
fn asset(name: &str) -> Option<(&'static [u8], &'static str)> {
    macro_rules! embed {
        ($f:literal) => {
            include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui/", $f)).as_slice()
        };
    }
    Some(match name {
        "swagger-ui-bundle.js" => (embed!("swagger-ui-bundle.js"), "text/javascript"),
        "swagger-ui-standalone-preset.js" => {
            (embed!("swagger-ui-standalone-preset.js"), "text/javascript")
        }
        "swagger-ui.css" => (embed!("swagger-ui.css"), "text/css"),
        "favicon-32x32.png" => (embed!("favicon-32x32.png"), "image/png"),
        _ => return None,
    })
}

#[cfg(not(rds_swagger_assets))]
fn asset(_: &str) -> Option<(&'static [u8], &'static str)> {
    None
}

pub async fn index() -> Response {
    if asset("swagger-ui-bundle.js").is_none() {
        return super::ApiError::not_found("Swagger UI assets were not available at build time")
            .into_response();
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub async fn file(Path(name): Path<String>) -> Response {
    if name == "swagger-init.js" {
        return ([(header::CONTENT_TYPE, "text/javascript")], INIT).into_response();
    }
    match asset(&name) {
        Some((bytes, ct)) => (
            [
                (header::CONTENT_TYPE, ct),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            bytes,
        )
            .into_response(),
        None => super::ApiError::not_found("Not Found").into_response(),
    }
}
