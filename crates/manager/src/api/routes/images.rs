//! `/v1/images` (`docs/reference/api.md` §5). File bodies are streamed to the image service, never
//! buffered.

use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, KIB};
use crate::api::schema::ErrorBody;
use crate::api::AppState;
use crate::images::{self, ImageError};
use crate::model::{ImagePart, ImageRecord};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use utoipa::ToSchema;

/// An image (`docs/reference/api.md` §5). The `seed*` fields stay null until templates exist.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub built_in: bool,
    pub is_default: bool,
    pub has_kernel: bool,
    pub has_rootfs: bool,
    pub kernel_filename: Option<String>,
    pub rootfs_filename: Option<String>,
    pub has_initrd: bool,
    /// `elf` or `bzimage`; null without a kernel.
    pub kernel_format: Option<String>,
    /// Size of the root filesystem in bytes; null without one.
    pub base_rootfs_bytes: Option<u64>,
    pub kernel_sha256: Option<String>,
    pub initrd_sha256: Option<String>,
    pub rootfs_sha256: Option<String>,
    pub kernel_uploaded_at: Option<String>,
    pub rootfs_uploaded_at: Option<String>,
    pub seed_snapshot_id: Option<String>,
    /// `pending`, `ready`, `failed` or null.
    pub seed_status: Option<String>,
    pub seed_updated_at: Option<String>,
    pub seed_error: Option<String>,
}

fn file_name(path: &Option<String>) -> Option<String> {
    path.as_deref()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
}

impl ImageView {
    fn new(img: &ImageRecord, default_id: Option<&str>) -> ImageView {
        let seed = img.seed.as_ref();
        ImageView {
            id: img.id.clone(),
            name: img.name.clone(),
            description: img.description.clone(),
            created_at: img.created_at.clone(),
            built_in: img.built_in,
            is_default: default_id == Some(img.id.as_str()),
            has_kernel: img.kernel_path.is_some(),
            has_rootfs: img.rootfs_path.is_some(),
            kernel_filename: file_name(&img.kernel_path),
            rootfs_filename: file_name(&img.rootfs_path),
            has_initrd: img.initrd_path.is_some(),
            kernel_format: img.kernel_path.as_ref().and(img.kernel_format.clone()),
            base_rootfs_bytes: img.rootfs.as_ref().map(|f| f.bytes),
            kernel_sha256: img.kernel.as_ref().map(|f| f.sha256.clone()),
            initrd_sha256: img.initrd.as_ref().map(|f| f.sha256.clone()),
            rootfs_sha256: img.rootfs.as_ref().map(|f| f.sha256.clone()),
            kernel_uploaded_at: img.kernel.as_ref().map(|f| f.uploaded_at.clone()),
            rootfs_uploaded_at: img.rootfs.as_ref().map(|f| f.uploaded_at.clone()),
            seed_snapshot_id: seed.and_then(|s| s.snapshot_id.clone()),
            seed_status: seed.map(|s| s.status.clone()),
            seed_updated_at: seed.and_then(|s| s.updated_at.clone()),
            seed_error: seed.and_then(|s| s.error.clone()),
        }
    }
}

/// `POST /v1/images` body.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // read by the schema derive only; the handler validates the JSON map
pub struct CreateImageBody {
    /// Non-blank, at most 200 characters.
    pub name: String,
    /// Non-blank, at most 2000 characters.
    pub description: String,
}

/// An image id from the path: `img-<uuid>`, lowercased (`docs/reference/api.md` §1.8).
pub struct ImageId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ImageId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        crate::api::extract::path_id(parts, state, parse_image_id, "Invalid image id")
            .await
            .map(ImageId)
    }
}

fn parse_image_id(raw: &str) -> Option<String> {
    crate::api::extract::parse_prefixed_id(raw, "img-")
}

fn mime(headers: &HeaderMap) -> String {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// 415 for another type; 413 at once when `Content-Length` is over `limit` (chunked bodies are
/// counted while they stream).
fn check_body(headers: &HeaderMap, types: &[&str], limit: u64) -> Result<(), ApiError> {
    if !types.contains(&mime(headers).as_str()) {
        return Err(ApiError::unsupported_media_type());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ImageError::TooLarge.into());
    }
    Ok(())
}

const RAW: [&str; 1] = ["application/octet-stream"];
const ZIP: [&str; 4] = [
    "application/zip",
    "application/x-zip",
    "application/x-zip-compressed",
    "application/octet-stream",
];

async fn put_part(
    st: &AppState,
    id: &str,
    part: ImagePart,
    req: Request,
) -> Result<StatusCode, ApiError> {
    check_body(req.headers(), &RAW, images::limit(part))?;
    let body = req.into_body().into_data_stream();
    st.images.upload(id, part, body).await?;
    files_changed(st, id);
    Ok(StatusCode::NO_CONTENT)
}

/// New files: the image's old template is gone with the upload; build one on what is there now,
/// and let the warm pool replace VMs of the old files.
fn files_changed(st: &AppState, id: &str) {
    st.vms.request_template(id, true);
    st.vms.pool_wanted();
}

#[utoipa::path(get, path = "/images", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    responses((status = 200, description = "Every image, newest first", body = [ImageView]),
              (status = 401, body = ErrorBody)))]
pub async fn list(State(st): State<AppState>) -> Result<Json<Vec<ImageView>>, ApiError> {
    let default = st.images.default_id().await?;
    let images = st.images.list().await?;
    Ok(Json(
        images
            .iter()
            .map(|i| ImageView::new(i, default.as_deref()))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/images/{id}", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    responses((status = 200, body = ImageView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    ImageId(id): ImageId,
) -> Result<Json<ImageView>, ApiError> {
    let image = st.images.get(&id).await?;
    let default = st.images.default_id().await?;
    Ok(Json(ImageView::new(&image, default.as_deref())))
}

#[utoipa::path(post, path = "/images", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    request_body = CreateImageBody,
    responses((status = 201, description = "Created without files", body = ImageView), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    JsonObject(body): JsonObject<{ 64 * KIB }>,
) -> Result<(StatusCode, Json<ImageView>), ApiError> {
    let field = |key: &str, max: usize| -> Result<String, ApiError> {
        let raw = match body.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            _ => return Err(ApiError::bad_request("name and description are required")),
        };
        // The limit applies to the value as sent (the OpenAPI maxLength), then it is trimmed.
        let value = raw.trim().to_string();
        if raw.chars().count() > max {
            return Err(ApiError::bad_request(format!(
                "{key} must be at most {max} characters"
            )));
        }
        if value.contains('\0') {
            return Err(ApiError::bad_request(format!("{key} must not contain NUL")));
        }
        Ok(value)
    };
    let name = field("name", 200)?;
    let description = field("description", 2000)?;
    let image = st.images.create(&name, &description).await?;
    let default = st.images.default_id().await?;
    Ok((
        StatusCode::CREATED,
        Json(ImageView::new(&image, default.as_deref())),
    ))
}

#[utoipa::path(put, path = "/images/{id}/kernel", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "ELF vmlinux or bzImage, at most 3 GiB"),
    responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 507, body = ErrorBody)))]
pub async fn put_kernel(
    State(st): State<AppState>,
    ImageId(id): ImageId,
    req: Request,
) -> Result<StatusCode, ApiError> {
    put_part(&st, &id, ImagePart::Kernel, req).await
}

#[utoipa::path(put, path = "/images/{id}/rootfs", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "ext4 image, at most 3 GiB; zero blocks are stored as holes"),
    responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 507, body = ErrorBody)))]
pub async fn put_rootfs(
    State(st): State<AppState>,
    ImageId(id): ImageId,
    req: Request,
) -> Result<StatusCode, ApiError> {
    put_part(&st, &id, ImagePart::Rootfs, req).await
}

#[utoipa::path(put, path = "/images/{id}/initrd", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "newc cpio initramfs, plain or gzip/lz4/zstd, at most 1 GiB"),
    responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 507, body = ErrorBody)))]
pub async fn put_initrd(
    State(st): State<AppState>,
    ImageId(id): ImageId,
    req: Request,
) -> Result<StatusCode, ApiError> {
    put_part(&st, &id, ImagePart::Initrd, req).await
}

#[utoipa::path(delete, path = "/images/{id}/initrd", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    responses((status = 204, description = "No initrd now"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn delete_initrd(
    State(st): State<AppState>,
    ImageId(id): ImageId,
) -> Result<StatusCode, ApiError> {
    st.images.remove_initrd(&id).await?;
    files_changed(&st, &id);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/images/{id}/bundle", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "zip with vmlinux, initrd and/or rootfs.ext4 at the top level or one folder deep, at most 3 GiB (also accepted as application/zip, application/x-zip, application/x-zip-compressed)"),
    responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 507, body = ErrorBody)))]
pub async fn put_bundle(
    State(st): State<AppState>,
    ImageId(id): ImageId,
    req: Request,
) -> Result<StatusCode, ApiError> {
    check_body(req.headers(), &ZIP, images::MAX_UPLOAD_BYTES)?;
    let body = req.into_body().into_data_stream();
    st.images.upload_bundle(&id, body).await?;
    files_changed(&st, &id);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/images/{id}/set-default", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    responses((status = 204, description = "Creates without imageId use it"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn set_default(
    State(st): State<AppState>,
    ImageId(id): ImageId,
) -> Result<StatusCode, ApiError> {
    st.images.set_default(&id).await?;
    // Pool VMs are of the default image.
    st.vms.pool_wanted();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/images/{id}", tag = "images", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = String, Path, description = "Image id (img-<uuid>)")),
    responses((status = 204, description = "Files, row and default setting removed"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    ImageId(id): ImageId,
) -> Result<StatusCode, ApiError> {
    st.images.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::parse_image_id;

    #[test]
    fn image_ids() {
        let id = "img-0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(parse_image_id(id).as_deref(), Some(id));
        assert_eq!(parse_image_id(&id.to_uppercase()).as_deref(), Some(id));
        for bad in [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "img-",
            "img-0f8fad5bd9cb469fa16570867728950e",
            "snap-0f8fad5b-d9cb-469f-a165-70867728950e",
            "img-0f8fad5b-d9cb-469f-a165-70867728950e0",
            "imgé0f8fad5b-d9cb-469f-a165-70867728950e",
        ] {
            assert!(parse_image_id(bad).is_none(), "{bad}");
        }
    }
}
