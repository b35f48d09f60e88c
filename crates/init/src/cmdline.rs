//! Settings read from the kernel command line (`/proc/cmdline`).

use rds_protocol::{CMDLINE_AGENT_PORT, CMDLINE_DISK_WAIT_MS, DEFAULT_AGENT_PORT};

/// Default wait for the writable disk when `rds.disk_wait_ms` is absent.
pub const DEFAULT_DISK_WAIT_MS: u64 = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub agent_port: u32,
    pub disk_wait_ms: u64,
    /// Parameters present but not parseable, reported on the console.
    pub invalid: Vec<String>,
}

impl Settings {
    /// Parses a kernel command line. Unknown parameters are ignored; the last
    /// occurrence of a known one wins; an invalid value keeps the default.
    pub fn parse(cmdline: &str) -> Self {
        let mut s = Settings {
            agent_port: DEFAULT_AGENT_PORT,
            disk_wait_ms: DEFAULT_DISK_WAIT_MS,
            invalid: Vec::new(),
        };
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"');
            if key == CMDLINE_AGENT_PORT {
                match value.parse::<u32>() {
                    Ok(p) if p > 0 => s.agent_port = p,
                    _ => s.invalid.push(word.to_string()),
                }
            } else if key == CMDLINE_DISK_WAIT_MS {
                match value.parse::<u64>() {
                    Ok(ms) => s.disk_wait_ms = ms,
                    Err(_) => s.invalid.push(word.to_string()),
                }
            }
        }
        s
    }

    /// Reads `/proc/cmdline` (mounted by then); defaults if unreadable.
    pub fn from_proc() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_absent() {
        let s = Settings::parse("console=ttyS0 panic=1 root=/dev/vda ro");
        assert_eq!(s.agent_port, 8080);
        assert_eq!(s.disk_wait_ms, 2000);
        assert!(s.invalid.is_empty());
    }

    #[test]
    fn reads_values() {
        let s = Settings::parse(
            "console=ttyS0 init=/usr/local/sbin/rds-init rds.agent_port=9000 rds.disk_wait_ms=500 tsc_early_khz=2445406\n",
        );
        assert_eq!(s.agent_port, 9000);
        assert_eq!(s.disk_wait_ms, 500);
    }

    #[test]
    fn invalid_values_keep_defaults() {
        let s = Settings::parse("rds.agent_port=0 rds.disk_wait_ms=-1 rds.agent_port=x");
        assert_eq!(s.agent_port, 8080);
        assert_eq!(s.disk_wait_ms, 2000);
        assert_eq!(s.invalid.len(), 3);
    }

    #[test]
    fn last_wins_and_quotes_trimmed() {
        let s = Settings::parse("rds.agent_port=1 rds.agent_port=\"2\" rds.disk_wait_msx=5");
        assert_eq!(s.agent_port, 2);
        assert_eq!(s.disk_wait_ms, 2000);
    }
}
