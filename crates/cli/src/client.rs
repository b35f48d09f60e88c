//! The HTTP client: authentication, errors turned into one line and an exit code.

use reqwest::{Method, RequestBuilder, Response, Url};
use serde_json::Value;

/// A failure that ends the program: one line on stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub msg: String,
}

impl Failure {
    /// A mistake of the caller found before any request (exit 1).
    pub fn usage(msg: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            msg: msg.into(),
        }
    }
    /// The manager could not be reached or failed mid-answer (exit 3).
    pub fn conn(msg: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            msg: msg.into(),
        }
    }
    /// An error answer: 4xx exits 1, anything else 3.
    pub fn api(status: u16, msg: &str) -> Failure {
        let code = if (400..500).contains(&status) { 1 } else { 3 };
        Failure {
            code,
            msg: format!("{msg} (HTTP {status})"),
        }
    }
}

/// How requests prove who they are.
pub enum Auth {
    Key(Option<String>),
    /// The admin session (cookie plus CSRF token): session-only routes refuse API keys.
    Session {
        cookie: String,
        csrf: String,
    },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    pub auth: Auth,
}

/// The innermost cause of an error, which says what actually went wrong (refused, DNS, ...).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Client {
    pub fn new(base: &str, auth: Auth) -> Result<Client, Failure> {
        // reqwest is built without a default TLS provider; installing one twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = base.trim_end_matches('/').to_string();
        Url::parse(&base).map_err(|e| Failure::usage(format!("invalid URL '{base}': {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("rds/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::conn(format!("HTTP client: {}", root_cause(&e))))?;
        Ok(Client { http, base, auth })
    }

    pub fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut u = Url::parse(&format!("{}{path}", self.base)).expect("base URL was checked");
        if !query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        u
    }

    pub fn request(&self, method: Method, path: &str, query: &[(&str, String)]) -> RequestBuilder {
        let rb = self.http.request(method, self.url(path, query));
        match &self.auth {
            Auth::Key(Some(k)) => rb.header("x-api-key", k),
            Auth::Key(None) => rb,
            Auth::Session { cookie, csrf } => rb
                .header("cookie", format!("rds_session={cookie}"))
                .header("x-rds-csrf", csrf),
        }
    }

    /// Sends a request; an error status becomes a Failure carrying the API's message.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response, Failure> {
        let resp = rb.send().await.map_err(|e| {
            Failure::conn(format!("cannot reach {}: {}", self.base, root_cause(&e)))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let msg = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        Err(Failure::api(status.as_u16(), &one_line(&msg)))
    }

    /// A JSON call; an answer without a body (204) is `Value::Null`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut rb = self.request(method, path, query);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = self.send(rb).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::conn(format!("reading the answer: {}", root_cause(&e))))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::conn(format!("the answer is not JSON: {e}")))
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        self.call(Method::POST, path, &[], body).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.call(Method::DELETE, path, &[], None).await
    }
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_status() {
        assert_eq!(Failure::api(404, "VM x not found").code, 1);
        assert_eq!(
            Failure::api(404, "VM x not found").msg,
            "VM x not found (HTTP 404)"
        );
        assert_eq!(Failure::api(502, "Agent unreachable").code, 3);
        assert_eq!(one_line("a\nb  c"), "a b c");
    }

    #[test]
    fn builds_urls_with_escaped_queries() {
        let c = Client::new("http://h:1/", Auth::Key(None)).unwrap();
        let u = c.url("/v1/vms", &[("metadata.team", "a b&c".into())]);
        assert_eq!(u.as_str(), "http://h:1/v1/vms?metadata.team=a+b%26c");
        assert!(Client::new("not a url", Auth::Key(None)).is_err());
    }
}
