//! The OpenAPI 3.1 document. Paths come from the `#[utoipa::path]` attributes of the very handlers
//! the router registers (`utoipa-axum`), so the document cannot list a route the server lacks or
//! miss one it serves.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "run-dat-sheesh", description = "Run untrusted code in microVMs."),
    modifiers(&Security),
    tags((name = "vms", description = "Sandboxes"), (name = "images", description = "Guest images"), (name = "snapshots", description = "User snapshots and templates"), (name = "health", description = "Probes"), (name = "auth", description = "Admin login and session"), (name = "admin", description = "Activity, API keys, live events"))
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

pub async fn serve(json: std::sync::Arc<String>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        (*json).clone(),
    )
}
