//! `logs/vmm.log` lines written by the manager: one timestamped line per control message sent to or
//! received from a VMM (QMP for QEMU, the HTTP API for Firecracker), so a VM's log shows what was asked.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// The manager's record of VMM control traffic (QMP, Firecracker API): `<RFC 3339 UTC> <direction> <message>`, one line each.
#[derive(Debug, Clone)]
pub(crate) struct Transcript {
    path: PathBuf,
}

impl Transcript {
    pub fn new(path: PathBuf) -> Self {
        Transcript { path }
    }

    /// Appends one line (a short write; logging must never fail an operation).
    pub fn record(&self, direction: &str, message: &str) {
        let line = format!(
            "{} {direction} {}\n",
            rfc3339_now(),
            message.replace('\n', " ")
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400 + 3661, 7), "2000-02-29T01:01:01.007Z");
        assert_eq!(rfc3339(1_704_067_199, 999), "2023-12-31T23:59:59.999Z");
    }
}
