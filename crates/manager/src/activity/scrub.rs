//! Secret scrubbing for activity (`docs/reference/lifecycle.md` §8): every occurrence of a
//! non-empty secret value in any string of the meta (and in the message) becomes `[REDACTED]`. The
//! secretEnv values of a VM reach here through [`super::Draft::redact`].

use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// `s` with every occurrence of each non-empty secret replaced, longest secrets first (so a secret
/// containing a shorter one is removed whole).
pub fn scrub_str(s: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|v| !v.is_empty()).collect();
    sorted.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = s.to_string();
    for secret in sorted {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// Every string of `v` (object keys included) scrubbed.
pub fn scrub_value(v: Value, secrets: &[String]) -> Value {
    if secrets.is_empty() {
        return v;
    }
    match v {
        Value::String(s) => Value::String(scrub_str(&s, secrets)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| scrub_value(x, secrets)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (scrub_str(&k, secrets), scrub_value(x, secrets)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_replaced_everywhere() {
        let secrets = vec![
            "hunter2-secret".to_string(),
            "abcd".to_string(),
            String::new(),
        ];
        let v =
            json!({"cmd": "echo hunter2-secret abcd", "n": 1, "list": ["xabcdx"], "abcd": true});
        let out = scrub_value(v, &secrets);
        assert_eq!(
            out,
            json!({"cmd": "echo [REDACTED] [REDACTED]", "n": 1, "list": ["x[REDACTED]x"], "[REDACTED]": true})
        );
        assert_eq!(scrub_str("nothing", &secrets), "nothing");
    }
}
