//! Prometheus text exposition (format 0.0.4) of the manager's counters and histograms. Small and
//! hand-written on purpose: the families are fixed (`docs/reference/api.md` §2.1) and the format is
//! a few lines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Name, type and help of every family, in output order.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "rds_build_info",
        "gauge",
        "Build and backend of this manager",
    ),
    ("rds_vms", "gauge", "User VMs by state"),
    (
        "rds_ip_addresses_free",
        "gauge",
        "Free guest addresses in VM_SUBNET",
    ),
    (
        "rds_vm_create_total",
        "counter",
        "VM creates by provision mode and result",
    ),
    (
        "rds_vm_create_duration_seconds",
        "histogram",
        "Time from create request to RUNNING",
    ),
    (
        "rds_vm_start_duration_seconds",
        "histogram",
        "Time to start a stopped VM",
    ),
    (
        "rds_vm_stop_duration_seconds",
        "histogram",
        "Time to stop a VM",
    ),
    ("rds_snapshots", "gauge", "Snapshots by kind"),
    (
        "rds_template_status",
        "gauge",
        "Template state per image (1 for the image's current status)",
    ),
    (
        "rds_warm_pool_vms",
        "gauge",
        "RUNNING warm-pool VMs ready to be taken",
    ),
    (
        "rds_storage_used_bytes",
        "gauge",
        "Bytes used on STORAGE_ROOT's filesystem",
    ),
    (
        "rds_storage_capacity_bytes",
        "gauge",
        "Size of STORAGE_ROOT's filesystem",
    ),
    (
        "rds_internal_vms",
        "gauge",
        "Internal VMs (template builds, warm pool) by role",
    ),
    (
        "rds_snapshot_create_duration_seconds",
        "histogram",
        "Time to capture a snapshot, by whether memory was captured",
    ),
    (
        "rds_exec_total",
        "counter",
        "exec/run-ts/run-js calls by kind and result",
    ),
    (
        "rds_exec_duration_seconds",
        "histogram",
        "exec/run-ts/run-js round trip through the manager",
    ),
    (
        "rds_agent_errors_total",
        "counter",
        "Agent calls that failed, by kind of failure",
    ),
    (
        "rds_http_requests_total",
        "counter",
        "HTTP requests by route pattern, method and status",
    ),
    (
        "rds_http_request_duration_seconds",
        "histogram",
        "HTTP request duration by route pattern and method",
    ),
    (
        "rds_vm_expired_total",
        "counter",
        "VMs whose deadline passed, by the action taken (destroy, pause)",
    ),
    (
        "rds_webhook_deliveries_total",
        "counter",
        "Webhook delivery attempts by result (succeeded, retry, failed)",
    ),
    (
        "rds_rate_limited_total",
        "counter",
        "Requests refused by a rate limit, by route pattern",
    ),
];

type Labels = Vec<(&'static str, String)>;

/// A gauge sample computed at scrape time: family, labels, value.
pub type Gauge = (&'static str, Labels, f64);

#[derive(Default)]
struct Hist {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    hists: Mutex<BTreeMap<(&'static str, Labels), Hist>>,
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn fmt_labels(l: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)]) {
        *self
            .counters
            .lock()
            .expect("metrics")
            .entry((name, labels(l)))
            .or_default() += 1;
    }

    pub fn observe(&self, name: &'static str, l: &[(&'static str, &str)], seconds: f64) {
        let mut hists = self.hists.lock().expect("metrics");
        let h = hists.entry((name, labels(l))).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.buckets[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// The exposition, with gauges computed by the caller at scrape time.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let counters = self.counters.lock().expect("metrics");
        let hists = self.hists.lock().expect("metrics");
        let mut out = String::new();
        for (family, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
            for (name, l, v) in gauges.iter().filter(|g| g.0 == *family) {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
            for ((name, l), v) in counters.iter().filter(|((n, _), _)| n == family) {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
            for ((name, l), h) in hists.iter().filter(|((n, _), _)| n == family) {
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(l, Some(("le", le.to_string()))),
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(l, Some(("le", "+Inf".into()))),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.inc("rds_exec_total", &[("kind", "exec"), ("result", "ok")]);
        m.inc("rds_exec_total", &[("kind", "exec"), ("result", "ok")]);
        m.observe("rds_exec_duration_seconds", &[("kind", "exec")], 0.02);
        let text = m.render(&[("rds_vms", vec![("state", "RUNNING".into())], 3.0)]);
        assert!(
            text.contains(
                "# TYPE rds_exec_total counter\nrds_exec_total{kind=\"exec\",result=\"ok\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("rds_exec_duration_seconds_bucket{kind=\"exec\",le=\"0.01\"} 0\n"));
        assert!(text.contains("rds_exec_duration_seconds_bucket{kind=\"exec\",le=\"0.025\"} 1\n"));
        assert!(text.contains("rds_exec_duration_seconds_bucket{kind=\"exec\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("rds_exec_duration_seconds_count{kind=\"exec\"} 1\n"));
        assert!(text.contains("rds_vms{state=\"RUNNING\"} 3\n"));
    }
}
