//! Lifetimes (`docs/lifetimes.md`): a worker looks every second for VMs whose deadline passed and
//! destroys or pauses them, as each VM asks. Deadlines are rows in the DB, so the first look after
//! a start applies those that passed while the manager was down. A VM busy with another operation
//! (or still starting, for a pause) is looked at again on the next tick.

use super::{LifecycleError, VmService};
use crate::activity::EventType;
use crate::model::{now_rfc3339, TimeoutAction, VmState};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const TICK: Duration = Duration::from_secs(1);

/// Expiries applied since start, by action (the `rds_vm_expired_total` counter).
#[derive(Debug, Default)]
pub(super) struct Expired {
    destroyed: AtomicU64,
    paused: AtomicU64,
}

impl VmService {
    /// Starts the worker on the current runtime; it ends with the runtime.
    pub fn start_expiry(&self) {
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                svc.expire_due().await;
                tokio::time::sleep(TICK).await;
            }
        });
    }

    /// Applies every deadline that has passed; returns how many VMs it acted on.
    pub async fn expire_due(&self) -> usize {
        let ids = match self.inner.db.expired_vm_ids(&now_rfc3339()).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "looking for expired VMs");
                return 0;
            }
        };
        let mut done = 0;
        for id in ids {
            match self.expire(&id).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(LifecycleError::Busy { .. }) | Err(LifecycleError::NotFound(_)) => {}
                Err(e) => tracing::warn!(vm_id = %id, error = %e, "applying a VM's deadline"),
            }
        }
        done
    }

    /// `(destroyed, paused)` since start.
    pub fn expired_counts(&self) -> (u64, u64) {
        let e = &self.inner.expired;
        (
            e.destroyed.load(Ordering::Relaxed),
            e.paused.load(Ordering::Relaxed),
        )
    }

    async fn expire(&self, id: &str) -> Result<bool, LifecycleError> {
        let vm = self.get(id).await?;
        let Some(deadline) = vm.expires_at.clone() else {
            return Ok(false);
        };
        match vm.timeout_action {
            TimeoutAction::Destroy => {
                let destroyed = self.destroy_expired(id).await?;
                if destroyed {
                    self.inner.expired.destroyed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(destroyed)
            }
            TimeoutAction::Pause => {
                let _guard = self.begin_op(id, "expire")?;
                // Under the lock: the deadline may have moved, the state changed.
                let vm = self.get(id).await?;
                if vm
                    .expires_at
                    .as_deref()
                    .is_none_or(|d| d > now_rfc3339().as_str())
                {
                    return Ok(false);
                }
                match vm.state {
                    VmState::Running => {
                        tracing::info!(vm_id = %id, %deadline, "vm.expired: pausing");
                        self.expired_event(&vm, "pause", &deadline);
                        self.pause_locked(&vm).await?;
                        self.inner.expired.paused.fetch_add(1, Ordering::Relaxed);
                    }
                    // Booting: pause it once it runs.
                    VmState::Created | VmState::Starting => return Ok(false),
                    // Nothing runs that a pause would save.
                    _ => {}
                }
                self.inner.db.clear_deadline(id).await?;
                Ok(vm.state == VmState::Running)
            }
        }
    }

    pub(super) fn expired_event(&self, vm: &crate::model::VmRecord, action: &str, deadline: &str) {
        let meta = json!({"action": action, "expiresAt": deadline});
        self.vm_event(vm, EventType::VmExpired, meta);
    }
}
