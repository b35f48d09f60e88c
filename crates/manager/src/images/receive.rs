//! Writing an image file: bytes go to a temporary file beside the target under a size cap, hashed
//! (SHA-256) and checked by magic as they pass, with all-zero blocks left as holes so a sparse rootfs
//! stays sparse; then fsync. The temporary file ([`TempFile`]) is removed unless it is renamed into
//! place.

use super::format::{self, KernelFormat, HEAD_LEN};
use super::ImageError;
use crate::model::{now_rfc3339, ImageFile, ImagePart};
pub use crate::storage::spool::TempFile;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

/// Holes are made at this granularity (the filesystem block size of ext4 and XFS).
const BLOCK: u64 = 4096;

/// A complete, checked, fsynced temporary file.
#[derive(Debug)]
pub struct Received {
    pub tmp: TempFile,
    pub file: ImageFile,
    pub kernel_format: Option<KernelFormat>,
}

/// The writing side, fed synchronously (from a blocking thread).
pub struct Sink {
    file: File,
    tmp: TempFile,
    part: ImagePart,
    limit: u64,
    hasher: Sha256,
    head: Vec<u8>,
    checked: bool,
    pos: u64,
}

impl Sink {
    /// Creates `path` (0600, must not exist) for `part`, at most `limit` bytes.
    pub fn create(path: PathBuf, part: ImagePart, limit: u64) -> Result<Sink, ImageError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(ImageError::io("create", &path))?;
        Ok(Sink {
            file,
            tmp: TempFile::adopt(path),
            part,
            limit,
            hasher: Sha256::new(),
            head: Vec::with_capacity(HEAD_LEN),
            checked: false,
            pos: 0,
        })
    }

    pub fn push(&mut self, data: &[u8]) -> Result<(), ImageError> {
        if self.pos + data.len() as u64 > self.limit {
            return Err(ImageError::TooLarge);
        }
        self.hasher.update(data);
        if !self.checked {
            let take = (HEAD_LEN - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            if self.head.len() == HEAD_LEN {
                self.check()?;
            }
        }
        self.write_sparse(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn check(&mut self) -> Result<(), ImageError> {
        if !format::is_valid(self.part, &self.head) {
            return Err(ImageError::Invalid(self.part));
        }
        self.checked = true;
        Ok(())
    }

    /// Writes the non-zero blocks of `data` (at `self.pos`); zero blocks stay holes. The file is new
    /// and written once, front to back, so a skipped range always reads back as zeros.
    fn write_sparse(&self, data: &[u8]) -> Result<(), ImageError> {
        let mut run: Option<usize> = None;
        let mut i = 0;
        while i < data.len() {
            let at = self.pos + i as u64;
            let end = ((at / BLOCK + 1) * BLOCK - self.pos).min(data.len() as u64) as usize;
            let block = &data[i..end];
            if is_zero(block) {
                if let Some(start) = run.take() {
                    self.write_at(&data[start..i], start)?;
                }
            } else if run.is_none() {
                run = Some(i);
            }
            i = end;
        }
        if let Some(start) = run {
            self.write_at(&data[start..], start)?;
        }
        Ok(())
    }

    fn write_at(&self, bytes: &[u8], offset_in_chunk: usize) -> Result<(), ImageError> {
        self.file
            .write_all_at(bytes, self.pos + offset_in_chunk as u64)
            .map_err(ImageError::io("write", self.tmp.path()))
    }

    /// Checks a short file, sets the length (trailing holes), fsyncs.
    pub fn finish(mut self) -> Result<Received, ImageError> {
        if !self.checked {
            self.check()?;
        }
        let path = self.tmp.path().to_path_buf();
        self.file
            .set_len(self.pos)
            .map_err(ImageError::io("truncate", &path))?;
        self.file
            .sync_all()
            .map_err(ImageError::io("fsync", &path))?;
        let kernel_format = match self.part {
            ImagePart::Kernel => format::kernel_format(&self.head),
            _ => None,
        };
        Ok(Received {
            tmp: self.tmp,
            file: ImageFile {
                bytes: self.pos,
                sha256: hex(&self.hasher.finalize()),
                uploaded_at: now_rfc3339(),
            },
            kernel_format,
        })
    }
}

fn is_zero(block: &[u8]) -> bool {
    static ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];
    // Slice equality is a memcmp, fast even in unoptimised builds; the first byte settles most blocks.
    block.first() == Some(&0) && block == &ZEROS[..block.len()]
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `body` into a new file at `path` for `part` (at most `limit` bytes). Hashing and writing
/// run on a blocking thread fed through a small channel, so the runtime only moves buffers. A body
/// error, the cap or a failed magic check stops the transfer and removes the file.
pub async fn receive<S, E>(
    mut body: S,
    path: PathBuf,
    part: ImagePart,
    limit: u64,
) -> Result<Received, ImageError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut sink = Sink::create(path, part, limit)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            sink.push(&chunk)?;
        }
        sink.finish()
    });
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the writer stopped on an error it reports below
                }
            }
            Err(e) => {
                failure = Some(ImageError::Body(e.to_string()));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ImageError::Internal(format!("image writer: {e}")))?;
    match failure {
        Some(e) => Err(e),
        None => written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn ext4_head() -> Vec<u8> {
        let mut h = vec![0u8; 2048];
        h[1080] = 0x53;
        h[1081] = 0xef;
        h
    }

    fn stream(chunks: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
    }

    #[tokio::test]
    async fn zero_blocks_become_holes_and_the_digest_covers_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = ext4_head();
        body.resize(4 << 20, 0);
        body[3 << 20] = 7; // one data block in the middle, then zeros to the end
        let chunks: Vec<Vec<u8>> = body.chunks(10_000).map(<[u8]>::to_vec).collect();
        let path = dir.path().join("rootfs.tmp");
        let got = receive(stream(chunks), path.clone(), ImagePart::Rootfs, 8 << 20)
            .await
            .unwrap();
        assert_eq!(got.file.bytes, body.len() as u64);
        assert_eq!(got.file.sha256, hex(&Sha256::digest(&body)));
        assert_eq!(std::fs::read(&path).unwrap(), body);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 <= 64 * 1024, "{} blocks", meta.blocks());
        let dst = dir.path().join("rootfs.ext4");
        got.tmp.persist(&dst, 0o444).unwrap();
        assert!(!path.exists());
        assert_eq!(
            std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    #[tokio::test]
    async fn over_the_cap_or_wrong_magic_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.tmp");
        let big = vec![vec![0x7f; 1000]; 5];
        let e = receive(stream(big), path.clone(), ImagePart::Rootfs, 4000)
            .await
            .unwrap_err();
        assert!(matches!(e, ImageError::TooLarge), "{e}");
        assert!(!path.exists());
        let text = vec![b"#!/bin/sh\necho not a kernel\n".to_vec()];
        let e = receive(stream(text), path.clone(), ImagePart::Kernel, 4000)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "Kernel must be an ELF vmlinux or a bzImage");
        assert!(!path.exists());
        // A long wrong file stops at the head, long before its end.
        let junk = vec![vec![1u8; 64 * 1024]; 1000];
        let e = receive(stream(junk), path.clone(), ImagePart::Rootfs, u64::MAX)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "Root filesystem must be an ext4 image");
        assert!(!path.exists());
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from(ext4_head())),
            Err(std::io::Error::other("reset")),
        ]);
        let e = receive(failing, path.clone(), ImagePart::Rootfs, u64::MAX)
            .await
            .unwrap_err();
        assert!(matches!(e, ImageError::Body(_)), "{e}");
        assert!(!path.exists());
    }
}
