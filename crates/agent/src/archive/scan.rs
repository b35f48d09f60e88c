//! Reading and validating a tar.gz stream.

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;
use rds_protocol::MAX_PATH_BYTES;

/// Longest path component, in bytes.
const MAX_COMPONENT_BYTES: usize = 255;
/// Largest pax or GNU long-name record read into memory.
const MAX_METADATA_BYTES: u64 = 64 * 1024;

/// What one archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Files and directories.
    pub entries: usize,
    /// Sum of file bytes, counted as read.
    pub bytes: u64,
}

impl Limits {
    /// Headers of any kind (metadata included) read before giving up.
    fn headers(&self) -> usize {
        self.entries.saturating_mul(4).saturating_add(16)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
}

/// One validated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated, no `.`/`..`/empty components; empty for the archive root (`./`).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits from the archive with setuid, setgid and sticky dropped.
    pub mode: u32,
    /// Seconds since the epoch, when the archive says.
    pub mtime: Option<i64>,
}

impl Entry {
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.path.split(|b| *b == b'/').filter(|c| !c.is_empty())
    }

    pub(crate) fn display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Why an archive was refused; the text is the reply's `detail`.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a gzip-compressed tar archive: {0}")]
    Corrupt(String),
    #[error("entry '{path}' is a {kind}; only regular files and directories are allowed")]
    EntryType { path: String, kind: &'static str },
    #[error("entry '{0}' has an absolute path")]
    Absolute(String),
    #[error("entry '{0}' has a '..' component")]
    DotDot(String),
    #[error("entry '{0}' has a NUL byte in its path")]
    Nul(String),
    #[error("entry '{0}' has an empty path")]
    Empty(String),
    #[error("entry '{0}...' has a path longer than {MAX_PATH_BYTES} bytes")]
    PathTooLong(String),
    #[error("entry '{0}' has a path component longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong(String),
    #[error("'{0}' is a file in one entry and a directory in another")]
    Conflict(String),
    #[error("more than {0} entries")]
    TooManyEntries(usize),
    #[error("files unpack to more than {0} bytes")]
    TooLarge(u64),
    #[error("a pax or long-name record is larger than {MAX_METADATA_BYTES} bytes")]
    MetadataTooLarge,
    #[error("entry '{0}' uses an unsupported pax record ({1})")]
    Pax(String, String),
    /// Extraction only: the destination had something in the way, or a write failed.
    #[error("cannot write '{path}': {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// Errors that are the archive's or the destination's fault (400), rather than the agent's (500).
    pub fn is_caller_fault(&self) -> bool {
        match self {
            ArchiveError::Write { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc::EEXIST
                        | libc::ENOTDIR
                        | libc::EISDIR
                        | libc::ELOOP
                        | libc::EACCES
                        | libc::EPERM
                        | libc::ENXIO
                        | libc::ENOSPC
                        | libc::EDQUOT
                        | libc::EROFS
                        | libc::ENAMETOOLONG
                )
            ),
            _ => true,
        }
    }
}

fn corrupt(e: io::Error) -> ArchiveError {
    ArchiveError::Corrupt(e.to_string())
}

/// Counts file bytes across the whole archive and stops at the limit.
struct Counted<'a, R> {
    inner: R,
    total: &'a mut u64,
    limit: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.total += n as u64;
        if *self.total > self.limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "over the cap"));
        }
        Ok(n)
    }
}

/// Pax records that matter to us.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    mtime: Option<i64>,
    size: Option<u64>,
    sparse: bool,
}

fn parse_pax(data: &[u8]) -> Result<Pax, ArchiveError> {
    let mut pax = Pax::default();
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.map_err(corrupt)?;
        match ext.key_bytes() {
            b"path" => pax.path = Some(ext.value_bytes().to_vec()),
            b"mtime" => {
                let v = String::from_utf8_lossy(ext.value_bytes());
                pax.mtime = v.split('.').next().and_then(|s| s.parse().ok());
            }
            b"size" => {
                let v = String::from_utf8_lossy(ext.value_bytes());
                pax.size = Some(v.parse().map_err(|_| {
                    ArchiveError::Corrupt("pax size record is not a number".into())
                })?);
            }
            k if k.starts_with(b"GNU.sparse") => pax.sparse = true,
            _ => {}
        }
    }
    Ok(pax)
}

fn read_metadata(entry: &mut impl Read) -> Result<Vec<u8>, ArchiveError> {
    let mut data = Vec::new();
    entry
        .take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() as u64 > MAX_METADATA_BYTES {
        return Err(ArchiveError::MetadataTooLarge);
    }
    Ok(data)
}

/// Applies the path rules; returns the normalised relative path (empty for the root).
pub fn normalize_path(raw: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let shown = || String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
    if raw.contains(&0) {
        return Err(ArchiveError::Nul(shown()));
    }
    if raw.is_empty() {
        return Err(ArchiveError::Empty(shown()));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(ArchiveError::PathTooLong(shown()));
    }
    if raw[0] == b'/' {
        return Err(ArchiveError::Absolute(shown()));
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(ArchiveError::DotDot(shown())),
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err(ArchiveError::ComponentTooLong(shown()))
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

fn type_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "unsupported entry type",
    }
}

/// Reads the archive from `reader` (gzip-compressed tar), calling `on_entry` for each file and directory
/// with a reader of its data (which `on_entry` may leave unread; the rest is drained and counted).
/// Returns the number of entries and file bytes.
pub fn scan<R: Read>(
    reader: R,
    limits: Limits,
    mut on_entry: impl FnMut(&Entry, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<(usize, u64), ArchiveError> {
    let mut archive = tar::Archive::new(MultiGzDecoder::new(reader));
    let entries = archive.entries().map_err(corrupt)?.raw(true);
    let (mut count, mut headers, mut total) = (0usize, 0usize, 0u64);
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax: Option<Pax> = None;
    for raw in entries {
        let mut raw = raw.map_err(corrupt)?;
        headers += 1;
        if headers > limits.headers() {
            return Err(ArchiveError::TooManyEntries(limits.entries));
        }
        let header = raw.header().clone();
        let kind = header.entry_type();
        match kind {
            tar::EntryType::GNULongName => {
                let mut name = read_metadata(&mut raw)?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                long_name = Some(name);
                continue;
            }
            tar::EntryType::GNULongLink | tar::EntryType::XGlobalHeader => {
                read_metadata(&mut raw)?;
                continue;
            }
            tar::EntryType::XHeader => {
                pax = Some(parse_pax(&read_metadata(&mut raw)?)?);
                continue;
            }
            _ => {}
        }
        let this_pax = pax.take().unwrap_or_default();
        let name = this_pax
            .path
            .or(long_name.take())
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let path = normalize_path(&name)?;
        let shown = || String::from_utf8_lossy(&name[..name.len().min(200)]).into_owned();
        let kind = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            other => {
                return Err(ArchiveError::EntryType {
                    path: shown(),
                    kind: type_name(other),
                })
            }
        };
        if this_pax.sparse {
            return Err(ArchiveError::Pax(shown(), "GNU sparse".into()));
        }
        let size = header.entry_size().map_err(corrupt)?;
        if this_pax.size.is_some_and(|s| s != size) {
            return Err(ArchiveError::Pax(shown(), "size".into()));
        }
        if kind == Kind::File && path.is_empty() {
            return Err(ArchiveError::Empty(shown()));
        }
        count += 1;
        if count > limits.entries {
            return Err(ArchiveError::TooManyEntries(limits.entries));
        }
        let entry = Entry {
            path,
            kind,
            mode: header.mode().unwrap_or(0o644) & 0o777,
            mtime: this_pax
                .mtime
                .or_else(|| header.mtime().ok().and_then(|m| i64::try_from(m).ok())),
        };
        let mut data = Counted {
            inner: &mut raw,
            total: &mut total,
            limit: limits.bytes,
        };
        let outcome = on_entry(&entry, &mut data).and_then(|()| {
            io::copy(&mut data, &mut io::sink())
                .map_err(corrupt)
                .map(drop)
        });
        if total > limits.bytes {
            return Err(ArchiveError::TooLarge(limits.bytes));
        }
        outcome?;
    }
    if long_name.is_some() || pax.is_some() {
        return Err(ArchiveError::Corrupt(
            "a long-name or pax record describes no entry".into(),
        ));
    }
    Ok((count, total))
}

/// The validation pass: every rule of `docs/reference/agent-protocol.md` §7, nothing written.
/// Returns entries and file bytes.
pub fn validate<R: Read>(reader: R, limits: Limits) -> Result<(usize, u64), ArchiveError> {
    let mut seen: Vec<(Vec<u8>, Kind)> = Vec::new();
    let counted = scan(reader, limits, |entry, _| {
        seen.push((entry.path.clone(), entry.kind));
        Ok(())
    })?;
    check_conflicts(seen)?;
    Ok(counted)
}

/// A path may not be a file in one entry and a directory (explicit, or as a parent) in another.
/// Sorting by components (`/` mapped to NUL, which no name holds) puts each path's descendants right
/// after it.
fn check_conflicts(mut seen: Vec<(Vec<u8>, Kind)>) -> Result<(), ArchiveError> {
    for (path, _) in seen.iter_mut() {
        for b in path.iter_mut() {
            if *b == b'/' {
                *b = 0;
            }
        }
    }
    seen.sort();
    let shown = |p: &[u8]| String::from_utf8_lossy(p).replace('\0', "/");
    for pair in seen.windows(2) {
        let ((a, ak), (b, bk)) = (&pair[0], &pair[1]);
        if a == b {
            if ak != bk {
                return Err(ArchiveError::Conflict(shown(a)));
            }
        } else if *ak == Kind::File && b.len() > a.len() && b.starts_with(a) && b[a.len()] == 0 {
            return Err(ArchiveError::Conflict(shown(a)));
        }
    }
    Ok(())
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::File => "file",
            Kind::Dir => "directory",
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use proptest::prelude::*;
    use std::io::Write;

    /// One raw tar member: name bytes as stored, type flag, data.
    pub struct Member<'a> {
        pub name: &'a [u8],
        pub kind: u8,
        pub data: &'a [u8],
    }

    pub fn m<'a>(name: &'a str, kind: u8, data: &'a [u8]) -> Member<'a> {
        Member {
            name: name.as_bytes(),
            kind,
            data,
        }
    }

    fn header(name: &[u8], kind: u8, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        let n = name.len().min(100);
        gnu.name[..n].copy_from_slice(&name[..n]);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_mode(0o4755);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        h
    }

    /// An uncompressed tar of `members`; names over 100 bytes get a GNU long-name record first.
    pub fn tar_bytes(members: &[Member<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for mem in members {
            if mem.name.len() > 100 {
                let mut data = mem.name.to_vec();
                data.push(0);
                let h = header(b"././@LongLink", b'L', data.len() as u64);
                b.append(&h, data.as_slice()).unwrap();
            }
            let h = header(mem.name, mem.kind, mem.data.len() as u64);
            b.append(&h, mem.data).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    const LIMITS: Limits = Limits {
        entries: 10_000,
        bytes: 250 * 1024 * 1024,
    };

    fn check(members: &[Member<'_>]) -> Result<(usize, u64), ArchiveError> {
        validate(gz(&tar_bytes(members)).as_slice(), LIMITS)
    }

    #[test]
    fn accepts_files_and_dirs() {
        let got = check(&[
            m("./", b'5', b""),
            m("./a/", b'5', b""),
            m("./a/b.txt", b'0', b"hello"),
            m("c/d/e", b'0', b"xy"),
            m("c/d/e", b'0', b"again"),
            m("f", b'7', b""),
        ])
        .unwrap();
        assert_eq!(got, (6, 12));
    }

    #[test]
    fn entries_are_normalised_and_modes_cleaned() {
        let mut seen = Vec::new();
        scan(
            gz(&tar_bytes(&[m("./x//y/./z", b'0', b"1")])).as_slice(),
            LIMITS,
            |e, _| {
                seen.push(e.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen[0].path, b"x/y/z");
        assert_eq!(seen[0].mode, 0o755, "setuid dropped");
        assert_eq!(seen[0].mtime, Some(1_600_000_000));
    }

    #[test]
    fn refuses_escapes() {
        assert!(matches!(
            check(&[m("../x", b'0', b"")]),
            Err(ArchiveError::DotDot(_))
        ));
        assert!(matches!(
            check(&[m("a/../../x", b'0', b"")]),
            Err(ArchiveError::DotDot(_))
        ));
        assert!(matches!(
            check(&[m("a/..", b'5', b"")]),
            Err(ArchiveError::DotDot(_))
        ));
        assert!(matches!(
            check(&[m("/abs", b'0', b"")]),
            Err(ArchiveError::Absolute(_))
        ));
        assert!(matches!(
            check(&[m("", b'0', b"")]),
            Err(ArchiveError::Empty(_))
        ));
        assert!(matches!(
            check(&[m("./", b'0', b"x")]),
            Err(ArchiveError::Empty(_))
        ));
    }

    #[test]
    fn refuses_other_entry_types() {
        for (kind, name) in [
            (b'2', "symlink"),
            (b'1', "hard link"),
            (b'3', "character device"),
            (b'4', "block device"),
            (b'6', "FIFO"),
            (b'S', "sparse file"),
            (b'V', "unsupported entry type"),
        ] {
            match check(&[m("ok", b'0', b""), m("x", kind, b"")]) {
                Err(ArchiveError::EntryType { kind: k, .. }) => assert_eq!(k, name),
                other => panic!("{kind}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_too_many_entries() {
        let names: Vec<String> = (0..20_000).map(|i| format!("f{i}")).collect();
        let members: Vec<Member<'_>> = names.iter().map(|n| m(n, b'0', b"")).collect();
        assert!(matches!(
            check(&members),
            Err(ArchiveError::TooManyEntries(10_000))
        ));
        let members: Vec<Member<'_>> = names[..10_000].iter().map(|n| m(n, b'0', b"")).collect();
        assert_eq!(check(&members).unwrap().0, 10_000);
    }

    /// A small gzip whose one file inflates far past the cap: refused once the cap is read, without
    /// reading (or holding) the rest.
    #[test]
    fn refuses_a_gzip_bomb() {
        let limits = Limits {
            entries: 10,
            bytes: 4 * 1024 * 1024,
        };
        let size = 64 * 1024 * 1024u64;
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(header(b"bomb", b'0', size).as_bytes()).unwrap();
        io::copy(&mut io::repeat(0).take(size), &mut e).unwrap();
        e.write_all(&[0u8; 1024]).unwrap();
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 256 * 1024, "{}", bomb.len());
        assert!(matches!(
            validate(bomb.as_slice(), limits),
            Err(ArchiveError::TooLarge(_))
        ));
        // The sum counts across entries, too.
        let data = vec![1u8; 3 * 1024 * 1024];
        let two = gz(&tar_bytes(&[m("a", b'0', &data), m("b", b'0', &data)]));
        assert!(matches!(
            validate(two.as_slice(), limits),
            Err(ArchiveError::TooLarge(_))
        ));
    }

    #[test]
    fn refuses_file_dir_conflicts() {
        for members in [
            vec![m("a", b'0', b""), m("a/b", b'0', b"")],
            vec![m("a/b", b'0', b""), m("a", b'0', b"")],
            vec![m("a/", b'5', b""), m("a", b'0', b"")],
            vec![m("a", b'0', b""), m("a/", b'5', b"")],
            vec![
                m("x/a", b'0', b""),
                m("x/a-b", b'0', b""),
                m("x/a/c/d", b'5', b""),
            ],
        ] {
            assert!(matches!(check(&members), Err(ArchiveError::Conflict(_))));
        }
        assert!(check(&[
            m("a-b", b'0', b""),
            m("a/b", b'0', b""),
            m("a.b", b'0', b"")
        ])
        .is_ok());
    }

    #[test]
    fn long_names() {
        let long_ok = format!("{}/{}", "d".repeat(200), "f".repeat(250));
        assert_eq!(check(&[m(&long_ok, b'0', b"x")]).unwrap().0, 1);
        let component = "c".repeat(256);
        assert!(matches!(
            check(&[m(&component, b'0', b"")]),
            Err(ArchiveError::ComponentTooLong(_))
        ));
        let too_long = vec!["abcdefgh"; 600].join("/");
        assert!(matches!(
            check(&[m(&too_long, b'0', b"")]),
            Err(ArchiveError::PathTooLong(_))
        ));
        let with_nul = Member {
            name: &[b'a'; 101]
                .iter()
                .copied()
                .chain(*b"\0b")
                .collect::<Vec<u8>>(),
            kind: b'0',
            data: b"",
        };
        assert!(matches!(check(&[with_nul]), Err(ArchiveError::Nul(_))));
        let huge_meta = vec![b'a'; 100 * 1024];
        let bytes = tar_bytes(&[Member {
            name: b"././@LongLink",
            kind: b'L',
            data: &huge_meta,
        }]);
        assert!(matches!(
            validate(gz(&bytes).as_slice(), LIMITS),
            Err(ArchiveError::MetadataTooLarge)
        ));
    }

    #[test]
    fn pax_paths_are_checked_too() {
        let record = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            while format!("{n}{body}").len() != n {
                n += 1;
            }
            format!("{n}{body}")
        };
        let pax = record("path", "../evil");
        let bytes = tar_bytes(&[m("PaxHeader", b'x', pax.as_bytes()), m("fine", b'0', b"")]);
        assert!(matches!(
            validate(gz(&bytes).as_slice(), LIMITS),
            Err(ArchiveError::DotDot(_))
        ));
        let pax = record("path", "good/name");
        let bytes = tar_bytes(&[m("PaxHeader", b'x', pax.as_bytes()), m("x", b'0', b"1")]);
        let mut seen = Vec::new();
        scan(gz(&bytes).as_slice(), LIMITS, |e, _| {
            seen.push(e.path.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [b"good/name".to_vec()]);
        let pax = record("size", "5");
        let bytes = tar_bytes(&[m("PaxHeader", b'x', pax.as_bytes()), m("x", b'0', b"1")]);
        assert!(matches!(
            validate(gz(&bytes).as_slice(), LIMITS),
            Err(ArchiveError::Pax(..))
        ));
        let bytes = tar_bytes(&[
            m("PaxHeader", b'g', record("comment", "hi").as_bytes()),
            m("x", b'0', b"1"),
        ]);
        assert!(validate(gz(&bytes).as_slice(), LIMITS).is_ok());
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(matches!(
            validate(&b"not gzip at all"[..], LIMITS),
            Err(ArchiveError::Corrupt(_))
        ));
        assert!(matches!(
            validate(gz(b"not a tar").as_slice(), LIMITS),
            Err(ArchiveError::Corrupt(_))
        ));
        let full = tar_bytes(&[m("a", b'0', &[7u8; 5000])]);
        let cut = gz(&full[..2048]);
        assert!(matches!(
            validate(cut.as_slice(), LIMITS),
            Err(ArchiveError::Corrupt(_))
        ));
        assert!(
            validate(gz(b"").as_slice(), LIMITS).is_ok(),
            "an empty archive is fine"
        );
    }

    fn assert_safe(path: &[u8]) {
        assert!(!path.starts_with(b"/"), "{path:?}");
        assert!(!path.contains(&0), "{path:?}");
        assert!(path.len() <= MAX_PATH_BYTES);
        for c in path.split(|b| *b == b'/') {
            assert!(
                c != b".." && c != b"." && !c.is_empty() && c.len() <= 255,
                "{path:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), zip in any::<bool>()) {
            let input = if zip { gz(&bytes) } else { bytes };
            let _ = scan(input.as_slice(), LIMITS, |e, _| { assert_safe(&e.path); Ok(()) });
        }

        #[test]
        fn mutated_headers_never_escape(
            edits in proptest::collection::vec((0usize..2048, any::<u8>()), 1..24),
            fix_cksum in any::<bool>(),
        ) {
            let mut bytes = tar_bytes(&[
                m("dir/", b'5', b""),
                m("dir/file.txt", b'0', b"hello world"),
                m(&"n".repeat(150), b'0', b"long"),
                m("x", b'0', b"y"),
            ]);
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if fix_cksum {
                for block in bytes.chunks_mut(512) {
                    if block.iter().any(|b| *b != 0) {
                        let mut h = tar::Header::new_old();
                        h.as_mut_bytes().copy_from_slice(block);
                        h.set_cksum();
                        block.copy_from_slice(h.as_bytes());
                    }
                }
            }
            let _ = scan(gz(&bytes).as_slice(), LIMITS, |e, _| { assert_safe(&e.path); Ok(()) });
        }

        #[test]
        fn arbitrary_names_are_safe_or_refused(name in proptest::collection::vec(
            prop_oneof![Just(b'/'), Just(b'.'), Just(b'a'), Just(0u8), any::<u8>()], 1..300)) {
            let members = [Member { name: &name, kind: b'0', data: b"" }];
            let _ = scan(gz(&tar_bytes(&members)).as_slice(), LIMITS, |e, _| { assert_safe(&e.path); Ok(()) });
        }
    }
}
