//! The activity recorder (`docs/reference/api-admin.md` Activity): services describe state changes
//! as [`Draft`]s; one writer task stores them in `activity_events` in the order they were recorded
//! and then broadcasts each stored event to subscribers (SSE streams, webhooks). Recording never
//! blocks and never fails the operation that records: a full queue or a failed insert costs the
//! event and a warning.

mod kinds;
pub mod scrub;

pub use crate::db::ActivityEvent;
pub use kinds::EventType;

use crate::db::{Db, DbError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Events kept by the hourly pruning (`docs/reference/api-admin.md` Activity).
pub const KEEP: u64 = 100_000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Drafts waiting for the writer; beyond this, new ones are dropped with a warning.
const QUEUE: usize = 4096;
/// Stored events a subscriber may fall behind before it is told it lagged.
const FANOUT: usize = 1024;

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct Draft {
    kind: EventType,
    entity_id: Option<String>,
    message: String,
    meta: Value,
    redact: Vec<String>,
}

impl Draft {
    /// An event of `kind` about `entity_id` (whose type follows from `kind`).
    pub fn new(kind: EventType, entity_id: Option<&str>, message: impl Into<String>) -> Draft {
        Draft {
            kind,
            entity_id: entity_id.map(str::to_string),
            message: message.into(),
            meta: json!({}),
            redact: Vec::new(),
        }
    }

    /// The event's meta object (`docs/reference/api.md` §7 lists what each type carries).
    pub fn meta(mut self, meta: Value) -> Draft {
        self.meta = meta;
        self
    }

    /// Secret values (a VM's secretEnv) to replace by `[REDACTED]` in the message and meta.
    pub fn redact(mut self, secrets: Vec<String>) -> Draft {
        self.redact = secrets;
        self
    }
}

impl ActivityEvent {
    /// The meta object (an empty object if the stored text does not parse).
    pub fn meta(&self) -> Value {
        serde_json::from_str(&self.meta_json).unwrap_or_else(|_| json!({}))
    }

    /// The list item of `GET /v1/admin/activity`: meta as JSON text in `metaJson`.
    pub fn item(&self) -> Value {
        json!({
            "id": self.id,
            "createdAt": self.created_at,
            "type": self.kind,
            "entityType": self.entity_type,
            "entityId": self.entity_id,
            "message": self.message,
            "metaJson": self.meta_json,
        })
    }

    /// The SSE `data`: the list item plus the meta parsed under `meta`.
    pub fn with_meta(&self) -> Value {
        let mut v = self.item();
        v["meta"] = self.meta();
        v
    }
}

enum Msg {
    Event(ActivityEvent),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Activity {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    queue: mpsc::Sender<Msg>,
    stored: broadcast::Sender<Arc<ActivityEvent>>,
}

impl Activity {
    /// The recorder and its writer task (needs a tokio runtime).
    pub fn new(db: Db) -> Activity {
        let (queue, rx) = mpsc::channel(QUEUE);
        let (stored, _) = broadcast::channel(FANOUT);
        tokio::spawn(write(db.clone(), rx, stored.clone()));
        Activity {
            inner: Arc::new(Inner { db, queue, stored }),
        }
    }

    /// Queues `d` for storing; returns at once. `createdAt` is now, not when it is stored.
    pub fn record(&self, d: Draft) {
        let event = ActivityEvent {
            seq: 0,
            id: uuid::Uuid::new_v4().to_string(),
            created_at: crate::model::now_rfc3339(),
            kind: d.kind.as_str().to_string(),
            entity_type: d.kind.entity_type().to_string(),
            entity_id: d.entity_id,
            message: scrub::scrub_str(&d.message, &d.redact),
            meta_json: scrub::scrub_value(d.meta, &d.redact).to_string(),
        };
        if let Err(e) = self.inner.queue.try_send(Msg::Event(event)) {
            let kind = d.kind.as_str();
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    tracing::warn!(kind, "activity queue full: event dropped")
                }
                mpsc::error::TrySendError::Closed(_) => {
                    tracing::warn!(kind, "activity writer gone: event dropped")
                }
            }
        }
    }

    /// Every event stored from now on, in order. A receiver that falls more than 1024 events
    /// behind gets `RecvError::Lagged` and can catch up from the DB with [`Activity::after_seq`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ActivityEvent>> {
        self.inner.stored.subscribe()
    }

    /// Waits until every event recorded before this call is stored (or dropped).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.queue.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Newest first; with `before`, only events recorded before that event.
    pub async fn list(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActivityEvent>, DbError> {
        self.inner.db.list_activity(before, limit).await
    }

    /// The `seq` of a stored event.
    pub async fn seq_of(&self, id: &str) -> Result<Option<i64>, DbError> {
        self.inner.db.activity_seq(id).await
    }

    /// The newest `limit` events stored after `seq`, oldest first.
    pub async fn after_seq(&self, seq: i64, limit: usize) -> Result<Vec<ActivityEvent>, DbError> {
        self.inner.db.activity_after(seq, limit).await
    }

    /// The oldest `limit` events stored after `seq`, oldest first.
    pub async fn since_seq(&self, seq: i64, limit: usize) -> Result<Vec<ActivityEvent>, DbError> {
        self.inner.db.activity_since(seq, limit).await
    }

    /// Prunes to the newest [`KEEP`] events now and then every hour.
    pub fn start_pruning(&self) {
        let db = self.inner.db.clone();
        crate::spawn_cleanup("activity pruned", PRUNE_EVERY, move || {
            let db = db.clone();
            async move { db.prune_activity(KEEP).await }
        });
    }
}

/// The writer: stores events one by one in queue order and broadcasts each stored one. Events whose
/// insert failed are not broadcast, so every streamed event can be listed and replayed.
async fn write(db: Db, mut rx: mpsc::Receiver<Msg>, stored: broadcast::Sender<Arc<ActivityEvent>>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Flush(done) => {
                let _ = done.send(());
            }
            Msg::Event(mut event) => match db.insert_activity(&event).await {
                Ok(seq) => {
                    event.seq = seq;
                    // No subscriber is not an error.
                    let _ = stored.send(Arc::new(event));
                }
                Err(e) => {
                    tracing::warn!(kind = %event.kind, error = %e, "activity event not stored")
                }
            },
        }
    }
}
