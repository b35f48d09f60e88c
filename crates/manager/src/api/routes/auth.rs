//! `/auth/login`, `/auth/logout`, `/auth/me` (docs/reference/api-admin.md Login and sessions): the
//! admin session behind the console. Exempt from the CSRF check; login is limited per client
//! address (`RATE_LIMIT_LOGIN`).

use crate::api::auth::ClientAddress;
use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, KIB};
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::auth::Session;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /auth/login` body.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // read by the schema derive only; the handler reads the JSON map
pub struct LoginBody {
    /// `ADMIN_EMAIL`, compared exactly.
    pub email: String,
    pub password: String,
}

/// The session of the caller.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub email: String,
    /// Send as `X-RDS-CSRF` on writes that the `Origin` check would not pass.
    pub csrf_token: String,
    pub expires_at: String,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        SessionView {
            email: s.email.clone(),
            csrf_token: s.csrf_token.clone(),
            expires_at: s.expires_at.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OkView {
    pub ok: bool,
}

fn with_cookie(cookie: String, body: impl IntoResponse) -> Response {
    ([(header::SET_COOKIE, cookie)], body).into_response()
}

#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, description = "Logged in; sets the rds_session cookie", body = SessionView),
              (status = 400, body = ErrorBody), (status = 401, description = "Invalid credentials", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, description = "Credential verification busy", body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    ClientAddress(client): ClientAddress,
    JsonObject(body): JsonObject<{ 16 * KIB }>,
) -> Result<Response, ApiError> {
    let field = |k: &str| match body.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        _ => Err(ApiError::bad_request("email and password are required")),
    };
    let (email, password) = (field("email")?, field("password")?);
    let done = st.auth.login(email, password, &client).await?;
    Ok(with_cookie(
        st.auth.set_cookie(&done.token),
        Json(SessionView::from(&done.session)),
    ))
}

#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 200, description = "The cookie's session (if any) is gone and the cookie cleared", body = OkView)))]
pub async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.auth.logout(&headers).await?;
    Ok(with_cookie(
        st.auth.clear_cookie(),
        Json(OkView { ok: true }),
    ))
}

#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("SessionCookie" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody)))]
pub async fn me(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SessionView>, ApiError> {
    match st.auth.session(&headers).await? {
        Some(s) => Ok(Json(SessionView::from(&s))),
        None => Err(ApiError::unauthorized("Unauthorized")),
    }
}
