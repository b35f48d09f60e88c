//! CSRF proof for writes authenticated by the session cookie alone (docs/reference/api.md §1.3):
//! the `Origin` (or, without one, the `Referer`) names the host the request was sent to, or
//! `X-RDS-CSRF` carries the session's token.

use http::HeaderMap;
use subtle::ConstantTimeEq;

pub const HEADER: &str = "x-rds-csrf";

/// `host[:port]` of an absolute URL (`Origin` or `Referer`), lowercased; `None` for anything else
/// (`Origin: null`, relative or userinfo-bearing URLs).
fn authority(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty() && !authority.contains('@')).then(|| authority.to_ascii_lowercase())
}

/// Whether a cookie-authenticated write carries proof that it came from the console's own origin.
pub fn passes(headers: &HeaderMap, host: Option<&str>, csrf_token: &str) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let source = match header("origin") {
        Some(origin) => Some(origin),
        None => header("referer"),
    };
    let same_origin = match (source.and_then(authority), host) {
        (Some(from), Some(host)) => from == host.to_ascii_lowercase(),
        _ => false,
    };
    let token_ok =
        header(HEADER).is_some_and(|t| bool::from(t.as_bytes().ct_eq(csrf_token.as_bytes())));
    same_origin || token_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origin_referer_and_token() {
        let host = Some("console.example:3000");
        let ok = |pairs: &[(&'static str, &str)]| passes(&headers(pairs), host, "tok");
        assert!(ok(&[("origin", "http://console.example:3000")]));
        assert!(ok(&[("origin", "https://CONSOLE.example:3000")]));
        assert!(!ok(&[("origin", "http://evil.example")]));
        assert!(!ok(&[("origin", "null")]));
        assert!(ok(&[(
            "referer",
            "http://console.example:3000/console/vms?x=1"
        )]));
        assert!(!ok(&[(
            "referer",
            "http://console.example:3000@evil.example/"
        )]));
        // An Origin that does not match is not rescued by a matching Referer.
        assert!(!ok(&[
            ("origin", "http://evil.example"),
            ("referer", "http://console.example:3000/")
        ]));
        assert!(ok(&[
            ("origin", "http://evil.example"),
            ("x-rds-csrf", "tok")
        ]));
        assert!(!ok(&[("x-rds-csrf", "other")]));
        assert!(!ok(&[]));
        assert!(!passes(&headers(&[("origin", "http://a")]), None, "tok"));
    }
}
