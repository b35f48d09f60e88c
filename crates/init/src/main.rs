//! `rds-init`: PID 1 of the guest (docs/reference/agent-protocol.md §1). The initramfs has loaded
//! the kernel modules and switched root to the read-only base image; this program
//! builds the writable overlay root, starts and supervises the agent, reaps
//! zombies and shuts the VM down cleanly on the VMM's request.

mod cmdline;
mod console;
mod mounts;
mod net;
mod power;
mod shutdown;
mod signals;
mod supervise;

use console::log;
use nix::sys::reboot::set_cad_enabled;
use nix::unistd::getpid;

fn main() {
    console::attach();
    log!("starting");
    if getpid().as_raw() != 1 {
        log!("not PID 1, refusing to run");
        std::process::exit(2);
    }
    // Ctrl-Alt-Del then arrives as SIGINT instead of an immediate reboot.
    if let Err(e) = set_cad_enabled(false) {
        log!("cannot disable Ctrl-Alt-Del reboot: {e}");
    }
    if let Err(e) = signals::block() {
        fatal(&format!("signal setup: {e}"));
    }
    if let Err(e) = mounts::kernel_filesystems() {
        fatal(&e.to_string());
    }
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        log!("cannot set oom_score_adj: {e}");
    }
    let settings = cmdline::Settings::from_proc();
    for bad in &settings.invalid {
        log!("ignoring invalid parameter {bad}");
    }
    log!("waiting up to {} ms for /dev/vdb", settings.disk_wait_ms);
    if !mounts::wait_for_disk(settings.disk_wait_ms) {
        log!("writable disk missing");
        shutdown::end_vm();
    }
    if let Err(e) = mounts::overlay_root() {
        fatal(&e.to_string());
    }
    log!("overlay root mounted (upper on /dev/vdb)");
    if let Err(e) = net::loopback_up() {
        log!("cannot bring up lo: {e}");
    }
    if let Err(e) = mounts::workspace().and_then(|()| mounts::dev_shm()) {
        fatal(&e.to_string());
    }
    if let Err(e) = mounts::dev_pts() {
        log!("terminals unavailable: {e}");
    }
    if power::watch() == 0 {
        log!("no Power Button input device; power-off requests will not be seen");
    }
    let reason = supervise::run(settings.agent_port);
    shutdown::run(reason)
}

/// Logs a setup failure and ends the VM: a half-built root is never served.
fn fatal(msg: &str) -> ! {
    log!("fatal: {msg}");
    shutdown::end_vm()
}
