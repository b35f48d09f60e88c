//! Console output: every line goes to `/dev/console` (ttyS0) prefixed with
//! `rds-init:` and followed by the time since boot, so `console.log` tells what
//! happened and when.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

/// Points stdin at `/dev/null` and stdout/stderr at `/dev/console` (best effort:
/// the kernel may have started us without a console).
pub fn attach() {
    if let Ok(con) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        let fd = con.as_raw_fd();
        // SAFETY: dup2 on valid descriptors; the File stays open until the end of scope.
        unsafe {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
        }
    }
    if let Ok(null) = OpenOptions::new().read(true).open("/dev/null") {
        // SAFETY: as above.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
        }
    }
}

/// Seconds since boot (CLOCK_BOOTTIME), for the log prefix.
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// `log!("...")` prints `rds-init: ... [<uptime>s]` on the console.
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("rds-init: {} [{:.3}s]", format_args!($($arg)*), $crate::console::uptime())
    };
}
pub(crate) use log;
