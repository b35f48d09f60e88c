//! Human output: aligned tables and key/value listings of API objects.

use serde_json::Value;

/// A field as table text: strings bare, null as `-`, anything else as compact JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(other) => other.to_string(),
    }
}

/// Renders rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A table of the array `list`, one column per `(header, field)`.
pub fn list_table(list: &Value, cols: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|item| cols.iter().map(|(_, f)| cell(item.get(*f))).collect())
        .collect();
    let headers: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    table(&headers, &rows)
}

/// One `field  value` line per field of an object.
pub fn object(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return format!("{v}\n");
    };
    let width = map.keys().map(|k| k.len()).max().unwrap_or(0);
    map.iter()
        .map(|(k, val)| format!("{k:<width$}  {}\n", cell(Some(val))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_columns() {
        let t = list_table(
            &json!([{"id": "abc", "state": "RUNNING"}, {"id": "d", "state": null}]),
            &[("ID", "id"), ("STATE", "state")],
        );
        assert_eq!(t, "ID   STATE\nabc  RUNNING\nd    -\n");
        assert_eq!(object(&json!({"a": 1, "bb": true})), "a   1\nbb  yes\n");
    }
}
