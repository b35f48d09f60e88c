//! A VM's lifetime and metadata after create (`docs/api.md` "Lifetimes, pause and metadata"):
//! `POST /v1/vms/:id/timeout` sets or clears the deadline, `PATCH /v1/vms/:id` merges metadata.
//! Only the row changes; nothing on the host. Each edit holds the VM's lifecycle lock, so it never
//! interleaves with a destroy, pause, resume or expiry; it waits a while for an operation in
//! flight instead of answering busy at once.

use super::ops::OpGuard;
use super::{LifecycleError, VmService};
use crate::model::{TimeoutAction, VmRecord, VmState};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most keys a VM's metadata may hold.
pub const MAX_METADATA_KEYS: usize = 50;
/// Longest metadata key, in characters of `[A-Za-z0-9_.-]`.
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// Longest metadata value, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 512;

/// A metadata merge: `Some` sets the key, `None` removes it.
pub type MetadataPatch = BTreeMap<String, Option<String>>;

/// How long an edit waits for another operation on the VM (a boot, a capture) before it answers
/// busy.
const EDIT_WAIT: Duration = Duration::from_secs(10);

/// Whether `key` is a valid metadata key.
pub fn is_metadata_key(key: &str) -> bool {
    (1..=MAX_METADATA_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl VmService {
    /// A deadline `timeout_sec` from now (stored as the VM's lifetime too), or none; `action`
    /// replaces the timeout action when given. RUNNING, STOPPED or PAUSED only.
    #[tracing::instrument(name = "vm.timeout", skip_all, fields(vm_id = %id))]
    pub async fn set_timeout(
        &self,
        id: &str,
        timeout_sec: Option<u64>,
        action: Option<TimeoutAction>,
    ) -> Result<VmRecord, LifecycleError> {
        let _guard = self.begin_edit(id, "timeout").await?;
        let vm = self.get(id).await?;
        if !matches!(
            vm.state,
            VmState::Running | VmState::Stopped | VmState::Paused
        ) {
            return Err(LifecycleError::NotInStates {
                action: "set a timeout",
                allowed: "RUNNING, STOPPED or PAUSED",
                state: vm.state,
            });
        }
        let action = action.unwrap_or(vm.timeout_action);
        self.inner
            .db
            .set_vm_timeout(id, timeout_sec, action)
            .await?;
        tracing::info!(vm_id = %id, ?timeout_sec, action = action.as_str(), "vm.timeout set");
        self.get(id).await
    }

    /// Merges `changes` into the VM's metadata; refused (nothing changed) when the result would
    /// hold more than [`MAX_METADATA_KEYS`] keys. Keys and values are checked by the caller.
    #[tracing::instrument(name = "vm.metadata", skip_all, fields(vm_id = %id))]
    pub async fn patch_metadata(
        &self,
        id: &str,
        changes: &MetadataPatch,
    ) -> Result<VmRecord, LifecycleError> {
        let _guard = self.begin_edit(id, "metadata").await?;
        let vm = self.get(id).await?;
        let merged = merge(&vm.metadata, changes);
        if merged.len() > MAX_METADATA_KEYS {
            return Err(LifecycleError::Invalid(format!(
                "metadata may have at most {MAX_METADATA_KEYS} keys"
            )));
        }
        if merged == vm.metadata {
            return Ok(vm);
        }
        self.inner.db.set_vm_metadata(id, &merged).await?;
        self.get(id).await
    }

    /// The VM's lock for a row edit: 404 for an unknown VM, then up to [`EDIT_WAIT`] for whatever
    /// holds the lock (a destroy that finishes meanwhile makes it 404 again), then busy.
    async fn begin_edit(&self, id: &str, op: &'static str) -> Result<OpGuard, LifecycleError> {
        self.get(id).await?;
        let wait = self.begin_op_after(id, op, &[]);
        match tokio::time::timeout(EDIT_WAIT, wait).await {
            Ok(Some(guard)) => Ok(guard),
            // Still held: busy, naming the operation that holds it (unless it just ended).
            _ => self.begin_op(id, op),
        }
    }
}

/// `current` with `changes` applied.
fn merge(current: &BTreeMap<String, String>, changes: &MetadataPatch) -> BTreeMap<String, String> {
    let mut out = current.clone();
    for (k, v) in changes {
        match v {
            Some(v) => out.insert(k.clone(), v.clone()),
            None => out.remove(k),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "team", "app.kubernetes.io-name_1", &"k".repeat(64)] {
            assert!(is_metadata_key(ok), "{ok}");
        }
        for bad in ["", "a b", "ä", "a/b", "a:b", &"k".repeat(65)] {
            assert!(!is_metadata_key(bad), "{bad}");
        }
    }

    #[test]
    fn merging() {
        let current: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let changes: MetadataPatch = [
            ("a".into(), Some("x".into())),
            ("b".into(), None),
            ("c".into(), Some("3".into())),
            ("zz".into(), None),
        ]
        .into();
        let merged = merge(&current, &changes);
        let want: BTreeMap<String, String> =
            [("a".into(), "x".into()), ("c".into(), "3".into())].into();
        assert_eq!(merged, want);
    }
}
