//! Transfer progress: a bar with throughput on a terminal; elsewhere (logs, pipes) no control
//! characters at all, only one closing line.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
}

impl Progress {
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let tpl = if total.is_some() {
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
            } else {
                "{msg} {binary_bytes} {binary_bytes_per_sec}"
            };
            bar.set_style(ProgressStyle::with_template(tpl).expect("template").progress_chars("=> "));
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            start: Instant::now(),
        }
    }

    /// A handle for the code that moves the bytes (cheap to clone, usable from a stream).
    pub fn counter(&self) -> impl Fn(u64) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |n| {
            if let Some(b) = &bar {
                b.inc(n);
            }
        }
    }

    /// Clears the bar and prints `<label>: <bytes> in <s> (<rate>)` on stderr.
    pub fn finish(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-6);
        let mib = bytes as f64 / 1048576.0;
        eprintln!(
            "{}: {bytes} bytes in {secs:.2} s ({:.1} MiB/s)",
            self.label,
            mib / secs
        );
    }
}
