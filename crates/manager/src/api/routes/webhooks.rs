//! `/v1/admin/webhooks*` (session only, `docs/reference/api-admin.md` Webhooks): the hooks and
//! their deliveries. Bodies are validated field by field here; the URL's SSRF check is the
//! service's, as it is repeated on patch and on every delivery.

use crate::api::auth::AdminSession;
use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, UuidId, KIB};
use crate::api::routes::logs::clamped;
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::db::{DeliveryRecord, WebhookRecord};
use crate::webhooks::{known_event_type, NewWebhook, WebhookPatch};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use utoipa::ToSchema;

/// A webhook as listed; its secret is shown only in the create answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub enabled: bool,
    /// Activity types (`vm.created`, …) or `["*"]` for every type.
    pub event_types: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&WebhookRecord> for WebhookView {
    fn from(h: &WebhookRecord) -> Self {
        WebhookView {
            id: h.id.clone(),
            name: h.name.clone(),
            url: h.url.clone(),
            enabled: h.enabled,
            event_types: h.event_types.clone(),
            created_at: h.created_at.clone(),
            updated_at: h.updated_at.clone(),
        }
    }
}

/// The create answer: the hook plus the signing secret, shown only here.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub hook: WebhookView,
    /// Key of `X-RDS-Signature` (HMAC-SHA256 over `<timestamp>.<body>`).
    pub secret: String,
}

/// `POST /v1/admin/webhooks` body; `PATCH` takes any subset of it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read by the schema derive only; the handlers validate the JSON map
pub struct WebhookBody {
    /// Non-blank, at most 200 characters.
    pub name: String,
    /// http or https; private and loopback targets are refused unless `WEBHOOK_ALLOW_PRIVATE`.
    pub url: String,
    /// Default true.
    pub enabled: Option<bool>,
    /// Non-empty; activity types or `*`.
    pub event_types: Vec<String>,
}

/// One delivery of one event to one hook.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// Attempts made so far.
    pub attempt: u32,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub completed_at: Option<String>,
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(d: &DeliveryRecord) -> Self {
        DeliveryView {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            attempt: d.attempt,
            status: d.status.clone(),
            response_status: d.response_status,
            error: d.error.clone(),
            created_at: d.created_at.clone(),
            next_attempt_at: d.next_attempt_at.clone(),
            completed_at: d.completed_at.clone(),
        }
    }
}

fn name(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s))
            if !s.trim().is_empty() && s.chars().count() <= 200 && !s.contains('\0') =>
        {
            Ok(s.trim().to_string())
        }
        _ => Err(ApiError::bad_request("name is required")),
    }
}

fn url(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s)) if s.len() <= 2048 => Ok(s.clone()),
        _ => Err(ApiError::bad_request(
            "url must be a valid http or https URL",
        )),
    }
}

fn enabled(v: Option<&Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request("enabled must be a boolean")),
    }
}

fn event_types(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::bad_request("eventTypes must be a non-empty array of strings");
    let Some(Value::Array(items)) = v else {
        return Err(bad());
    };
    if items.is_empty() || items.len() > 100 {
        return Err(bad());
    }
    let mut types = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(t) = item else {
            return Err(bad());
        };
        if !known_event_type(t) {
            let shown: String = t.chars().take(100).collect();
            return Err(ApiError::bad_request(format!(
                "Unknown event type: {shown}"
            )));
        }
        if !types.contains(t) {
            types.push(t.clone());
        }
    }
    Ok(types)
}

#[utoipa::path(get, path = "/admin/webhooks", tag = "admin", security(("SessionCookie" = [])),
    responses((status = 200, description = "Every hook, newest first", body = [WebhookView]),
              (status = 401, body = ErrorBody), (status = 403, description = "Admin session required", body = ErrorBody)))]
pub async fn list_webhooks(
    _admin: AdminSession,
    State(st): State<AppState>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let hooks = st.webhooks.list().await?;
    Ok(Json(hooks.iter().map(WebhookView::from).collect()))
}

#[utoipa::path(post, path = "/admin/webhooks", tag = "admin", security(("SessionCookie" = [])),
    request_body = WebhookBody,
    responses((status = 201, description = "Created; secret is shown only here", body = CreatedWebhook),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "Admin session required, or CSRF check failed", body = ErrorBody)))]
pub async fn create_webhook(
    _admin: AdminSession,
    State(st): State<AppState>,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let new = NewWebhook {
        name: name(body.get("name"))?,
        url: url(body.get("url"))?,
        enabled: enabled(body.get("enabled"))?.unwrap_or(true),
        event_types: event_types(body.get("eventTypes"))?,
    };
    let hook = st.webhooks.create(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            hook: WebhookView::from(&hook),
            secret: hook.secret.clone(),
        }),
    ))
}

fn patch(body: &Map<String, Value>) -> Result<WebhookPatch, ApiError> {
    // A null field is an absent one, as everywhere in the API.
    let field = |k: &str| body.get(k).filter(|v| !v.is_null());
    Ok(WebhookPatch {
        name: field("name").map(|v| name(Some(v))).transpose()?,
        url: field("url").map(|v| url(Some(v))).transpose()?,
        enabled: enabled(field("enabled"))?,
        event_types: field("eventTypes")
            .map(|v| event_types(Some(v)))
            .transpose()?,
    })
}

#[utoipa::path(patch, path = "/admin/webhooks/{id}", tag = "admin", security(("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "Webhook id")), request_body = WebhookBody,
    responses((status = 200, description = "Updated", body = WebhookView),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "Admin session required, or CSRF check failed", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn update_webhook(
    _admin: AdminSession,
    State(st): State<AppState>,
    UuidId(id): UuidId,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<Json<WebhookView>, ApiError> {
    let p = patch(&body)?;
    let hook = st.webhooks.update(&id, p).await?;
    Ok(Json(WebhookView::from(&hook)))
}

#[utoipa::path(delete, path = "/admin/webhooks/{id}", tag = "admin", security(("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted with its pending deliveries"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "Admin session required, or CSRF check failed", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    _admin: AdminSession,
    State(st): State<AppState>,
    UuidId(id): UuidId,
) -> Result<StatusCode, ApiError> {
    st.webhooks.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/webhooks/{id}/deliveries", tag = "admin", security(("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "Webhook id"),
           ("limit" = Option<u32>, Query, description = "1..200, default 50")),
    responses((status = 200, description = "Newest first", body = [DeliveryView]),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, description = "Admin session required", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    _admin: AdminSession,
    State(st): State<AppState>,
    UuidId(id): UuidId,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    let limit = clamped(&q, "limit", 50, 1, 200)?;
    let rows = st.webhooks.deliveries(&id, limit as u32).await?;
    Ok(Json(rows.iter().map(DeliveryView::from).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_types_are_checked_and_deduplicated() {
        let ok = event_types(Some(&json!(["vm.created", "*", "vm.created"]))).unwrap();
        assert_eq!(ok, vec!["vm.created", "*"]);
        for bad in [json!([]), json!("vm.created"), json!([1]), json!(null)] {
            let e = event_types(Some(&bad)).unwrap_err();
            assert_eq!(e.message, "eventTypes must be a non-empty array of strings");
        }
        let e = event_types(Some(&json!(["vm.nope"]))).unwrap_err();
        assert_eq!(e.message, "Unknown event type: vm.nope");
    }

    #[test]
    fn names_and_patches() {
        assert!(name(Some(&json!("  "))).is_err());
        assert!(name(Some(&json!("x".repeat(201)))).is_err());
        assert_eq!(name(Some(&json!(" ci "))).unwrap(), "ci");
        let p = patch(json!({"enabled": false}).as_object().unwrap()).unwrap();
        assert_eq!(p.enabled, Some(false));
        assert!(p.name.is_none() && p.url.is_none() && p.event_types.is_none());
        assert!(patch(json!({"enabled": "no"}).as_object().unwrap()).is_err());
        let p = patch(json!({"name": null, "enabled": null}).as_object().unwrap()).unwrap();
        assert!(p.name.is_none() && p.enabled.is_none());
    }
}
