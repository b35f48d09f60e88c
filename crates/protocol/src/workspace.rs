//! The lexical path rules (`docs/reference/agent-protocol.md` §5), shared so that the manager can
//! refuse a path before it streams a body the agent would not read.

use crate::{messages, MAX_PATH_BYTES, WORKSPACE};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    Nul,
    TooLong,
    OutsideWorkspace,
    Escapes,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Nul => f.write_str("Path contains a NUL byte"),
            PathError::TooLong => write!(f, "Path is longer than {MAX_PATH_BYTES} bytes"),
            PathError::OutsideWorkspace => f.write_str(messages::ONLY_WORKSPACE),
            PathError::Escapes => f.write_str(messages::PATH_ESCAPES),
        }
    }
}

impl std::error::Error for PathError {}

/// `path` relative to the workspace root, never with `.`/`..` (empty for the root itself):
/// relative paths start at `/workspace`, absolute ones must be `/workspace` or below, and `..` may
/// not climb above it.
pub fn workspace_relative(path: &str) -> Result<PathBuf, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let rest = if path.starts_with('/') {
        let after = path
            .strip_prefix(WORKSPACE)
            .ok_or(PathError::OutsideWorkspace)?;
        if !(after.is_empty() || after.starts_with('/')) {
            return Err(PathError::OutsideWorkspace);
        }
        after.trim_start_matches('/')
    } else {
        path
    };
    let mut out = PathBuf::new();
    for component in Path::new(rest).components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(PathError::Escapes);
                }
            }
            // `rest` is relative, so neither can appear; refuse rather than guess.
            Component::RootDir | Component::Prefix(_) => return Err(PathError::Escapes),
        }
    }
    Ok(out)
}
