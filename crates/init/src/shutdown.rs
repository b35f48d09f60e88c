//! Clean shutdown (docs/reference/agent-protocol.md §1 step 6): SIGTERM everything, wait up to 2 s,
//! SIGKILL the rest, sync, remount the writable disk read-only, then
//! `reboot(RB_AUTOBOOT)`, which ends the VMM (QEMU `-no-reboot`, Firecracker).

use std::time::{Duration, Instant};

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sync, Pid};

use crate::console::log;
use crate::{mounts, supervise};

const GRACE: Duration = Duration::from_secs(2);

/// Stops every process and ends the VM.
pub fn run(reason: Signal) -> ! {
    log!("shutdown on {reason}: SIGTERM to all processes");
    let all = Pid::from_raw(-1);
    let _ = kill(all, Signal::SIGTERM);
    if !supervise::reap_all_until(Instant::now() + GRACE) {
        log!("SIGKILL to remaining processes: {}", remaining().join(", "));
        let _ = kill(all, Signal::SIGKILL);
        supervise::reap_all_until(Instant::now() + Duration::from_secs(1));
    }
    sync();
    for failure in mounts::remount_readonly() {
        log!("remount read-only failed: {failure}");
    }
    end_vm()
}

/// Syncs and reboots; with the VMM's no-reboot setting the VM process exits.
pub fn end_vm() -> ! {
    sync();
    log!("reboot");
    let err = reboot(RebootMode::RB_AUTOBOOT).unwrap_err();
    log!("reboot failed: {err}; exiting (the kernel panics and reboots)");
    std::process::exit(1)
}

/// `name(pid)` of every user-space process but ours (kernel threads have no cmdline).
fn remaining() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != 1)
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()))
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            format!("{}({pid}, blocked {})", field("Name:"), field("SigBlk:"))
        })
        .collect()
}
