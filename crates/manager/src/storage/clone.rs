//! File cloning for disks: `FICLONE` reflinks where the filesystem can, else a sparse-aware copy that
//! walks data extents with `SEEK_DATA`/`SEEK_HOLE`, so holes stay holes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMode {
    Auto,
    Reflink,
    Copy,
}

impl CloneMode {
    pub fn parse(s: &str) -> CloneMode {
        match s {
            "reflink" => CloneMode::Reflink,
            "copy" => CloneMode::Copy,
            _ => CloneMode::Auto,
        }
    }
}

const FICLONE: libc::c_ulong = 0x4004_9409;

pub fn clone_file(src: &Path, dst: &Path, mode: CloneMode) -> io::Result<()> {
    let from = File::open(src)?;
    let to = OpenOptions::new().write(true).create_new(true).open(dst)?;
    let result = match mode {
        CloneMode::Copy => sparse_copy(&from, &to),
        CloneMode::Reflink => reflink(&from, &to),
        CloneMode::Auto => reflink(&from, &to).or_else(|_| sparse_copy(&from, &to)),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result
}

fn reflink(from: &File, to: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sparse_copy(from: &File, to: &File) -> io::Result<()> {
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let (src, dst) = (from.as_raw_fd(), to.as_raw_fd());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(src, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            // SAFETY: valid descriptors and offset pointers; copies within the file lengths.
            let n = unsafe {
                libc::copy_file_range(
                    src,
                    &mut off_in,
                    dst,
                    &mut off_out,
                    (hole - off_in) as usize,
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    to.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_copy_keeps_bytes_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.set_len(32 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        f.seek(SeekFrom::Start(20 << 20)).unwrap();
        f.write_all(b"tail data").unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        clone_file(&src, &dst, CloneMode::Copy).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 < 1 << 20);
        assert!(
            clone_file(&src, &dst, CloneMode::Copy).is_err(),
            "must not overwrite"
        );
    }
}
