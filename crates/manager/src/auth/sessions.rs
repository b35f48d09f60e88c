//! Session tokens and the `rds_session` cookie (docs/reference/security.md §3): the token is 32
//! random bytes as unpadded base64url; the DB keeps only its SHA-256.

use super::hashing;
use base64::Engine;
use http::HeaderMap;
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "rds_session";
/// Length of a token: 32 bytes in unpadded base64url.
const TOKEN_LEN: usize = 43;

/// 32 random bytes, unpadded base64url (session ids and CSRF tokens).
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hashing::random_bytes::<32>())
}

/// The DB key of a session token.
pub fn id_hash(token: &str) -> String {
    hashing::hex(&Sha256::digest(token.as_bytes()))
}

/// The session token of the request's cookies, if one of the right shape is there.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|v| {
            v.len() == TOKEN_LEN
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn attributes(secure: bool) -> &'static str {
    if secure {
        "HttpOnly; SameSite=Lax; Path=/; Secure"
    } else {
        "HttpOnly; SameSite=Lax; Path=/"
    }
}

/// `Set-Cookie` value of a new session.
pub fn set_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; {}; Max-Age={max_age_secs}",
        attributes(secure)
    )
}

/// `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; {}; Max-Age=0", attributes(secure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_cookies() {
        let t = new_token();
        assert_eq!(t.len(), TOKEN_LEN);
        let mut h = HeaderMap::new();
        h.append("cookie", format!("a=b; {COOKIE}={t}; c=d").parse().unwrap());
        assert_eq!(token(&h), Some(t.as_str()));
        let mut bad = HeaderMap::new();
        bad.append("cookie", format!("{COOKIE}=short").parse().unwrap());
        assert_eq!(token(&bad), None);
        assert_eq!(token(&HeaderMap::new()), None);
        assert!(set_cookie(&t, 60, true).ends_with("Path=/; Secure; Max-Age=60"));
        assert_eq!(
            clear_cookie(false),
            "rds_session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"
        );
        assert_eq!(id_hash("x").len(), 64);
    }
}
