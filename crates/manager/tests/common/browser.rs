//! A real Chromium, driven over WebDriver, against a test manager served on a loopback TCP port.
//!
//! The manager lives in a network namespace of its own (`netns.rs`), so the listener, chromedriver and
//! Chromium all run in that namespace: the listener and the WebDriver session on a runtime whose
//! threads entered it, chromedriver (and the Chromium it starts) through `ip netns exec`. Everything
//! is stopped on drop, a test that panicked half-way included. Included by the console tests only
//! (`#[path]`), so other test binaries do not build the WebDriver client.

use crate::common::netns::NsRuntime;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium and chromedriver are installed, or the reason they are not (the caller skips).
pub fn browser_prerequisites() -> Result<(), String> {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(bin).is_file() {
            return Err(format!(
                "{bin} not installed (scripts/install-deps.sh installs chromium and chromium-driver)"
            ));
        }
    }
    Ok(())
}

/// Where the console tests leave their screenshots.
pub fn artefacts_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artefacts/console");
    std::fs::create_dir_all(&dir).expect("create the artefacts directory");
    dir.canonicalize().unwrap_or(dir)
}

/// A free loopback port inside the runtime's namespace.
async fn free_port(rt: &NsRuntime) -> u16 {
    rt.run(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    })
    .await
}

/// The manager's router on `127.0.0.1:<port>` inside its namespace.
pub struct Served {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Served {
    pub async fn start(rt: &NsRuntime, router: axum::Router) -> Served {
        let listener = rt
            .run(async { tokio::net::TcpListener::bind("127.0.0.1:0").await })
            .await
            .expect("listen in the namespace");
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        drop(rt.spawn(async move {
            let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
        Served {
            port,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A headless Chromium session.
pub struct Browser {
    pub client: Client,
    pub base: String,
    pub downloads: PathBuf,
    driver: std::process::Child,
    driver_port: u16,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver in namespace `ns` and opens a session; `base` is the console's origin.
    pub async fn start(ns: &str, rt: &NsRuntime, base: String) -> Browser {
        let port = free_port(rt).await;
        let profile = tempfile::tempdir().expect("profile dir");
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let driver = std::process::Command::new("ip")
            .args(["netns", "exec", ns, CHROMEDRIVER, &format!("--port={port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // A group of its own, so drop can take Chromium down with it.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let caps = json!({
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().join("p").display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let (caps, url) = (caps.clone(), url.clone());
            // The session's connection task is spawned where it is opened: in the namespace.
            let r = rt
                .run(async move {
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(caps)
                        .connect(&url)
                        .await
                })
                .await;
            match r {
                Ok(c) => break c,
                Err(e) if Instant::now() > end => panic!("chromedriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser {
            client,
            base,
            downloads,
            driver,
            driver_port: port,
            profile,
        }
    }

    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client.goto(&url).await.expect("navigate");
    }

    /// The path (and query) the browser shows.
    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.expect("current url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// The first element matching `css`, waiting up to `secs` for it.
    pub async fn wait(&self, css: &str, secs: u64) -> Element {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                return e;
            }
            if Instant::now() > end {
                self.shot("failure").await;
                panic!(
                    "{css} did not appear within {secs} s (page: {})",
                    self.path().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matching `css` has text satisfying `ok`; returns that text.
    pub async fn wait_text(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut last = String::new();
        loop {
            if let Ok(all) = self.client.find_all(Locator::Css(css)).await {
                for e in all {
                    if let Ok(t) = e.text().await {
                        if ok(&t) {
                            return t;
                        }
                        last = t;
                    }
                }
            }
            if Instant::now() > end {
                self.shot("failure").await;
                panic!("{css}: no matching text within {secs} s; last seen {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.wait(css, 20).await.click().await.expect("click");
    }

    /// Replaces the value of an input or textarea.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.wait(css, 20).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Waits until nothing matches `css` (a row removed, a dialog closed).
    pub async fn wait_gone(&self, css: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while self.count(css).await > 0 {
            if Instant::now() > end {
                self.shot("failure").await;
                panic!("{css} still present after {secs} s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Writes a PNG of the viewport to the artefacts directory and returns its path.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let path = artefacts_dir().join(format!("{name}.png"));
        if let Ok(png) = self.client.screenshot().await {
            std::fs::write(&path, png).expect("write screenshot");
            println!("screenshot: {}", path.display());
        }
        path
    }

    /// The page's console entries of level SEVERE since the last call (script errors, CSP
    /// violations, failed requests), through chromedriver's log endpoint.
    pub async fn severe_logs(&self, rt: &NsRuntime) -> Vec<String> {
        let id = self
            .client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("session id");
        let path = format!("/session/{id}/se/log");
        let json = [("content-type", "application/json")];
        let body = r#"{"type":"browser"}"#;
        let (status, _, bytes) = http(rt, self.driver_port, "POST", &path, &json, body).await;
        assert!(status.is_success(), "{path}: {status}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("log JSON");
        v["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Ends the session (Chromium exits); drop kills whatever is left.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = self.driver.id() as i32;
        // SAFETY: kill(2) on the process group we created; at worst it is gone already.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.driver.wait();
        // Chromium helpers that left the group still name the profile on their command line.
        for pid in rds_testkit::pids_matching(&self.profile.path().display().to_string()) {
            // SAFETY: as above, for a pid read just now.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// One HTTP request over the loopback listener, from inside the namespace: status, headers, body.
pub async fn http(
    rt: &NsRuntime,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    use http_body_util::{BodyExt, Full};
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    rt.run(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let resp = tx.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, bytes)
    })
    .await
}
