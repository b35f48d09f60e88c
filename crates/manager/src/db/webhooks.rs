//! `webhooks` and `webhook_deliveries` (`docs/reference/api-admin.md` Webhooks): the hooks, and one
//! delivery row per (hook, event) that is the work queue of the delivery worker.

use super::{flag, Db, DbError};
use crate::model::now_rfc3339;
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: String,
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub event_types: Vec<String>,
    /// Signs deliveries; shown once at creation, never returned afterwards.
    pub secret: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The exact body sent on every attempt.
    pub payload: String,
    pub attempt: u32,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
}

/// What an attempt changed on its delivery.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub status: &'static str,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
}

const HOOK_COLUMNS: &str = "id, name, url, enabled, event_types, secret, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, payload, attempt, status, \
    response_status, error, next_attempt_at, created_at, completed_at";

fn hook_from_row(r: &AnyRow) -> Result<WebhookRecord, sqlx::Error> {
    let types: String = r.try_get("event_types")?;
    Ok(WebhookRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        event_types: serde_json::from_str(&types)
            .map_err(|e| sqlx::Error::Decode(format!("webhook event_types: {e}").into()))?,
        secret: r.try_get("secret")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn delivery_from_row(r: &AnyRow) -> Result<DeliveryRecord, sqlx::Error> {
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        payload: r.try_get("payload")?,
        attempt: r.try_get::<i64, _>("attempt")? as u32,
        status: r.try_get("status")?,
        response_status: r
            .try_get::<Option<i64>, _>("response_status")?
            .map(|s| s as u16),
        error: r.try_get("error")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        created_at: r.try_get("created_at")?,
        completed_at: r.try_get("completed_at")?,
    })
}

fn types_json(types: &[String]) -> String {
    serde_json::to_string(types).unwrap_or_else(|_| "[]".into())
}

impl Db {
    pub async fn insert_webhook(&self, w: &WebhookRecord) -> Result<(), DbError> {
        sqlx::query(&format!(
            "INSERT INTO webhooks ({HOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&w.id)
        .bind(&w.name)
        .bind(&w.url)
        .bind(flag(w.enabled))
        .bind(types_json(&w.event_types))
        .bind(&w.secret)
        .bind(&w.created_at)
        .bind(&w.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces name, url, enabled and event types; `updated_at` now.
    pub async fn update_webhook(&self, w: &WebhookRecord) -> Result<bool, DbError> {
        let r = sqlx::query(
            "UPDATE webhooks SET name = $1, url = $2, enabled = $3, event_types = $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(&w.name)
        .bind(&w.url)
        .bind(flag(w.enabled))
        .bind(types_json(&w.event_types))
        .bind(&w.updated_at)
        .bind(&w.id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn get_webhook(&self, id: &str) -> Result<Option<WebhookRecord>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(hook_from_row).transpose()?)
    }

    /// Every webhook, newest first.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(hook_from_row).collect::<Result<_, _>>()?)
    }

    /// Removes the hook and its pending deliveries (finished ones go too: they belong to it).
    pub async fn delete_webhook(&self, id: &str) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Queues one pending delivery per hook, due now, in one transaction.
    pub async fn insert_deliveries(&self, rows: &[DeliveryRecord]) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for d in rows {
            sqlx::query(&format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(&d.id)
            .bind(&d.webhook_id)
            .bind(&d.event_id)
            .bind(&d.event_type)
            .bind(&d.payload)
            .bind(i64::from(d.attempt))
            .bind(&d.status)
            .bind(d.response_status.map(i64::from))
            .bind(&d.error)
            .bind(&d.next_attempt_at)
            .bind(&d.created_at)
            .bind(&d.completed_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pending deliveries due at `now` (RFC 3339), oldest first, at most `limit`.
    pub async fn due_deliveries(
        &self,
        now: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The earliest `next_attempt_at` of a pending delivery.
    pub async fn next_delivery_due(&self) -> Result<Option<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records an attempt: the attempt counter moves on, the outcome is stored; finished
    /// deliveries get `completed_at`.
    pub async fn record_attempt(&self, id: &str, o: &AttemptOutcome) -> Result<(), DbError> {
        let completed = (o.status != "pending").then(now_rfc3339);
        sqlx::query(
            "UPDATE webhook_deliveries SET attempt = attempt + 1, status = $1, \
             response_status = $2, error = $3, next_attempt_at = $4, completed_at = $5 \
             WHERE id = $6",
        )
        .bind(o.status)
        .bind(o.response_status.map(i64::from))
        .bind(&o.error)
        .bind(&o.next_attempt_at)
        .bind(completed)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A hook's deliveries, newest first.
    pub async fn list_deliveries(
        &self,
        webhook_id: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(webhook_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<_, _>>()?)
    }
}
