//! Progress lines with the elapsed time, for a user watching a minutes-long build.

use std::time::Instant;

pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Prints `[   12.3s] <msg>` on stderr (stdout's last line is the image dir).
    pub fn step(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:7.1}s] {msg}", self.elapsed());
    }
}
