//! What an admin does in the console, step by step, for `browser_console.rs`: each step drives the
//! browser and checks what the page (and, where it matters, the API) shows afterwards.

use crate::browser::Browser;
use crate::common::TestManager;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::json;
use std::io::Read;
use std::time::Duration;

pub const EMAIL: &str = "admin@example.com";
pub const PASSWORD: &str = "admin-password-123";
pub const XSS: &str = "<img src=x onerror=alert(1)>";
pub const UPLOADED: &str = "uploaded through the console";

pub fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

pub async fn login(b: &Browser) {
    // Without a session the server sends the browser to the login page.
    b.goto("/console/vms").await;
    b.wait("[data-testid=login-form]", 20).await;
    assert!(b.path().await.starts_with("/login/"), "{}", b.path().await);
    b.shot("login").await;
    b.fill("input[name=email]", EMAIL).await;
    b.fill("input[name=password]", "wrong-password").await;
    b.click("[data-testid=login-form] button[type=submit]")
        .await;
    b.wait_text("[data-testid=login-error]", 20, |t| {
        t == "Invalid credentials"
    })
    .await;
    b.fill("input[name=password]", PASSWORD).await;
    b.click("[data-testid=login-form] button[type=submit]")
        .await;
    b.wait("[data-testid=page-dashboard]", 20).await;
    assert_eq!(b.path().await, "/console/");
    b.wait_text("[data-testid=whoami]", 10, |t| t == EMAIL)
        .await;
    b.wait_text("[data-testid=stat-active-vms] .stat-value", 20, |t| {
        t == "0"
    })
    .await;
}

/// The nav's plain links to what the manager serves outside the app: the docs and Swagger UI. The
/// docs link opens the rendered docs (a full page load, answered 200); then back to the console.
pub async fn docs_links(b: &Browser, tm: &TestManager) {
    let href = |testid: &str| {
        format!("return document.querySelector('[data-testid={testid}]').getAttribute('href')")
    };
    assert_eq!(b.eval(&href("nav-swagger")).await, json!("/swagger"));
    let r = tm.send(get("/swagger", &[("accept", "text/html")])).await;
    assert_eq!(r.status, StatusCode::OK, "GET /swagger");
    let docs = b.eval(&href("nav-docs")).await;
    assert_eq!(docs, json!("/docs/"));
    let docs = docs.as_str().unwrap();
    let r = tm.send(get(docs, &[("accept", "text/html")])).await;
    assert_eq!(r.status, StatusCode::OK, "GET {docs}");
    b.click("[data-testid=nav-docs]").await;
    b.wait_text("nav.top a.brand", 20, |t| t == "run-dat-sheesh docs")
        .await;
    assert_eq!(b.path().await, docs);
    let title = b.eval("return document.title").await;
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.ends_with("run-dat-sheesh docs")),
        "docs page title {title}"
    );
    b.wait("main h1", 10).await;
    b.shot("docs").await;
    b.goto("/console/").await;
    b.wait("[data-testid=page-dashboard]", 20).await;
    b.wait_text("[data-testid=whoami]", 10, |t| t == EMAIL)
        .await;
}

/// Creates a VM through the form (a guest boots) with a lifetime of an hour and the metadata
/// `team=console`, both checked on the page and against the API; returns its id.
pub async fn create_vm(b: &Browser, tm: &TestManager) -> String {
    b.click("[data-testid=nav-vms]").await;
    b.wait("[data-testid=page-vms]", 10).await;
    b.click("[data-testid=vm-new]").await;
    b.wait("[data-testid=vm-create-form]", 10).await;
    b.fill("input[name=cpu]", "1").await;
    b.fill("input[name=memMb]", "512").await;
    b.fill("input[name=timeoutSec]", "3600").await;
    b.click("[data-testid=vm-meta-add]").await;
    b.fill("[data-testid=vm-meta-key]", "team").await;
    b.fill("[data-testid=vm-meta-value]", "console").await;
    b.shot("vm-create").await;
    b.click("[data-testid=vm-create-submit]").await;
    b.wait("[data-testid=page-vm]", 300).await;
    let path = b.path().await;
    let id = path
        .strip_prefix("/console/vms/")
        .expect("on the VM page")
        .to_string();
    b.wait_text(".page-head .badge", 30, |t| t == "RUNNING")
        .await;
    let r = tm.call(Method::GET, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(r.json["expiresAt"].is_string(), "no deadline: {}", r.json);
    assert_eq!(r.json["timeoutAction"], "destroy", "{}", r.json);
    assert_eq!(r.json["metadata"], json!({"team": "console"}), "{}", r.json);
    b.wait_text(
        "[data-testid=vm-metadata] [data-testid=vm-meta-chip]",
        10,
        |t| t == "team=console",
    )
    .await;
    b.wait_text(
        "[data-testid=vm-expires] [data-testid=vm-deadline]",
        10,
        |t| t.starts_with("destroy in "),
    )
    .await;
    id
}

pub async fn exec(b: &Browser, cmd: &str) {
    b.click("[data-testid=tab-exec]").await;
    b.fill("[data-testid=exec-form] textarea[name=cmd]", cmd)
        .await;
    b.click("[data-testid=exec-run]").await;
}

pub async fn exec_and_guest_html(b: &Browser) {
    exec(b, "echo hi").await;
    b.wait_text("[data-testid=exec-stdout]", 60, |t| t == "hi")
        .await;
    b.wait_text("[data-testid=exec-exit-code]", 5, |t| t == "exit 0")
        .await;
    b.shot("vm-exec").await;
    // Guest output that is HTML stays text: visible as written, no element made, no script run.
    exec(
        b,
        &format!("printf '%s\\n' '{XSS}'; printf '%s\\n' '<b>bold</b>' >&2"),
    )
    .await;
    b.wait_text("[data-testid=exec-stdout]", 60, |t| t == XSS)
        .await;
    b.wait_text("[data-testid=exec-stderr]", 5, |t| t == "<b>bold</b>")
        .await;
    assert_eq!(b.count("img").await, 0, "guest output became an <img>");
    assert_eq!(b.count("[data-testid=exec-stderr] b").await, 0);
    let html = b
        .eval("return document.querySelector('[data-testid=exec-stdout]').innerHTML")
        .await;
    assert_eq!(html, json!("&lt;img src=x onerror=alert(1)&gt;\n"));
    let alert = b.client.get_alert_text().await;
    assert!(alert.is_err(), "an alert ran: {alert:?}");
    b.shot("vm-exec-html-output").await;
}

/// The Terminal tab: a login shell whose prompt shows, typed keys that run, an exit code shown.
pub async fn terminal(b: &Browser) {
    b.click("[data-testid=tab-terminal]").await;
    b.wait_text("[data-testid=terminal-status]", 30, |t| t == "connected")
        .await;
    b.wait_text("[data-testid=terminal-output]", 60, |t| t.contains("$ "))
        .await;
    let screen = b.wait("[data-testid=terminal-output]", 5).await;
    // \u{E007} is WebDriver's Enter; the shell sees it as the terminal's CR.
    screen
        .send_keys("echo hi-$((6*7))\u{E007}")
        .await
        .expect("type into the terminal");
    b.wait_text("[data-testid=terminal-output]", 60, |t| {
        t.contains("\nhi-42")
    })
    .await;
    b.shot("vm-terminal").await;
    screen
        .send_keys("exit 5\u{E007}")
        .await
        .expect("type into the terminal");
    b.wait_text("[data-testid=terminal-status]", 30, |t| {
        t == "exited with 5"
    })
    .await;
}

pub async fn run_ts(b: &Browser) {
    b.click("[data-testid=tab-run-code]").await;
    b.click("[data-testid=run-submit]").await;
    b.wait_text("[data-testid=run-result]", 180, |t| {
        t.contains("\"ok\": true")
    })
    .await;
    b.wait_text("[data-testid=run-form] [data-testid=exec-stdout]", 5, |t| {
        t == "hello"
    })
    .await;
    b.shot("vm-run-ts").await;
}

pub async fn files(b: &Browser) {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("hello-console.txt");
    std::fs::write(&local, format!("{UPLOADED}\n")).unwrap();
    b.click("[data-testid=tab-files]").await;
    let input = b.wait("[data-testid=upload-input]", 10).await;
    input
        .send_keys(&local.display().to_string())
        .await
        .expect("pick the file");
    b.click("[data-testid=upload-submit]").await;
    b.wait_text("[data-testid=upload-done]", 60, |t| {
        t.contains("hello-console.txt")
    })
    .await;
    b.fill(
        "[data-testid=download-form] input[name=path]",
        "/workspace/hello-console.txt",
    )
    .await;
    b.click("[data-testid=download-submit]").await;
    b.wait_text("[data-testid=download-entry]", 60, |t| {
        t == "hello-console.txt"
    })
    .await;
    b.wait_text("[data-testid=download-preview]", 5, |t| t == UPLOADED)
        .await;
    b.shot("vm-files").await;
    // The browser saved the archive too: the same bytes, read back here.
    let saved = b.downloads.join("hello-console.txt.tar.gz");
    let found = rds_testkit::wait_until(Duration::from_secs(15), || async {
        saved.is_file().then_some(())
    })
    .await;
    assert!(found.is_some(), "{} not saved", saved.display());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&saved).unwrap(),
    ));
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut content = String::new();
    entry.read_to_string(&mut content).unwrap();
    assert_eq!(content, format!("{UPLOADED}\n"));
}

pub async fn logs(b: &Browser) {
    b.click("[data-testid=tab-logs]").await;
    b.wait_text("[data-testid=log-text]", 20, |t| {
        t.contains("rds-init: agent started")
    })
    .await;
    b.shot("vm-logs").await;
    b.click("[data-testid=tab-exec-log]").await;
    b.wait_text("[data-testid=exec-log-input]", 20, |t| t == "echo hi")
        .await;
    b.shot("vm-exec-log").await;
}

pub async fn stop_start(b: &Browser, id: &str) {
    b.goto(&format!("/console/vms/{id}")).await;
    b.click("[data-testid=vm-stop]").await;
    b.wait_text(".page-head .badge", 120, |t| t == "STOPPED")
        .await;
    b.click("[data-testid=vm-start]").await;
    b.wait_text(".page-head .badge", 300, |t| t == "RUNNING")
        .await;
}

/// Pause and resume from the VM page: PAUSED on the page and in the API, exec refused meanwhile,
/// then RUNNING in the same boot (the guest's boot id is unchanged) with its files.
pub async fn pause_resume(b: &Browser, tm: &TestManager, id: &str) {
    exec(b, "cat /proc/sys/kernel/random/boot_id").await;
    let boot = b
        .wait_text("[data-testid=exec-stdout]", 60, |t| t.len() == 36)
        .await;
    b.click("[data-testid=vm-pause]").await;
    b.wait_text(".page-head .badge", 120, |t| t == "PAUSED")
        .await;
    let r = tm.call(Method::GET, &format!("/v1/vms/{id}"), None).await;
    assert_eq!(r.json["state"], "PAUSED", "{}", r.json);
    b.wait_text("[data-testid=vm-not-running]", 10, |t| t.contains("PAUSED"))
        .await;
    assert_eq!(b.count("[data-testid=vm-start]").await, 0);
    b.wait("[data-testid=vm-stop]", 5).await;
    b.shot("vm-paused").await;
    b.click("[data-testid=vm-resume]").await;
    b.wait_text(".page-head .badge", 120, |t| t == "RUNNING")
        .await;
    exec(
        b,
        "cat /proc/sys/kernel/random/boot_id /workspace/hello-console.txt",
    )
    .await;
    let want = format!("{boot}\n{UPLOADED}");
    b.wait_text("[data-testid=exec-stdout]", 60, |t| t == want)
        .await;
}

/// Clear removes the deadline, Extend sets a new one n seconds from now (`POST /v1/vms/:id/timeout`).
pub async fn deadline(b: &Browser, tm: &TestManager, id: &str) {
    let expires = || async {
        let r = tm.call(Method::GET, &format!("/v1/vms/{id}"), None).await;
        r.json["expiresAt"].clone()
    };
    b.click("[data-testid=vm-clear-deadline]").await;
    b.wait_text(
        "[data-testid=vm-expires] [data-testid=vm-deadline]",
        20,
        |t| t == "–",
    )
    .await;
    assert_eq!(expires().await, serde_json::Value::Null);
    b.fill("[data-testid=vm-extend-seconds]", "7200").await;
    b.click("[data-testid=vm-extend]").await;
    b.wait_text(
        "[data-testid=vm-expires] [data-testid=vm-deadline]",
        20,
        |t| t == "destroy in 2 h",
    )
    .await;
    assert!(expires().await.is_string());
}

pub async fn snapshot_and_restore(b: &Browser, source: &str) {
    b.click("[data-testid=vm-snapshot]").await;
    let done = b
        .wait_text("[data-testid=vm-snapshot-done]", 180, |t| {
            t.contains("snap-")
        })
        .await;
    let snap = done
        .split_whitespace()
        .find(|w| w.starts_with("snap-"))
        .unwrap()
        .to_string();
    b.click("[data-testid=nav-snapshots]").await;
    let row = format!("[data-snapshot-id='{snap}']");
    b.wait(&row, 20).await;
    b.shot("snapshots").await;
    b.click(&format!("{row} [data-testid=snapshot-restore]"))
        .await;
    b.wait("[data-testid=vm-create-form]", 10).await;
    b.click("[data-testid=vm-create-submit]").await;
    b.wait("[data-testid=page-vm]", 300).await;
    assert_ne!(b.path().await, format!("/console/vms/{source}"));
    b.wait_text(".page-head .badge", 60, |t| t == "RUNNING")
        .await;
    // The restored VM has the file uploaded into the source before the snapshot.
    exec(b, "cat /workspace/hello-console.txt").await;
    b.wait_text("[data-testid=exec-stdout]", 60, |t| t == UPLOADED)
        .await;
    b.shot("vm-restored").await;
    b.click("[data-testid=vm-destroy]").await;
    b.click("[data-testid=vm-destroy-confirm]").await;
    b.wait("[data-testid=page-vms]", 120).await;
    b.click("[data-testid=nav-snapshots]").await;
    b.click(&format!("{row} [data-testid=snapshot-delete]"))
        .await;
    b.click(&format!("{row} [data-testid=snapshot-delete-confirm]"))
        .await;
    b.wait_gone(&row, 30).await;
}

pub async fn images(b: &Browser, kernel: &std::path::Path) {
    b.click("[data-testid=nav-images]").await;
    b.wait("[data-testid=image-card]", 20).await;
    b.click("[data-testid=image-new]").await;
    b.fill(
        "[data-testid=image-create-form] input[name=name]",
        "console image",
    )
    .await;
    b.fill(
        "[data-testid=image-create-form] input[name=description]",
        "made in the browser test",
    )
    .await;
    b.click("[data-testid=image-create-submit]").await;
    b.wait_text("[data-testid=image-card] h3", 20, |t| t == "console image")
        .await;
    let id = b
        .eval(
            "return [...document.querySelectorAll('[data-testid=image-card]')]
              .find(c => c.querySelector('h3').textContent.trim() === 'console image').dataset.imageId",
        )
        .await;
    let card = format!("[data-image-id='{}']", id.as_str().unwrap());
    let file = b
        .wait(&format!("{card} [data-testid=image-file]"), 10)
        .await;
    file.send_keys(&kernel.display().to_string()).await.unwrap();
    b.click(&format!("{card} [data-testid=image-upload]")).await;
    b.wait_text(&format!("{card} p.small"), 120, |t| t.contains("kernel ("))
        .await;
    b.shot("images").await;
    b.click(&format!("{card} [data-testid=image-delete]")).await;
    b.click(&format!("{card} [data-testid=image-delete-confirm]"))
        .await;
    b.wait_gone(&card, 30).await;
}

pub async fn activity_live(b: &Browser, tm: &TestManager) {
    b.click("[data-testid=nav-activity]").await;
    b.wait("[data-testid=page-activity]", 10).await;
    b.wait("[data-testid=activity-item][data-type='vm.created']", 20)
        .await;
    // An event caused elsewhere appears without a reload: the SSE stream feeds the page.
    let r = tm
        .call(
            Method::POST,
            "/v1/images",
            Some(json!({"name": "made over the API", "description": "for the live feed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    b.wait("[data-testid=activity-item][data-type='image.created']", 20)
        .await;
    b.wait_text("[data-testid=toasts] .toast", 10, |t| !t.is_empty())
        .await;
    b.shot("activity").await;
}

pub async fn api_keys(b: &Browser, tm: &TestManager) {
    b.click("[data-testid=nav-api-keys]").await;
    b.wait("[data-testid=page-api-keys]", 10).await;
    b.fill("[data-testid=apikey-form] input[name=name]", "ci key")
        .await;
    b.click("[data-testid=apikey-create]").await;
    let key = b
        .wait_text("[data-testid=apikey-secret]", 20, |t| t.starts_with("rds_"))
        .await;
    let with_key = |k: &str| get("/v1/vms", &[("x-api-key", k)]);
    assert_eq!(tm.send(with_key(&key)).await.status, StatusCode::OK);
    b.click("[data-testid=apikey-revoke]").await;
    b.click("[data-testid=apikey-revoke-confirm]").await;
    b.wait_text("[data-testid=apikey-status]", 20, |t| t == "revoked")
        .await;
    assert_eq!(
        tm.send(with_key(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Taken once the key shown on screen is dead.
    b.shot("api-keys").await;
}

pub async fn webhooks(b: &Browser) {
    b.click("[data-testid=nav-webhooks]").await;
    b.wait("[data-testid=page-webhooks]", 10).await;
    b.fill(
        "[data-testid=webhook-form] input[name=name]",
        "console hook",
    )
    .await;
    b.fill(
        "[data-testid=webhook-form] input[name=url]",
        "https://example.com/hook",
    )
    .await;
    b.click("[data-testid=webhook-create]").await;
    b.wait_text("[data-testid=webhook-secret]", 20, |t| !t.is_empty())
        .await;
    b.click("[data-testid=webhook-deliveries]").await;
    b.wait("[data-testid=deliveries]", 10).await;
    b.shot("webhooks").await;
}

pub async fn dashboard(b: &Browser) {
    b.click("[data-testid=nav-dashboard]").await;
    b.wait("[data-testid=page-dashboard]", 10).await;
    b.wait_text("[data-testid=stat-active-vms] .stat-value", 20, |t| {
        t == "1"
    })
    .await;
    // Samples accumulate every 15 s; the VM chart has drawn a line since the login.
    b.wait("[data-testid=chart-vms] path.series", 30).await;
    b.wait("[data-testid=usage-cpu] meter", 20).await;
    b.wait_text("[data-testid=readiness] .badge", 20, |t| t == "ready")
        .await;
    b.shot("dashboard").await;
}

/// Picks the option labelled `label` of a `<select>` (Preact sets no `value` attribute on an option
/// whose value is its text, so `option[value=…]` would not find it).
async fn select(b: &Browser, css: &str, label: &str) {
    let e = b.wait(css, 20).await;
    e.select_by_label(label).await.expect("select an option");
}

/// The list's filters become query parameters of `GET /v1/vms`: state and `metadata.<key>`.
pub async fn list_filters(b: &Browser, id: &str) {
    b.click("[data-testid=nav-vms]").await;
    let row = format!("tr[data-vm-id='{id}']");
    b.wait(&row, 20).await;
    b.wait_text(&format!("{row} [data-testid=vm-meta-chip]"), 10, |t| {
        t == "team=console"
    })
    .await;
    select(b, "[data-testid=vm-filter-state]", "PAUSED").await;
    b.wait_gone(&row, 10).await;
    b.wait("[data-testid=vm-list-empty]", 10).await;
    select(b, "[data-testid=vm-filter-state]", "RUNNING").await;
    b.wait(&row, 10).await;
    b.fill("[data-testid=vm-filter-metadata]", "team=nobody")
        .await;
    b.wait_gone(&row, 10).await;
    b.fill("[data-testid=vm-filter-metadata]", "team=console")
        .await;
    b.wait(&row, 10).await;
    select(b, "[data-testid=vm-filter-state]", "any").await;
    b.fill("[data-testid=vm-filter-metadata]", "").await;
}

pub async fn destroy(b: &Browser, id: &str) {
    b.click("[data-testid=nav-vms]").await;
    let row = format!("tr[data-vm-id='{id}']");
    b.click(&format!("{row} [data-testid=vm-destroy]")).await;
    b.shot("vms").await;
    b.click(&format!("{row} [data-testid=vm-destroy-confirm]"))
        .await;
    b.wait_gone(&row, 60).await;
}

pub async fn logout(b: &Browser) {
    b.click("[data-testid=logout]").await;
    b.wait("[data-testid=login-form]", 20).await;
    assert!(b.path().await.starts_with("/login/"));
    // The session is gone: a full load of a console page is sent back to the login page.
    b.goto("/console/").await;
    b.wait("[data-testid=login-form]", 20).await;
    assert!(b.path().await.starts_with("/login/"), "{}", b.path().await);
}
