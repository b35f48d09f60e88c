//! Request and response helpers shared by the routes: bounded JSON bodies, JSON and empty replies,
//! query strings, streamed request bodies and streamed replies.

use std::collections::HashMap;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use rds_protocol::{messages, HEADER_MAX_RESPONSE_BYTES, MAX_JSON_BODY_BYTES};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Every reply body: a buffered one ([`full`]) or a stream ([`ChannelBody`]).
pub type Body = BoxBody<Bytes, io::Error>;

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// 204 with no body.
pub fn no_content() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// A JSON reply with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // Our reply types always serialise.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn error(err: &ApiError) -> Response<Body> {
    let mut resp = json(err.status(), &err.body());
    if let ApiError::MethodNotAllowed { allow } = err {
        resp.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// Checks that `req` asks to switch to `protocol` (`Connection: upgrade`, `Upgrade: <protocol>`).
pub fn require_upgrade(req: &Request<Incoming>, protocol: &str) -> Result<(), ApiError> {
    let has = |name: hyper::header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if has(hyper::header::CONNECTION, "upgrade") && has(hyper::header::UPGRADE, protocol) {
        Ok(())
    } else {
        Err(ApiError::refused(
            StatusCode::UPGRADE_REQUIRED,
            format!("Upgrade to {protocol} required"),
        ))
    }
}

/// 101 switching to `protocol`; the connection is the caller's once hyper hands it over.
pub fn switching(protocol: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    resp.headers_mut()
        .insert(hyper::header::UPGRADE, HeaderValue::from_static(protocol));
    resp
}

/// Reads a JSON body of at most [`MAX_JSON_BODY_BYTES`], refusing larger ones as soon as that is known
/// (from `Content-Length`, or while reading).
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_JSON_BODY_BYTES as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let collected = Limited::new(req.into_body(), MAX_JSON_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::BodyTooLarge
            } else {
                ApiError::BadRequest {
                    message: "Could not read request body".into(),
                    detail: Some(e.to_string()),
                }
            }
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(|e| ApiError::BadRequest {
        message: messages::INVALID_JSON.into(),
        detail: Some(e.to_string()),
    })
}

/// The query string as a map (`application/x-www-form-urlencoded`; the last of repeated keys wins).
/// Values that are not UTF-8 after decoding are refused.
pub fn query(req: &Request<Incoming>) -> Result<HashMap<String, String>, ApiError> {
    parse_query(req.uri().query().unwrap_or(""))
}

fn parse_query(q: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode_component(k)?, decode_component(v)?);
    }
    Ok(out)
}

fn decode_component(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request_detail("Invalid query string", "bad percent-encoding");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits exactly: `from_str_radix` alone would also take a sign ("%+1").
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(bad());
                }
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Copies a request body into `file`, refusing more than `limit` bytes with 413 (from
/// `Content-Length` before reading, or while reading a chunked body). Returns the bytes written.
pub async fn body_to_file(
    req: Request<Incoming>,
    limit: u64,
    file: &mut std::fs::File,
) -> Result<u64, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge);
    }
    let mut body = req.into_body();
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest {
            message: "Could not read request body".into(),
            detail: Some(e.to_string()),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        written += data.len() as u64;
        if written > limit {
            return Err(ApiError::BodyTooLarge);
        }
        // The spool lives on tmpfs; a write there does not block for long.
        file.write_all(&data)
            .map_err(|e| ApiError::internal("cannot spool the request body", e))?;
    }
    Ok(written)
}

/// A reply body fed by another thread through a channel; an `Err` item ends the reply abruptly, which
/// the peer sees as a truncated chunked body.
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl ChannelBody {
    /// The body and the sender that feeds it (`blocking_send` from a plain thread).
    pub fn new(depth: usize) -> (ChannelBody, mpsc::Sender<io::Result<Bytes>>) {
        let (tx, rx) = mpsc::channel(depth);
        (ChannelBody { rx }, tx)
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Whether the caller asked for a streamed reply (`Accept: application/x-ndjson`).
pub fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(rds_protocol::stream::accepts_ndjson)
}

/// A 200 streamed reply of JSON lines.
pub fn ndjson(body: ChannelBody) -> Response<Body> {
    let mut resp = Response::new(body.boxed());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(rds_protocol::stream::NDJSON),
    );
    resp
}

/// A `Write` that hands its bytes to a [`ChannelBody`] in chunks of about `chunk` bytes.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    chunk: usize,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>, chunk: usize) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(chunk),
            chunk,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.chunk),
        ));
        self.tx
            .blocking_send(Ok(data))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the peer went away"))
    }

    /// Ends the body with an error, so the peer cannot mistake a cut-off archive for a whole one.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The manager's body budget (`X-RDS-Max-Response-Bytes`), if it sent a valid one.
pub fn max_response_bytes(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(HEADER_MAX_RESPONSE_BYTES)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any value survives percent-encoding of every byte and back.
        #[test]
        fn query_values_round_trip(value in ".{0,64}") {
            let encoded: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
            let q = parse_query(&format!("path={encoded}")).unwrap();
            prop_assert_eq!(&q["path"], &value);
        }

        /// Whatever the input, parsing never panics, and it only succeeds when every `%` starts a
        /// two-hex-digit escape.
        #[test]
        fn query_strings_are_refused_or_well_formed(q in "[a-z=&%+0-9A-F\\-]{0,24}") {
            let well_formed = q.split('%').skip(1).all(|rest| {
                rest.len() >= 2 && rest.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit)
            });
            if parse_query(&q).is_ok() {
                prop_assert!(well_formed, "{q} accepted");
            }
        }
    }

    #[test]
    fn budget_header() {
        let mut h = HeaderMap::new();
        assert_eq!(max_response_bytes(&h), None);
        h.insert(HEADER_MAX_RESPONSE_BYTES, HeaderValue::from_static("4096"));
        assert_eq!(max_response_bytes(&h), Some(4096));
        h.insert(HEADER_MAX_RESPONSE_BYTES, HeaderValue::from_static("-1"));
        assert_eq!(max_response_bytes(&h), None);
    }

    #[test]
    fn query_strings() {
        let q = parse_query("dest=%2Fworkspace%2Fa+b&readOnly=true&x&dest=c%2Bd").unwrap();
        assert_eq!(q["dest"], "c+d");
        assert_eq!(q["readOnly"], "true");
        assert_eq!(q["x"], "");
        assert_eq!(
            parse_query("path=%2Fworkspace%2Fa+b").unwrap()["path"],
            "/workspace/a b"
        );
        assert!(parse_query("path=%zz").is_err());
        assert!(parse_query("path=%2").is_err());
        // A sign is no hex digit (`from_str_radix` would take "+1" as 1).
        assert!(parse_query("path=%+1").is_err());
        assert!(parse_query("path=%ff").is_err());
    }

    #[test]
    fn method_not_allowed_names_the_allowed_one() {
        let resp = error(&ApiError::MethodNotAllowed { allow: "GET" });
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()["allow"], "GET");
        assert_eq!(resp.headers()["content-type"], "application/json");
    }
}
