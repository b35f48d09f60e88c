//! Host figures for `/v1/admin/overview` (`docs/reference/api-admin.md` Overview): CPU busy
//! fraction over the last 500 ms from `/proc/stat` (sampled by a background task, so a request
//! never waits the half second), memory from `/proc/meminfo`, CPU count.

use std::sync::{Arc, Mutex};
use std::time::Duration;

const WINDOW: Duration = Duration::from_millis(500);

/// The latest CPU busy fraction (0..1), None until two samples exist or when `/proc/stat` is
/// unreadable.
#[derive(Clone, Default)]
pub struct CpuUsage(Arc<Mutex<Option<f64>>>);

impl CpuUsage {
    /// Starts the sampler on the current runtime; it ends with the runtime.
    pub fn start() -> CpuUsage {
        let usage = CpuUsage::default();
        let out = usage.clone();
        tokio::spawn(async move {
            let mut last = read_cpu_times().await;
            loop {
                tokio::time::sleep(WINDOW).await;
                let now = read_cpu_times().await;
                let value = match (last, now) {
                    (Some(a), Some(b)) => busy_fraction(a, b),
                    _ => None,
                };
                *out.0.lock().expect("cpu usage") = value;
                last = now;
            }
        });
        usage
    }

    pub fn get(&self) -> Option<f64> {
        *self.0.lock().expect("cpu usage")
    }
}

/// (busy, total) jiffies of the `cpu` line of `/proc/stat`.
type CpuTimes = (u64, u64);

async fn read_cpu_times() -> Option<CpuTimes> {
    let stat = tokio::fs::read_to_string("/proc/stat").await.ok()?;
    parse_cpu_line(stat.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<CpuTimes> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

fn busy_fraction(a: CpuTimes, b: CpuTimes) -> Option<f64> {
    let total = b.1.checked_sub(a.1)?;
    let busy = b.0.checked_sub(a.0)?;
    (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
}

/// (used, total) bytes: `MemTotal − MemAvailable`, `MemTotal`.
pub async fn memory() -> Option<(u64, u64)> {
    let info = tokio::fs::read_to_string("/proc/meminfo").await.ok()?;
    let kb = |key: &str| -> Option<u64> {
        info.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (total, available) = (kb("MemTotal:")?, kb("MemAvailable:")?);
    Some((total.saturating_sub(available) * 1024, total * 1024))
}

/// CPUs this host offers.
pub fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        let a = parse_cpu_line("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        assert_eq!(a, (150, 1000));
        let b = parse_cpu_line("cpu  200 0 100 1550 150 0 0 0 0 0").unwrap();
        assert_eq!(busy_fraction(a, b), Some(0.15));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5"), None);
        assert_eq!(busy_fraction(a, a), None);
    }

    #[tokio::test]
    async fn real_figures() {
        let (used, total) = memory().await.unwrap();
        assert!(total > 0 && used <= total);
        assert!(cores() >= 1);
        let usage = CpuUsage::start();
        tokio::time::sleep(WINDOW * 3).await;
        let v = usage.get().expect("a value after two samples");
        assert!((0.0..=1.0).contains(&v));
    }
}
