//! `activity_events` (docs/reference/api-admin.md Activity, docs/reference/api.md §7): appended by
//! the activity recorder, listed newest first, replayed to SSE clients, pruned to the newest N.

use super::{Db, DbError};
use sqlx::any::AnyRow;
use sqlx::Row;

/// One stored activity event. `meta_json` is the JSON text of the (already scrubbed) meta object.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEvent {
    /// Order of recording; internal (paging and replay), never shown.
    pub seq: i64,
    pub id: String,
    pub created_at: String,
    pub kind: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub message: String,
    pub meta_json: String,
}

const COLUMNS: &str = "seq, id, created_at, type, entity_type, entity_id, message, meta_json";

fn from_row(r: &AnyRow) -> Result<ActivityEvent, sqlx::Error> {
    Ok(ActivityEvent {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        created_at: r.try_get("created_at")?,
        kind: r.try_get("type")?,
        entity_type: r.try_get("entity_type")?,
        entity_id: r.try_get("entity_id")?,
        message: r.try_get("message")?,
        meta_json: r.try_get("meta_json")?,
    })
}

impl Db {
    /// Stores `e` (its `seq` is ignored) and returns the `seq` it got.
    pub async fn insert_activity(&self, e: &ActivityEvent) -> Result<i64, DbError> {
        let row = sqlx::query(
            "INSERT INTO activity_events (id, created_at, type, entity_type, entity_id, message, \
             meta_json) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        )
        .bind(&e.id)
        .bind(&e.created_at)
        .bind(&e.kind)
        .bind(&e.entity_type)
        .bind(&e.entity_id)
        .bind(&e.message)
        .bind(&e.meta_json)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// At most `limit` events, newest first; with `before`, only events recorded before that one
    /// (none when it is unknown).
    pub async fn list_activity(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ActivityEvent>, DbError> {
        let rows = match before {
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM activity_events ORDER BY seq DESC LIMIT $1"
                ))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?
            }
            Some(id) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM activity_events WHERE seq < \
                     (SELECT seq FROM activity_events WHERE id = $1) ORDER BY seq DESC LIMIT $2"
                ))
                .bind(id)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The `seq` of event `id`, if it is stored.
    pub async fn activity_seq(&self, id: &str) -> Result<Option<i64>, DbError> {
        let row = sqlx::query("SELECT seq FROM activity_events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("seq")).transpose()?)
    }

    /// The newest `limit` events recorded after `seq`, oldest first (SSE replay and catch-up).
    pub async fn activity_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<ActivityEvent>, DbError> {
        let mut rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM activity_events WHERE seq > $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The oldest `limit` events stored after `seq`, oldest first (a page of a full catch-up).
    pub async fn activity_since(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<ActivityEvent>, DbError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM activity_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(DbError::from)
    }

    /// Keeps the newest `keep` events; returns how many were removed.
    pub async fn prune_activity(&self, keep: u64) -> Result<u64, DbError> {
        let done = sqlx::query(
            "DELETE FROM activity_events WHERE seq <= \
             (SELECT seq FROM activity_events ORDER BY seq DESC LIMIT 1 OFFSET $1)",
        )
        .bind(keep as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
