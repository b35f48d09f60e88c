//! Archives end to end (`docs/reference/agent-protocol.md` §7): upload, download and replace-tree
//! over the socket, with the agent running as root and dropping to uid 1000 for the file work.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Agent, Reply};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

macro_rules! require_root {
    () => {
        if !common::root_or_skip(module_path!()) {
            return;
        }
    };
}

/// Deterministic pseudo-random bytes (xorshift), so the test needs no RNG crate.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// (path, type flag, data) members, written raw (so bad names survive) and gzipped.
fn targz(members: &[(&str, u8, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, kind, data) in members {
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_size(data.len() as u64);
        h.set_mode(if *kind == b'5' { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        if *kind == b'2' || *kind == b'1' {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn upload(agent: &Agent, dest: &str, body: &[u8]) -> Reply {
    agent.request(
        "POST",
        &format!("/files/upload?dest={dest}"),
        &[("Content-Type", "application/gzip")],
        body,
    )
}

/// Unpacks a downloaded tar.gz into name → (type, sha256 or link target, mode).
fn listing(body: &[u8]) -> BTreeMap<String, (char, String, u32)> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(GzDecoder::new(body));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap();
        let value = if kind.is_symlink() {
            (
                'l',
                entry.link_name().unwrap().unwrap().display().to_string(),
            )
        } else if kind.is_dir() {
            ('d', String::new())
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            ('f', sha(&data))
        };
        out.insert(name, (value.0, value.1, mode));
    }
    out
}

fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn upload_then_download_round_trips() {
    require_root!();
    let agent = Agent::start("files-roundtrip");
    let big = noise(5 * 1024 * 1024, 0x9E37_79B9_7F4A_7C15);
    let small = b"hello\n".to_vec();
    let script = b"#!/bin/sh\necho hi\n".to_vec();

    // A source tree built with the tar crate's ordinary builder, as a client would.
    let src = agent.dir.join("src");
    std::fs::create_dir_all(src.join("nested/deeper/deepest")).unwrap();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("nested/deeper/deepest/small.txt"), &small).unwrap();
    std::fs::write(src.join("nested/run.sh"), &script).unwrap();
    std::fs::set_permissions(
        src.join("nested/run.sh"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    b.append_dir_all(".", &src).unwrap();
    let body = b.into_inner().unwrap().finish().unwrap();
    assert!(body.len() < 10 * 1024 * 1024);

    let r = upload(&agent, "%2Fworkspace%2Fup%2Fa", &body);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(leftovers(&agent.run_dir()), 0, "the spool is gone");

    let dest = agent.workspace.join("up/a");
    for (p, mode) in [
        ("", 0o755),
        ("big.bin", 0o644),
        ("nested", 0o755),
        ("nested/run.sh", 0o755),
        ("nested/deeper/deepest/small.txt", 0o644),
    ] {
        let meta = std::fs::metadata(dest.join(p)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "{p}");
        assert_eq!(meta.mode() & 0o7777, mode, "{p}");
    }
    assert_eq!(
        std::fs::metadata(agent.workspace.join("up")).unwrap().uid(),
        1000
    );
    assert_eq!(
        sha(&std::fs::read(dest.join("big.bin")).unwrap()),
        sha(&big)
    );

    // A second upload merges.
    let more = targz(&[("extra.txt", b'0', b"more")]);
    assert_eq!(upload(&agent, "up/a", &more).status, 204);
    assert!(dest.join("big.bin").exists() && dest.join("extra.txt").exists());

    // Download the directory: its contents as ./…, checksums equal.
    std::os::unix::fs::symlink("nested/run.sh", dest.join("link")).unwrap();
    std::fs::write(dest.join("secret"), b"root only").unwrap();
    std::fs::set_permissions(dest.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = agent.request("GET", "/files/download?path=up/a", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/gzip"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let got = listing(&r.body);
    assert_eq!(got["./"].0, 'd');
    assert_eq!(got["./big.bin"].1, sha(&big));
    assert_eq!(got["./nested/deeper/deepest/small.txt"].1, sha(&small));
    assert_eq!(got["./nested/run.sh"], ('f', sha(&script), 0o755));
    assert_eq!(got["./link"], ('l', "nested/run.sh".to_string(), 0o777));
    assert!(
        !got.contains_key("./secret"),
        "unreadable by uid 1000: skipped"
    );

    // A file downloads as its basename.
    let r = agent.request(
        "GET",
        "/files/download?path=/workspace/up/a/big.bin",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    let got = listing(&r.body);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["big.bin"]);
    assert_eq!(got["big.bin"].1, sha(&big));
    assert!(r
        .header("content-disposition")
        .unwrap()
        .contains("big.bin.tar.gz"));

    // Over the manager's budget: 413 before any byte of archive.
    let r = agent.request(
        "GET",
        "/files/download?path=up",
        &[("X-RDS-Max-Response-Bytes", "1048576")],
        b"",
    );
    assert_eq!(
        (r.status, r.message().as_str()),
        (413, "Download too large")
    );
}

#[test]
fn bad_archives_are_refused_and_leave_nothing() {
    require_root!();
    let agent = Agent::start("files-bad");
    let many: Vec<String> = (0..20_000).map(|i| format!("f{i}")).collect();
    let many_members: Vec<(&str, u8, &[u8])> =
        many.iter().map(|n| (n.as_str(), b'0', &b""[..])).collect();
    let long = "c".repeat(99);
    let mut bomb = GzEncoder::new(Vec::new(), Compression::best());
    let size = 300u64 * 1024 * 1024;
    let mut h = tar::Header::new_gnu();
    h.set_path("bomb").unwrap();
    h.set_size(size);
    h.set_cksum();
    bomb.write_all(h.as_bytes()).unwrap();
    std::io::copy(&mut std::io::repeat(0).take(size), &mut bomb).unwrap();
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", targz(&[("ok", b'0', b"x"), ("../x", b'0', b"x")])),
        ("absolute", targz(&[("/abs", b'0', b"x")])),
        ("symlink", targz(&[("ok", b'0', b"x"), ("l", b'2', b"")])),
        ("hardlink", targz(&[("h", b'1', b"")])),
        ("fifo", targz(&[("p", b'6', b"")])),
        ("device", targz(&[("d", b'3', b"")])),
        ("conflict", targz(&[("a", b'0', b"x"), ("a/b", b'0', b"y")])),
        ("too many", targz(&many_members)),
        ("not gzip", b"plain text".to_vec()),
        ("bomb", bomb),
        ("component", {
            // A 300-byte component needs a long-name record.
            let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            b.append_data(&mut h, format!("{long}{long}{long}x"), &b"z"[..])
                .unwrap();
            b.into_inner().unwrap().finish().unwrap()
        }),
    ];
    for (what, body) in cases {
        let r = upload(&agent, "target", &body);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.message(), "Invalid upload dest or archive", "{what}");
        assert!(r.json()["detail"].is_string(), "{what}");
        assert!(
            !agent.workspace.join("target").exists(),
            "{what}: nothing written"
        );
        assert_eq!(leftovers(&agent.run_dir()), 0, "{what}: spool removed");
    }
    assert_eq!(leftovers(&agent.workspace), 0);

    // Body over 10 MiB.
    let r = upload(&agent, "target", &noise(11 * 1024 * 1024, 7));
    assert_eq!((r.status, r.message().as_str()), (413, "Body too large"));

    // Bad destinations.
    let ok = targz(&[("f", b'0', b"x")]);
    let r = agent.request("POST", "/files/upload", &[], &ok);
    assert_eq!((r.status, r.message().as_str()), (400, "dest is required"));
    for (dest, detail) in [
        ("/etc", "Only /workspace paths are allowed"),
        ("/home/user", "Only /workspace paths are allowed"),
        ("../x", "Path escapes /workspace"),
    ] {
        let r = upload(&agent, dest, &ok);
        assert_eq!(r.status, 400, "{dest}");
        assert_eq!(r.json()["detail"], detail, "{dest}");
    }
    std::fs::write(agent.workspace.join("afile"), b"").unwrap();
    let r = upload(&agent, "afile", &ok);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = upload(&agent, "afile/sub", &ok);
    assert_eq!(r.status, 400, "{}", r.text());

    // A symlink already in the destination is never followed.
    let outside = agent.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::chown(&outside, Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::symlink(&outside, agent.workspace.join("link")).unwrap();
    let r = upload(&agent, ".", &targz(&[("link/x", b'0', b"x")]));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = upload(&agent, "link", &ok);
    assert_eq!(
        r.status,
        400,
        "dest through an escaping symlink: {}",
        r.text()
    );
    assert_eq!(leftovers(&outside), 0);
    // A file the user cannot write is not overwritten.
    std::fs::write(agent.workspace.join("rootfile"), b"keep").unwrap();
    let r = upload(&agent, ".", &targz(&[("rootfile", b'0', b"new")]));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        std::fs::read(agent.workspace.join("rootfile")).unwrap(),
        b"keep"
    );
}

#[test]
fn download_errors() {
    require_root!();
    let agent = Agent::start("files-download");
    let get = |q: &str| agent.request("GET", &format!("/files/download{q}"), &[], b"");
    let r = get("");
    assert_eq!((r.status, r.message().as_str()), (400, "path is required"));
    let r = get("?path=");
    assert_eq!((r.status, r.message().as_str()), (400, "path is required"));
    for (path, detail) in [
        ("/etc", "Only /workspace paths are allowed"),
        ("..", "Path escapes /workspace"),
        ("missing", "no such file or directory"),
        ("escape", "Path escapes /workspace"),
    ] {
        std::os::unix::fs::symlink("/etc", agent.workspace.join("escape")).ok();
        let r = get(&format!("?path={path}"));
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.message(), "Invalid download path", "{path}");
        assert_eq!(r.json()["detail"], detail, "{path}");
    }
    assert_eq!(
        agent
            .request("POST", "/files/download?path=.", &[], b"")
            .status,
        405
    );
    // The whole workspace downloads; the escaping symlink is stored as a symlink, not followed.
    let r = get("?path=/workspace");
    assert_eq!(r.status, 200);
    let got = listing(&r.body);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["./", "./escape"]);
    assert_eq!(got["./escape"].1, "/etc");
}

#[test]
fn replace_tree_swaps_whole_trees() {
    require_root!();
    let agent = Agent::start("files-replace");
    let post = |q: &str, body: &[u8]| {
        agent.request(
            "POST",
            &format!("/internal/files/replace-tree?{q}"),
            &[],
            body,
        )
    };
    let first = targz(&[
        ("a/", b'5', b""),
        ("a/one", b'0', b"1"),
        ("top", b'0', b"t"),
    ]);
    let r = post(
        "dest=%2Fworkspace%2Fpeers&ownership=root&readOnly=true",
        &first,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let peers = agent.workspace.join("peers");
    for (p, mode) in [("", 0o555), ("a", 0o555), ("a/one", 0o444), ("top", 0o444)] {
        let meta = std::fs::symlink_metadata(peers.join(p)).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, mode), "{p}");
    }
    let second = targz(&[("b", b'0', b"2")]);
    let r = post(
        "dest=/workspace/peers&ownership=user&readOnly=false",
        &second,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let names: Vec<_> = std::fs::read_dir(&peers)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["b"]);
    let meta = std::fs::metadata(peers.join("b")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (1000, 0o644));
    assert_eq!(leftovers(&agent.workspace), 1, "no temporary tree left");

    let r = post("dest=/workspace/.rds", &first);
    assert_eq!(r.status, 204, "{}", r.text());
    for bad in [
        "dest=/workspace/other",
        "dest=/workspace",
        "dest=/etc",
        "",
        "dest=/workspace/.rds&ownership=nobody",
        "dest=/workspace/.rds&readOnly=yes",
    ] {
        assert_eq!(post(bad, &first).status, 400, "{bad}");
    }
    let r = post("dest=/workspace/.rds", &targz(&[("../x", b'0', b"")]));
    assert_eq!(r.status, 400);
    assert!(
        agent.workspace.join(".rds/top").exists(),
        "a refused archive changes nothing"
    );
}
