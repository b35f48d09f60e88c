//! Extractors whose rejections are our `{"message"}` errors
//! (`docs/reference/api.md` §1.4–1.5, §1.8).

use super::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::{Map, Value};

/// A JSON object body of at most `LIMIT` bytes, kept as a map so validation can name each field and
/// refuse coercions. Unknown fields are simply never read.
pub struct JsonObject<const LIMIT: usize>(pub Map<String, Value>);

pub const KIB: usize = 1024;

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for JsonObject<LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            if !is_json(ct.to_str().unwrap_or("")) {
                return Err(ApiError::unsupported_media_type());
            }
        }
        let bytes = axum::body::to_bytes(req.into_body(), LIMIT)
            .await
            .map_err(|_| ApiError::too_large("Body too large"))?;
        parse_object(&bytes).map(JsonObject)
    }
}

fn is_json(ct: &str) -> bool {
    let mut parts = ct.split(';').map(str::trim);
    let mime = parts.next().unwrap_or("");
    mime.eq_ignore_ascii_case("application/json")
        && parts.all(|p| p.is_empty() || p.replace(' ', "").eq_ignore_ascii_case("charset=utf-8"))
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request body must be a JSON object"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("Invalid JSON: {e}"))),
    }
}

/// A path-id extractor: the route's one parameter through `$parse`, else 400 `$message`.
macro_rules! path_id_extractor {
    ($(#[$doc:meta])* $name:ident, $parse:expr, $message:literal) => {
        $(#[$doc])*
        pub struct $name(pub String);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                path_id(parts, state, $parse, $message).await.map($name)
            }
        }
    };
}

path_id_extractor!(
    /// A VM id from the path: UUID v4, canonical, lowercased (`docs/reference/api.md` §1.8).
    VmId,
    parse_vm_id,
    "Invalid VM id"
);

path_id_extractor!(
    /// A UUID v4 id from the path (API keys, webhooks, deliveries).
    UuidId,
    parse_vm_id,
    "Invalid id"
);

/// The route's one path parameter as `parse` canonicalises it; 400 `message` otherwise.
pub async fn path_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    parse: impl Fn(&str) -> Option<String>,
    message: &'static str,
) -> Result<String, ApiError> {
    let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::bad_request(message))?;
    parse(&raw).ok_or_else(|| ApiError::bad_request(message))
}

/// `<prefix><uuid>` (prefix case-insensitive, any UUID version), canonical and lowercased; the
/// form of image and snapshot ids (`docs/reference/api.md` §1.8).
pub fn parse_prefixed_id(raw: &str, prefix: &str) -> Option<String> {
    let rest = raw
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .and(raw.get(prefix.len()..))?;
    if rest.len() != 36 {
        return None;
    }
    let id = uuid::Uuid::try_parse(rest).ok()?;
    Some(format!("{prefix}{}", id.hyphenated()))
}

path_id_extractor!(
    /// A snapshot id from the path: `snap-<uuid>`, lowercased.
    SnapshotId,
    |raw: &str| parse_prefixed_id(raw, "snap-"),
    "Invalid snapshot id"
);

pub fn parse_vm_id(raw: &str) -> Option<String> {
    if raw.len() != 36 {
        return None;
    }
    let id = uuid::Uuid::try_parse(raw).ok()?;
    (id.get_version_num() == 4).then(|| id.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(parse_vm_id(id).as_deref(), Some(id));
        assert_eq!(parse_vm_id(&id.to_uppercase()).as_deref(), Some(id));
        for bad in [
            "undefined",
            "null",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-169f-a165-70867728950e",
        ] {
            assert!(parse_vm_id(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON;charset=UTF-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/json; charset=latin1"));
    }

    #[test]
    fn bodies() {
        assert!(parse_object(b"{}").is_ok());
        assert_eq!(
            parse_object(b"[]").unwrap_err().message,
            "Request body must be a JSON object"
        );
        assert!(parse_object(b"{")
            .unwrap_err()
            .message
            .starts_with("Invalid JSON: "));
        assert_eq!(
            parse_object(b"").unwrap_err().message,
            "Request body must be a JSON object"
        );
    }
}
