//! Output capture and size rules for exec replies (`docs/reference/agent-protocol.md` §5): keep the
//! first bytes of each stream up to the cap, decode them as lossy UTF-8, and trim further when the
//! encoded reply would not fit the manager's body budget.

use std::io;

use rds_protocol::ExecResult;

/// The kept head of one output stream and whether anything was dropped.
#[derive(Debug)]
pub struct Capture {
    kept: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            kept: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Appends what fits under the cap and counts the rest as dropped; returns how many bytes of
    /// `chunk` were kept (a streamed call sends exactly those).
    pub fn push(&mut self, chunk: &[u8]) -> usize {
        let room = self.cap.saturating_sub(self.kept.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        let kept = chunk.len().min(room);
        self.kept.extend_from_slice(&chunk[..kept]);
        kept
    }

    /// Lossy UTF-8 text and the truncated flag. A character cut in half by the cap is dropped rather than
    /// shown as U+FFFD.
    pub fn into_text(mut self) -> (String, bool) {
        if self.truncated {
            if let Err(e) = std::str::from_utf8(&self.kept) {
                if e.error_len().is_none() {
                    self.kept.truncate(e.valid_up_to());
                }
            }
        }
        (
            String::from_utf8_lossy(&self.kept).into_owned(),
            self.truncated,
        )
    }
}

/// Size of `value` encoded as compact JSON, without building the text.
pub fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising plain structs and strings cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Bytes one character takes inside a JSON string, as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Removes characters from the end of `text` (keeping its last `keep_tail` bytes) until at least `need`
/// encoded bytes are gone or nothing is left to remove. Returns whether anything was removed.
fn trim_end(text: &mut String, keep_tail: usize, need: usize) -> bool {
    let split = text.len().saturating_sub(keep_tail);
    let split = text.floor_char_boundary(split);
    let mut removed = 0;
    let mut cut = split;
    for (i, c) in text[..split].char_indices().rev() {
        if removed >= need {
            break;
        }
        removed += escaped_len(c);
        cut = i;
    }
    if cut == split {
        return false;
    }
    text.replace_range(cut..split, "");
    true
}

/// Trims stdout, then stderr, from the end until `result` encodes to at most `budget` bytes, setting the
/// matching truncated flags. The last `stderr_tail` bytes of stderr (the agent's own note, such as
/// `Timeout exceeded`) are kept. If even empty output does not fit, the output is left empty.
pub fn fit_to_budget(result: &mut ExecResult, budget: usize, stderr_tail: usize) {
    let mut size = encoded_len(result);
    if size > budget && trim_end(&mut result.stdout, 0, size - budget) {
        result.stdout_truncated = true;
        size = encoded_len(result);
    }
    if size > budget && trim_end(&mut result.stderr, stderr_tail, size - budget) {
        result.stderr_truncated = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_head_and_flags_rest() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        c.push(b"defgh");
        c.push(b"ij");
        assert_eq!(c.into_text(), ("abcde".to_string(), true));

        let mut c = Capture::new(5);
        c.push(b"abcde");
        assert_eq!(c.into_text(), ("abcde".to_string(), false));
    }

    #[test]
    fn capture_is_lossy_and_drops_a_split_character() {
        let mut c = Capture::new(100);
        c.push(b"ok \xff end");
        assert_eq!(c.into_text().0, "ok \u{fffd} end");

        // "é" is two bytes; a cap of 2 keeps "a" and half of it.
        let mut c = Capture::new(2);
        c.push("aé".as_bytes());
        assert_eq!(c.into_text(), ("a".to_string(), true));
    }

    #[test]
    fn escaped_len_matches_serde_json() {
        for c in [
            'a', '"', '\\', '\n', '\u{01}', '\u{7f}', 'é', '€', '😀', '\u{fffd}',
        ] {
            let encoded = serde_json::to_string(&c.to_string()).unwrap();
            assert_eq!(escaped_len(c), encoded.len() - 2, "{c:?}");
        }
    }

    fn result(stdout: &str, stderr: &str) -> ExecResult {
        ExecResult {
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..ExecResult::default()
        }
    }

    #[test]
    fn fits_untouched_when_small() {
        let mut r = result("hello", "world");
        let before = r.clone();
        fit_to_budget(&mut r, 10_000, 0);
        assert_eq!(r, before);
    }

    #[test]
    fn trims_stdout_first_then_stderr() {
        let mut r = result(&"o".repeat(1000), &"e".repeat(1000));
        let budget = encoded_len(&r) - 300;
        fit_to_budget(&mut r, budget, 0);
        assert!(encoded_len(&r) <= budget);
        assert!(r.stdout_truncated && !r.stderr_truncated);
        assert!(
            r.stdout.len() >= 690 && r.stdout.len() < 1000,
            "{}",
            r.stdout.len()
        );
        assert_eq!(r.stderr.len(), 1000);

        let mut r = result(&"o".repeat(1000), &"e".repeat(1000));
        let budget = encoded_len(&result("", "")) + 500;
        fit_to_budget(&mut r, budget, 0);
        assert!(encoded_len(&r) <= budget);
        assert!(r.stdout.is_empty() && r.stdout_truncated && r.stderr_truncated);
        assert!(r.stderr.starts_with("eee"));
    }

    #[test]
    fn trimming_counts_escapes_and_keeps_char_boundaries() {
        let mut r = result(&"\u{01}é\"".repeat(500), "");
        let budget = encoded_len(&r) / 2;
        fit_to_budget(&mut r, budget, 0);
        assert!(encoded_len(&r) <= budget);
        assert!(r.stdout_truncated);
    }

    #[test]
    fn keeps_the_stderr_tail() {
        let tail = "Timeout exceeded\n";
        let mut r = result(&"o".repeat(100), &format!("{}{tail}", "e".repeat(100)));
        r.timed_out = true;
        let budget = encoded_len(&result("", tail)) + 20;
        fit_to_budget(&mut r, budget, tail.len());
        assert!(encoded_len(&r) <= budget);
        assert!(r.stderr.ends_with(tail), "{:?}", r.stderr);
        assert!(r.stderr_truncated);
    }

    #[test]
    fn impossible_budget_empties_output() {
        let mut r = result("abc", "def");
        fit_to_budget(&mut r, 10, 0);
        assert!(r.stdout.is_empty() && r.stderr.is_empty());
    }
}
