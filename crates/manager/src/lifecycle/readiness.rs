//! The `/readyz` checks that belong to the lifecycle's resources: storage writable, bridge present,
//! the backend's programs and the default image's files there.

use super::{LifecycleError, VmService};

impl VmService {
    /// `STORAGE_ROOT` accepts a write (a probe file in `tmp/`, removed at once).
    pub async fn storage_check(&self) -> Result<(), String> {
        let probe = self
            .spool_dir()
            .join(format!(".ready-{}", uuid::Uuid::new_v4()));
        tokio::task::spawn_blocking(move || {
            let r = std::fs::write(&probe, b"ok").map_err(|e| format!("{}: {e}", probe.display()));
            let _ = std::fs::remove_file(&probe);
            r
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The VMM backend can start VMs from the default image: its programs are executable and the
    /// image's kernel and rootfs are files.
    pub async fn backend_check(&self) -> Result<(), String> {
        self.inner.backend.check()?;
        let image = self.resolve_image(None).await.map_err(|e| match e {
            LifecycleError::NoDefaultImage => {
                "no default guest image (set KERNEL_PATH and BASE_ROOTFS_PATH, or upload one and \
                 make it the default)"
                    .to_string()
            }
            other => format!("default guest image: {other}"),
        })?;
        for path in [&image.kernel_path, &image.rootfs_path]
            .into_iter()
            .flatten()
        {
            let meta = tokio::fs::metadata(path)
                .await
                .map_err(|e| format!("default guest image {}: {path}: {e}", image.id))?;
            if !meta.is_file() {
                return Err(format!(
                    "default guest image {}: {path} is not a file",
                    image.id
                ));
            }
        }
        Ok(())
    }

    /// The bridge exists in the manager's network namespace (read per thread: tests run managers in
    /// namespaces of their own).
    pub async fn network_check(&self) -> Result<(), String> {
        let bridge = self.network().settings().host.bridge.clone();
        let dev = tokio::fs::read_to_string("/proc/thread-self/net/dev")
            .await
            .map_err(|e| format!("/proc/thread-self/net/dev: {e}"))?;
        let present = dev
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{bridge}:")));
        present
            .then_some(())
            .ok_or_else(|| format!("bridge {bridge} is missing"))
    }
}
