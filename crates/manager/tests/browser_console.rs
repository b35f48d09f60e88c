//! The admin console in a real browser: Debian's Chromium driven over WebDriver (chromedriver)
//! against a test manager served on a loopback TCP port in its network namespace, with a real guest.
//! Screenshots of every page land in `target/test-artefacts/console/` (printed as they are written).
//!
//! Every check runs against the backend routes the console uses (sessions, the SSE stream, activity,
//! API keys, webhooks, overview); the only skips are missing prerequisites (no guest image, no
//! Chromium or chromedriver, no embedded console), each printed with its reason.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/console_steps.rs"]
mod steps;

use axum::body::Body;
use browser::{http, Browser, Served};
use common::netns::NsRuntime;
use common::TestManager;
use http::{Method, Request, StatusCode};
use serde_json::json;
use std::io::Read;
use std::time::Duration;
use steps::{get, EMAIL, PASSWORD};

/// The console is embedded in this build, or the test skips (a failure under `RDS_REQUIRE_E2E=1`).
async fn console_built(tm: &TestManager, test: &str) -> bool {
    let r = tm.send(get("/", &[("accept", "text/html")])).await;
    if r.status == StatusCode::NOT_FOUND {
        rds_testkit::skip(test, &format!("console not embedded: {}", r.json));
        return false;
    }
    true
}

fn assert_console_headers(h: &http::HeaderMap, what: &str) {
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp} lacks {directive}"
        );
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
}

/// Serving rules and headers, without a browser: `docs/reference/api-admin.md` Console navigation,
/// `docs/reference/security.md` §3 headers.
#[tokio::test]
async fn console_pages_and_headers() {
    let Some(vhost) = common::manager_prerequisites("console_pages_and_headers") else {
        return;
    };
    let tm = TestManager::start(None, &vhost, &[]).await;
    if !console_built(&tm, "console_pages_and_headers").await {
        return;
    }
    let html = [("accept", "text/html,application/xhtml+xml")];
    let r = tm.send(get("/", &html)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers["cache-control"], "no-cache");
    assert_console_headers(&r.headers, "/");
    let page = r.json.as_str().unwrap().to_string();
    // No inline script or style for the CSP to block: every script has a src, no style attributes.
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script defer src=\"/assets/").count()
    );
    assert!(
        !page.contains("style=") && !page.contains("<style"),
        "{page}"
    );
    let js = page
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("script src")
        .to_string();
    for path in ["/login/", "/index.html", "/some/unknown/page"] {
        let r = tm.send(get(path, &html)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            r.json.as_str(),
            Some(page.as_str()),
            "{path} serves the app"
        );
        assert_console_headers(&r.headers, path);
    }
    // Console pages need a session: HTML navigation or not, the answer is the login page.
    for path in [
        "/console",
        "/console/",
        "/console/vms/0f8fad5b-d9cb-469f-a165-70867728950e",
    ] {
        let r = tm.send(get(path, &html)).await;
        assert_eq!(r.status, StatusCode::FOUND, "{path}");
        assert_eq!(r.headers["location"], "/login/", "{path}");
        assert_console_headers(&r.headers, path);
    }
    // Unknown non-HTML paths: 404 JSON; so are unknown assets and other methods.
    for path in ["/nope.js", "/assets/app-NOPE.js", "/favicon.ico"] {
        let r = tm.send(get(path, &[("accept", "*/*")])).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json, json!({"message": "Not Found"}), "{path}");
    }
    let post = Request::builder()
        .method(Method::POST)
        .uri("/")
        .body(Body::empty())
        .unwrap();
    assert_eq!(tm.send(post).await.status, StatusCode::METHOD_NOT_ALLOWED);
    // The API keeps its own rules: an unknown /v1 path is still 401 without a key.
    assert_eq!(
        tm.send(get("/v1/nope", &html)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Assets: content-hashed and immutable, gzip when asked, identical once decompressed.
    let plain = tm.send(get(&js, &[])).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(plain.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_console_headers(&plain.headers, &js);
    let router = tm.router.clone();
    let (headers, gz) = raw(&router, get(&js, &[("accept-encoding", "gzip, br")])).await;
    assert_eq!(headers["content-encoding"], "gzip");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(Some(unzipped.as_str()), plain.json.as_str());
    assert_eq!(
        tm.send(get("/favicon.svg", &[])).await.headers["content-type"],
        "image/svg+xml"
    );

    // With a session the console page itself is served; a forged cookie is not a session.
    let login = Request::builder()
        .method(Method::POST)
        .uri("/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"email": EMAIL, "password": PASSWORD}).to_string(),
        ))
        .unwrap();
    let r = tm.send(login).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let r = tm
        .send(get("/console/vms", &[html[0], ("cookie", &cookie)]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json.as_str(), Some(page.as_str()));
    assert_console_headers(&r.headers, "/console/vms with a session");
    let forged = get("/console/", &[html[0], ("cookie", "rds_session=forged")]);
    let r = tm.send(forged).await;
    assert_eq!(
        r.status,
        StatusCode::FOUND,
        "a forged session cookie must not open the console (console::has_session)"
    );
}

async fn raw(router: &axum::Router, req: Request<Body>) -> (http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = router.clone().oneshot(req).await.unwrap();
    let headers = resp.headers().clone();
    (
        headers,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// The whole console with a real guest: log in, the nav's links to the docs and Swagger UI,
/// dashboard, create a VM through the form, exec, guest output that looks like HTML, run-ts, upload
/// and download, logs, stop/start, pause/resume, snapshot and restore, images with an upload progress bar, live
/// activity, API keys, webhooks, log out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_story() {
    let Some((image, vhost)) = common::guest_prerequisites("console_story") else {
        return;
    };
    if let Err(reason) = browser::browser_prerequisites() {
        rds_testkit::skip("console_story", &reason);
        return;
    }
    let tm = TestManager::start(Some(&image), &vhost, &[("MAX_VMS", "2")]).await;
    if !console_built(&tm, "console_story").await {
        return;
    }
    let rt = NsRuntime::start(&tm.ns.name, None);
    let served = Served::start(&rt, tm.router.clone()).await;
    let b = Browser::start(&tm.ns.name, &rt, served.url("")).await;

    steps::login(&b).await;
    steps::docs_links(&b, &tm).await;
    b.wait_text("[data-testid=live-state]", 20, |t| {
        t.contains("live") && !t.contains("no live")
    })
    .await;
    let vm = steps::create_vm(&b, &tm).await;
    steps::exec_and_guest_html(&b).await;
    steps::terminal(&b).await;
    steps::run_ts(&b).await;
    steps::files(&b).await;
    steps::logs(&b).await;
    steps::stop_start(&b, &vm).await;
    steps::pause_resume(&b, &tm, &vm).await;
    steps::deadline(&b, &tm, &vm).await;
    steps::snapshot_and_restore(&b, &vm).await;
    steps::images(&b, &image.kernel).await;
    steps::activity_live(&b, &tm).await;
    steps::api_keys(&b, &tm).await;
    steps::webhooks(&b).await;
    steps::dashboard(&b).await;
    steps::list_filters(&b, &vm).await;
    steps::destroy(&b, &vm).await;
    steps::logout(&b).await;
    // Nothing the pages did broke the CSP or threw: no inline script or style slipped in.
    let broken: Vec<String> = b
        .severe_logs(&rt)
        .await
        .into_iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Uncaught"))
        .collect();
    assert!(broken.is_empty(), "browser console: {broken:#?}");
    // The control: an inline style is refused and reported, so the check above can see one.
    b.eval("document.body.setAttribute('style', 'outline: 3px solid red')")
        .await;
    let refused = rds_testkit::wait_until(Duration::from_secs(5), || async {
        let logs = b.severe_logs(&rt).await;
        logs.iter()
            .any(|m| m.contains("Content Security Policy"))
            .then_some(())
    })
    .await;
    assert!(refused.is_some(), "the CSP did not refuse an inline style");
    b.close().await;
}

/// When the page marked itself interactive (`rds:ready`), in ms since navigation start.
async fn ready_ms(b: &Browser) -> f64 {
    let mark =
        "const m = performance.getEntriesByName('rds:ready')[0]; return m ? m.startTime : null";
    let ready = rds_testkit::wait_until(Duration::from_secs(10), || async {
        b.eval(mark).await.as_f64()
    })
    .await;
    ready.expect("the page never marked itself ready")
}

/// `cargo test -p rds-manager --test browser_console -- --ignored --nocapture console_load_bench`:
/// bytes a first load transfers (gzip) and time to interactive, in fresh Chromium profiles. Numbers
/// for docs/benchmarks.md, never asserted.
#[tokio::test]
#[ignore]
async fn console_load_bench() {
    let Some(vhost) = common::manager_prerequisites("console_load_bench") else {
        return;
    };
    if let Err(reason) = browser::browser_prerequisites() {
        println!("SKIP console_load_bench: {reason}");
        return;
    }
    let tm = TestManager::start(None, &vhost, &[("RATE_LIMIT_LOGIN", "0")]).await;
    if !console_built(&tm, "console_load_bench").await {
        return;
    }
    let rt = NsRuntime::start(&tm.ns.name, None);
    let served = Served::start(&rt, tm.router.clone()).await;
    let (_, headers, _) = http(
        &rt,
        served.port,
        "GET",
        "/login/",
        &[("accept-encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(headers["content-encoding"], "gzip");
    let runs: usize = std::env::var("RDS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut cold, mut warm, mut bytes) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..runs {
        let b = Browser::start(&tm.ns.name, &rt, served.url("")).await;
        b.goto("/login/").await;
        b.wait("[data-testid=login-form]", 20).await;
        cold.push(ready_ms(&b).await);
        let sent = b
            .eval(
                "const nav = performance.getEntriesByType('navigation')[0];
                 return nav.transferSize + performance.getEntriesByType('resource')
                   .reduce((a, r) => a + r.transferSize, 0);",
            )
            .await;
        bytes = sent.as_f64().unwrap();
        b.fill("input[name=email]", EMAIL).await;
        b.fill("input[name=password]", PASSWORD).await;
        b.click("[data-testid=login-form] button[type=submit]")
            .await;
        b.wait("[data-testid=page-dashboard]", 20).await;
        b.goto("/console/").await;
        b.wait("[data-testid=stat-active-vms]", 20).await;
        warm.push(ready_ms(&b).await);
        b.close().await;
    }
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!("console first load: {bytes:.0} bytes transferred (gzip, html + js + css + icon)");
    println!(
        "login page interactive, fresh profile: p50 {:.0} ms over {runs} runs",
        p50(&mut cold)
    );
    println!(
        "dashboard interactive (data loaded), cached assets: p50 {:.0} ms",
        p50(&mut warm)
    );
}
