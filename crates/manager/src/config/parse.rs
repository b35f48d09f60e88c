//! Strict readers for environment values (`docs/reference/configuration.md` §1). Each records a
//! problem instead of failing, so startup can report every invalid variable at once.

use std::collections::HashMap;
use std::path::PathBuf;

/// One invalid variable. `value` is None for secrets, which are never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub reason: String,
    pub value: Option<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config error: {}: {}", self.variable, self.reason)?;
        if let Some(v) = &self.value {
            write!(f, " (got \"{v}\")")?;
        }
        Ok(())
    }
}

const SECRETS: [&str; 4] = ["API_KEY", "ADMIN_PASSWORD", "VM_SECRET_KEY", "DATABASE_URL"];

pub struct Env<'a> {
    vars: &'a HashMap<String, String>,
    pub errors: Vec<ConfigError>,
}

impl<'a> Env<'a> {
    pub fn new(vars: &'a HashMap<String, String>) -> Self {
        Env {
            vars,
            errors: Vec::new(),
        }
    }

    /// The value, or None when absent or empty (both mean unset).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn fail(&mut self, name: &str, reason: impl Into<String>) {
        let value = if SECRETS.contains(&name) {
            None
        } else {
            Some(self.get(name).unwrap_or_default().to_string())
        };
        self.errors.push(ConfigError {
            variable: name.to_string(),
            reason: reason.into(),
            value,
        });
    }

    pub fn required(&mut self, name: &str) -> String {
        match self.get(name) {
            Some(v) => v.to_string(),
            None => {
                self.fail(name, "is required");
                String::new()
            }
        }
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    pub fn int(&mut self, name: &str, default: u64, min: u64, max: u64) -> u64 {
        let Some(raw) = self.get(name) else {
            return default;
        };
        let parsed = raw
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| raw.parse::<u64>().ok())
            .flatten();
        match parsed {
            Some(v) if (min..=max).contains(&v) => v,
            _ => {
                self.fail(name, format!("must be an integer between {min} and {max}"));
                default
            }
        }
    }

    pub fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                self.fail(name, "must be true, false, 1 or 0");
                default
            }
        }
    }

    /// One of `choices` (case-insensitive); returns the canonical spelling from `choices`.
    pub fn choice(
        &mut self,
        name: &str,
        default: &'static str,
        choices: &[&'static str],
    ) -> &'static str {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match choices.iter().find(|c| c.eq_ignore_ascii_case(raw)) {
            Some(c) => c,
            None => {
                self.fail(name, format!("must be one of {}", choices.join(", ")));
                default
            }
        }
    }

    pub fn abs_path(&mut self, name: &str, default: &str) -> PathBuf {
        let raw = self.get(name).unwrap_or(default);
        let p = PathBuf::from(raw);
        if !p.is_absolute() {
            self.fail(name, "must be an absolute path");
        }
        p
    }

    pub fn opt_abs_path(&mut self, name: &str) -> Option<PathBuf> {
        let raw = self.get(name)?;
        let p = PathBuf::from(raw);
        if !p.is_absolute() {
            self.fail(name, "must be an absolute path");
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn integers_are_strict() {
        for bad in [
            "1.5",
            "1e3",
            "0x10",
            " 5",
            "-1",
            "+5",
            "99999999999999999999999",
        ] {
            let vars = env(&[("N", bad)]);
            let mut e = Env::new(&vars);
            assert_eq!(e.int("N", 7, 0, 100), 7);
            assert_eq!(e.errors.len(), 1, "{bad} accepted");
            assert_eq!(e.errors[0].value.as_deref(), Some(bad));
        }
        let vars = env(&[("N", "42"), ("E", "")]);
        let mut e = Env::new(&vars);
        assert_eq!(e.int("N", 7, 0, 100), 42);
        assert_eq!(e.int("E", 7, 0, 100), 7, "empty means unset");
        assert_eq!(e.int("N", 7, 50, 100), 7);
        assert_eq!(e.errors.len(), 1);
    }

    #[test]
    fn booleans_and_choices() {
        let vars = env(&[("A", "TRUE"), ("B", "0"), ("C", "yes"), ("D", "Pretty")]);
        let mut e = Env::new(&vars);
        assert!(e.bool("A", false));
        assert!(!e.bool("B", true));
        assert!(e.bool("C", true));
        assert_eq!(e.choice("D", "json", &["json", "pretty"]), "pretty");
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].variable, "C");
    }

    #[test]
    fn secrets_are_never_echoed() {
        let vars = env(&[("API_KEY", "")]);
        let mut e = Env::new(&vars);
        e.required("API_KEY");
        let line = e.errors[0].to_string();
        assert_eq!(line, "config error: API_KEY: is required");
    }
}
