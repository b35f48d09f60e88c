//! The sandbox inside a real guest, through the HTTP API: run-ts (Deno), run-js (Node), files as
//! tar.gz, exec logs, VM logs, clock sync. One VM serves every check (boots are the slow part).

mod common;

use common::archive::{self, Entry};
use common::TestManager;
use http::{Method, StatusCode};
use serde_json::{json, Value};

async fn run(tm: &TestManager, id: &str, kind: &str, body: Value) -> Value {
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{id}/{kind}"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{kind} {body}: {}", r.json);
    r.json
}

async fn sh(tm: &TestManager, id: &str, cmd: &str) -> String {
    let r = tm.exec(id, json!({ "cmd": cmd })).await;
    assert_eq!(r.status, StatusCode::OK, "{cmd}: {}", r.json);
    r.json["stdout"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_story() {
    let Some((image, vhost)) = common::guest_prerequisites("sandbox_story") else {
        return;
    };
    let tm = TestManager::start(Some(&image), &vhost, &[]).await;
    let id = tm.create_vm(json!({"cpu": 1, "memMb": 512})).await;

    // Clock set by the manager at boot.
    let year: u32 = sh(&tm, &id, "date -u +%Y").await.trim().parse().unwrap();
    assert!(year >= 2026, "guest clock not synced: {year}");

    confinement(&tm, &id).await;
    runtimes(&tm, &id).await;
    files(&tm, &id).await;
    logs(&tm, &id).await;
    assert_eq!(
        tm.call(Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

/// What the sandbox user cannot reach inside its own guest: the writable disk's mount (its overlay
/// directories), the agent over vsock (no loopback transport in the guest), or PID 1.
async fn confinement(tm: &TestManager, id: &str) {
    assert_eq!(sh(tm, id, "id -u").await, "1000\n");
    assert_eq!(
        sh(tm, id, "stat -c %a:%U /run/rds-disk").await,
        "700:root\n"
    );
    let listing = sh(tm, id, "ls /run/rds-disk 2>&1; echo rc=$?").await;
    assert!(
        listing.contains("Permission denied") && listing.ends_with("rc=2\n"),
        "{listing}"
    );
    // AF_VSOCK (40) to the local CID (1) on the agent's port; sockaddr_vm is family, reserved,
    // port, cid, zero[4]. perl-base is part of every Debian system.
    let vsock = format!(
        "perl -e 'socket(S, 40, 1, 0) or die \"socket: $!\\n\"; \
         connect(S, pack(\"SSLLx4\", 40, 0, {}, 1)) or die \"connect: $!\\n\"; \
         print \"connected\\n\"' 2>&1; echo rc=$?",
        rds_protocol::DEFAULT_AGENT_PORT
    );
    let out = sh(tm, id, &vsock).await;
    assert!(
        out.starts_with("connect: ") && !out.contains("connected"),
        "{out}"
    );
    let out = sh(tm, id, "kill -STOP 1 2>&1; echo rc=$?").await;
    assert!(out.contains("rc=1"), "{out}");
}

async fn runtimes(tm: &TestManager, id: &str) {
    let r = run(tm, id, "run-ts", json!({"code": "console.log(2+2)"})).await;
    assert_eq!(
        (r["stdout"].as_str(), r["exitCode"].as_i64()),
        (Some("4\n"), Some(0)),
        "{r}"
    );
    assert!(r.get("result").is_none());
    for (code, want) in [
        ("result.set(42)", json!(42)),
        ("result.set('s')", json!("s")),
        ("result.set([1,2])", json!([1, 2])),
        ("result.set(null)", json!(null)),
        ("result.set({a:1})", json!({"a": 1})),
    ] {
        let r = run(tm, id, "run-ts", json!({ "code": code })).await;
        assert_eq!(r["result"], want, "{code}: {r}");
        assert!(r.as_object().unwrap().contains_key("result"), "{code}");
        let r = run(tm, id, "run-js", json!({ "code": code })).await;
        assert_eq!(r["result"], want, "run-js {code}: {r}");
    }
    let r = run(
        tm,
        id,
        "run-ts",
        json!({"code": "result.error({name: 'Bad', message: 'no'})"}),
    )
    .await;
    assert_ne!(r["exitCode"], 0);
    assert_eq!(r["error"]["message"], "no");
    let r = run(
        tm,
        id,
        "run-js",
        json!({"code": "throw new TypeError('boom')"}),
    )
    .await;
    assert_ne!(r["exitCode"], 0);
    assert_eq!(
        (r["error"]["name"].as_str(), r["error"]["message"].as_str()),
        (Some("TypeError"), Some("boom"))
    );

    let r = run(
        tm,
        id,
        "run-ts",
        json!({"code": "console.log(Deno.uid())", "denoFlags": ["--allow-sys"]}),
    )
    .await;
    assert_eq!(r["stdout"], "1000\n", "{r}");
    let r = run(
        tm,
        id,
        "run-js",
        json!({"code": "console.log(process.getuid(), process.getgid())"}),
    )
    .await;
    assert_eq!(r["stdout"], "1000 1000\n", "{r}");
    let r = run(
        tm,
        id,
        "run-ts",
        json!({"code": "console.log(Deno.env.get('GREETING'))", "env": ["GREETING=hi there"]}),
    )
    .await;
    assert_eq!(r["stdout"], "hi there\n");
    let r = run(
        tm,
        id,
        "run-js",
        json!({"code": "console.log(process.env.GREETING)", "env": ["GREETING=hey"]}),
    )
    .await;
    assert_eq!(r["stdout"], "hey\n");
    let write = |p: &str| {
        format!("try {{ Deno.writeTextFileSync('{p}', 'x'); console.log('ok') }} catch (e) {{ console.log(e.name) }}")
    };
    for (path, want) in [
        ("/workspace/w.txt", "ok\n"),
        ("/etc/x", "NotCapable\n"),
        ("/home/user/x", "NotCapable\n"),
    ] {
        let r = run(tm, id, "run-ts", json!({ "code": write(path) })).await;
        assert_eq!(r["stdout"], want, "write {path}: {r}");
    }
    let r = tm.exec(id, json!({"cmd": "touch /etc/x"})).await;
    assert_ne!(r.json["exitCode"], 0, "exec must not write /etc");

    // Refused before the agent.
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{id}/run-ts"),
            Some(json!({"code": "1", "denoFlags": ["-A"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("denoFlags entry '-A' is not allowed")
        )
    );
    let r = tm
        .call(
            Method::POST,
            &format!("/v1/vms/{id}/run-js"),
            Some(json!({"path": "/etc/passwd"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);

    // A module of several files uploaded, then run by path.
    let lib = b"export const twice = (n: number) => n * 2;\n";
    let main = b"import { twice } from './lib.ts';\nresult.set(twice(21));\n";
    let r = tm
        .upload(
            id,
            "/workspace/mod",
            archive::targz(&[Entry::File("lib.ts", lib), Entry::File("main.ts", main)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = run(tm, id, "run-ts", json!({"path": "mod/main.ts"})).await;
    assert_eq!(r["result"], 42, "{r}");
}

async fn files(tm: &TestManager, id: &str) {
    use sha2::{Digest, Sha256};
    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let archive = archive::targz(&[
        Entry::Dir("d"),
        Entry::Dir("d/e"),
        Entry::File("d/e/f.txt", b"nested\n"),
        Entry::File("top.bin", &big),
    ]);
    let t = std::time::Instant::now();
    let r = tm.upload(id, "/workspace/up", archive).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    println!("5 MiB upload in {:?}", t.elapsed());
    let sum = sh(
        tm,
        id,
        "cd /workspace/up && sha256sum top.bin d/e/f.txt && stat -c '%U %a' top.bin",
    )
    .await;
    let want = format!("{:x}", Sha256::digest(&big));
    assert!(sum.contains(&want), "{sum}");
    assert!(sum.contains("user 644"), "{sum}");
    let t = std::time::Instant::now();
    let (status, headers, body) = tm.download(id, "/workspace/up").await;
    assert_eq!(status, StatusCode::OK);
    println!("5 MiB download in {:?}", t.elapsed());
    assert_eq!(headers["content-type"], "application/gzip");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"up.tar.gz\""
    );
    let files = archive::files(&body);
    assert_eq!(files.get("top.bin"), Some(&big), "binary round trip");
    assert_eq!(
        files.get("d/e/f.txt").map(Vec::as_slice),
        Some(&b"nested\n"[..])
    );

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", archive::targz(&[Entry::File("../x", b"x")])),
        ("absolute", archive::targz(&[Entry::File("/abs", b"x")])),
        (
            "symlink",
            archive::targz(&[Entry::Symlink("l", "/etc/passwd")]),
        ),
        (
            "hardlink",
            archive::targz(&[Entry::File("a", b"x"), Entry::Hardlink("b", "a")]),
        ),
        ("bomb", archive::zeros("zeros", 300 * 1024 * 1024)),
        ("not-gzip", b"plain text, not an archive".to_vec()),
    ];
    let names: Vec<String> = (0..20_000).map(|i| format!("f{i}")).collect();
    let many: Vec<Entry> = names.iter().map(|n| Entry::File(n, b"")).collect();
    let many = archive::targz(&many);
    for (i, (what, data)) in bad.into_iter().chain([("20000 entries", many)]).enumerate() {
        let r = tm.upload(id, &format!("/workspace/bad{i}"), data).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.json);
        assert!(
            r.json["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid upload dest or archive"),
            "{what}: {}",
            r.json
        );
    }
    let left = sh(tm, id, "ls -A /workspace | sort | tr '\\n' ' '").await;
    assert!(
        !left.contains("bad") && !left.contains(" x ") && !left.contains("abs"),
        "refused archives left files: {left}"
    );
    assert!(!std::path::Path::new("/abs").exists());

    let eleven = vec![7u8; 11 * 1024 * 1024];
    let r = tm.upload(id, "/workspace/big", eleven).await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("Body too large"))
    );
    let (status, _, body) = tm.download(id, "/etc").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let r = tm
        .upload(
            id,
            "/home/user/x",
            archive::targz(&[Entry::File("a", b"x")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
}

async fn logs(tm: &TestManager, id: &str) {
    let r = tm
        .call(
            Method::GET,
            &format!("/v1/vms/{id}/exec-logs?limit=3"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let entries = r.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(r.json["hasMore"], true);
    assert_eq!(
        entries[0]["type"], "exec",
        "newest first: the last call was an exec"
    );
    let r = tm
        .call(
            Method::GET,
            &format!("/v1/vms/{id}/exec-logs?type=run-js&limit=200"),
            None,
        )
        .await;
    let js = r.json["entries"].as_array().unwrap();
    assert!(!js.is_empty() && js.iter().all(|e| e["type"] == "run-js"));
    assert!(js
        .iter()
        .any(|e| e["input"]["env"] == json!(["GREETING=hey"])));
    let r = tm
        .call(
            Method::GET,
            &format!("/v1/vms/{id}/exec-logs?type=bogus"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Invalid type"))
    );

    let r = tm
        .call(
            Method::GET,
            &format!("/v1/vms/{id}/logs?type=console.log&tail=5000"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["type"], "console.log");
    let lines = r.json["lines"].as_array().unwrap();
    assert!(lines.len() <= 1000);
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().unwrap().contains("rds-init")),
        "console has init lines"
    );
    let r = tm
        .call(
            Method::GET,
            &format!("/v1/vms/{id}/logs?type=firecracker.log"),
            None,
        )
        .await;
    assert_eq!(
        r.json["type"], "vmm.log",
        "alias maps to the canonical name"
    );
    let r = tm
        .call(Method::GET, &format!("/v1/vms/{id}/logs?type=nope"), None)
        .await;
    assert_eq!(
        (r.status, r.json["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Invalid log type"))
    );
}
