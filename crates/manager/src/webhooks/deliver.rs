//! One delivery attempt (`docs/reference/api-admin.md` Webhooks): the stored body, signed with the
//! hook's secret over `"<timestamp>.<body>"`, POSTed with a 5 s limit, no redirects, at most 64 KiB
//! of the answer read; and what the outcome means for the next attempt.

use crate::db::{AttemptOutcome, DeliveryRecord};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Waits after failed attempts 1..5; the 6th attempt is the last.
const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(1800),
    Duration::from_secs(7200),
];
const MAX_ANSWER: usize = 64 * 1024;
/// `error` texts are cut to this many characters.
const MAX_ERROR: usize = 500;

/// `X-RDS-Signature` value: `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt {
    Delivered(u16),
    /// Worth another try: network error, timeout, 408, 429, 5xx.
    Retry {
        status: Option<u16>,
        error: String,
    },
    /// Never worth another try: other statuses, redirects, a refused address.
    Fail {
        status: Option<u16>,
        error: String,
    },
}

/// Sends `d` to `url` once.
pub async fn attempt(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    d: &DeliveryRecord,
) -> Attempt {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_secs())
        .unwrap_or(0);
    let req = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-rds-event", &d.event_type)
        .header("x-rds-delivery", &d.id)
        .header("x-rds-timestamp", timestamp.to_string())
        .header("x-rds-signature", signature(secret, timestamp, &d.payload))
        .body(d.payload.clone());
    let sent = tokio::time::timeout(TIMEOUT, async {
        let mut resp = req.send().await?;
        let status = resp.status().as_u16();
        // Read (and drop) a bounded part of the answer, so a slow or endless body cannot hold us.
        let mut read = 0usize;
        while read < MAX_ANSWER {
            match resp.chunk().await? {
                Some(c) => read += c.len(),
                None => break,
            }
        }
        Ok::<u16, reqwest::Error>(status)
    })
    .await;
    match sent {
        Err(_) => Attempt::Retry {
            status: None,
            error: format!("no answer within {} s", TIMEOUT.as_secs()),
        },
        Ok(Err(e)) if is_blocked(&e) => Attempt::Fail {
            status: None,
            error: "blocked address".into(),
        },
        Ok(Err(e)) => Attempt::Retry {
            status: None,
            error: cut(crate::error_chain(&e)),
        },
        Ok(Ok(s)) if (200..300).contains(&s) => Attempt::Delivered(s),
        Ok(Ok(s)) if s == 408 || s == 429 || s >= 500 => Attempt::Retry {
            status: Some(s),
            error: format!("HTTP {s}"),
        },
        Ok(Ok(s)) => Attempt::Fail {
            status: Some(s),
            error: format!("HTTP {s}"),
        },
    }
}

fn is_blocked(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if s.is::<super::guard::BlockedAddress>() {
            return true;
        }
        src = s.source();
    }
    false
}

fn cut(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_ERROR) {
        s.truncate(i);
    }
    s
}

/// The stored outcome of attempt number `attempt` (1-based) that came to `r`.
pub fn outcome(attempt: u32, r: Attempt) -> AttemptOutcome {
    match r {
        Attempt::Delivered(s) => AttemptOutcome {
            status: "succeeded",
            response_status: Some(s),
            error: None,
            next_attempt_at: None,
        },
        Attempt::Retry { status, error } => match RETRY_DELAYS.get(attempt as usize - 1) {
            Some(delay) => AttemptOutcome {
                status: "pending",
                response_status: status,
                error: Some(error),
                next_attempt_at: Some(at(jitter(*delay))),
            },
            None => AttemptOutcome {
                status: "failed",
                response_status: status,
                error: Some(error),
                next_attempt_at: None,
            },
        },
        Attempt::Fail { status, error } => AttemptOutcome {
            status: "failed",
            response_status: status,
            error: Some(error),
            next_attempt_at: None,
        },
    }
}

/// ±20 %, so hooks failing together do not retry together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

fn at(after: Duration) -> String {
    let t = chrono::Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        let sig = signature("key", 1700000000, "{}");
        assert_eq!(
            sig,
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        assert_ne!(sig, signature("key", 1700000001, "{}"));
        assert_ne!(sig, signature("other", 1700000000, "{}"));
    }

    #[test]
    fn schedule() {
        let retry = || Attempt::Retry {
            status: Some(503),
            error: "HTTP 503".into(),
        };
        for attempt in 1..=5 {
            let o = outcome(attempt, retry());
            assert_eq!(o.status, "pending", "attempt {attempt}");
            assert!(o.next_attempt_at.is_some());
        }
        let last = outcome(6, retry());
        assert_eq!((last.status, last.next_attempt_at), ("failed", None));
        let o = outcome(
            1,
            Attempt::Fail {
                status: Some(404),
                error: "HTTP 404".into(),
            },
        );
        assert_eq!((o.status, o.response_status), ("failed", Some(404)));
        assert_eq!(outcome(3, Attempt::Delivered(204)).status, "succeeded");
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }
}
