//! Admin sessions, DB keys, activity and captured logs for the auth and admin API tests.

use super::{Resp, TestManager};
use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::Value;
use std::sync::{Mutex, Once};
use std::time::Duration;

/// `ADMIN_EMAIL` / `ADMIN_PASSWORD` of test managers.
pub const EMAIL: &str = "admin@example.com";
pub const PASSWORD: &str = "admin-password-123";

/// A request with exactly these headers (no master key) and, when given, a JSON body.
pub fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

/// `request` as if it came from `client` (what the server's connection info would say).
pub fn from_client(mut req: Request<Body>, client: &str) -> Request<Body> {
    let addr: std::net::SocketAddr = format!("{client}:40000").parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

/// A logged-in admin: the cookie to send and the session's CSRF token.
pub struct Admin {
    pub cookie: String,
    pub csrf: String,
}

impl Admin {
    /// Cookie plus `X-RDS-CSRF`: passes the CSRF check whatever the origin.
    pub fn headers(&self) -> [(&str, &str); 2] {
        [("cookie", &self.cookie), ("x-rds-csrf", &self.csrf)]
    }

    pub async fn call(
        &self,
        tm: &TestManager,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        tm.send(request(method, path, &self.headers(), body)).await
    }
}

/// `POST /auth/login` with these credentials.
pub async fn try_login(tm: &TestManager, email: &str, password: &str) -> Resp {
    let body = serde_json::json!({ "email": email, "password": password });
    tm.send(request(Method::POST, "/auth/login", &[], Some(body)))
        .await
}

/// Logs in with the test credentials.
pub async fn login(tm: &TestManager) -> Admin {
    login_as(tm, PASSWORD).await
}

pub async fn login_as(tm: &TestManager, password: &str) -> Admin {
    let r = try_login(tm, EMAIL, password).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let set = r.headers["set-cookie"].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_string();
    Admin {
        cookie,
        csrf: r.json["csrfToken"].as_str().unwrap().to_string(),
    }
}

/// Creates a DB key named `name` through the admin API; returns (id, key).
pub async fn create_key(tm: &TestManager, admin: &Admin, name: &str) -> (String, String) {
    let body = serde_json::json!({ "name": name });
    let r = admin
        .call(tm, Method::POST, "/v1/admin/api-keys", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    (
        r.json["id"].as_str().unwrap().to_string(),
        r.json["apiKey"].as_str().unwrap().to_string(),
    )
}

/// `GET path` with this API key.
pub async fn with_key(tm: &TestManager, key: &str, path: &str) -> Resp {
    tm.send(request(Method::GET, path, &[("x-api-key", key)], None))
        .await
}

/// The newest activity events (master key), newest first.
pub async fn activity(tm: &TestManager) -> Vec<Value> {
    let r = tm
        .call(Method::GET, "/v1/admin/activity?limit=200", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    r.json.as_array().unwrap().clone()
}

/// Waits (up to 10 s) for an event of `kind` about `entity` (any entity when `None`); events are
/// stored by a writer task just after the operation answered.
pub async fn event(tm: &TestManager, kind: &str, entity: Option<&str>) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = activity(tm).await.into_iter().find(|e| {
            e["type"] == kind && entity.is_none_or(|id| e["entityId"].as_str() == Some(id))
        });
        if let Some(e) = found {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} event about {entity:?}: {:?}",
            activity(tm).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The meta object of a listed event.
pub fn meta(e: &Value) -> Value {
    serde_json::from_str(e["metaJson"].as_str().unwrap()).unwrap()
}

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every manager log line of this test binary, down to debug level, to a buffer that
/// [`captured_logs`] returns. Call before starting a manager.
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .init();
    });
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// Asserts a call answers `status` with `message`.
pub fn expect(r: &Resp, status: StatusCode, message: &str) {
    assert_eq!(
        (r.status, r.json["message"].as_str().unwrap_or_default()),
        (status, message),
        "{}",
        r.json
    );
}
