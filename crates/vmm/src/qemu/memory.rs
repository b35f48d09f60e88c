//! Guest memory in a memfd the manager makes and hands to QEMU as `/proc/self/fd/3`
//! (`memory-backend-file`, shared, as vhost-user needs). With QEMU's `x-ignore-shared` migration
//! capability a capture then writes only device state into `vmstate.snap`, while the memory is copied
//! out of that memfd into `mem.snap` with its zero pages left as holes; a restore fills a new memfd
//! from `mem.snap` before QEMU starts and loads only the device state. A restored VM so holds just the
//! pages its snapshot had in use (a migration stream instead touches every page of the guest, and
//! loading it took 0.25–2 s here), and a restore costs a sparse copy.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The descriptor number QEMU finds its memory at.
pub(crate) const RAM_FD: RawFd = 3;
/// The memfd's name, by which a capture finds it among QEMU's descriptors.
const MEMFD_NAME: &str = "rds-guest-ram";
pub(crate) const MEM_FILE: &str = "mem.snap";
const PAGE: usize = 4096;
const CHUNK: usize = 1 << 20;

/// A memfd of `mem_mb` MiB, holding the non-zero pages of `from` when given.
pub(crate) fn create(mem_mb: u32, from: Option<&Path>) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(MEMFD_NAME).expect("no NUL");
    // SAFETY: a valid NUL-terminated name; on success the descriptor is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor from memfd_create.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ram = File::from(fd);
    ram.set_len(u64::from(mem_mb) << 20)?;
    if let Some(from) = from {
        let mut src = File::open(from)?;
        if src.metadata()?.len() > ram.metadata()?.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is larger than the guest memory", from.display()),
            ));
        }
        copy_data(&mut src, &mut ram)?;
    }
    Ok(ram.into())
}

/// Writes the guest memory of QEMU process `pid` into `dst` (created, fsynced, then 0444), leaving
/// its zero pages as holes. The VM must be paused.
pub(crate) fn save(pid: u32, dst: &Path) -> io::Result<()> {
    let mut ram = open_guest_ram(pid)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    out.set_len(ram.metadata()?.len())?;
    copy_data(&mut ram, &mut out)?;
    out.sync_all()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o444))
}

/// The memfd among QEMU's descriptors, opened anew through `/proc` (root may, whatever uid QEMU
/// dropped to).
fn open_guest_ram(pid: u32) -> io::Result<File> {
    let dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        if target
            .to_string_lossy()
            .starts_with(&format!("/memfd:{MEMFD_NAME}"))
        {
            return File::open(&path);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no guest memory memfd among {dir}"),
    ))
}

/// Copies the data extents of `src` (`SEEK_DATA`/`SEEK_HOLE`) to the same offsets of `dst`,
/// skipping pages that are all zero. `dst` must be as long as `src` and read as zeros.
fn copy_data(src: &mut File, dst: &mut File) -> io::Result<()> {
    let len = src.metadata()?.len() as i64;
    let mut buf = vec![0u8; CHUNK];
    let mut pos: i64 = 0;
    while pos < len {
        let Some(start) = seek(src.as_raw_fd(), pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(src.as_raw_fd(), start, libc::SEEK_HOLE)?.unwrap_or(len);
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            src.seek(SeekFrom::Start(at as u64))?;
            src.read_exact(&mut buf[..n])?;
            for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                if page.iter().any(|b| *b != 0) {
                    dst.seek(SeekFrom::Start(at as u64 + (i * PAGE) as u64))?;
                    dst.write_all(page)?;
                }
            }
            at += n as i64;
        }
        pos = end;
    }
    Ok(())
}

/// `lseek` with `whence`; None when no data remains (`ENXIO`).
fn seek(fd: RawFd, pos: i64, whence: i32) -> io::Result<Option<i64>> {
    // SAFETY: lseek on an open descriptor.
    let r = unsafe { libc::lseek(fd, pos, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_data_and_drops_zero_pages() {
        let dir = tempfile::tempdir().unwrap();
        let fd = create(1, None).unwrap();
        let mut ram = File::from(fd);
        // A page of data, a written page of zeros, data at the very end.
        ram.seek(SeekFrom::Start(8192)).unwrap();
        ram.write_all(&[7u8; PAGE]).unwrap();
        ram.write_all(&[0u8; PAGE]).unwrap();
        ram.seek(SeekFrom::Start((1 << 20) - 10)).unwrap();
        ram.write_all(b"0123456789").unwrap();
        let saved = dir.path().join("mem.snap");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&saved)
            .unwrap();
        out.set_len(1 << 20).unwrap();
        copy_data(&mut ram, &mut out).unwrap();
        drop(out);
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&saved).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        // Two pages of data; the written page of zeros and everything else are holes.
        assert!(
            meta.blocks() * 512 <= 2 * PAGE as u64,
            "allocated {} blocks",
            meta.blocks()
        );

        let mut back = File::from(create(1, Some(&saved)).unwrap());
        back.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        back.read_to_end(&mut all).unwrap();
        let mut want = vec![0u8; 1 << 20];
        want[8192..8192 + PAGE].fill(7);
        want[(1 << 20) - 10..].copy_from_slice(b"0123456789");
        assert!(all == want, "restored memory differs");
        assert!(
            create(0, Some(&saved)).is_err(),
            "a file larger than the memory"
        );
    }
}
