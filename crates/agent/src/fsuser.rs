//! File work done with the sandbox user's file-system identity
//! (`docs/reference/agent-protocol.md` §5, §7: archive work runs as uid 1000).
//!
//! [`run_as`] runs a closure on a fresh thread whose file-system uid/gid are the sandbox user's and whose
//! supplementary groups are empty. Linux keeps credentials per thread and the raw system calls below
//! change only the calling thread, so the rest of the agent stays root. Leaving fsuid 0 clears the
//! thread's file capabilities (`CAP_DAC_OVERRIDE`, `CAP_CHOWN`, `CAP_FOWNER`, ...), so every open, create
//! and permission check is the user's own, and new files belong to the user. The thread ends with the
//! closure; it never returns to a pool with changed credentials.

use std::io;

use tokio::sync::oneshot;

use crate::sandbox::Identity;

/// Runs `f` on its own thread as `identity` (file-system ids only) and returns its value.
pub async fn run_as<T, F>(identity: Identity, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    spawn_as(identity, move |switched| {
        let _ = tx.send(switched.map(|()| f()));
    })?;
    rx.await
        .map_err(|_| io::Error::other("file worker thread panicked"))?
}

/// Starts `f` on its own thread after switching it to `identity`; `f` learns whether the switch worked
/// (and must do nothing as the user if it did not).
pub fn spawn_as<F>(identity: Identity, f: F) -> io::Result<()>
where
    F: FnOnce(io::Result<()>) + Send + 'static,
{
    std::thread::Builder::new()
        .name("rds-fsuser".into())
        .spawn(move || f(become_user(identity)))
        .map(drop)
}

/// Switches the calling thread's groups, fsgid and fsuid; checks that the switch took.
fn become_user(identity: Identity) -> io::Result<()> {
    // SAFETY: raw per-thread credential calls with valid arguments (an empty group list).
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, identity.gid);
        libc::syscall(libc::SYS_setfsuid, identity.uid);
        // Both calls return the previous value; asking again with an invalid id reports the current one.
        let gid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        let uid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        if uid != identity.uid || gid != identity.gid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "cannot switch to the sandbox user's file-system identity",
            ));
        }
    }
    Ok(())
}
