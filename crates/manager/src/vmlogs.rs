//! VMM and console logs of a VM (`docs/reference/api.md` §3.5): the tail of a file, read from its
//! last 256 KiB.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const WINDOW: u64 = 256 * 1024;

/// Canonical log names and the aliases earlier clients use, in that order (`firecracker.*`).
pub fn canonical(name: &str) -> Option<&'static str> {
    Some(match name {
        "vmm.log" | "firecracker.log" => rds_vmm::LOG_VMM,
        "console.log" | "firecracker.stdout.log" => rds_vmm::LOG_CONSOLE,
        "vmm.stderr.log" | "firecracker.stderr.log" => rds_vmm::LOG_VMM_STDERR,
        _ => return None,
    })
}

pub struct Tail {
    pub lines: Vec<String>,
    pub truncated: bool,
    pub updated_at: Option<String>,
}

/// The last `tail` lines of `path`; a missing file is an empty, untruncated tail.
pub fn tail(path: &Path, tail: usize) -> Tail {
    let empty = Tail {
        lines: Vec::new(),
        truncated: false,
        updated_at: None,
    };
    let Ok(mut f) = std::fs::File::open(path) else {
        return empty;
    };
    let Ok(meta) = f.metadata() else { return empty };
    let updated_at = meta.modified().ok().map(|t| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    let start = meta.len().saturating_sub(WINDOW);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return empty;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // partial first line
    }
    let more = lines.len() > tail;
    let lines = lines[lines.len().saturating_sub(tail)..]
        .iter()
        .map(|l| l.to_string())
        .collect();
    Tail {
        lines,
        truncated: start > 0 || more,
        updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_windows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        assert!(tail(&p, 10).updated_at.is_none());
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        let t = tail(&p, 2);
        assert_eq!(t.lines, ["b", "c"]);
        assert!(t.truncated);
        let t = tail(&p, 5);
        assert_eq!(t.lines, ["a", "b", "c"]);
        assert!(!t.truncated);
        assert!(t.updated_at.is_some());
        let big: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, big).unwrap();
        let t = tail(&p, 3);
        assert_eq!(t.lines, ["line 39997", "line 39998", "line 39999"]);
        assert!(t.truncated);
        assert_eq!(canonical("firecracker.stderr.log"), Some("vmm.stderr.log"));
        assert_eq!(canonical("x.log"), None);
    }
}
