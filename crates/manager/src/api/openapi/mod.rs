//! The OpenAPI 3.1 document. Paths come from the `#[utoipa::path]` attributes of the very handlers
//! the router registers (`utoipa-axum`), so the document cannot list a route the server lacks or
//! miss one it serves.

mod constraints;

use crate::config::Limits;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "run-dat-sheesh", description = "Run untrusted code in microVMs."),
    modifiers(&Security),
    tags((name = "vms", description = "Sandboxes"), (name = "images", description = "Guest images"), (name = "snapshots", description = "User snapshots and templates"), (name = "health", description = "Probes"), (name = "auth", description = "Admin login and session"), (name = "admin", description = "Activity, API keys, live events"), (name = "peers", description = "Called by code in consumer VMs"))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "ApiKeyAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        c.add_security_scheme(
            "BridgeToken",
            SecurityScheme::Http(utoipa::openapi::security::Http::new(
                utoipa::openapi::security::HttpAuthScheme::Bearer,
            )),
        );
        c.add_security_scheme(
            "SessionCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("rds_session"))),
        );
    }
}

/// `/openapi.json` documents itself too.
pub fn self_path() -> utoipa::openapi::PathItem {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::ResponseBuilder;
    let op = OperationBuilder::new()
        .tag("health")
        .summary(Some("This document"))
        .response(
            "200",
            ResponseBuilder::new().description("OpenAPI 3.1 JSON"),
        )
        .build();
    utoipa::openapi::PathItem::new(HttpMethod::Get, op)
}

/// The served JSON: the derived document with the validators' rules written in.
pub fn render(doc: &utoipa::openapi::OpenApi, limits: &Limits) -> String {
    let mut json = serde_json::to_value(doc).expect("OpenAPI document serialises");
    constraints::apply(&mut json, limits);
    unique_operation_ids(&mut json);
    json.to_string()
}

/// Handlers of different modules share names (`list`, `get`, `create`), and utoipa takes the
/// function name as the `operationId`, which OpenAPI requires to be unique: each becomes
/// `<tag>_<name>` (`vms_list`, `images_list`).
fn unique_operation_ids(doc: &mut serde_json::Value) {
    let mut seen = std::collections::HashSet::new();
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for op in item.as_object_mut().expect("path item").values_mut() {
            let Some(id) = op.get("operationId").and_then(|v| v.as_str()) else {
                continue;
            };
            let tag = op["tags"][0].as_str().unwrap_or("api");
            let unique = format!("{tag}_{id}");
            assert!(seen.insert(unique.clone()), "operationId {unique} twice");
            op["operationId"] = serde_json::Value::String(unique);
        }
    }
}

pub async fn serve(json: std::sync::Arc<String>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        (*json).clone(),
    )
}
