//! The user docs at `/docs/` (`build/docs.rs`, `src/api/docs_site.rs`): every page of `docs/` served
//! without credentials, every link and anchor between them resolving, the console's security
//! headers, and refusals for anything that is not a rendered page.

mod common;

use axum::body::Body;
use common::{Resp, TestManager};
use http::{Request, StatusCode};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

async fn manager() -> Option<TestManager> {
    let vhost = common::manager_prerequisites("api_docs_site")?;
    Some(TestManager::start(None, &vhost, &[]).await)
}

/// A GET with no key and no session: the docs are public.
async fn get(tm: &TestManager, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::builder().uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    tm.send(b.body(Body::empty()).unwrap()).await
}

fn body(r: &Resp) -> &str {
    r.json.as_str().unwrap_or_default()
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// The URL of every Markdown page under `docs/`.
fn page_urls(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            page_urls(&e.path(), &format!("{prefix}{name}/"), out);
        } else if let Some(stem) = name.strip_suffix(".md") {
            out.push(format!("/docs/{prefix}{stem}.html"));
        }
    }
}

fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].replace("&amp;", "&"))
        .collect()
}

#[tokio::test]
async fn pages_render_and_every_link_resolves() {
    let Some(tm) = manager().await else { return };
    let index_md = std::fs::read_to_string(docs_dir().join("index.md")).unwrap();
    let title = index_md.lines().next().unwrap().trim_start_matches("# ");
    let r = get(&tm, "/docs/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert!(
        body(&r).contains(&format!("<title>{title} ")),
        "{}",
        body(&r)
    );
    assert!(body(&r).contains(&format!(">{title}</h1>")));

    // A plain section heading of the API reference, so the check follows the file.
    let api_md = std::fs::read_to_string(docs_dir().join("reference/api.md")).unwrap();
    let heading = api_md
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .find(|h| !h.contains(['`', '&', '<', '*', '_', '[']))
        .expect("a plain `## ` heading in reference/api.md");
    let r = get(&tm, "/docs/reference/api.html", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(body(&r).contains(&format!(">{heading}</h2>")), "{heading}");

    // Every page, reached from the tree rather than from the index, so an unlinked page counts too.
    let mut todo = vec!["/docs/".to_string()];
    page_urls(&docs_dir(), "", &mut todo);
    let pages_in_tree = todo.len() - 1;
    let mut pages: HashMap<String, String> = HashMap::new();
    let mut anchors = BTreeSet::new();
    while let Some(url) = todo.pop() {
        if pages.contains_key(&url) {
            continue;
        }
        let r = get(&tm, &url, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        let html = body(&r).to_string();
        assert!(
            !html.contains("<script") && !html.contains(" style="),
            "{url}"
        );
        for href in hrefs(&html) {
            let (path, frag) = href.split_once('#').unwrap_or((&href, ""));
            let path = if path.is_empty() { url.as_str() } else { path };
            if path == "/" || path == "/swagger" || path.contains("://") {
                continue;
            }
            assert!(
                path.starts_with("/docs/"),
                "{url}: link {href} leaves the site"
            );
            if !frag.is_empty() {
                anchors.insert((url.clone(), path.to_string(), frag.to_string()));
            }
            todo.push(path.to_string());
        }
        pages.insert(url, html);
    }
    // The tree's pages, `/docs/` (also `index.html`) and the stylesheet.
    assert_eq!(pages.len(), pages_in_tree + 2, "{:?}", pages.keys());
    for (from, to, frag) in &anchors {
        let id = format!("id=\"{frag}\"");
        assert!(
            pages[to].contains(&id),
            "{from}: {to}#{frag} names no heading"
        );
    }
    assert!(!anchors.is_empty());
}

#[tokio::test]
async fn headers_redirect_and_refusals() {
    let Some(tm) = manager().await else { return };
    let r = get(&tm, "/docs", &[]).await;
    assert!(r.status.is_redirection(), "{}", r.status);
    assert_eq!(r.headers["location"], "/docs/");

    for path in [
        "/docs/",
        "/docs/guide/getting-started.html",
        "/docs/docs.css",
    ] {
        let r = get(&tm, path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("style-src 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        // The same policy the console pages send, where this build has the console.
        let console = get(&tm, "/", &[]).await;
        if console.status == StatusCode::OK {
            assert_eq!(console.headers["content-security-policy"], csp);
        }
    }
    let css = get(&tm, "/docs/docs.css", &[]).await;
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    let gz = get(&tm, "/docs/", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(gz.status, StatusCode::OK);
    assert_eq!(gz.headers["content-encoding"], "gzip");
    assert_eq!(gz.headers["vary"], "Accept-Encoding");

    for path in [
        "/docs/../Cargo.toml",
        "/docs/%2e%2e/Cargo.toml",
        "/docs/guide/../../README.md",
        "/docs/index.md",
        "/docs/nope.html",
        "/docs/guide/",
    ] {
        let r = get(&tm, path, &[("accept", "text/html")]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json, json!({"message": "Not Found"}), "{path}");
    }
}
