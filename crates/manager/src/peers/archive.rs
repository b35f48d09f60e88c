//! Archives moved between guests for peers. A provider's `/workspace` arrives as the agent's tar.gz
//! download and is read as a stream, never unpacked into host files (`docs/reference/security.md`
//! §4): only regular files and directories are kept, symlinks are dropped, any other entry type, an
//! absolute path or `..` refuses the whole archive. The consumer's trees are written as new archives
//! for the agent's replace-tree.

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

/// Top-level names of a provider's workspace that never reach a consumer: runtime caches, the
/// provider's own peer trees and the manager's runtime files.
const DROPPED: &[&str] = &[".deno", ".tmp", ".rds", ".nvm", "peers"];
/// Entries of one provider archive.
const MAX_ENTRIES: u64 = 10_000;
/// File bytes of one provider archive, counted as read.
const MAX_UNPACKED: u64 = 250 * 1024 * 1024;
/// The agent's replace-tree limits (`rds_protocol::files`): checked here first, for a clear error.
const MAX_TREE_UNPACKED: u64 = rds_protocol::files::MAX_REPLACE_TREE_UNPACKED_BYTES;
const MAX_TREE_COMPRESSED: usize = 10 * 1024 * 1024;

/// A regular file of the provider's workspace.
#[derive(Debug, Clone)]
pub struct ProviderFile {
    pub mode: u32,
    pub size: u64,
    pub mtime: u64,
    /// Kept for the manifest always, for every file when the sources are mounted.
    pub data: Option<Vec<u8>>,
}

/// A provider's workspace after the sanitising rules, keyed by path relative to `/workspace`.
#[derive(Debug, Default)]
pub struct ProviderTree {
    pub files: BTreeMap<String, ProviderFile>,
    pub dirs: Vec<String>,
}

impl ProviderTree {
    /// Whether `path` is a regular file of the tree.
    pub fn has_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// The contents of `path`, when they were kept.
    pub fn contents(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path)?.data.as_deref()
    }
}

/// Reads the agent's tar.gz of `/workspace`. `keep_all` keeps every file's bytes (mounted
/// sources); otherwise only `keep`'s. Errors are the `<what is wrong>` of a peer error.
pub fn read_provider(gz: impl Read, keep_all: bool, keep: &str) -> Result<ProviderTree, String> {
    let mut archive = tar::Archive::new(GzDecoder::new(gz));
    let mut tree = ProviderTree::default();
    let (mut entries, mut unpacked) = (0u64, 0u64);
    let bad = |e: std::io::Error| format!("provider workspace archive is unreadable: {e}");
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(format!(
                "provider workspace has more than {MAX_ENTRIES} entries"
            ));
        }
        let raw = entry.path().map_err(bad)?.into_owned();
        let Some(rel) = relative(&raw)? else {
            continue;
        };
        if DROPPED.contains(&rel.split('/').next().unwrap_or_default()) {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            tree.dirs.push(rel);
            continue;
        }
        if !kind.is_file() {
            return Err(format!(
                "provider workspace entry {rel} is not a file or directory"
            ));
        }
        let mode = entry.header().mode().map_err(bad)?;
        let (size, mtime) = (entry.size(), entry.header().mtime().unwrap_or(0));
        let data = if keep_all || rel == keep {
            let mut buf = Vec::new();
            (&mut entry)
                .take(MAX_UNPACKED - unpacked + 1)
                .read_to_end(&mut buf)
                .map_err(bad)?;
            Some(buf)
        } else {
            None
        };
        // What was not kept is still read (the stream moves past it) and counted.
        let rest = std::io::copy(&mut entry, &mut std::io::sink()).map_err(bad)?;
        unpacked += data.as_ref().map_or(0, |d| d.len() as u64) + rest;
        if unpacked > MAX_UNPACKED {
            return Err(format!(
                "provider workspace holds more than {MAX_UNPACKED} bytes"
            ));
        }
        tree.files.insert(
            rel,
            ProviderFile {
                mode,
                size,
                mtime,
                data,
            },
        );
    }
    Ok(tree)
}

/// `./a/b` → `a/b`; the root itself → None; absolute or `..` → an error.
fn relative(path: &Path) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| format!("provider workspace path {path:?} is not UTF-8"))?,
            ),
            _ => {
                return Err(format!(
                    "provider workspace path {} leaves the workspace",
                    path.display()
                ))
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// A consumer tree being written: directories are added as files need them.
pub struct TreeBuilder {
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    dirs: std::collections::BTreeSet<String>,
    unpacked: u64,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        tar.mode(tar::HeaderMode::Deterministic);
        TreeBuilder {
            tar,
            dirs: Default::default(),
            unpacked: 0,
        }
    }

    /// Adds `path` (relative, `/`-separated) and its missing parent directories.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), String> {
        self.unpacked += data.len() as u64;
        if self.unpacked > MAX_TREE_UNPACKED {
            return Err(format!(
                "the peer tree would hold more than {MAX_TREE_UNPACKED} bytes"
            ));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 });
        self.tar
            .append_data(&mut h, path, data)
            .map_err(|e| format!("writing the peer tree: {e}"))
    }

    /// Adds directory `path` and its parents, once each.
    pub fn dir(&mut self, path: &str) -> Result<(), String> {
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_string());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        self.tar
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .map_err(|e| format!("writing the peer tree: {e}"))
    }

    /// The tar.gz, within the replace-tree limits.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        let gz = self
            .tar
            .into_inner()
            .and_then(|gz| gz.finish())
            .map_err(|e| format!("writing the peer tree: {e}"))?;
        if gz.len() > MAX_TREE_COMPRESSED {
            return Err(format!(
                "the peer tree would be larger than {MAX_TREE_COMPRESSED} bytes compressed"
            ));
        }
        Ok(gz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if kind.is_symlink() {
                h.set_size(0);
                h.set_link_name("/etc/passwd").unwrap();
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            } else {
                // Raw names: `append_data` would refuse the hostile ones this test needs.
                h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    use tar::EntryType as T;

    #[test]
    fn keeps_files_and_drops_links_and_runtime_dirs() {
        let gz = archive(&[
            ("./", T::Directory, b""),
            ("./.rds-peer/manifest.json", T::Regular, b"{}"),
            ("./lib/", T::Directory, b""),
            ("./lib/a.ts", T::Regular, b"export const a = 1"),
            ("./link", T::Symlink, b""),
            ("./peers/x/proxy.ts", T::Regular, b"x"),
            ("./.rds/peer-bridge.json", T::Regular, b"token"),
            ("./.deno/cache", T::Regular, b"c"),
        ]);
        let t = read_provider(&gz[..], false, ".rds-peer/manifest.json").unwrap();
        let names: Vec<_> = t.files.keys().cloned().collect();
        assert_eq!(names, [".rds-peer/manifest.json", "lib/a.ts"]);
        assert_eq!(t.contents(".rds-peer/manifest.json"), Some(&b"{}"[..]));
        assert_eq!(t.contents("lib/a.ts"), None);
        assert!(t.has_file("lib/a.ts") && !t.has_file("link"));
        let all = read_provider(&gz[..], true, "").unwrap();
        assert_eq!(all.contents("lib/a.ts"), Some(&b"export const a = 1"[..]));
    }

    #[test]
    fn refuses_escapes_and_special_entries() {
        let up = archive(&[("../etc/x", T::Regular, b"x")]);
        assert!(read_provider(&up[..], true, "")
            .unwrap_err()
            .contains("leaves the workspace"));
        let abs = archive(&[("/etc/x", T::Regular, b"x")]);
        assert!(read_provider(&abs[..], true, "").is_err());
        let fifo = archive(&[("./f", T::Fifo, b"")]);
        assert!(read_provider(&fifo[..], true, "")
            .unwrap_err()
            .contains("not a file or directory"));
        assert!(read_provider(&b"not gzip"[..], true, "").is_err());
    }

    #[test]
    fn built_trees_read_back_with_parents() {
        let mut b = TreeBuilder::new();
        b.file("math/proxy/lib/a.ts", b"export {}", 0o644).unwrap();
        b.file("math/run.sh", b"#!/bin/sh", 0o700).unwrap();
        b.file("index.json", b"{}", 0o644).unwrap();
        let gz = b.finish().unwrap();
        let mut seen = Vec::new();
        let mut a = tar::Archive::new(GzDecoder::new(&gz[..]));
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let mode = e.header().mode().unwrap();
            let path = e.path().unwrap().display().to_string();
            seen.push(format!("{} {mode:o}", path.trim_end_matches('/')));
        }
        assert_eq!(
            seen,
            [
                "math 755",
                "math/proxy 755",
                "math/proxy/lib 755",
                "math/proxy/lib/a.ts 644",
                "math/run.sh 755",
                "index.json 644"
            ]
        );
    }
}
