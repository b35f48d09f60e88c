//! Building a download: a directory as its contents (`./…`), a file as its basename; symlinks stored as
//! symlinks; whatever the calling thread's identity cannot read is left out.

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use rds_protocol::files::DOWNLOAD_ENTRY_OVERHEAD_BYTES;
use rds_protocol::MAX_PATH_BYTES;

use crate::paths::stat_fd;

/// Deepest directory level archived; deeper ones are left out (each level holds a descriptor).
const MAX_DEPTH: usize = 512;

/// What is being downloaded, opened for reading.
pub enum Source {
    Dir(OwnedFd),
    File { fd: OwnedFd, name: Vec<u8> },
}

/// Reopens the resolved `O_PATH` handle `target` for reading; `name` is the archive name of a file.
pub fn open_source(target: &OwnedFd, name: &[u8]) -> io::Result<Source> {
    let st = stat_fd(target)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Ok(Source::Dir(crate::paths::reopen(
            target,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?)),
        libc::S_IFREG => Ok(Source::File {
            fd: crate::paths::reopen(target, libc::O_RDONLY | libc::O_NONBLOCK)?,
            name: name.to_vec(),
        }),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or directory",
        )),
    }
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Names in a directory, sorted, without `.` and `..`.
pub fn list(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: fdopendir takes ownership of the duplicate, closedir releases it; readdir's entries are
    // copied out before the next call.
    unsafe {
        let dup = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = libc::fdopendir(dup);
        if stream.is_null() {
            let e = io::Error::last_os_error();
            libc::close(dup);
            return Err(e);
        }
        libc::rewinddir(stream);
        let mut names = Vec::new();
        loop {
            let ent = libc::readdir(stream);
            if ent.is_null() {
                break;
            }
            let name = CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        libc::closedir(stream);
        names.sort();
        Ok(names)
    }
}

fn lstat_at(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer; valid descriptor and C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn read_link_at(dir: &OwnedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_PATH_BYTES + 1];
    // SAFETY: valid descriptor, C string and buffer.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// One thing met while walking.
enum Node<'a> {
    Dir(&'a libc::stat),
    File(&'a libc::stat, OwnedFd),
    Symlink(&'a libc::stat, Vec<u8>),
}

/// Visits `dir`'s descendants in name order (a directory before its contents); entries that cannot be
/// opened or read are skipped. `visit` gets the path relative to `dir`.
fn walk(
    dir: &OwnedFd,
    rel: &mut PathBuf,
    depth: usize,
    visit: &mut dyn FnMut(&Path, Node<'_>) -> io::Result<bool>,
) -> io::Result<bool> {
    if depth >= MAX_DEPTH {
        return Ok(true);
    }
    let Ok(names) = list(dir) else {
        return Ok(true);
    };
    for name in names {
        let Ok(c) = CString::new(name.clone()) else {
            continue;
        };
        let Ok(st) = lstat_at(dir, &c) else {
            continue;
        };
        rel.push(OsStr::from_bytes(&name));
        let go_on = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                // SAFETY: valid descriptor and C string.
                match owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) }) {
                    Ok(child) => {
                        visit(rel, Node::Dir(&st))? && walk(&child, rel, depth + 1, visit)?
                    }
                    Err(_) => true,
                }
            }
            libc::S_IFREG => {
                let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
                // SAFETY: valid descriptor and C string.
                match owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) }) {
                    Ok(fd) => visit(rel, Node::File(&st, fd))?,
                    Err(_) => true,
                }
            }
            libc::S_IFLNK => match read_link_at(dir, &c) {
                Ok(target) => visit(rel, Node::Symlink(&st, target))?,
                Err(_) => true,
            },
            // Devices, FIFOs and sockets are never archived.
            _ => true,
        };
        rel.pop();
        if !go_on {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Sum of file sizes plus [`DOWNLOAD_ENTRY_OVERHEAD_BYTES`] per entry; stops counting once past `stop_at`.
pub fn estimate(source: &Source, stop_at: u64) -> io::Result<u64> {
    match source {
        Source::File { fd, .. } => Ok(stat_fd(fd)?.st_size as u64 + DOWNLOAD_ENTRY_OVERHEAD_BYTES),
        Source::Dir(dir) => {
            let mut total = DOWNLOAD_ENTRY_OVERHEAD_BYTES;
            walk(dir, &mut PathBuf::new(), 0, &mut |_, node| {
                total += DOWNLOAD_ENTRY_OVERHEAD_BYTES;
                if let Node::File(st, _) = node {
                    total += st.st_size as u64;
                }
                Ok(total <= stop_at)
            })?;
            Ok(total)
        }
    }
}

fn header_for(st: &libc::stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(st.st_mode & 0o7777);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h
}

/// Exactly `size` bytes of `file`: cut if it grew since it was measured, zero-padded if it shrank.
fn exactly(file: std::fs::File, size: u64) -> impl Read {
    file.take(size).chain(io::repeat(0)).take(size)
}

/// Appends a GNU long-name (`L`) or long-link (`K`) record when `value` does not fit its 100-byte field,
/// and puts (the start of) `value` in `field`.
fn long_field<W: Write>(
    builder: &mut tar::Builder<W>,
    kind: tar::EntryType,
    field: &mut [u8; 100],
    value: &[u8],
) -> io::Result<()> {
    if value.len() > field.len() {
        let mut ext = tar::Header::new_gnu();
        ext.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
        ext.set_entry_type(kind);
        ext.set_mode(0o644);
        let mut data = value.to_vec();
        data.push(0);
        ext.set_size(data.len() as u64);
        ext.set_cksum();
        builder.append(&ext, data.as_slice())?;
    }
    let n = value.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&value[..n]);
    Ok(())
}

/// Appends one entry under exactly the name `name` (the `tar` crate would drop a leading `./`).
fn append_named<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl Read,
) -> io::Result<()> {
    let gnu = header.as_gnu_mut().expect("a GNU header");
    let mut name_field = gnu.name;
    let mut link_field = gnu.linkname;
    long_field(builder, tar::EntryType::GNULongName, &mut name_field, name)?;
    if let Some(link) = link {
        long_field(builder, tar::EntryType::GNULongLink, &mut link_field, link)?;
    }
    let gnu = header.as_gnu_mut().expect("a GNU header");
    gnu.name = name_field;
    gnu.linkname = link_field;
    header.set_cksum();
    builder.append(&header, data)
}

fn append_node<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    node: Node<'_>,
) -> io::Result<()> {
    let mut name = path.as_os_str().as_bytes().to_vec();
    match node {
        Node::Dir(st) => {
            if !name.ends_with(b"/") {
                name.push(b'/');
            }
            let h = header_for(st, tar::EntryType::Directory, 0);
            append_named(builder, h, &name, None, io::empty())
        }
        Node::File(st, fd) => {
            let size = st.st_size as u64;
            let h = header_for(st, tar::EntryType::Regular, size);
            append_named(
                builder,
                h,
                &name,
                None,
                exactly(std::fs::File::from(fd), size),
            )
        }
        Node::Symlink(st, target) => {
            let h = header_for(st, tar::EntryType::Symlink, 0);
            append_named(builder, h, &name, Some(&target), io::empty())
        }
    }
}

/// Writes the tar.gz of `source` to `out`.
pub fn stream<W: Write>(source: Source, out: W) -> io::Result<W> {
    let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    match source {
        Source::File { fd, name } => {
            let st = stat_fd(&fd)?;
            let path = PathBuf::from(OsStr::from_bytes(&name));
            append_node(&mut builder, &path, Node::File(&st, fd))?;
        }
        Source::Dir(dir) => {
            let st = stat_fd(&dir)?;
            append_node(&mut builder, Path::new("./"), Node::Dir(&st))?;
            let mut rel = PathBuf::from(".");
            walk(&dir, &mut rel, 0, &mut |path, node| {
                append_node(&mut builder, path, node).map(|()| true)
            })?;
        }
    }
    builder.into_inner()?.finish()
}
