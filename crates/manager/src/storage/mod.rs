//! On-disk layout under `STORAGE_ROOT` (`docs/reference/lifecycle.md` §6): per-VM directories,
//! writable disks cloned from a blank journaled ext4 made once per size, never per VM.
//!
//! `STORAGE_ROOT`, `vms/` and `vms/<id>/` are 0711 rather than the spec's 0700: the VMM's helper
//! processes run as `JAILER_UID` from the start and must traverse to the run directory they own.
//! Nobody but root can list or read these directories (docs/decisions.md).

mod clone;
pub mod snapshots;
pub mod spool;

pub use clone::{can_reflink, clone_file, CloneMode};
pub use snapshots::{allocated_bytes, FsUsage};

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Directories the VMM uid must pass through but not read.
const TRAVERSE_ONLY: u32 = 0o711;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mkfs.ext4 failed for {path}: {detail}")]
    Mkfs { path: PathBuf, detail: String },
    #[error("{program} failed for {path}: {detail}")]
    Tool {
        program: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    /// ENOSPC (or EDQUOT): the API answers 507.
    #[error("Not enough free space in STORAGE_ROOT ({what} {path})")]
    NoSpace { what: &'static str, path: PathBuf },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| match source.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => StorageError::NoSpace { what, path },
        _ => StorageError::Io { what, path, source },
    }
}

#[derive(Clone)]
pub struct Storage {
    root: PathBuf,
    mode: CloneMode,
    blank_lock: Arc<Mutex<()>>,
}

/// Written into `paused/` once memory and device state are complete.
pub const PAUSED_MARKER: &str = "complete";

impl Storage {
    /// Creates the layout (root 0700). Cheap and idempotent.
    pub fn init(root: &Path, mode: CloneMode) -> Result<Storage, StorageError> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for dir in [
            root.to_path_buf(),
            root.join("vms"),
            root.join("snapshots"),
            root.join("cache/blank"),
            root.join("tmp"),
        ] {
            b.create(&dir).map_err(io("create", &dir))?;
        }
        for dir in [root.to_path_buf(), root.join("vms")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(TRAVERSE_ONLY))
                .map_err(io("chmod", &dir))?;
        }
        Ok(Storage {
            root: root.to_path_buf(),
            mode,
            blank_lock: Arc::new(Mutex::new(())),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.root.join("vms").join(id)
    }

    pub fn disk_path(&self, id: &str) -> PathBuf {
        self.vm_dir(id).join("disk.ext4")
    }

    pub fn logs_dir(&self, id: &str) -> PathBuf {
        self.vm_dir(id).join("logs")
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.vm_dir(id).join("run")
    }

    /// A paused VM's memory and device state (`docs/lifetimes.md`).
    pub fn paused_dir(&self, id: &str) -> PathBuf {
        self.vm_dir(id).join("paused")
    }

    /// Whether the pause of `id` finished writing (its marker is the last file written).
    pub fn paused_complete(&self, id: &str) -> bool {
        self.paused_dir(id).join(PAUSED_MARKER).is_file()
    }

    /// Removes a paused VM's memory (after a resume, or when it is dropped).
    pub async fn remove_paused(&self, id: &str) -> Result<(), StorageError> {
        let dir = self.paused_dir(id);
        snapshots::blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &dir)(e)),
            _ => Ok(()),
        })
        .await
    }

    /// Makes `vms/<id>/` with `logs/` and a writable disk of `size_mb` cloned from the blank cache.
    pub async fn create_vm_disk(&self, id: &str, size_mb: u64) -> Result<PathBuf, StorageError> {
        let blank = self.blank_disk(size_mb).await?;
        self.clone_into_vm_dir(id, blank).await
    }

    /// Makes `vms/<id>/` with `logs/` (kept if present) and `disk.ext4` (0600) as a clone of `src`.
    async fn clone_into_vm_dir(&self, id: &str, src: PathBuf) -> Result<PathBuf, StorageError> {
        let (vm_dir, logs) = (self.vm_dir(id), self.logs_dir(id));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&logs)
            .map_err(io("create", &logs))?;
        std::fs::set_permissions(&vm_dir, std::fs::Permissions::from_mode(TRAVERSE_ONLY))
            .map_err(io("chmod", &vm_dir))?;
        let disk = self.disk_path(id);
        let (mode, dst) = (self.mode, disk.clone());
        tokio::task::spawn_blocking(move || {
            clone_file(&src, &dst, mode).map_err(io("clone", &src))
        })
        .await
        .expect("clone task panicked")?;
        std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod", &disk))?;
        Ok(disk)
    }

    /// Removes the VM's writable disk (a discarded restore attempt), keeping its logs.
    pub async fn remove_vm_disk(&self, id: &str) -> Result<(), StorageError> {
        let disk = self.disk_path(id);
        match tokio::fs::remove_file(&disk).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &disk)(e)),
            _ => Ok(()),
        }
    }

    /// `cache/blank/<N>m.ext4`: made once (journal on, no reserved blocks) into a temp name,
    /// renamed.
    async fn blank_disk(&self, size_mb: u64) -> Result<PathBuf, StorageError> {
        let path = self.root.join(format!("cache/blank/{size_mb}m.ext4"));
        let _guard = self.blank_lock.lock().await;
        if path.exists() {
            return Ok(path);
        }
        let tmp = self.root.join(format!(
            "cache/blank/.tmp-{size_mb}m-{}",
            uuid::Uuid::new_v4()
        ));
        let file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.set_len(size_mb * 1024 * 1024)
            .map_err(io("truncate", &tmp))?;
        drop(file);
        let out = tokio::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-L", "rds-disk"])
            .arg(&tmp)
            .output()
            .await
            .map_err(io("run mkfs.ext4 for", &tmp))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::Mkfs {
                path,
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
            .map_err(io("chmod", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        Ok(path)
    }

    /// Removes `vms/<id>/` entirely. Missing is fine.
    pub async fn remove_vm(&self, id: &str) -> Result<(), StorageError> {
        let dir = self.vm_dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &dir)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn vm_disk_is_a_sparse_clone_of_a_cached_blank() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::init(dir.path(), CloneMode::Auto).unwrap();
        let disk = s.create_vm_disk("vm1", 64).await.unwrap();
        let meta = std::fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 64 * 1024 * 1024);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < meta.len() / 2, "disk is not sparse");
        let blank = dir.path().join("cache/blank/64m.ext4");
        assert_eq!(
            std::fs::read(&blank).unwrap(),
            std::fs::read(&disk).unwrap()
        );
        let before = std::fs::metadata(&blank).unwrap().modified().unwrap();
        s.create_vm_disk("vm2", 64).await.unwrap();
        assert_eq!(
            std::fs::metadata(&blank).unwrap().modified().unwrap(),
            before,
            "blank rebuilt"
        );
        s.remove_vm("vm1").await.unwrap();
        assert!(!s.vm_dir("vm1").exists());
        s.remove_vm("vm1").await.unwrap();
    }
}
