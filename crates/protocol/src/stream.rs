//! Streamed exec, run-ts and run-js (`docs/api.md` "Streaming"): asked for with `Accept:
//! application/x-ndjson`, answered as one JSON object per line. The agent writes these lines and
//! the manager relays them unchanged to its client, reading them on the way for the exec log.

use serde::{Deserialize, Serialize};

/// The media type of a streamed reply (request `Accept`, reply `Content-Type`).
pub const NDJSON: &str = "application/x-ndjson";

/// Whether an `Accept` header value (a comma-separated list of media types, parameters ignored)
/// asks for the streamed form. Agent and manager both decide with this.
pub fn accepts_ndjson(accept: &str) -> bool {
    accept.split(',').any(|m| {
        let mime = m.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case(NDJSON)
    })
}

/// `{"type":"stdout"|"stderr","data":…}`: output as it arrives, as UTF-8 text (a character is
/// never split between two events; invalid bytes become U+FFFD). Nothing more is sent for a
/// stream once its `OUTPUT_CAP_BYTES` are out; the final event says it was truncated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub data: std::borrow::Cow<'a, str>,
}

/// The last line of a finished call: the reply of the non-streamed form without its output.
/// `J` carries run-ts/run-js `result` and `error` (raw JSON in the manager).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "J: Deserialize<'de>"))]
pub struct ExitEvent<J> {
    #[serde(rename = "type")]
    pub kind: String,
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<J>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<J>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// `{"type":"error","message":…}`: the call could not finish (the manager lost the agent); the
/// stream ends after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// The type of one line, for a reader that only routes them.
#[derive(Debug, Deserialize)]
pub struct LineKind<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
}

/// Cuts `buf` before an incomplete UTF-8 sequence at its end, so a character split between two
/// reads is decoded whole with the next one. Returns where the complete part ends.
pub fn complete_utf8_len(buf: &[u8]) -> usize {
    // A sequence is at most 4 bytes: look at the last 3 for its lead byte.
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back {
            buf.len() - back
        } else {
            buf.len()
        };
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_compared_without_parameters_or_case() {
        assert!(accepts_ndjson("application/x-ndjson"));
        assert!(accepts_ndjson("text/html, Application/X-NDJSON; q=0.9"));
        assert!(!accepts_ndjson("application/json"));
        assert!(!accepts_ndjson("application/x-ndjsonx, */*"));
    }

    #[test]
    fn split_characters_wait_for_their_rest() {
        let e = "é".as_bytes(); // C3 A9
        assert_eq!(complete_utf8_len(b"abc"), 3);
        assert_eq!(complete_utf8_len(&[b'a', e[0]]), 1);
        assert_eq!(complete_utf8_len(&[b'a', e[0], e[1]]), 3);
        let four = "😀".as_bytes();
        assert_eq!(complete_utf8_len(&four[..3]), 0);
        assert_eq!(complete_utf8_len(four), 4);
        // Invalid bytes are not held back (they decode as U+FFFD).
        assert_eq!(complete_utf8_len(&[0xFF]), 1);
        assert_eq!(complete_utf8_len(&[]), 0);
    }

    #[test]
    fn lines_have_their_type() {
        let out = OutputEvent {
            kind: "stdout",
            data: "hi\n".into(),
        };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"type":"stdout","data":"hi\n"}"#
        );
        let exit: ExitEvent<serde_json::Value> = ExitEvent {
            kind: "exit".into(),
            exit_code: 3,
            ..Default::default()
        };
        let text = serde_json::to_string(&exit).unwrap();
        assert!(
            text.starts_with(r#"{"type":"exit","exitCode":3,"#),
            "{text}"
        );
        let k: LineKind = serde_json::from_str(&text).unwrap();
        assert_eq!(k.kind, "exit");
    }
}
