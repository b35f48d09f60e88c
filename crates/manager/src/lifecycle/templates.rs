//! Templates (`docs/snapshots.md` Templates, `ENABLE_SNAPSHOTS=true`): per image with kernel and
//! rootfs, an internal VM at the template shape is booted, captured with memory and torn down, one
//! build at a time in the background. Creates of the template shape then resume from it. The
//! image's `seedStatus` tells where it stands: `pending`, `ready`, or `failed` (retried at most
//! hourly, or at once when the image's files change).

use super::snapshots::RestoreHold;
use super::{LifecycleError, VmService};
use crate::activity::{Draft, EventType};
use crate::db::PoolRole;
use crate::model::{ImageRecord, SnapshotKind, SnapshotRecord};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A failed build is not retried sooner than this unless the image changes.
const RETRY_AFTER: Duration = Duration::from_secs(3600);
/// `seedError` holds at most this many characters.
const MAX_SEED_ERROR: usize = 4000;

/// Builds asked for, one worker taking them in order.
#[derive(Default)]
pub(super) struct TemplateBuilds {
    queue: Mutex<VecDeque<String>>,
    wake: Notify,
    failed_at: Mutex<HashMap<String, Instant>>,
}

impl VmService {
    /// Templates are built here: `ENABLE_SNAPSHOTS` and a backend with memory snapshots.
    pub fn templates_on(&self) -> bool {
        self.inner.settings.provision.templates
            && self.inner.backend.capabilities().supports_memory_snapshots
    }

    /// Whether `cpu`/`memMb`/`diskSizeMb` is the template shape.
    pub(super) fn is_template_shape(&self, cpu: u32, mem_mb: u32, disk_size_mb: u64) -> bool {
        let p = &self.inner.settings.provision;
        (cpu, mem_mb, disk_size_mb)
            == (
                p.template_cpu,
                p.template_mem_mb,
                self.inner.settings.default_disk_mb,
            )
    }

    /// Asks for a build of `image_id`'s template. `fresh`: the image's files changed, so an earlier
    /// failure does not hold the build back. Requests for an image already waiting are merged.
    pub fn request_template(&self, image_id: &str, fresh: bool) {
        if !self.templates_on() {
            return;
        }
        let t = &self.inner.templates;
        {
            let mut failed = t.failed_at.lock().expect("template failures");
            if fresh {
                failed.remove(image_id);
            } else if failed
                .get(image_id)
                .is_some_and(|at| at.elapsed() < RETRY_AFTER)
            {
                return;
            }
        }
        let mut queue = t.queue.lock().expect("template queue");
        if !queue.iter().any(|id| id == image_id) {
            queue.push_back(image_id.to_string());
        }
        t.wake.notify_one();
    }

    /// The image's ready template for a create of the template shape, held against deletion. None
    /// (and a build requested) when there is none yet or it was made by another backend, VMM
    /// version or agent port, which no restore could resume.
    pub(super) async fn usable_template(
        &self,
        image: &ImageRecord,
        cpu: u32,
        mem_mb: u32,
        disk_size_mb: u64,
    ) -> Result<Option<(SnapshotRecord, RestoreHold)>, LifecycleError> {
        if !self.templates_on() || !self.is_template_shape(cpu, mem_mb, disk_size_mb) {
            return Ok(None);
        }
        let ready = image
            .seed
            .as_ref()
            .filter(|s| s.status == "ready")
            .and_then(|s| s.snapshot_id.clone());
        let Some(id) = ready else {
            self.request_template(&image.id, false);
            return Ok(None);
        };
        let (snap, hold) = match self.hold_overlay(&id).await {
            Ok(held) => held,
            Err(LifecycleError::OverlayNotFound) => {
                self.request_template(&image.id, false);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if !self.made_here(&snap) {
            self.request_template(&image.id, true);
            return Ok(None);
        }
        Ok(Some((snap, hold)))
    }

    /// Same backend, VMM version and agent port as now (the parts of the gate an image cannot
    /// change).
    fn made_here(&self, snap: &SnapshotRecord) -> bool {
        let caps = self.inner.backend.capabilities();
        snap.backend == caps.kind.as_str()
            && snap.vmm_version == caps.vmm_version
            && snap.agent_port == self.inner.settings.agent.port
    }

    /// After reconciliation: with templates on, requests a build for every complete image whose
    /// template is not ready or was made elsewhere, and starts the builder; with them off, forgets
    /// every template (`seed*` null, template snapshots deleted).
    pub async fn start_templates(&self) -> Result<(), LifecycleError> {
        let db = &self.inner.db;
        let on = self.templates_on();
        for image in db.list_images().await? {
            let complete = image.kernel_path.is_some() && image.rootfs_path.is_some();
            if !on || !complete {
                if image.seed.is_some() {
                    db.set_image_seed(&image.id, None, None).await?;
                }
                for id in db.template_snapshot_ids(&image.id).await? {
                    self.drop_template(&id).await;
                }
                continue;
            }
            let current = match image.seed.as_ref() {
                Some(s) if s.status == "ready" => match &s.snapshot_id {
                    Some(id) => db.get_snapshot(id).await?,
                    None => None,
                },
                _ => None,
            };
            if !current.as_ref().is_some_and(|s| self.made_here(s)) {
                self.request_template(&image.id, true);
            }
        }
        if on {
            let svc = self.clone();
            tokio::spawn(async move {
                loop {
                    let next = svc.next_template_request().await;
                    svc.build_template(&next).await;
                }
            });
        }
        Ok(())
    }

    async fn next_template_request(&self) -> String {
        let t = &self.inner.templates;
        loop {
            let woken = t.wake.notified();
            if let Some(id) = t.queue.lock().expect("template queue").pop_front() {
                return id;
            }
            woken.await;
        }
    }

    #[tracing::instrument(name = "template.build", skip(self))]
    async fn build_template(&self, image_id: &str) {
        let db = &self.inner.db;
        let image = match db.get_image(image_id).await {
            Ok(Some(i)) if i.kernel_path.is_some() && i.rootfs_path.is_some() => i,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%image_id, error = %e, "template build: image lookup");
                return;
            }
        };
        if let Err(e) = db.set_image_seed(image_id, Some("pending"), None).await {
            tracing::warn!(%image_id, error = %e, "template build: marking pending");
            return;
        }
        let started = Instant::now();
        let outcome = match self.capture_template(&image).await {
            Ok(snap) => self.adopt_template(&image, snap).await,
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(Some(id)) => {
                tracing::info!(%image_id, snapshot_id = %id, secs = started.elapsed().as_secs_f64(), "snapshot.seed_ready");
                self.event(
                    Draft::new(
                        EventType::SnapshotSeedReady,
                        Some(&id),
                        format!("Template of image {image_id} ready"),
                    )
                    .meta(json!({ "imageId": image_id })),
                );
                self.pool_wanted();
            }
            Ok(None) => {}
            Err(reason) => {
                let reason: String = reason.chars().take(MAX_SEED_ERROR).collect();
                tracing::warn!(%image_id, %reason, "snapshot.seed_failed");
                self.event(
                    Draft::new(
                        EventType::SnapshotSeedFailed,
                        Some(image_id),
                        format!("Template of image {image_id} failed"),
                    )
                    .meta(json!({ "imageId": image_id, "error": reason })),
                );
                self.inner
                    .templates
                    .failed_at
                    .lock()
                    .expect("template failures")
                    .insert(image_id.to_string(), Instant::now());
                if let Err(e) = db
                    .set_image_seed(image_id, Some("failed"), Some(&reason))
                    .await
                {
                    tracing::warn!(%image_id, error = %e, "template build: recording the failure");
                }
            }
        }
    }

    /// An internal VM of the image at the template shape, booted, captured with memory, removed.
    async fn capture_template(
        &self,
        image: &ImageRecord,
    ) -> Result<SnapshotRecord, LifecycleError> {
        let vm = self.start_internal(PoolRole::Template, image, None).await?;
        let captured = match self.begin_op(&vm.id, "snapshot") {
            Ok(_guard) => self.capture(&vm, SnapshotKind::Template).await,
            Err(e) => Err(e),
        };
        self.remove_internal(&vm).await;
        let snap = captured?;
        if !snap.has_memory {
            self.drop_template(&snap.id).await;
            return Err(LifecycleError::Internal("the capture has no memory".into()));
        }
        Ok(snap)
    }

    /// Makes `snap` the image's template and drops the ones before it. None when the image's files
    /// changed during the build (the snapshot is dropped; the upload asked for a new build).
    async fn adopt_template(
        &self,
        built_from: &ImageRecord,
        snap: SnapshotRecord,
    ) -> Result<Option<String>, String> {
        let db = &self.inner.db;
        let now = db
            .get_image(&built_from.id)
            .await
            .map_err(|e| e.to_string())?;
        let digests = |i: &ImageRecord| {
            (
                i.kernel.as_ref().map(|f| f.sha256.clone()),
                i.initrd.as_ref().map(|f| f.sha256.clone()),
                i.rootfs.as_ref().map(|f| f.sha256.clone()),
            )
        };
        if now.as_ref().map(digests) != Some(digests(built_from)) {
            tracing::info!(image_id = %built_from.id, "image changed during its template build; discarded");
            self.drop_template(&snap.id).await;
            return Ok(None);
        }
        db.set_image_seed_ready(&built_from.id, &snap.id)
            .await
            .map_err(|e| e.to_string())?;
        for old in db
            .template_snapshot_ids(&built_from.id)
            .await
            .map_err(|e| e.to_string())?
        {
            if old != snap.id {
                self.drop_template(&old).await;
            }
        }
        Ok(Some(snap.id))
    }

    /// Deletes a template that is no image's current one. One still being restored from stays; the
    /// next start drops it.
    async fn drop_template(&self, id: &str) {
        if let Err(e) = self.delete_snapshot(id).await {
            tracing::warn!(snapshot_id = %id, error = %e, "old template kept for now");
        }
    }
}
