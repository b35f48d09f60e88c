//! Signed webhooks (`docs/reference/api-admin.md` Webhooks): hooks in the DB, one delivery row per
//! (hook, activity event) queued as the event is recorded, and a worker that sends due deliveries
//! and schedules retries. Pending rows are the queue, so retries survive a restart. Targets pass
//! the SSRF guard (`guard.rs`) on create, on patch and, after a fresh lookup, on every attempt.

mod deliver;
pub mod guard;

pub use guard::{Policy, Refusal};

use crate::activity::{Activity, ActivityEvent, Draft, EventType};
use crate::db::{Db, DbError, DeliveryRecord, WebhookRecord};
use crate::metrics::Metrics;
use crate::model::now_rfc3339;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

impl From<&ActivityEvent> for Event {
    fn from(e: &ActivityEvent) -> Event {
        Event {
            id: e.id.clone(),
            kind: e.kind.clone(),
            created_at: e.created_at.clone(),
            entity_type: e.entity_type.clone(),
            entity_id: e.entity_id.clone(),
            message: e.message.clone(),
            meta: e.meta(),
        }
    }
}

/// Whether a hook may ask for `t`: an activity type (`docs/reference/api.md` §7) or `*`.
pub fn known_event_type(t: &str) -> bool {
    t == "*" || EventType::parse(t).is_some()
}

/// Deliveries attempted at once by the worker.
const BATCH: u32 = 16;
/// The worker looks at the queue at least this often.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("Not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// An activity event as a hook receives it.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub created_at: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub message: String,
    pub meta: Value,
}

/// A validated create; `url` not yet checked against the guard.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub event_types: Vec<String>,
}

/// A validated patch: absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub name: Option<String>,
    pub url: Option<String>,
    pub enabled: Option<bool>,
    pub event_types: Option<Vec<String>>,
}

#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    client: reqwest::Client,
    policy: Policy,
    wake: Notify,
    activity: Activity,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    pub fn new(
        db: Db,
        policy: Policy,
        activity: Activity,
        metrics: Arc<Metrics>,
    ) -> Result<Webhooks, reqwest::Error> {
        // reqwest is built without a bundled crypto provider; ring is the one this binary carries.
        // An error only says a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .dns_resolver(guard::VettingResolver::shared(policy))
            .redirect(reqwest::redirect::Policy::none())
            // Through a proxy the target would be resolved where the guard cannot see it.
            .no_proxy()
            .timeout(deliver::TIMEOUT)
            .user_agent(format!("run-dat-sheesh/{}", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks {
            inner: Arc::new(Inner {
                db,
                client,
                policy,
                wake: Notify::new(),
                activity,
                metrics,
            }),
        })
    }

    fn check_url(&self, url: &str) -> Result<(), WebhookError> {
        self.inner.policy.check_url(url).map(drop).map_err(|r| {
            WebhookError::Invalid(
                match r {
                    Refusal::BadUrl => "url must be a valid http or https URL",
                    Refusal::Blocked => "url targets a private or loopback address",
                }
                .into(),
            )
        })
    }

    /// Creates a hook with a new secret; the returned record carries it (shown once).
    pub async fn create(&self, new: NewWebhook) -> Result<WebhookRecord, WebhookError> {
        self.check_url(&new.url)?;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let now = now_rfc3339();
        let hook = WebhookRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: new.name,
            url: new.url,
            enabled: new.enabled,
            event_types: new.event_types,
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            created_at: now.clone(),
            updated_at: now,
        };
        self.inner.db.insert_webhook(&hook).await?;
        self.record(EventType::WebhookCreated, &hook, "created");
        Ok(hook)
    }

    pub async fn update(&self, id: &str, p: WebhookPatch) -> Result<WebhookRecord, WebhookError> {
        let mut hook = self.get(id).await?;
        if let Some(url) = &p.url {
            self.check_url(url)?;
        }
        hook.name = p.name.unwrap_or(hook.name);
        hook.url = p.url.unwrap_or(hook.url);
        hook.enabled = p.enabled.unwrap_or(hook.enabled);
        hook.event_types = p.event_types.unwrap_or(hook.event_types);
        hook.updated_at = now_rfc3339();
        if !self.inner.db.update_webhook(&hook).await? {
            return Err(WebhookError::NotFound);
        }
        self.record(EventType::WebhookUpdated, &hook, "updated");
        Ok(hook)
    }

    /// Removes the hook; its pending deliveries go with it.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let hook = self.get(id).await?;
        if !self.inner.db.delete_webhook(id).await? {
            return Err(WebhookError::NotFound);
        }
        self.record(EventType::WebhookDeleted, &hook, "deleted");
        Ok(())
    }

    /// The hook's activity event; never its secret.
    fn record(&self, kind: EventType, hook: &WebhookRecord, verb: &str) {
        let meta = json!({ "name": hook.name, "url": hook.url, "eventTypes": hook.event_types });
        let message = format!("Webhook {} {verb}", hook.name);
        self.inner
            .activity
            .record(Draft::new(kind, Some(&hook.id), message).meta(meta));
    }

    pub async fn get(&self, id: &str) -> Result<WebhookRecord, WebhookError> {
        self.inner
            .db
            .get_webhook(id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    pub async fn list(&self) -> Result<Vec<WebhookRecord>, WebhookError> {
        Ok(self.inner.db.list_webhooks().await?)
    }

    pub async fn deliveries(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, WebhookError> {
        self.get(id).await?;
        Ok(self.inner.db.list_deliveries(id, limit).await?)
    }

    /// Queues `ev` for every enabled hook that asked for its type (or `*`) and wakes the worker.
    pub async fn enqueue(&self, ev: &Event) -> Result<(), WebhookError> {
        let hooks = self.inner.db.list_webhooks().await?;
        let payload = json!({
            "id": ev.id,
            "type": ev.kind,
            "createdAt": ev.created_at,
            "entityType": ev.entity_type,
            "entityId": ev.entity_id,
            "message": ev.message,
            "meta": ev.meta,
            "source": { "service": "run-dat-sheesh-manager" },
        })
        .to_string();
        let now = now_rfc3339();
        let rows: Vec<DeliveryRecord> = hooks
            .iter()
            .filter(|h| h.enabled && h.event_types.iter().any(|t| t == "*" || *t == ev.kind))
            .map(|h| DeliveryRecord {
                id: uuid::Uuid::new_v4().to_string(),
                webhook_id: h.id.clone(),
                event_id: ev.id.clone(),
                event_type: ev.kind.clone(),
                payload: payload.clone(),
                attempt: 0,
                status: "pending".into(),
                response_status: None,
                error: None,
                next_attempt_at: Some(now.clone()),
                created_at: now.clone(),
                completed_at: None,
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.inner.db.insert_deliveries(&rows).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Starts, on the current runtime, the task that queues every stored activity event for the
    /// hooks that want it, and the delivery worker (pending rows of an earlier run included).
    pub fn start(&self) {
        tokio::spawn(self.clone().fan_out(self.inner.activity.subscribe()));
        let hooks = self.clone();
        tokio::spawn(async move {
            loop {
                let worked = match hooks.run_due().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook deliveries");
                        0
                    }
                };
                if worked == BATCH as usize {
                    continue;
                }
                let wait = hooks.until_next_due().await;
                let _ = tokio::time::timeout(wait, hooks.inner.wake.notified()).await;
            }
        });
    }

    /// Queues each stored event in order; after falling behind the broadcast, catches up from the
    /// DB so that no event is skipped.
    async fn fan_out(self, mut rx: broadcast::Receiver<Arc<ActivityEvent>>) {
        // Subscribed before this read: an event stored in between is both listed and received,
        // and the seq check below drops the second copy.
        let mut last_seq = match self.inner.activity.list(None, 1).await {
            Ok(newest) => newest.first().map_or(0, |e| e.seq),
            Err(e) => {
                tracing::warn!(error = %e, "webhook fan-out start");
                0
            }
        };
        loop {
            let events = match rx.recv().await {
                Ok(ev) => vec![ev],
                Err(broadcast::error::RecvError::Closed) => return,
                Err(broadcast::error::RecvError::Lagged(_)) => self.missed(last_seq).await,
            };
            for ev in events {
                if ev.seq <= last_seq {
                    continue;
                }
                last_seq = ev.seq;
                if let Err(e) = self.enqueue(&Event::from(ev.as_ref())).await {
                    tracing::warn!(event = %ev.id, error = %e, "queueing webhook deliveries");
                }
            }
        }
    }

    /// Every stored event after `seq`, oldest first (the broadcast dropped some of them).
    async fn missed(&self, mut seq: i64) -> Vec<Arc<ActivityEvent>> {
        const PAGE: usize = 1000;
        let mut all = Vec::new();
        loop {
            match self.inner.activity.since_seq(seq, PAGE).await {
                Ok(page) => {
                    let full = page.len() == PAGE;
                    seq = page.last().map_or(seq, |e| e.seq);
                    all.extend(page.into_iter().map(Arc::new));
                    if !full {
                        return all;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook fan-out catching up");
                    return all;
                }
            }
        }
    }

    /// Attempts every due delivery (at most a batch, at once); returns how many.
    async fn run_due(&self) -> Result<usize, WebhookError> {
        let due = self.inner.db.due_deliveries(&now_rfc3339(), BATCH).await?;
        let attempts = due.iter().map(|d| self.attempt(d));
        let n = due.len();
        for r in futures::future::join_all(attempts).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "recording a webhook delivery");
            }
        }
        Ok(n)
    }

    async fn attempt(&self, d: &DeliveryRecord) -> Result<(), WebhookError> {
        let db = &self.inner.db;
        let result = match db.get_webhook(&d.webhook_id).await? {
            // A literal address never reaches the vetting resolver, and the policy may have
            // changed since the hook was saved: check it again on every attempt.
            Some(hook) if hook.enabled && self.inner.policy.check_url(&hook.url).is_err() => {
                deliver::Attempt::Fail {
                    status: None,
                    error: "blocked address".into(),
                }
            }
            Some(hook) if hook.enabled => {
                deliver::attempt(&self.inner.client, &hook.url, &hook.secret, d).await
            }
            _ => deliver::Attempt::Fail {
                status: None,
                error: "webhook disabled".into(),
            },
        };
        let outcome = deliver::outcome(d.attempt + 1, result);
        let result = match outcome.status {
            "pending" => "retry",
            s => s,
        };
        self.inner
            .metrics
            .inc("rds_webhook_deliveries_total", &[("result", result)]);
        tracing::debug!(delivery = %d.id, attempt = d.attempt + 1, status = outcome.status,
            response = ?outcome.response_status, "webhook delivery");
        db.record_attempt(&d.id, &outcome).await?;
        Ok(())
    }

    /// How long until the earliest pending delivery is due (at most `IDLE`).
    async fn until_next_due(&self) -> Duration {
        let next = match self.inner.db.next_delivery_due().await {
            Ok(Some(t)) => t,
            _ => return IDLE,
        };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(&next) else {
            return IDLE;
        };
        let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
        wait.to_std().unwrap_or(Duration::ZERO).min(IDLE)
    }
}
