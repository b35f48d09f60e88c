//! Whether a program is statically linked. The jailer execs Firecracker inside a chroot that holds
//! only the Firecracker binary, so a dynamically linked build cannot start there (every boot fails
//! with `Failed to exec into Firecracker: No such file or directory`, the loader being absent).
//! Startup and `/readyz` refuse such a build with that explanation instead.

use object::elf::FileHeader64;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, ReadCache};
use std::path::Path;

/// The program interpreter (`PT_INTERP`) of the 64-bit ELF executable at `path`: `None` for a
/// static (or static-pie) build. Reads only the headers, not the whole file.
pub fn interpreter(path: &Path) -> Result<Option<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let data = ReadCache::new(file);
    let not_elf =
        |e: object::read::Error| format!("{} is not a 64-bit ELF executable ({e})", path.display());
    let header = FileHeader64::<Endianness>::parse(&data).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    for ph in header.program_headers(endian, &data).map_err(not_elf)? {
        if let Some(interp) = ph.interpreter(endian, &data).map_err(not_elf)? {
            return Ok(Some(String::from_utf8_lossy(interp).into_owned()));
        }
    }
    Ok(None)
}

/// `Err` naming the variable, the loader and the fix for the first of `programs` that is not a
/// statically linked ELF executable.
pub fn check_static(programs: &[(&str, &Path)]) -> Result<(), String> {
    for (var, path) in programs {
        match interpreter(path) {
            Ok(None) => {}
            Ok(Some(loader)) => {
                return Err(format!(
                    "{var} {} is dynamically linked (interpreter {loader}); the jailer runs \
                     Firecracker in a chroot without that loader, so no VM could boot: use a \
                     statically linked build such as the release binaries (docs/firecracker.md)",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("{var}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_static_and_non_elf_programs_are_told_apart() {
        // Debian's shell is dynamically linked.
        let sh = crate::select::which("sh").unwrap();
        let loader = interpreter(&sh).unwrap().expect("sh has a loader");
        assert!(loader.contains("ld-linux"), "{loader}");
        let err = check_static(&[("FIRECRACKER_BIN", &sh)]).unwrap_err();
        assert!(
            err.starts_with("FIRECRACKER_BIN ") && err.contains("dynamically linked"),
            "{err}"
        );
        // A script is no ELF file; neither is a missing path.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("firecracker");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        assert!(interpreter(&script)
            .unwrap_err()
            .contains("not a 64-bit ELF"));
        assert!(check_static(&[("JAILER_BIN", &dir.path().join("nope"))])
            .unwrap_err()
            .starts_with("JAILER_BIN: "));
        // busybox-static (installed by scripts/install-deps.sh for the image build) has no loader.
        let busybox = Path::new("/bin/busybox");
        if busybox.exists() {
            assert_eq!(interpreter(busybox).unwrap(), None);
            assert_eq!(check_static(&[("FIRECRACKER_BIN", busybox)]), Ok(()));
        } else {
            println!("no /bin/busybox: the static case is not checked here");
        }
    }
}
