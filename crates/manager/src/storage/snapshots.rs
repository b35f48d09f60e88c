//! Snapshot files (`docs/reference/lifecycle.md` §6, §9): `snapshots/<snapId>/` holds `meta.json`,
//! `disk.ext4` and the backend's memory/state files; a capture in progress lives in
//! `snapshots/.tmp-<uuid>/` and becomes visible only by the rename after `meta.json` is written and
//! synced.

use super::{io, Storage, StorageError};
use crate::model::SnapshotRecord;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const SNAPSHOT_DISK: &str = "disk.ext4";
pub const SNAPSHOT_META: &str = "meta.json";
/// Prefix of capture directories; reconciliation deletes whatever carries it.
pub const TMP_PREFIX: &str = ".tmp-";

/// Runs blocking file work off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("storage task panicked")
}

fn sync_path(path: &Path) -> Result<(), StorageError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", path))
}

impl Storage {
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id)
    }

    /// A fresh `snapshots/.tmp-<uuid>/` (0700) for one capture.
    pub fn snapshot_tmp_dir(&self) -> Result<PathBuf, StorageError> {
        let dir = self
            .snapshots_dir()
            .join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        Ok(dir)
    }

    /// Flushes the VM's writable disk on the host, then clones it into `dir/disk.ext4`.
    pub async fn capture_disk(&self, vm_id: &str, dir: &Path) -> Result<(), StorageError> {
        let (src, dst, mode) = (self.disk_path(vm_id), dir.join(SNAPSHOT_DISK), self.mode);
        blocking(move || {
            sync_path(&src)?;
            super::clone_file(&src, &dst, mode).map_err(io("clone", &src))
        })
        .await
    }

    /// Writes `meta.json` (the record), makes every file read-only, syncs, and renames `tmp` to
    /// `<meta.id>` (then syncs `snapshots/`, so the rename survives a crash).
    pub async fn commit_snapshot(
        &self,
        tmp: &Path,
        meta: &SnapshotRecord,
    ) -> Result<PathBuf, StorageError> {
        let json = serde_json::to_vec_pretty(meta).expect("meta serialises");
        let (tmp, dst, parent) = (
            tmp.to_path_buf(),
            self.snapshot_dir(&meta.id),
            self.snapshots_dir(),
        );
        blocking(move || {
            let path = tmp.join(SNAPSHOT_META);
            std::fs::write(&path, json).map_err(io("write", &path))?;
            for entry in std::fs::read_dir(&tmp).map_err(io("list", &tmp))? {
                let p = entry.map_err(io("list", &tmp))?.path();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444))
                    .map_err(io("chmod", &p))?;
                sync_path(&p)?;
            }
            sync_path(&tmp)?;
            std::fs::rename(&tmp, &dst).map_err(io("rename", &tmp))?;
            sync_path(&parent)?;
            Ok(dst)
        })
        .await
    }

    /// `meta.json` of a snapshot directory.
    pub async fn read_snapshot_meta(&self, dir: &Path) -> Result<SnapshotRecord, StorageError> {
        let path = dir.join(SNAPSHOT_META);
        let bytes = tokio::fs::read(&path).await.map_err(io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| StorageError::Invalid {
            path,
            detail: e.to_string(),
        })
    }

    /// Removes a snapshot (or capture) directory. Missing is fine.
    pub async fn remove_snapshot_dir(&self, dir: &Path) -> Result<(), StorageError> {
        match tokio::fs::remove_dir_all(dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", dir)(e)),
            _ => Ok(()),
        }
    }

    /// Names of the entries of `snapshots/` (committed ids and `.tmp-*` captures alike).
    pub fn snapshot_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.snapshots_dir())
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `vms/<id>/disk.ext4` as a clone of snapshot `snap_id`'s disk, grown from `from_mb` to
    /// `size_mb` when larger.
    pub async fn vm_disk_from_snapshot(
        &self,
        vm_id: &str,
        snap_id: &str,
        from_mb: u64,
        size_mb: u64,
    ) -> Result<PathBuf, StorageError> {
        let src = self.snapshot_dir(snap_id).join(SNAPSHOT_DISK);
        let disk = self.clone_into_vm_dir(vm_id, src).await?;
        if size_mb > from_mb {
            grow_ext4(&disk, size_mb).await?;
        }
        Ok(disk)
    }

    /// Bytes an unprivileged writer may still use on `STORAGE_ROOT`'s filesystem.
    pub async fn free_bytes(&self) -> Result<u64, StorageError> {
        Ok(self.usage().await?.available)
    }

    /// `statvfs(STORAGE_ROOT)`: size, used and available bytes of its filesystem.
    pub async fn usage(&self) -> Result<FsUsage, StorageError> {
        let root = self.root.clone();
        blocking(move || {
            let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
                .expect("STORAGE_ROOT has no NUL");
            let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
            // SAFETY: a valid NUL-terminated path and a buffer statvfs fills on success.
            if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
                return Err(io("statvfs", &root)(std::io::Error::last_os_error()));
            }
            // SAFETY: statvfs returned 0, so the struct is initialised.
            let st = unsafe { st.assume_init() };
            let block = st.f_frsize;
            Ok(FsUsage {
                capacity: st.f_blocks.saturating_mul(block),
                used: st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(block),
                available: st.f_bavail.saturating_mul(block),
            })
        })
        .await
    }
}

/// The space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub used: u64,
    /// What an unprivileged writer may still use.
    pub available: u64,
}

/// Bytes allocated on disk by a file, or by every file under a directory (holes not counted).
pub async fn allocated_bytes(path: &Path) -> Result<u64, StorageError> {
    let path = path.to_path_buf();
    blocking(move || walk_allocated(&path)).await
}

fn walk_allocated(path: &Path) -> Result<u64, StorageError> {
    let meta = std::fs::symlink_metadata(path).map_err(io("stat", path))?;
    if !meta.is_dir() {
        return Ok(meta.blocks() * 512);
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(io("list", path))? {
        total += walk_allocated(&entry.map_err(io("list", path))?.path())?;
    }
    Ok(total)
}

/// `truncate`, `e2fsck -fp`, `resize2fs`: the ext4 in `disk` grows to `size_mb` before a boot.
pub async fn grow_ext4(disk: &Path, size_mb: u64) -> Result<(), StorageError> {
    let path = disk.to_path_buf();
    blocking(move || {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        f.set_len(size_mb * 1024 * 1024)
            .map_err(io("truncate", &path))
    })
    .await?;
    // e2fsck: 0 clean, 1 errors corrected (a crash-consistent disk replays its journal); ≥ 2 not.
    run_tool("e2fsck", &["-fp"], disk, |code| code <= 1).await?;
    run_tool("resize2fs", &[], disk, |code| code == 0).await
}

async fn run_tool(
    program: &'static str,
    args: &[&str],
    disk: &Path,
    ok: impl Fn(i32) -> bool,
) -> Result<(), StorageError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .arg(disk)
        .output()
        .await
        .map_err(io("run a disk tool on", disk))?;
    if out.status.code().is_some_and(ok) {
        return Ok(());
    }
    Err(StorageError::Tool {
        program,
        path: disk.to_path_buf(),
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::CloneMode;

    #[test]
    fn meta_json_round_trip_uses_the_spec_names() {
        let rec = SnapshotRecord::sample();
        let json = serde_json::to_value(&rec).unwrap();
        let keys = [
            "id",
            "kind",
            "createdAt",
            "cpu",
            "memMb",
            "diskSizeMb",
            "imageId",
            "sourceVmId",
            "baseSeedSnapshotId",
            "hasMemory",
            "sizeBytes",
            "backend",
            "vmmVersion",
            "agentPort",
            "kernelSha256",
            "initrdSha256",
            "rootfsSha256",
        ];
        assert_eq!(json.as_object().unwrap().len(), keys.len(), "{json}");
        for key in keys {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["kind"], "user_overlay");
        let back: SnapshotRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, rec);
        let mut bad = json;
        bad["kind"] = "other".into();
        assert!(serde_json::from_value::<SnapshotRecord>(bad).is_err());
    }

    #[tokio::test]
    async fn capture_commit_and_grow() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::init(dir.path(), CloneMode::Auto).unwrap();
        s.create_vm_disk("vm1", 64).await.unwrap();
        let tmp = s.snapshot_tmp_dir().unwrap();
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(TMP_PREFIX));
        s.capture_disk("vm1", &tmp).await.unwrap();
        let meta = SnapshotRecord::sample();
        let committed = s.commit_snapshot(&tmp, &meta).await.unwrap();
        assert!(!tmp.exists());
        assert_eq!(committed, s.snapshot_dir(&meta.id));
        assert_eq!(s.read_snapshot_meta(&committed).await.unwrap(), meta);
        let disk_mode = std::fs::metadata(committed.join(SNAPSHOT_DISK))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(disk_mode & 0o777, 0o444);
        assert!(allocated_bytes(&committed).await.unwrap() > 0);
        assert_eq!(s.snapshot_entries(), vec![meta.id.clone()]);

        // A restore in boot mode with a larger disk: the clone grows and its ext4 with it.
        let disk = s
            .vm_disk_from_snapshot("vm2", &meta.id, 64, 96)
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 96 << 20);
        let out = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(&disk)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let blocks: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let size: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("Block size:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert_eq!(blocks * size, 96 << 20, "filesystem grown");
        assert_eq!(
            std::fs::metadata(&disk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(s.free_bytes().await.unwrap() > 0);
        s.remove_snapshot_dir(&committed).await.unwrap();
        s.remove_snapshot_dir(&committed).await.unwrap();
        assert!(s.snapshot_entries().is_empty());
    }
}
