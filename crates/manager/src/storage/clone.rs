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

/// True when `dir`'s filesystem accepts `FICLONE` (startup check for `ROOTFS_CLONE_MODE=reflink`).
pub fn can_reflink(dir: &Path) -> io::Result<bool> {
    let src = dir.join(format!(".reflink-probe-{}", std::process::id()));
    let dst = dir.join(format!(".reflink-probe-{}.clone", std::process::id()));
    std::fs::write(&src, b"probe")?;
    let result = clone_file(&src, &dst, CloneMode::Reflink).is_ok();
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    Ok(result)
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
    /// A mounted XFS loop image with reflink, removed on drop (needs root and xfsprogs).
    struct XfsMount {
        dir: tempfile::TempDir,
    }

    impl XfsMount {
        fn new() -> Result<XfsMount, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let img = dir.path().join("xfs.img");
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
            File::create(&img)
                .and_then(|f| f.set_len(512 << 20))
                .map_err(|e| e.to_string())?;
            let run = |cmd: &mut std::process::Command| -> Result<(), String> {
                let out = cmd.output().map_err(|e| e.to_string())?;
                out.status
                    .success()
                    .then_some(())
                    .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
            };
            run(std::process::Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&img))?;
            run(std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt))?;
            Ok(XfsMount { dir })
        }

        fn path(&self) -> std::path::PathBuf {
            self.dir.path().join("mnt")
        }
    }

    impl Drop for XfsMount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.path())
                .status();
        }
    }

    #[test]
    fn reflink_on_xfs_and_clear_failure_elsewhere() {
        let xfs = match XfsMount::new() {
            Ok(m) => m,
            Err(reason) => {
                println!(
                    "SKIP reflink_on_xfs_and_clear_failure_elsewhere: no XFS loop mount: {reason}"
                );
                return;
            }
        };
        let src = xfs.path().join("src");
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        assert!(can_reflink(&xfs.path()).unwrap());
        let (a, b) = (xfs.path().join("reflinked"), xfs.path().join("copied"));
        clone_file(&src, &a, CloneMode::Reflink).unwrap();
        clone_file(&src, &b, CloneMode::Copy).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), data);
        assert_eq!(
            std::fs::read(&b).unwrap(),
            data,
            "reflink and copy give identical disks"
        );
        // Writes to the clone never reach the source.
        std::fs::write(&a, b"changed").unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), data);

        // tmpfs cannot reflink: `reflink` mode fails clearly, `auto` falls back to copying.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let s2 = shm.path().join("src");
        std::fs::write(&s2, b"x").unwrap();
        assert!(!can_reflink(shm.path()).unwrap());
        assert!(clone_file(&s2, &shm.path().join("r"), CloneMode::Reflink).is_err());
        assert!(
            !shm.path().join("r").exists(),
            "a failed clone leaves no file"
        );
        clone_file(&s2, &shm.path().join("auto"), CloneMode::Auto).unwrap();
    }

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
