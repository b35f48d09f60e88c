//! Archives (`docs/reference/agent-protocol.md` §7): the tar.gz reader that validates uploads, the
//! extractor that writes them, and the writer that streams downloads.
//!
//! [`scan`] is the one reader: both the validation pass and the extraction pass go through it, so they
//! cannot disagree on what an archive holds. It reads the tar stream raw (no long-name or pax merging by
//! the `tar` crate, whose metadata reads are unbounded), applies pax and GNU long names itself with a
//! size cap, and counts file bytes as they are read, so a gzip bomb stops at the cap.

mod download;
mod extract;
mod scan;

pub use download::{estimate, list as list_dir, open_source, stream, Source};
pub use extract::{extract, ModePolicy, Owner};
pub use scan::{scan, validate, ArchiveError, Entry, Kind, Limits};
