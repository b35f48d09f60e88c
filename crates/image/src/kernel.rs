//! Kernel: unpack the Debian package, `depmod`, and extract the ELF `vmlinux`
//! from the LZ4-compressed bzImage (PVH-bootable by QEMU and Firecracker).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::run;
use crate::recipe::Kernel;

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Unpacks `deb` into `dir` and runs depmod; returns the modules directory.
pub fn unpack(deb: &Path, dir: &Path, kernel: &Kernel) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))?;
    run(Command::new("depmod")
        .arg("-b")
        .arg(dir)
        .arg(&kernel.release))?;
    let modules = dir.join("lib/modules").join(&kernel.release);
    if !modules.is_dir() {
        bail!(
            "{} missing after unpacking {}",
            modules.display(),
            deb.display()
        );
    }
    Ok(modules)
}

/// Writes the ELF kernel found inside `bzimage` to `out`.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = fs::read(bzimage).with_context(|| format!("read {}", bzimage.display()))?;
    let offsets = data
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == LZ4_LEGACY_MAGIC)
        .map(|(i, _)| i);
    for off in offsets {
        if lz4_decompress(&data[off..], out)? {
            return Ok(());
        }
    }
    let _ = fs::remove_file(out);
    bail!(
        "no LZ4 stream in {} decompresses to an ELF image",
        bzimage.display()
    )
}

/// `lz4 -dc` of `input` into `out`; true if the result starts with the ELF
/// magic (trailing bytes after the stream make lz4 complain; that is fine).
fn lz4_decompress(input: &[u8], out: &Path) -> Result<bool> {
    let file = File::create(out)?;
    let mut child = Command::new("lz4")
        .args(["-dc", "-q"])
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run lz4")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    child.wait()?;
    let _ = writer.join();
    let mut head = [0u8; 4];
    let ok = File::open(out)?.read_exact(&mut head).is_ok() && head == ELF_MAGIC;
    Ok(ok)
}
