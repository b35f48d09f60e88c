//! Signals PID 1 acts on. They are blocked in every thread and taken with
//! `sigtimedwait` by the main loop; the no-op handlers make sure the kernel
//! never discards them for PID 1. Children start with an empty mask
//! ([`unblock_all`] between fork and exec: std's posix_spawn path keeps ours).

use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

/// SIGCHLD plus the shutdown signals: SIGTERM, SIGINT (Ctrl-Alt-Del), SIGPWR (power button).
pub fn set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
    ] {
        s.add(sig);
    }
    s
}

extern "C" fn noop(_: libc::c_int) {}

/// Installs handlers and blocks the set; call before any thread starts.
pub fn block() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(noop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in set().iter() {
        // SAFETY: the handler is async-signal-safe (it does nothing).
        unsafe { sigaction(sig, &action)? };
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set()), None)
}

/// Waits up to `timeout` for one signal of [`set`].
pub fn wait(timeout: Duration) -> Option<Signal> {
    let set = set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid sigset and timespec; siginfo may be null.
    let rc = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if rc < 0 {
        None
    } else {
        Signal::try_from(rc).ok()
    }
}

/// Empties the signal mask (async-signal-safe; used in the child before exec).
pub fn unblock_all() -> nix::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}
