//! `POST /files/upload`, `GET /files/download` and `POST /internal/files/replace-tree`
//! (`docs/reference/agent-protocol.md` §7).
//!
//! An upload body is spooled to an unnamed file in the agent's private directory (gone when closed, so
//! removed in every case), validated whole on a blocking thread, and only then extracted, as the sandbox
//! user, by a second pass over the same file. Downloads are built as the sandbox user and streamed.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use rds_protocol::files::{
    messages as fm, query as q, MAX_ARCHIVE_BODY_BYTES, MAX_ARCHIVE_ENTRIES,
    MAX_REPLACE_TREE_UNPACKED_BYTES, MAX_UPLOAD_UNPACKED_BYTES,
};
use rds_protocol::SANDBOX_UID;

use crate::archive::{self, ArchiveError, Limits, ModePolicy, Owner, Source};
use crate::error::ApiError;
use crate::fsuser;
use crate::http::{self, Body, ChannelBody, ChannelWriter};
use crate::paths::{self, OpenError, Resolver, WorkspacePath};
use crate::state::AppState;

const UPLOAD_LIMITS: Limits = Limits {
    entries: MAX_ARCHIVE_ENTRIES,
    bytes: MAX_UPLOAD_UNPACKED_BYTES,
};
const REPLACE_TREE_LIMITS: Limits = Limits {
    entries: MAX_ARCHIVE_ENTRIES,
    bytes: MAX_REPLACE_TREE_UNPACKED_BYTES,
};
/// Bytes per chunk of a streamed download, and chunks buffered ahead of the connection.
const DOWNLOAD_CHUNK: usize = 64 * 1024;
const DOWNLOAD_QUEUE: usize = 8;

fn invalid_upload(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request_detail(fm::INVALID_UPLOAD, detail)
}

fn invalid_download(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request_detail(fm::INVALID_DOWNLOAD, detail)
}

fn invalid_replace(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request_detail(fm::INVALID_REPLACE_TREE, detail)
}

/// An unnamed file in `run_dir` (0700 root); it disappears when the last handle closes.
fn open_spool(run_dir: &Path) -> io::Result<File> {
    std::fs::create_dir_all(run_dir)?;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700))?;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(run_dir);
    match tmpfile {
        Ok(f) => Ok(f),
        // Filesystems without O_TMPFILE: a named file, unlinked at once.
        Err(_) => {
            let path = run_dir.join(format!("spool-{}", uuid::Uuid::new_v4()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

/// Spools the request body; 413 over [`MAX_ARCHIVE_BODY_BYTES`].
async fn spool(state: &AppState, req: Request<Incoming>) -> Result<File, ApiError> {
    let mut file = open_spool(&state.settings.run_dir)
        .map_err(|e| ApiError::internal("cannot create the upload spool", e))?;
    http::body_to_file(req, MAX_ARCHIVE_BODY_BYTES, &mut file).await?;
    Ok(file)
}

/// A fresh reader from the start of the spool.
fn rewind(file: &File) -> io::Result<BufReader<File>> {
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(0))?;
    Ok(BufReader::with_capacity(64 * 1024, f))
}

async fn validate(file: &File, limits: Limits) -> Result<Result<(), ArchiveError>, ApiError> {
    let reader = rewind(file).map_err(|e| ApiError::internal("cannot read the spool", e))?;
    tokio::task::spawn_blocking(move || archive::validate(reader, limits).map(drop))
        .await
        .map_err(|e| ApiError::internal("validation thread failed", io::Error::other(e)))
}

fn query_param(query: &std::collections::HashMap<String, String>, key: &str) -> Option<String> {
    query.get(key).filter(|v| !v.is_empty()).cloned()
}

pub async fn upload(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query = http::query(&req)?;
    let dest =
        query_param(&query, q::DEST).ok_or_else(|| ApiError::bad_request(fm::DEST_REQUIRED))?;
    let dest = paths::normalize(&dest).map_err(|e| invalid_upload(e.to_string()))?;
    let file = spool(state, req).await?;
    validate(&file, UPLOAD_LIMITS)
        .await?
        .map_err(|e| invalid_upload(e.to_string()))?;

    let reader = rewind(&file).map_err(|e| ApiError::internal("cannot read the spool", e))?;
    let root = state.settings.workspace.clone();
    let outcome = fsuser::run_as(state.settings.identity, move || {
        let dest_fd = open_or_create_dest(&root, &dest)?;
        archive::extract(&dest_fd, reader, UPLOAD_LIMITS, ModePolicy::UPLOAD, None).map_err(|e| {
            match e.is_caller_fault() {
                true => invalid_upload(e.to_string()),
                false => ApiError::Failed {
                    message: format!("Upload failed: {e}"),
                },
            }
        })
    })
    .await
    .map_err(|e| ApiError::internal("cannot start the file worker", e))?;
    outcome?;
    Ok(http::no_content())
}

/// Opens `dest` beneath the workspace root, creating missing directories (as the calling thread's
/// identity, mode 0755). Something other than a directory in the way is refused.
fn open_or_create_dest(root: &Path, dest: &WorkspacePath) -> Result<OwnedFd, ApiError> {
    let open = |p: &WorkspacePath| paths::open_dir(root, p, Resolver::Auto);
    let mut current = open(&dest.prefix(0)).map_err(|e| open_failed(e, "the workspace"))?;
    let components = dest.components();
    for (i, name) in components.iter().enumerate() {
        let prefix = dest.prefix(i + 1);
        match open(&prefix) {
            Ok(fd) => current = fd,
            Err(OpenError::NotADirectory) => {
                let c = CString::new(name.as_bytes()).map_err(|_| invalid_upload("bad dest"))?;
                // SAFETY: valid descriptor and C string.
                if unsafe { libc::mkdirat(current.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                    let e = io::Error::last_os_error();
                    let shown = Path::new("/workspace").join(prefix.relative());
                    return Err(invalid_upload(match e.raw_os_error() {
                        Some(libc::EEXIST) => {
                            format!("dest {} exists and is not a directory", shown.display())
                        }
                        _ => format!("cannot create {}: {e}", shown.display()),
                    }));
                }
                current = open(&prefix).map_err(|e| open_failed(e, "dest"))?;
            }
            Err(e) => return Err(open_failed(e, "dest")),
        }
    }
    Ok(current)
}

fn open_failed(e: OpenError, what: &'static str) -> ApiError {
    match e {
        OpenError::Escapes => invalid_upload(e.to_string()),
        OpenError::NotADirectory => invalid_upload(format!("{what} is not a directory")),
        OpenError::Root { source, .. } | OpenError::Io(source) => {
            ApiError::internal("cannot open the upload dest", source)
        }
    }
}

pub async fn download(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let query = http::query(&req)?;
    let text =
        query_param(&query, q::PATH).ok_or_else(|| ApiError::bad_request(fm::PATH_REQUIRED))?;
    let path = paths::normalize(&text).map_err(|e| invalid_download(e.to_string()))?;
    let budget = http::max_response_bytes(req.headers()).map(|b| b as u64);
    let filename = match path.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => "workspace".to_string(),
    };

    let root = state.settings.workspace.clone();
    let (body, tx) = ChannelBody::new(DOWNLOAD_QUEUE);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    fsuser::spawn_as(state.settings.identity, move |switched| {
        let prepared = switched
            .map_err(|e| ApiError::internal("cannot switch to the sandbox user", e))
            .and_then(|()| prepare_download(&root, &path, budget));
        let source = match prepared {
            Ok(source) => source,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        if ready_tx.send(Ok(())).is_err() {
            return;
        }
        let err_tx = tx.clone();
        let written = archive::stream(source, ChannelWriter::new(tx, DOWNLOAD_CHUNK))
            .and_then(|mut w| io::Write::flush(&mut w));
        if let Err(e) = written {
            tracing::warn!(error = %e, "download stream failed");
            let _ = err_tx.blocking_send(Err(e));
        }
    })
    .map_err(|e| ApiError::internal("cannot start the file worker", e))?;
    ready_rx.await.map_err(|_| {
        ApiError::internal("file worker ended early", io::Error::other("no reply"))
    })??;

    let mut resp = Response::new(body.boxed());
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    let safe: String = filename
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() || !c.is_ascii() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}.tar.gz\"")) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// Resolves and opens the download as the calling thread's identity and checks it against the budget.
fn prepare_download(
    root: &Path,
    path: &WorkspacePath,
    budget: Option<u64>,
) -> Result<Source, ApiError> {
    let target = paths::open_any(root, path, Resolver::Auto).map_err(|e| match e {
        OpenError::Escapes => invalid_download(e.to_string()),
        OpenError::NotADirectory => invalid_download("no such file or directory"),
        OpenError::Root { source, .. } | OpenError::Io(source) => {
            ApiError::internal("cannot resolve the download path", source)
        }
    })?;
    let name = path
        .file_name()
        .map(OsStr::as_bytes)
        .unwrap_or(b"workspace");
    let source =
        archive::open_source(&target, name).map_err(|e| invalid_download(e.to_string()))?;
    if let Some(budget) = budget {
        let needed = archive::estimate(&source, budget)
            .map_err(|e| ApiError::internal("cannot measure the download", e))?;
        if needed > budget {
            return Err(ApiError::TooLarge {
                message: fm::DOWNLOAD_TOO_LARGE.into(),
                detail: Some(format!(
                    "needs more than {budget} bytes (limit {budget} bytes)"
                )),
            });
        }
    }
    Ok(source)
}

pub async fn replace_tree(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let query = http::query(&req)?;
    let dest = query_param(&query, q::DEST).ok_or_else(|| invalid_replace("dest is required"))?;
    let name = match paths::normalize(&dest).ok().and_then(|p| {
        let c = p.components();
        (c.len() == 1).then(|| c[0].to_string_lossy().into_owned())
    }) {
        Some(n) if n == "peers" || n == ".rds" => n,
        _ => {
            return Err(invalid_replace(
                "dest must be /workspace/peers or /workspace/.rds",
            ))
        }
    };
    let owner: Owner = match query.get(q::OWNERSHIP).map(String::as_str) {
        None | Some("root") => Some((0, 0)),
        Some("user") => Some((SANDBOX_UID, SANDBOX_UID)),
        Some(_) => return Err(invalid_replace("ownership must be root or user")),
    };
    let modes = match query.get(q::READ_ONLY).map(String::as_str) {
        None | Some("false") => ModePolicy::READ_WRITE,
        Some("true") => ModePolicy::READ_ONLY,
        Some(_) => return Err(invalid_replace("readOnly must be true or false")),
    };
    let file = spool(state, req).await?;
    validate(&file, REPLACE_TREE_LIMITS)
        .await?
        .map_err(|e| invalid_replace(e.to_string()))?;
    let reader = rewind(&file).map_err(|e| ApiError::internal("cannot read the spool", e))?;
    let root = state.settings.workspace.clone();
    tokio::task::spawn_blocking(move || replace(&root, &name, reader, modes, owner))
        .await
        .map_err(|e| ApiError::internal("replace-tree thread failed", io::Error::other(e)))??;
    Ok(http::no_content())
}

/// As root: extract into a fresh directory beside `name`, fix owner and modes, swap it in, remove the old
/// tree. Everything is relative to a handle on the workspace root and never follows symlinks.
fn replace(
    root: &Path,
    name: &str,
    reader: BufReader<File>,
    modes: ModePolicy,
    owner: Owner,
) -> Result<(), ApiError> {
    let internal = |what: &'static str| move |e: io::Error| ApiError::internal(what, e);
    let root_dir = File::open(root).map_err(internal("cannot open the workspace"))?;
    let root_fd = OwnedFd::from(root_dir);
    let tmp = CString::new(format!(".rds-replace-{}", uuid::Uuid::new_v4())).expect("no NUL");
    let target = CString::new(name).expect("no NUL");
    let (fresh, _) = archive_dir(&root_fd, &tmp).map_err(internal("cannot create the new tree"))?;
    let filled = archive::extract(&fresh, reader, REPLACE_TREE_LIMITS, modes, owner)
        .map_err(|e| match e.is_caller_fault() {
            true => invalid_replace(e.to_string()),
            false => ApiError::Failed {
                message: format!("Replace-tree failed: {e}"),
            },
        })
        .and_then(|()| {
            set_owner_mode(&fresh, modes.dir, owner).map_err(internal("cannot set the tree's mode"))
        });
    if let Err(e) = filled {
        let _ = remove_tree(&root_fd, &tmp);
        return Err(e);
    }
    drop(fresh);
    // SAFETY: valid descriptors and C strings.
    let exchanged = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            root_fd.as_raw_fd(),
            tmp.as_ptr(),
            root_fd.as_raw_fd(),
            target.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    let swapped = if exchanged == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            // SAFETY: as above.
            match unsafe {
                libc::renameat(
                    root_fd.as_raw_fd(),
                    tmp.as_ptr(),
                    root_fd.as_raw_fd(),
                    target.as_ptr(),
                )
            } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        } else {
            Err(e)
        }
    };
    // After an exchange the old tree sits under the temporary name; after a failure, the new one.
    let _ = remove_tree(&root_fd, &tmp);
    swapped.map_err(internal("cannot swap the new tree in"))
}

fn archive_dir(parent: &OwnedFd, name: &CString) -> io::Result<(OwnedFd, bool)> {
    // SAFETY: valid descriptor and C string.
    if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as above.
    let fd = unsafe { libc::openat(parent.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, true))
}

fn set_owner_mode(fd: &OwnedFd, mode: u32, owner: Owner) -> io::Result<()> {
    // SAFETY: valid descriptor.
    unsafe {
        if let Some((uid, gid)) = owner {
            if libc::fchown(fd.as_raw_fd(), uid, gid) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Removes `name` in `parent` and everything below it, never following a symlink.
pub(crate) fn remove_tree(parent: &OwnedFd, name: &CString) -> io::Result<()> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor and C string.
    let fd = unsafe { libc::openat(parent.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        // Not a directory (or gone): unlink whatever it is.
        // SAFETY: as above.
        return match unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        };
    }
    // SAFETY: a descriptor the kernel just returned.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    for child in archive::list_dir(&dir)? {
        if let Ok(c) = CString::new(child) {
            remove_tree(&dir, &c)?;
        }
    }
    // SAFETY: as above.
    match unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
