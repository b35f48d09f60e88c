//! Archive transfers (`docs/reference/agent-protocol.md` §7): limits, query parameters and reply
//! messages shared by both sides.
//!
//! Bodies are raw gzip-compressed tar streams, not JSON. The manager sends uploads with a
//! `Content-Length` (it buffers them first); the agent answers downloads with
//! `Content-Type: application/gzip` and `Transfer-Encoding: chunked`. Query values are
//! `application/x-www-form-urlencoded` (`+` or `%20` for a space, `%2B` for a plus).

/// Largest compressed archive accepted by upload and replace-tree (`Body too large` above it).
pub const MAX_ARCHIVE_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Sum of file bytes an upload may unpack to.
pub const MAX_UPLOAD_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// Sum of file bytes a replace-tree archive may unpack to.
pub const MAX_REPLACE_TREE_UNPACKED_BYTES: u64 = 50 * 1024 * 1024;
/// Files and directories one archive may hold.
pub const MAX_ARCHIVE_ENTRIES: usize = 10_000;
/// Bytes a download adds per entry when the agent checks it against the body budget.
pub const DOWNLOAD_ENTRY_OVERHEAD_BYTES: u64 = 512;
/// The two directories replace-tree may replace.
pub const REPLACE_TREE_DESTS: &[&str] = &["/workspace/peers", "/workspace/.rds"];

/// Query parameter names.
pub mod query {
    pub const DEST: &str = "dest";
    pub const PATH: &str = "path";
    pub const OWNERSHIP: &str = "ownership";
    pub const READ_ONLY: &str = "readOnly";
}

/// `message` texts of archive error replies; `detail` says what was wrong.
pub mod messages {
    pub const DEST_REQUIRED: &str = "dest is required";
    pub const INVALID_UPLOAD: &str = "Invalid upload dest or archive";
    pub const PATH_REQUIRED: &str = "path is required";
    pub const INVALID_DOWNLOAD: &str = "Invalid download path";
    pub const DOWNLOAD_TOO_LARGE: &str = "Download too large";
    pub const INVALID_REPLACE_TREE: &str = "Invalid replace-tree dest or archive";
}
