//! The per-VM lifecycle lock (`docs/reference/lifecycle.md` §1): one operation at a time per VM;
//! destroy cancels an in-flight create or start and waits for anything else.

use super::LifecycleError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct OpTable {
    held: Mutex<HashMap<String, Held>>,
    released: Notify,
}

struct Held {
    op: &'static str,
    cancel: CancellationToken,
}

pub struct OpGuard {
    table: Arc<super::Inner>,
    id: String,
    pub cancel: CancellationToken,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        self.table
            .ops
            .held
            .lock()
            .expect("op table")
            .remove(&self.id);
        self.table.ops.released.notify_waiters();
    }
}

impl super::VmService {
    /// A state change of an operation holding the VM's lock ([`crate::db::Db::transition`]): a
    /// row found in none of `from` was destroyed meanwhile (the one change that does not wait for
    /// the lock), which the caller learns as `VM <id> is no longer RUNNING`.
    pub(super) async fn move_state(
        &self,
        id: &str,
        from: &[crate::model::VmState],
        to: crate::model::VmState,
        last_error: Option<&str>,
    ) -> Result<(), LifecycleError> {
        if self.inner.db.transition(id, from, to, last_error).await? {
            Ok(())
        } else {
            Err(LifecycleError::NoLongerRunning(id.to_string()))
        }
    }

    /// Takes the lock for `op`, or answers busy.
    pub(super) fn begin_op(&self, id: &str, op: &'static str) -> Result<OpGuard, LifecycleError> {
        let mut held = self.inner.ops.held.lock().expect("op table");
        if let Some(h) = held.get(id) {
            return Err(LifecycleError::Busy {
                id: id.to_string(),
                op: h.op,
            });
        }
        Ok(self.insert(&mut held, id, op))
    }

    /// Destroy always gets the lock: it cancels a create or start and waits for whatever holds it.
    pub(super) async fn begin_destroy(&self, id: &str) -> OpGuard {
        loop {
            let released = self.inner.ops.released.notified();
            {
                let mut held = self.inner.ops.held.lock().expect("op table");
                match held.get(id) {
                    None => return self.insert(&mut held, id, "destroy"),
                    Some(h) if matches!(h.op, "create" | "start") => h.cancel.cancel(),
                    Some(_) => {}
                }
            }
            released.await;
        }
    }

    /// Waits until no operation holds the VM, then takes the lock for `op`; gives up (None) as soon
    /// as one of `yield_to` holds it, since that operation owns what `op` would do.
    pub(super) async fn begin_op_after(
        &self,
        id: &str,
        op: &'static str,
        yield_to: &[&str],
    ) -> Option<OpGuard> {
        loop {
            let released = self.inner.ops.released.notified();
            {
                let mut held = self.inner.ops.held.lock().expect("op table");
                match held.get(id) {
                    None => return Some(self.insert(&mut held, id, op)),
                    Some(h) if yield_to.contains(&h.op) => return None,
                    Some(_) => {}
                }
            }
            released.await;
        }
    }

    fn insert(&self, held: &mut HashMap<String, Held>, id: &str, op: &'static str) -> OpGuard {
        let cancel = CancellationToken::new();
        held.insert(
            id.to_string(),
            Held {
                op,
                cancel: cancel.clone(),
            },
        );
        OpGuard {
            table: self.inner.clone(),
            id: id.to_string(),
            cancel,
        }
    }
}
