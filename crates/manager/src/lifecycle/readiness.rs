//! The `/readyz` checks that belong to the lifecycle's resources: storage writable, bridge present.

use super::VmService;

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
