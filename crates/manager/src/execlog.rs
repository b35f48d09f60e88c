//! Per-VM exec log: `logs/exec.jsonl`, one JSON line per exec/run-ts/run-js call
//! (`docs/reference/api.md` §3.6, `docs/reference/lifecycle.md` §8). Text fields are capped at
//! 64 KiB; files over 16 MiB move to `.1`.

use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

pub const FILE: &str = "exec.jsonl";
const FIELD_CAP: usize = 64 * 1024;
const ROTATE_AT: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    RunTs,
    RunJs,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::RunTs => "run-ts",
            Kind::RunJs => "run-js",
        }
    }
}

/// Cuts a string to at most `FIELD_CAP` bytes on a character boundary.
pub fn cap(s: &str) -> String {
    s[..s.floor_char_boundary(FIELD_CAP)].to_string()
}

/// Caps every string inside a JSON value.
pub fn cap_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(cap(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(cap_value).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, cap_value(v))).collect()),
        other => other,
    }
}

/// Builds an entry; `input` and `result` are already-shaped objects.
pub fn entry(kind: Kind, input: Value, result: Value, duration_ms: u64) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "timestamp": crate::model::now_rfc3339(),
        "type": kind.as_str(),
        "input": cap_value(input),
        "result": cap_value(result),
        "durationMs": duration_ms,
    })
}

/// Appends one entry (blocking I/O; call from a blocking context).
pub fn append(logs_dir: &Path, entry: &Value) -> std::io::Result<()> {
    let path = logs_dir.join(FILE);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > ROTATE_AT) {
        std::fs::rename(&path, logs_dir.join(format!("{FILE}.1")))?;
    }
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    f.write_all(&line)
}

/// Entries newest first, optionally of one type, older than `before`; at most `limit`, plus whether
/// more exist.
pub fn read(
    logs_dir: &Path,
    kind: Option<Kind>,
    before: Option<&str>,
    limit: usize,
) -> (Vec<Value>, bool) {
    let files: [PathBuf; 2] = [logs_dir.join(format!("{FILE}.1")), logs_dir.join(FILE)];
    let mut all: Vec<Value> = Vec::new();
    for f in files {
        let Ok(file) = std::fs::File::open(&f) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                all.push(v);
            }
        }
    }
    all.reverse();
    let start = match before {
        Some(id) => match all.iter().position(|e| e["id"] == id) {
            Some(i) => i + 1,
            None => all.len(),
        },
        None => 0,
    };
    let mut matching = all[start..]
        .iter()
        .filter(|e| kind.is_none_or(|k| e["type"] == k.as_str()));
    let out: Vec<Value> = matching.by_ref().take(limit).cloned().collect();
    let more = matching.next().is_some();
    (out, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_filter_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let kind = if i % 2 == 0 { Kind::Exec } else { Kind::RunTs };
            let e = entry(
                kind,
                json!({"cmd": format!("c{i}")}),
                json!({"exitCode": 0}),
                i,
            );
            ids.push(e["id"].as_str().unwrap().to_string());
            append(dir.path(), &e).unwrap();
        }
        let (all, more) = read(dir.path(), None, None, 50);
        assert_eq!(all.len(), 5);
        assert!(!more);
        assert_eq!(all[0]["input"]["cmd"], "c4", "newest first");
        let (page, more) = read(dir.path(), None, None, 2);
        assert_eq!(page.len(), 2);
        assert!(more);
        let (next, _) = read(dir.path(), None, Some(&ids[3]), 50);
        assert_eq!(
            next.iter()
                .map(|e| e["input"]["cmd"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["c2", "c1", "c0"]
        );
        let (ts, _) = read(dir.path(), Some(Kind::RunTs), None, 50);
        assert_eq!(ts.len(), 2);
    }

    #[test]
    fn fields_are_capped() {
        let big = "é".repeat(40_000);
        let e = entry(
            Kind::Exec,
            json!({"cmd": big}),
            json!({"stdout": "x".repeat(70_000)}),
            1,
        );
        assert!(e["input"]["cmd"].as_str().unwrap().len() <= 64 * 1024);
        assert_eq!(e["result"]["stdout"].as_str().unwrap().len(), 64 * 1024);
    }
}
