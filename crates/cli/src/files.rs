//! `rds cp`: files and directories in and out of a VM as tar.gz.
//!
//! `cp <dir> <id>:<path>` makes `<path>` hold the directory's contents (merged); `cp <file>
//! <id>:<path>` writes the file as `<path>`, or into `<path>` under its own name when `<path>` ends
//! with `/`. Downloads mirror this: a directory lands as `<local>` with its contents, a file as
//! `<local>` (or inside `<local>` when that is an existing directory).

use crate::client::{root_cause, Client, Failure};
use crate::progress::Progress;
use flate2::read::GzDecoder;
use futures::StreamExt;
use reqwest::Method;
use std::path::{Path, PathBuf};

/// `<uuid>:<path>` → (id, path).
pub fn remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    let is_uuid = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    is_uuid.then_some((id, path))
}

pub async fn cp(c: &Client, src: &str, dst: &str, json: bool) -> Result<(), Failure> {
    let bytes = match (remote(src), remote(dst)) {
        (None, Some((id, path))) => upload(c, Path::new(src), id, path).await?,
        (Some((id, path)), None) => download(c, id, path, Path::new(dst)).await?,
        _ => {
            return Err(Failure::usage(
                "cp needs exactly one side of the form <vm-id>:<path>",
            ))
        }
    };
    if json {
        println!("{}", serde_json::json!({"ok": true, "bytes": bytes}));
    }
    Ok(())
}

fn local_err(p: &Path, e: std::io::Error) -> Failure {
    Failure::usage(format!("{}: {e}", p.display()))
}

/// Where an upload goes: the `dest` directory and, for a file, the name inside it.
fn upload_target(remote_path: &str, local: &Path, is_dir: bool) -> (String, Option<String>) {
    if is_dir {
        return (remote_path.to_string(), None);
    }
    let own_name = || local.file_name().map(|n| n.to_string_lossy().into_owned());
    if remote_path.is_empty() || remote_path.ends_with('/') {
        let dest = if remote_path.is_empty() {
            "/workspace"
        } else {
            remote_path
        };
        return (dest.to_string(), own_name());
    }
    let p = Path::new(remote_path);
    let parent = p.parent().map(|d| d.to_string_lossy().into_owned());
    let dest = parent
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/workspace".into());
    (
        dest,
        p.file_name().map(|n| n.to_string_lossy().into_owned()),
    )
}

fn pack(local: &Path, is_dir: bool, name: Option<&str>) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    if is_dir {
        for entry in std::fs::read_dir(local)? {
            let entry = entry?;
            let name = entry.file_name();
            if entry.file_type()?.is_dir() {
                tar.append_dir_all(&name, entry.path())?;
            } else {
                tar.append_path_with_name(entry.path(), &name)?;
            }
        }
    } else {
        tar.append_path_with_name(local, name.unwrap_or("file"))?;
    }
    tar.into_inner()?.finish()
}

async fn upload(c: &Client, local: &Path, id: &str, path: &str) -> Result<u64, Failure> {
    let meta = std::fs::metadata(local).map_err(|e| local_err(local, e))?;
    let (dest, name) = upload_target(path, local, meta.is_dir());
    let body = pack(local, meta.is_dir(), name.as_deref()).map_err(|e| local_err(local, e))?;
    let len = body.len() as u64;
    let progress = Progress::new("upload", Some(len));
    let count = progress.counter();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = futures::stream::iter(chunks).inspect(move |c| {
        if let Ok(c) = c {
            count(c.len() as u64);
        }
    });
    let rb = c
        .request(
            Method::POST,
            &format!("/v1/vms/{id}/files/upload"),
            &[("dest", dest)],
        )
        .header("content-type", "application/gzip")
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(stream));
    c.send(rb).await?;
    progress.finish(len);
    Ok(len)
}

async fn download(c: &Client, id: &str, path: &str, local: &Path) -> Result<u64, Failure> {
    let rb = c.request(
        Method::GET,
        &format!("/v1/vms/{id}/files/download"),
        &[("path", path.to_string())],
    );
    let mut resp = c.send(rb).await?;
    let progress = Progress::new("download", resp.content_length());
    let count = progress.counter();
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Failure::conn(format!("download interrupted: {}", root_cause(&e))))?
    {
        count(chunk.len() as u64);
        body.extend_from_slice(&chunk);
    }
    unpack(&body, local).map_err(|e| local_err(local, e))?;
    progress.finish(body.len() as u64);
    Ok(body.len() as u64)
}

/// The single file's name when the archive is one file stored under its own name.
fn single_file(body: &[u8]) -> std::io::Result<Option<String>> {
    let mut ar = tar::Archive::new(GzDecoder::new(body));
    let mut names = Vec::new();
    for e in ar.entries()? {
        let e = e?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if !e.header().entry_type().is_file() || name.starts_with("./") || !names.is_empty() {
            return Ok(None);
        }
        names.push(name);
    }
    Ok(names.pop())
}

fn unpack(body: &[u8], local: &Path) -> std::io::Result<()> {
    match single_file(body)? {
        Some(name) => {
            let target: PathBuf = if local.is_dir() {
                local.join(&name)
            } else {
                local.into()
            };
            let mut ar = tar::Archive::new(GzDecoder::new(body));
            let mut entry = ar.entries()?.next().expect("one entry")?;
            let mut out = std::fs::File::create(&target)?;
            std::io::copy(&mut entry, &mut out)?;
            Ok(())
        }
        None => {
            std::fs::create_dir_all(local)?;
            tar::Archive::new(GzDecoder::new(body)).unpack(local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_remote_paths() {
        let id = "0b0e8a4c-3d5e-4f8e-9b1a-2c3d4e5f6a7b";
        assert_eq!(
            remote(&format!("{id}:/workspace/a")),
            Some((id, "/workspace/a"))
        );
        assert_eq!(remote("./dir:x"), None);
        assert_eq!(remote("C:/x"), None);
    }

    #[test]
    fn picks_upload_targets() {
        let f = Path::new("/tmp/a.txt");
        assert_eq!(
            upload_target("/workspace/b.txt", f, false),
            ("/workspace".into(), Some("b.txt".into()))
        );
        assert_eq!(
            upload_target("/workspace/d/", f, false),
            ("/workspace/d/".into(), Some("a.txt".into()))
        );
        assert_eq!(
            upload_target("x.txt", f, false),
            ("/workspace".into(), Some("x.txt".into()))
        );
        assert_eq!(
            upload_target("/workspace/d", Path::new("/tmp/d"), true),
            ("/workspace/d".into(), None)
        );
    }

    #[test]
    fn round_trips_a_directory_and_a_file_locally() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/x.bin"), [0u8, 1, 2, 255]).unwrap();
        std::fs::write(src.join("a.txt"), "hello").unwrap();
        let body = pack(&src, true, None).unwrap();
        assert_eq!(single_file(&body).unwrap(), None);
        unpack(&body, &t.path().join("out")).unwrap();
        assert_eq!(
            std::fs::read(t.path().join("out/sub/x.bin")).unwrap(),
            [0u8, 1, 2, 255]
        );
        let one = pack(&src.join("a.txt"), false, Some("a.txt")).unwrap();
        assert_eq!(single_file(&one).unwrap().as_deref(), Some("a.txt"));
        unpack(&one, &t.path().join("copy.txt")).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("copy.txt")).unwrap(),
            "hello"
        );
    }
}
