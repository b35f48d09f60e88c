//! Streamed exec, run-ts and run-js (`docs/api.md` "Streaming"): the answer is JSON lines, one
//! event each. Output is written to our stdout and stderr as it comes; the `exit` line ends the call
//! with the command's code, an `error` line with a failure.

use crate::client::{root_cause, Failure};
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::io::Write;

/// The media type asked for (`Accept`) and answered (`Content-Type`).
pub const NDJSON: &str = "application/x-ndjson";

/// Whether a `Content-Type` is the streamed form (a manager without streaming answers JSON).
pub fn is_ndjson(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(NDJSON))
}

/// Cuts a byte stream into lines, a line split between two chunks included.
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Adds `chunk`; answers the lines it completed, without their `\n` (empty lines skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let done: Vec<u8> = self.pending.drain(..=end).collect();
        done.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// What is left when the stream ended: a last line without its `\n`, if any.
    pub fn rest(self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then_some(self.pending)
    }
}

/// Where one line's event goes: output to `out`/`err`, flushed at once (a prompt has no newline).
pub struct Relay<O, E> {
    pub out: O,
    pub err: E,
}

impl<O: Write, E: Write> Relay<O, E> {
    /// Handles one line; answers the exit event once it came. Lines of unknown types (a later
    /// release's) are skipped. A closed stdout (`| head`) is the reader's choice: writes that fail
    /// are dropped and the command runs on, as with the buffered call.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Value>, Failure> {
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| Failure::conn(format!("a streamed line is not JSON: {e}")))?;
        let text = || v.get("data").and_then(Value::as_str).unwrap_or_default();
        match v.get("type").and_then(Value::as_str) {
            Some("stdout") => {
                let _ = self.out.write_all(text().as_bytes());
                let _ = self.out.flush();
            }
            Some("stderr") => {
                let _ = self.err.write_all(text().as_bytes());
                let _ = self.err.flush();
            }
            Some("exit") => return Ok(Some(v)),
            Some("error") => {
                let msg = v.get("message").and_then(Value::as_str);
                return Err(Failure::conn(msg.unwrap_or("the call failed")));
            }
            _ => {}
        }
        Ok(None)
    }
}

/// Follows a streamed answer to its end: output relayed, then what `finish` prints; answers the
/// exit code. A stream cut before its `exit` line is a failure (exit 3).
pub async fn follow<S, B, X, O, E>(body: S, relay: &mut Relay<O, E>) -> Result<i32, Failure>
where
    S: Stream<Item = Result<B, X>>,
    B: AsRef<[u8]>,
    X: std::error::Error + 'static,
    O: Write,
    E: Write,
{
    let mut body = std::pin::pin!(body);
    let mut lines = Lines::default();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Failure::conn(format!("reading the answer: {}", root_cause(&e))))?;
        for line in lines.push(chunk.as_ref()) {
            if let Some(exit) = relay.line(&line)? {
                return Ok(finish(&exit, &mut relay.out, &mut relay.err));
            }
        }
    }
    if let Some(line) = lines.rest() {
        if let Some(exit) = relay.line(&line)? {
            return Ok(finish(&exit, &mut relay.out, &mut relay.err));
        }
    }
    Err(Failure::conn(
        "the answer ended before the command's exit code",
    ))
}

/// What follows a command's output, buffered or streamed: a run's `result` as JSON on stdout, its
/// `error` and a timeout on stderr. Answers the exit code to leave with (`exit_code`).
pub fn finish(r: &Value, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let timed_out = r.get("timedOut") == Some(&Value::Bool(true));
    if let Some(res) = r.get("result") {
        let _ = writeln!(out, "{res}");
    }
    if let Some(e) = r.get("error") {
        let _ = writeln!(err, "error: {}", crate::output::cell(Some(e)));
    }
    if timed_out {
        let _ = writeln!(err, "rds: the command timed out");
    }
    let _ = out.flush();
    let _ = err.flush();
    exit_code(r)
}

/// The exit code of a finished call: the command's own, 124 when it timed out, 127 when it has
/// none (it could not start).
pub fn exit_code(r: &Value) -> i32 {
    match r.get("exitCode").and_then(Value::as_i64) {
        Some(code) if (0..=255).contains(&code) => code as i32,
        _ if r.get("timedOut") == Some(&Value::Bool(true)) => 124,
        _ => 127,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn relay() -> Relay<Vec<u8>, Vec<u8>> {
        Relay {
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    /// `follow` over `chunks`, answering (result, stdout, stderr).
    fn run(chunks: &[&[u8]]) -> (Result<i32, Failure>, String, String) {
        let items: Vec<Result<Vec<u8>, std::io::Error>> =
            chunks.iter().map(|c| Ok(c.to_vec())).collect();
        let mut r = relay();
        let code = futures::executor::block_on(follow(futures::stream::iter(items), &mut r));
        let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (code, s(r.out), s(r.err))
    }

    #[test]
    fn lines_are_cut_across_chunks() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"a\"").is_empty());
        assert_eq!(
            l.push(b":1}\n{\"b\":2}\n{\"c"),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        // A character split between two chunks is whole once its line is.
        let e = "é".as_bytes();
        assert!(l.push(&[b'"', b':', b'"', e[0]]).is_empty());
        assert_eq!(
            l.push(&[e[1], b'"', b'}', b'\n', b'\n']),
            vec!["{\"c\":\"é\"}".as_bytes().to_vec()]
        );
        assert_eq!(l.rest(), None);
        let mut l = Lines::default();
        l.push(b"{}\nlast");
        assert_eq!(l.rest(), Some(b"last".to_vec()));
    }

    #[test]
    fn output_goes_out_as_it_comes_and_the_exit_code_is_passed_through() {
        let (code, out, err) = run(&[
            b"{\"type\":\"stdout\",\"data\":\"a\\n\"}\n{\"type\":\"std",
            b"err\",\"data\":\"b\\n\"}\n",
            b"{\"type\":\"progress\",\"pct\":5}\n",
            b"{\"type\":\"stdout\",\"data\":\"c\"}\n",
            b"{\"type\":\"exit\",\"exitCode\":3,\"stdoutTruncated\":false,\"stderrTruncated\":false,\"timedOut\":false,\"durationMs\":9}\n",
        ]);
        assert_eq!(code.unwrap(), 3);
        assert_eq!((out.as_str(), err.as_str()), ("a\nc", "b\n"));
        // The exit line may come without a final newline.
        let (code, _, _) = run(&[b"{\"type\":\"exit\",\"exitCode\":0,\"timedOut\":false}"]);
        assert_eq!(code.unwrap(), 0);
    }

    #[test]
    fn a_run_prints_its_result_and_error_after_the_output() {
        let (code, out, err) = run(&[
            b"{\"type\":\"stdout\",\"data\":\"hi\\n\"}\n",
            b"{\"type\":\"exit\",\"exitCode\":1,\"result\":{\"n\":42},\"error\":\"boom\",\"timedOut\":false}\n",
        ]);
        assert_eq!(code.unwrap(), 1);
        assert_eq!(out, "hi\n{\"n\":42}\n");
        assert_eq!(err, "error: boom\n");
    }

    #[test]
    fn a_timeout_exits_124_and_says_so() {
        let (code, _, err) = run(&[b"{\"type\":\"exit\",\"exitCode\":-1,\"timedOut\":true}\n"]);
        assert_eq!(code.unwrap(), 124);
        assert_eq!(err, "rds: the command timed out\n");
        assert_eq!(
            finish(&json!({"exitCode": -1}), &mut Vec::new(), &mut Vec::new()),
            127
        );
    }

    #[test]
    fn an_error_line_or_a_cut_stream_is_a_failure() {
        let (code, out, _) = run(&[
            b"{\"type\":\"stdout\",\"data\":\"partial\"}\n",
            b"{\"type\":\"error\",\"message\":\"Agent stream ended early\"}\n",
        ]);
        let f = code.unwrap_err();
        assert_eq!((f.code, f.msg.as_str()), (3, "Agent stream ended early"));
        assert_eq!(out, "partial");
        let f = run(&[b"{\"type\":\"stdout\",\"data\":\"x\"}\n"])
            .0
            .unwrap_err();
        assert_eq!(f.code, 3);
        assert!(f.msg.contains("ended before"), "{}", f.msg);
        let f = run(&[b"not json\n"]).0.unwrap_err();
        assert_eq!(f.code, 3);
        let cut: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Err(std::io::Error::other("connection reset"))];
        let f = futures::executor::block_on(follow(futures::stream::iter(cut), &mut relay()))
            .unwrap_err();
        assert_eq!(
            (f.code, f.msg.as_str()),
            (3, "reading the answer: connection reset")
        );
    }

    #[test]
    fn only_ndjson_is_the_streamed_form() {
        assert!(is_ndjson(Some("application/x-ndjson")));
        assert!(is_ndjson(Some("Application/X-NDJSON; charset=utf-8")));
        assert!(!is_ndjson(Some("application/json")));
        assert!(!is_ndjson(None));
    }
}
