//! `POST /v1/vms/:id/files/upload`, `GET …/files/download` (`docs/reference/api.md` §3.9). Upload
//! bodies are spooled to `STORAGE_ROOT/tmp` under the 10 MiB cap, then streamed to the agent;
//! downloads stream through.

use crate::api::error::ApiError;
use crate::api::extract::VmId;
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::lifecycle::LifecycleError;
use crate::storage::spool::{self, SpoolError};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

const UPLOAD_LIMIT: u64 = 10 * 1024 * 1024;
const UPLOAD_TYPES: [&str; 3] = [
    "application/gzip",
    "application/x-gzip",
    "application/octet-stream",
];

#[utoipa::path(post, path = "/vms/{id}/files/upload", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"), ("dest" = String, Query, description = "Directory under /workspace")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "tar.gz, at most 10 MiB (also accepted as application/gzip or application/x-gzip)"),
    responses((status = 204, description = "Extracted"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody), (status = 415, body = ErrorBody), (status = 507, description = "STORAGE_ROOT full", body = ErrorBody)))]
pub async fn upload(
    State(st): State<AppState>,
    VmId(id): VmId,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !UPLOAD_TYPES.contains(&mime.as_str()) {
        return Err(ApiError::unsupported_media_type());
    }
    let dest = q
        .get("dest")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::bad_request("dest is required"))?;
    st.vms.running(&id).await?;
    // The agent refuses such a dest before it reads the body, which would cut the stream short:
    // answer its 400 here instead of streaming into a closed connection.
    rds_protocol::workspace::workspace_relative(dest).map_err(|e| {
        ApiError::bad_request(format!(
            "{}: {e}",
            rds_protocol::files::messages::INVALID_UPLOAD
        ))
    })?;
    let path = st
        .vms
        .spool_dir()
        .join(format!("upload-{}", uuid::Uuid::new_v4()));
    let (spooled, len) = spool::spool(req.into_body().into_data_stream(), path, UPLOAD_LIMIT)
        .await
        .map_err(spool_error)?;
    let file = tokio::fs::File::open(spooled.path())
        .await
        .map_err(|e| ApiError::internal(format!("spool reopen: {e}")))?;
    st.vms
        .upload(&id, dest, file, len)
        .await
        .map_err(agent_message)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A full `STORAGE_ROOT` is the caller's 507, like every other write that does not fit; the spool
/// file is gone already.
fn spool_error(e: SpoolError) -> ApiError {
    match e {
        SpoolError::TooLarge(_) => ApiError::too_large("Body too large"),
        SpoolError::Body(m) => ApiError::bad_request(format!("upload body: {m}")),
        SpoolError::NoSpace => LifecycleError::NoSpace.into(),
        e @ SpoolError::Io { .. } => ApiError::internal(e.to_string()),
    }
}

#[utoipa::path(get, path = "/vms/{id}/files/download", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)"), ("path" = String, Query, description = "File or directory under /workspace")),
    responses((status = 200, description = "tar.gz, streamed", content_type = "application/gzip", body = Vec<u8>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn download(
    State(st): State<AppState>,
    VmId(id): VmId,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = q
        .get("path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("path is required"))?;
    let limit = st.vms.max_download_bytes();
    let stream = st.vms.download(&id, path).await.map_err(|e| match e {
        LifecycleError::Agent(crate::agent::AgentError::Status { status: 413, .. }) => {
            ApiError::too_large(format!("Download too large (limit {limit} bytes)"))
        }
        other => agent_message(other),
    })?;
    let name = basename(path);
    let disposition = format!("attachment; filename=\"{name}.tar.gz\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The agent's 400s name the archive or path problem; keep its message and detail.
fn agent_message(e: LifecycleError) -> ApiError {
    ApiError::from(e)
}

/// A safe file name for the Content-Disposition header.
fn basename(path: &str) -> String {
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let clean: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    match clean.as_str() {
        "" | "." | ".." => "workspace".to_string(),
        _ => clean,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn download_names() {
        assert_eq!(super::basename("/workspace"), "workspace");
        assert_eq!(super::basename("/workspace/a/b.txt"), "b.txt");
        assert_eq!(super::basename("dir/"), "dir");
        assert_eq!(super::basename("."), "workspace");
        assert_eq!(super::basename("x\"y"), "xy");
    }
}
