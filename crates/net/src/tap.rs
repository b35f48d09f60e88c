//! TAP devices through `/dev/net/tun` ioctls: persistent, single-queue, owned by the uid/gid the
//! VMM runs as (`JAILER_UID`/`JAILER_GID`), so QEMU or Firecracker can open them unprivileged.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const TUN_PATH: &str = "/dev/net/tun";

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str, flags: libc::c_int) -> io::Result<IfReq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    Ok(req)
}

fn ioctl_ptr(file: &File, req: libc::Ioctl, arg: *mut IfReq) -> io::Result<()> {
    // SAFETY: `file` is an open /dev/net/tun descriptor and `arg` points to a live, correctly
    // sized `struct ifreq` for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req, arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ioctl_val(file: &File, req: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: these TUN ioctls take their argument by value; no memory is passed.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req, arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn attach(name: &str) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open(TUN_PATH)?;
    let mut req = ifreq(name, libc::IFF_TAP | libc::IFF_NO_PI)?;
    ioctl_ptr(&file, libc::TUNSETIFF, &mut req)?;
    Ok(file)
}

/// Creates (or re-flags) persistent TAP `name` owned by `uid`/`gid`. The device lives in the
/// network namespace of the calling thread.
pub fn create_persistent(name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let file = attach(name)?;
    ioctl_val(&file, libc::TUNSETOWNER, libc::c_ulong::from(uid))?;
    ioctl_val(&file, libc::TUNSETGROUP, libc::c_ulong::from(gid))?;
    ioctl_val(&file, libc::TUNSETPERSIST, 1)?;
    Ok(())
}

/// Opens TAP `name` the way a VMM does (single queue, no packet information header). Frames
/// written to the descriptor enter the host through the TAP; frames the host sends out of the
/// TAP are read from it. Creates a non-persistent TAP when none of that name exists.
pub fn open(name: &str) -> io::Result<OwnedFd> {
    Ok(attach(name)?.into())
}
