//! `/v1/admin/activity` (key or cookie) and `/v1/admin/api-keys*` (session only)
//! (`docs/reference/api-admin.md`).

use crate::api::auth::AdminSession;
use crate::api::error::ApiError;
use crate::api::extract::{parse_vm_id, JsonObject, UuidId, KIB};
use crate::api::routes::logs::clamped;
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::db::ApiKeyRecord;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use utoipa::ToSchema;

/// One activity event (`docs/reference/api-admin.md` Activity).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // the schema of `ActivityEvent::item`
pub struct ActivityItem {
    pub id: String,
    pub created_at: String,
    /// A `docs/reference/api.md` §7 type such as `vm.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `vm`, `snapshot`, `image`, `apikey`, `auth` or `webhook`.
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub message: String,
    /// The type's meta object as JSON text.
    pub meta_json: String,
}

#[utoipa::path(get, path = "/admin/activity", tag = "admin", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("limit" = Option<u32>, Query, description = "1..200, default 50"),
           ("before" = Option<String>, Query, description = "Event id: only events recorded before it")),
    responses((status = 200, description = "Newest first", body = [ActivityItem]), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn activity(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let limit = clamped(&q, "limit", 50, 1, 200)?;
    let before = match q.get("before") {
        None => None,
        Some(b) => Some(parse_vm_id(b).ok_or_else(|| ApiError::bad_request("Invalid id"))?),
    };
    let events = st.activity.list(before.as_deref(), limit).await?;
    Ok(Json(events.iter().map(|e| e.item()).collect()))
}

/// A DB API key; the key itself is never shown again after its creation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The 12 hex characters after `rds_`.
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        ApiKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: k.created_at.clone(),
            expires_at: k.expires_at.clone(),
            revoked_at: k.revoked_at.clone(),
            last_used_at: k.last_used_at.clone(),
        }
    }
}

/// The create answer: the record plus the key, shown only here.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// `rds_<prefix>_<secret>`: send as `X-API-Key`.
    pub api_key: String,
}

/// `POST /v1/admin/api-keys` body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read by the schema derive only; the handler validates the JSON map
pub struct CreateApiKeyBody {
    /// Non-blank, at most 200 characters.
    pub name: String,
    /// RFC 3339 time in the future (`2030-01-01T00:00:00Z`; without an offset it is UTC; a bare
    /// date is its midnight UTC). Absent or null: never expires.
    pub expires_at: Option<String>,
}

/// `expiresAt` as stored (RFC 3339 UTC, milliseconds), if it parses and lies in the future.
fn future_timestamp(s: &str) -> Option<String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").map(|t| t.and_utc()))
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        })
        .ok()?;
    (t > Utc::now() && t.timestamp() < 253_402_300_800) // before the year 10000: four-digit years sort as text
        .then(|| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[utoipa::path(post, path = "/admin/api-keys", tag = "admin", security(("SessionCookie" = [])),
    request_body = CreateApiKeyBody,
    responses((status = 201, description = "Created; apiKey is shown only here", body = CreatedApiKey),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "Admin session required, or CSRF check failed", body = ErrorBody),
              (status = 503, description = "Credential verification busy", body = ErrorBody)))]
pub async fn create_key(
    _admin: AdminSession,
    State(st): State<AppState>,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let raw = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        _ => return Err(ApiError::bad_request("name is required")),
    };
    // The limit applies to the name as sent (the OpenAPI maxLength), then it is trimmed.
    let name = raw.trim();
    if raw.chars().count() > 200 {
        return Err(ApiError::bad_request("name must be at most 200 characters"));
    }
    if name.contains('\0') {
        return Err(ApiError::bad_request("name must not contain NUL"));
    }
    let expires_at = match body.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(future_timestamp(s).ok_or_else(expiry_error)?),
        Some(_) => return Err(expiry_error()),
    };
    let (record, key) = st.auth.create_key(name, expires_at).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: ApiKeyView::from(&record),
            api_key: key,
        }),
    ))
}

fn expiry_error() -> ApiError {
    ApiError::bad_request("expiresAt must be an ISO-8601 timestamp in the future")
}

#[utoipa::path(get, path = "/admin/api-keys", tag = "admin", security(("SessionCookie" = [])),
    responses((status = 200, description = "Every key, newest first", body = [ApiKeyView]),
              (status = 401, body = ErrorBody), (status = 403, description = "Admin session required", body = ErrorBody)))]
pub async fn list_keys(
    _admin: AdminSession,
    State(st): State<AppState>,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    let keys = st.auth.list_keys().await?;
    Ok(Json(keys.iter().map(ApiKeyView::from).collect()))
}

#[utoipa::path(post, path = "/admin/api-keys/{id}/revoke", tag = "admin", security(("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "API key id")),
    responses((status = 200, description = "Revoked (a second call keeps the first revokedAt)", body = ApiKeyView),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "Admin session required, or CSRF check failed", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    _admin: AdminSession,
    State(st): State<AppState>,
    UuidId(id): UuidId,
) -> Result<Json<ApiKeyView>, ApiError> {
    match st.auth.revoke_key(&id).await? {
        Some(k) => Ok(Json(ApiKeyView::from(&k))),
        None => Err(ApiError::not_found("Not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::future_timestamp;

    #[test]
    fn expiry_forms() {
        assert_eq!(
            future_timestamp("2999-01-02T03:04:05+01:00").as_deref(),
            Some("2999-01-02T02:04:05.000Z")
        );
        assert_eq!(
            future_timestamp("2999-01-02T03:04:05.5").as_deref(),
            Some("2999-01-02T03:04:05.500Z")
        );
        assert_eq!(
            future_timestamp("2999-01-02").as_deref(),
            Some("2999-01-02T00:00:00.000Z")
        );
        for bad in ["2000-01-01T00:00:00Z", "tomorrow", "", "2999-13-01", "1e10"] {
            assert_eq!(future_timestamp(bad), None, "{bad}");
        }
    }
}
