//! The built `rds` binary against a real manager (`run-dat-sheesh`) in a network namespace of its
//! own: one manager and one guest for the whole file.

use rds_testkit::netns::Ns;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KEY: &str = "cli-test-key-0123456789abcdef";
const PORT: u16 = 3000;
const RDS: &str = env!("CARGO_BIN_EXE_rds");

/// The manager binary beside `rds`. Not built from here: the running `cargo test` holds the build
/// directory's lock, so a nested `cargo build` would wait forever.
fn manager_bin() -> Result<PathBuf, String> {
    let bin = Path::new(RDS).with_file_name("run-dat-sheesh");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} missing: run cargo build -p rds-manager",
            bin.display()
        ))
    }
}

struct Manager {
    child: Child,
    storage: PathBuf,
    dir: tempfile::TempDir,
    // Declared last: the namespace goes once the processes in it are gone.
    ns: Ns,
}

impl Manager {
    fn start(test: &str) -> Option<Manager> {
        let (image, vhost) = match rds_testkit::e2e_prerequisites() {
            Ok(p) => p,
            Err(r) => {
                rds_testkit::skip(test, &r);
                return None;
            }
        };
        let bin = match manager_bin() {
            Ok(b) => b,
            Err(r) => {
                rds_testkit::skip(test, &r);
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let storage = dir.path().join("s");
        let ns = Ns::new("cli");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).arg(&bin);
        cmd.env("API_KEY", KEY)
            .env("ADMIN_EMAIL", "admin@example.com")
            .env("ADMIN_PASSWORD", "cli-test-password-1")
            .env("PORT", PORT.to_string())
            .env("STORAGE_ROOT", &storage)
            .env("SQLITE_PATH", dir.path().join("m.db"))
            .env("KERNEL_PATH", &image.kernel)
            .env("BASE_ROOTFS_PATH", &image.rootfs)
            .env("VHOST_VSOCK_BIN", vhost)
            .env("VSOCK_HEALTH_TIMEOUT_MS", "120000")
            .env(
                "VM_SECRET_KEY",
                "cli-test-vm-secret-key-of-32-chars-or-more",
            )
            .env("RATE_LIMIT_EXEC", "0")
            .env("RATE_LIMIT_VM_CREATE", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(i) = &image.initrd {
            cmd.env("INITRD_PATH", i);
        }
        let child = cmd.spawn().expect("start manager");
        let mut m = Manager {
            child,
            storage,
            dir,
            ns,
        };
        let end = Instant::now() + Duration::from_secs(180);
        while m.rds(&["vm", "ls"]).status.code() != Some(0) {
            assert!(Instant::now() < end, "manager did not start");
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("the manager exited at start: {st}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(m)
    }

    /// Runs `rds <args>` inside the namespace, configured through the environment only.
    fn rds(&self, args: &[&str]) -> Output {
        self.rds_with(args, &[])
    }

    fn rds_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns.name, RDS])
            .args(args)
            .env("RDS_URL", format!("http://127.0.0.1:{PORT}"))
            .env("RDS_API_KEY", KEY)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `rds <args>` started in the namespace with stdout and stderr piped, not waited for.
    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns.name, RDS])
            .args(args)
            .env("RDS_URL", format!("http://127.0.0.1:{PORT}"))
            .env("RDS_API_KEY", KEY)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.rds(args);
        assert!(out.status.success(), "rds {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let text = self.ok(&full);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("rds {args:?}: {e}: {text}"))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in rds_testkit::pids_matching(&self.storage.display().to_string()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every regular file under `root`, by relative path, with its bytes.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn bad_command_lines_exit_2_with_one_line() {
    let out = Command::new(RDS)
        .args(["vm", "create", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("--bogus"),
        "{err}"
    );
}

#[test]
fn an_unreachable_manager_exits_3_with_one_line() {
    let out = Command::new(RDS)
        .args(["vm", "ls"])
        .env("RDS_URL", "http://127.0.0.1:1")
        .env("RDS_API_KEY", "k")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot reach http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn cli_against_a_real_manager() {
    let Some(m) = Manager::start("cli_against_a_real_manager") else {
        return;
    };

    // Unknown id: the API's message, one line, exit 1.
    let unknown = "0b0e8a4c-3d5e-4f8e-9b1a-2c3d4e5f6a7b";
    let out = m.rds(&["vm", "get", unknown]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr(&out),
        format!("error: VM {unknown} not found (HTTP 404)\n")
    );

    // Image create and upload to a non-terminal: no control characters, a closing line.
    let img = m.json(&[
        "image",
        "create",
        "cli-test",
        "--description",
        "from the CLI test",
    ]);
    let img_id = img["id"].as_str().expect("image id").to_string();
    let initrd = rds_testkit::guest_image().unwrap().initrd;
    if let Some(initrd) = initrd {
        let out = m.rds(&[
            "image",
            "upload",
            &img_id,
            "initrd",
            initrd.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        assert!(!all.contains(&0x1b) && !all.contains(&b'\r'), "{out:?}");
        assert!(stderr(&out).contains("initrd upload: "), "{out:?}");
        let got = m.json(&["image", "get", &img_id]);
        assert_eq!(got["hasInitrd"], true, "{got}");
    }
    let list = m.json(&["image", "ls"]);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == img_id.as_str()));
    m.ok(&["image", "rm", &img_id]);

    // VM create, list (table and JSON with a metadata filter).
    // A secret named alone takes its value from the CLI's environment.
    let created = m.rds_with(
        &[
            "--json",
            "vm",
            "create",
            "--cpu",
            "1",
            "--mem",
            "512",
            "-m",
            "suite=cli",
            "--secret-env",
            "CLI_TOKEN",
            "--secret-env",
            "PLAIN=abcd1234",
        ],
        &[("CLI_TOKEN", "from-the-env-5678")],
    );
    assert!(created.status.success(), "{created:?}");
    let vm: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = vm["id"].as_str().expect("vm id").to_string();
    let seen = m.ok(&["exec", &id, "--", "echo \"$CLI_TOKEN $PLAIN\""]);
    assert_eq!(seen, "from-the-env-5678 abcd1234\n");
    let missing = m.rds(&["vm", "create", "--secret-env", "RDS_TEST_UNSET_VAR"]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert_eq!(vm["state"], "RUNNING");
    // Peers: no links listed; a sync of a VM without links rebuilds its empty index; an unknown
    // alias is the API's 404 (docs/peers.md).
    assert_eq!(vm["peerLinks"], serde_json::json!([]), "{vm}");
    assert_eq!(
        m.ok(&["vm", "peers-sync", &id]),
        format!("{id} peers synced\n")
    );
    let unknown_peer = m.rds(&["vm", "peer-mode", &id, "nope", "mounted"]);
    assert_eq!(unknown_peer.status.code(), Some(1), "{unknown_peer:?}");
    assert_eq!(
        stderr(&unknown_peer),
        format!("error: Peer alias nope not found for VM {id} (HTTP 404)\n")
    );
    let table = m.ok(&["vm", "ls"]);
    assert!(table.starts_with("ID ") && table.contains(&id), "{table}");
    let filtered = m.json(&["vm", "ls", "--meta", "suite=cli", "--state", "RUNNING"]);
    assert_eq!(filtered.as_array().unwrap().len(), 1, "{filtered}");
    let none = m.json(&["vm", "ls", "--meta", "suite=other"]);
    assert_eq!(none, serde_json::json!([]));

    // Deadline set, then cleared (keep-alive); labels set and removed.
    let timed = m.json(&["vm", "timeout", &id, "600", "--action", "pause"]);
    assert!(timed["expiresAt"].is_string(), "{timed}");
    assert_eq!(timed["timeoutAction"], "pause");
    let cleared = m.json(&["vm", "timeout", &id, "off"]);
    assert!(cleared["expiresAt"].is_null(), "{cleared}");
    let labelled = m.json(&["vm", "label", &id, "team=red", "--rm", "nothing"]);
    assert_eq!(
        labelled["metadata"],
        serde_json::json!({"suite": "cli", "team": "red"})
    );
    let unlabelled = m.json(&["vm", "label", &id, "--rm", "team"]);
    assert_eq!(unlabelled["metadata"], serde_json::json!({"suite": "cli"}));
    let bad = m.rds(&["vm", "timeout", &id, "soon"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert_eq!(
        stderr(&bad),
        "error: timeout must be seconds or 'off', got 'soon'\n"
    );

    // Exec: output relayed, the command's exit code passed through.
    let out = m.rds(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(stderr(&out), "err\n");
    let r = m.rds(&["--json", "exec", &id, "--", "sh -c 'echo buffered; exit 5'"]);
    assert_eq!(r.status.code(), Some(5), "{r:?}");
    let r: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(
        (r["exitCode"].as_i64(), r["stdout"].as_str()),
        (Some(5), Some("buffered\n"))
    );

    // cp: a directory in and out, byte for byte; a single file renamed on the way.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("nested/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), "hello\n").unwrap();
    let blob: Vec<u8> = (0..70_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(src.join("nested/deeper/blob.bin"), &blob).unwrap();
    let remote = format!("{id}:/workspace/in");
    let out = m.rds(&["cp", src.to_str().unwrap(), &remote]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&b'\r'),
        "{out:?}"
    );
    let back = t.path().join("back");
    m.ok(&["cp", &remote, back.to_str().unwrap()]);
    assert_eq!(tree(&back), tree(&src));
    let size = m.ok(&["exec", &id, "--", "wc -c < in/nested/deeper/blob.bin"]);
    assert_eq!(size.trim(), blob.len().to_string());
    m.ok(&[
        "cp",
        src.join("a.txt").to_str().unwrap(),
        &format!("{id}:/workspace/b.txt"),
    ]);
    let b = t.path().join("b-copy.txt");
    m.ok(&["cp", &format!("{id}:/workspace/b.txt"), b.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "hello\n");

    // Exec logs list what ran; logs answer.
    let logs = m.ok(&["exec-logs", &id]);
    assert!(
        logs.starts_with("TIME") && logs.contains("exit 7"),
        "{logs}"
    );
    let vmm = m.json(&["logs", &id, "--tail", "5"]);
    assert!(vmm["lines"].is_array(), "{vmm}");

    // Streamed exec and run-js (checked last: its polling adds exec-log entries).
    streamed_exec(&m, &id);

    admin_session(&m);

    // rm, then the VM is gone.
    let gone = m.json(&["vm", "rm", &id]);
    assert_eq!(gone["ok"], true);
    assert_eq!(m.rds(&["vm", "get", &id]).status.code(), Some(1));
}

/// Lines of `from` sent to a channel as they are read, so that a test can wait for one with a limit.
fn line_reader(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Without --json, exec streams: the first line reaches the terminal while the command still waits
/// for a file that only a second exec makes, and the exit code is the command's. run-js streams its
/// output and then prints the result. Killing rds (Ctrl-C) hangs up, and the command dies with it.
fn streamed_exec(m: &Manager, id: &str) {
    let wait = "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second >&2; exit 3";
    let mut child = m.spawn(&["exec", id, "--", wait]);
    let lines = line_reader(child.stdout.take().unwrap());
    let first = lines.recv_timeout(Duration::from_secs(60));
    if first.is_err() {
        let _ = child.kill();
    }
    assert_eq!(
        first.as_deref(),
        Ok("first"),
        "{:?}",
        child.wait_with_output()
    );
    m.ok(&["exec", id, "--", "touch /tmp/go"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(stderr(&out), "second\n");
    assert!(
        lines.recv_timeout(Duration::from_secs(5)).is_err(),
        "more stdout"
    );

    let t = tempfile::tempdir().unwrap();
    let js = t.path().join("a.js");
    std::fs::write(&js, "console.log('js out'); result.set({n: 6 * 7})\n").unwrap();
    let out = m.rds(&["run-js", id, js.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "js out\n{\"n\":42}\n");

    let hang = "(exec -a rds-cli-child sleep 300) & echo started; exec -a rds-cli-main sleep 300";
    let mut child = m.spawn(&["exec", id, "--timeout-ms", "120000", "--", hang]);
    let lines = line_reader(child.stdout.take().unwrap());
    let started = lines.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(started.as_deref(), Ok("started"));
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let left = m.ok(&["exec", id, "--", "pgrep -f 'rds-cli-(child|main)' | wc -l"]);
        if left == "0\n" {
            break;
        }
        assert!(Instant::now() < end, "the command outlived rds: {left}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Login, API keys and webhooks through the saved admin session, then logout.
fn admin_session(m: &Manager) {
    let out = m.rds(&["keys", "ls"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("rds login --email"), "{out:?}");
    let pw = [("RDS_PASSWORD", "cli-test-password-1")];
    let out = m.rds_with(&["login", "--email", "admin@example.com"], &pw);
    assert!(out.status.success(), "{out:?}");
    let profile = m.dir.path().join("config/rds/profile.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let key = m.json(&["keys", "create", "ci"]);
    let secret = key["apiKey"].as_str().expect("apiKey").to_string();
    assert!(secret.starts_with("rds_"), "{key}");
    assert!(m.ok(&["keys", "ls"]).contains(" ci "));
    m.ok(&["--api-key", &secret, "vm", "ls"]);
    m.ok(&["keys", "revoke", key["id"].as_str().unwrap()]);
    let out = m.rds(&["--api-key", &secret, "vm", "ls"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr(&out), "error: Unauthorized (HTTP 401)\n");

    let hook = m.json(&[
        "webhooks",
        "create",
        "hook",
        "https://example.com/h",
        "--event",
        "vm.created",
    ]);
    assert!(hook["secret"].is_string(), "{hook}");
    let hook_id = hook["id"].as_str().unwrap();
    assert!(m.ok(&["webhooks", "ls"]).contains("https://example.com/h"));
    assert!(m.json(&["webhooks", "deliveries", hook_id]).is_array());
    m.ok(&["webhooks", "rm", hook_id]);

    m.ok(&["logout"]);
    assert_eq!(m.rds(&["webhooks", "ls"]).status.code(), Some(1));
}

/// Start-up-to-exit time of `rds vm ls` beside curl for the same request (p50 of 20 runs each):
/// `cargo test -p rds-cli --test cli -- --ignored --nocapture`; `RDS_BENCH_BIN` picks another
/// build of rds (e.g. target/release/rds).
#[test]
#[ignore]
fn bench_vm_ls_against_curl() {
    let Some(m) = Manager::start("bench_vm_ls_against_curl") else {
        return;
    };
    let rds = std::env::var("RDS_BENCH_BIN").unwrap_or_else(|_| RDS.into());
    let url = format!("http://127.0.0.1:{PORT}");
    let cfg = m.dir.path().join("config");
    let runs: Vec<(&str, Vec<String>)> = vec![
        ("rds vm ls", vec![rds.clone(), "vm".into(), "ls".into()]),
        (
            "rds --json vm ls",
            vec![rds, "--json".into(), "vm".into(), "ls".into()],
        ),
        (
            "curl -s /v1/vms",
            vec![
                "curl".into(),
                "-s".into(),
                "-H".into(),
                format!("x-api-key: {KEY}"),
                format!("{url}/v1/vms"),
            ],
        ),
    ];
    for (label, argv) in runs {
        let (url, cfg) = (url.clone(), cfg.clone());
        let mut ms: Vec<f64> = m.ns.run(move || {
            (0..21)
                .map(|_| {
                    let t = Instant::now();
                    let out = Command::new(&argv[0])
                        .args(&argv[1..])
                        .env("RDS_URL", &url)
                        .env("RDS_API_KEY", KEY)
                        .env("XDG_CONFIG_HOME", &cfg)
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{out:?}");
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .skip(1)
                .collect()
        });
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{label:<18} p50 {:.2} ms  p90 {:.2} ms", ms[10], ms[18]);
    }
}
