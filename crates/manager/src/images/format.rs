//! Format checks by magic numbers (`docs/reference/api.md` §5): an ELF vmlinux for this host's
//! machine or a bzImage, an ext4 superblock, a `newc` cpio initramfs (plain or gzip/lz4/zstd).

use crate::model::ImagePart;

/// How much of the start of a file the checks look at.
pub const HEAD_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

impl KernelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelFormat::Elf => "elf",
            KernelFormat::BzImage => "bzimage",
        }
    }
}

/// The ELF `e_machine` of the host: a guest kernel for another architecture cannot boot here.
const HOST_ELF_MACHINE: u16 = if cfg!(target_arch = "aarch64") {
    183
} else {
    62
};

/// The kernel's format, or `None` when `head` is neither a host ELF nor a bzImage.
pub fn kernel_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(b"\x7fELF") {
        let machine = head.get(18..20)?;
        let machine = match head.get(5) {
            Some(2) => u16::from_be_bytes([machine[0], machine[1]]),
            _ => u16::from_le_bytes([machine[0], machine[1]]),
        };
        return (machine == HOST_ELF_MACHINE).then_some(KernelFormat::Elf);
    }
    (head.get(0x202..0x206) == Some(b"HdrS")).then_some(KernelFormat::BzImage)
}

pub fn is_ext4(head: &[u8]) -> bool {
    head.get(1080..1082) == Some(&[0x53, 0xef])
}

/// `newc` cpio (`070701`, or `070702` with checksums), or a gzip, lz4 (frame or the kernel's legacy
/// format) or zstd stream, which the kernel unpacks itself.
pub fn is_initrd(head: &[u8]) -> bool {
    const MAGICS: [&[u8]; 6] = [
        b"070701",
        b"070702",
        &[0x1f, 0x8b],
        &[0x04, 0x22, 0x4d, 0x18],
        &[0x02, 0x21, 0x4c, 0x18],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
}

/// Whether `head` is a valid start for `part`.
pub fn is_valid(part: ImagePart, head: &[u8]) -> bool {
    match part {
        ImagePart::Kernel => kernel_format(head).is_some(),
        ImagePart::Initrd => is_initrd(head),
        ImagePart::Rootfs => is_ext4(head),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16, big_endian: bool) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = if big_endian { 2 } else { 1 };
        let m = if big_endian {
            machine.to_be_bytes()
        } else {
            machine.to_le_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn kernels() {
        assert_eq!(
            kernel_format(&elf(HOST_ELF_MACHINE, false)),
            Some(KernelFormat::Elf)
        );
        let other = if HOST_ELF_MACHINE == 62 { 183 } else { 62 };
        assert_eq!(kernel_format(&elf(other, false)), None, "foreign machine");
        assert_eq!(
            kernel_format(&elf(HOST_ELF_MACHINE, true)),
            Some(KernelFormat::Elf)
        );
        assert_eq!(kernel_format(b"\x7fELF\x02\x01"), None, "truncated header");
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kernel_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(kernel_format(b"#!/bin/sh\necho hello\n"), None);
        assert_eq!(kernel_format(&[]), None);
    }

    #[test]
    fn root_filesystems() {
        let mut fs = vec![0u8; 2048];
        assert!(!is_ext4(&fs));
        fs[1080] = 0x53;
        fs[1081] = 0xef;
        assert!(is_ext4(&fs));
        assert!(!is_ext4(&fs[..1081]));
    }

    #[test]
    fn initrds() {
        assert!(is_initrd(b"070701000EA57F00"));
        assert!(is_initrd(b"070702"));
        assert!(is_initrd(&[0x1f, 0x8b, 8, 0]));
        assert!(is_initrd(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(is_initrd(&[0x04, 0x22, 0x4d, 0x18]));
        assert!(is_initrd(&[0x02, 0x21, 0x4c, 0x18]));
        assert!(!is_initrd(b"070707"), "old binary cpio is not newc");
        assert!(!is_initrd(b"hello"));
        assert!(is_valid(ImagePart::Initrd, b"070701"));
        assert!(!is_valid(ImagePart::Rootfs, b"070701"));
    }
}
