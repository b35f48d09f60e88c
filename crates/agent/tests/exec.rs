//! `/exec` end to end on the host: the agent binary runs as root and really drops to uid 1000.

mod common;

use std::time::{Duration, Instant};

use common::{processes_with, Agent};
use serde_json::json;

macro_rules! require_root {
    () => {
        if !common::root_or_skip(module_path!()) {
            return;
        }
    };
}

#[test]
fn runs_as_the_sandbox_user_without_privileges() {
    require_root!();
    let agent = Agent::start("identity");
    let r = agent.exec_ok(json!({"cmd": "id -u; id -g; id -G"}));
    assert_eq!(r["stdout"], "1000\n1000\n1000\n");
    assert_eq!(r["exitCode"], 0);

    let r = agent.exec_ok(
        json!({"cmd": "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status"}),
    );
    let status = r["stdout"].as_str().unwrap();
    assert_eq!(status.lines().count(), 6, "{status}");
    for line in status.lines() {
        let value = line.split_whitespace().nth(1).unwrap();
        if line.starts_with("NoNewPrivs") {
            assert_eq!(value, "1");
        } else {
            assert_eq!(value, "0000000000000000", "{line}");
        }
    }

    let r = agent.exec_ok(
        json!({"cmd": "cat /proc/self/oom_score_adj; umask; ulimit -c; ulimit -n; ulimit -Hn"}),
    );
    // 65536, unless this host's agent lacks CAP_SYS_RESOURCE and a lower hard limit binds it.
    let nofile = 65536.min(own_hard_nofile());
    assert_eq!(r["stdout"], format!("1000\n0022\n0\n{nofile}\n{nofile}\n"));

    // Own session and process group; stdin is /dev/null; no agent descriptor leaks in.
    let r = agent.exec_ok(json!({"cmd": "ps -o sid=,pgid=,pid= -p $$ 2>/dev/null || awk '{print $6, $5, $1}' /proc/$$/stat; cat; readlink /proc/self/fd/0; ls /proc/self/fd"}));
    let out = r["stdout"].as_str().unwrap();
    let mut lines = out.lines();
    let ids: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert!(
        ids[0] == ids[1] && ids[1] == ids[2],
        "session/group leader: {out}"
    );
    assert_eq!(lines.next(), Some("/dev/null"));
    let fds: Vec<&str> = lines.collect();
    assert!(
        fds.len() <= 4 && fds.starts_with(&["0", "1", "2"]),
        "fds: {fds:?}"
    );
}

fn own_hard_nofile() -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) },
        0
    );
    current.rlim_max
}

#[test]
fn stdout_stderr_and_exit_codes() {
    require_root!();
    let agent = Agent::start("streams");
    let r = agent.exec_ok(json!({"cmd": "echo out; echo err >&2; exit 3"}));
    assert_eq!(
        (
            r["stdout"].as_str(),
            r["stderr"].as_str(),
            r["exitCode"].as_i64()
        ),
        (Some("out\n"), Some("err\n"), Some(3))
    );
    assert_eq!(r["timedOut"], false);
    assert_eq!(r["stdoutTruncated"], false);
    assert!(r["durationMs"].is_u64());
    let result: rds_protocol::ExecResult = serde_json::from_value(r).unwrap();
    assert_eq!(result.exit_code, 3);

    let r = agent.exec_ok(json!({"cmd": "kill -TERM $$"}));
    assert_eq!(r["exitCode"], 143);
    let r = agent.exec_ok(json!({"cmd": "printf 'a\\377b'"}));
    assert_eq!(r["stdout"], "a\u{fffd}b");
    // The command is one argument, never interpolated.
    let r = agent.exec_ok(json!({"cmd": "echo \"$0\" '$(id)' ; echo \"quote's\""}));
    assert_eq!(r["stdout"], "/bin/bash $(id)\nquote's\n");
}

#[test]
fn environment_is_fresh() {
    require_root!();
    let agent = Agent::start("env");
    // The process's initial environment, before `bash -l` sources the image's profile files.
    let r = agent.exec_ok(json!({
        "cmd": "tr '\\0' '\\n' < /proc/$$/environ | sort",
        "env": {"FOO": "bar baz", "LANG": "C"}
    }));
    let want = [
        "FOO=bar baz",
        "HOME=/home/user",
        "LANG=C",
        "LOGNAME=user",
        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        "SHELL=/bin/bash",
        "TMPDIR=/tmp",
        "USER=user",
    ];
    let got: Vec<&str> = r["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(got, want);

    let r = agent.exec_ok(json!({"cmd": "echo \"$FOO\"; env", "env": {"FOO": "x y"}}));
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("x y\n"), "{out}");
    assert!(
        !out.contains("RDS_AGENT"),
        "agent environment leaked: {out}"
    );

    let r = agent.exec(json!({"cmd": "true", "env": {"BAD-KEY": "x"}}));
    assert_eq!(
        (r.status, r.message().as_str()),
        (400, "env key 'BAD-KEY' is invalid")
    );
    let r = agent.exec(json!({"cmd": "true", "env": {"A": "x\u{0}y"}}));
    assert_eq!(r.status, 400);
}

#[test]
fn cwd_policy() {
    require_root!();
    let agent = Agent::start("cwd");
    let ws = agent.workspace.canonicalize().unwrap();
    std::fs::create_dir_all(ws.join("sub/dir")).unwrap();
    std::fs::write(ws.join("file"), b"x").unwrap();
    std::os::unix::fs::symlink("/", ws.join("root-link")).unwrap();
    std::os::unix::fs::symlink("../..", ws.join("up-link")).unwrap();
    std::os::unix::fs::symlink("sub/dir", ws.join("ok-link")).unwrap();

    let pwd = |cwd: Option<&str>| {
        let mut body = json!({"cmd": "pwd -P"});
        if let Some(c) = cwd {
            body["cwd"] = json!(c);
        }
        agent.exec(body)
    };
    assert_eq!(pwd(None).json()["stdout"], format!("{}\n", ws.display()));
    for (cwd, dir) in [
        ("sub", "sub"),
        ("/workspace/sub/dir", "sub/dir"),
        ("./sub/../sub", "sub"),
        ("ok-link", "sub/dir"),
    ] {
        let r = pwd(Some(cwd));
        assert_eq!(r.status, 200, "{cwd}: {}", r.text());
        assert_eq!(
            r.json()["stdout"],
            format!("{}\n", ws.join(dir).display()),
            "{cwd}"
        );
    }
    let cases = [
        ("/etc", "Only /workspace paths are allowed"),
        ("/home/user", "Only /workspace paths are allowed"),
        ("/workspace2", "Only /workspace paths are allowed"),
        ("..", "Path escapes /workspace"),
        ("/workspace/../etc", "Path escapes /workspace"),
        ("root-link", "Path escapes /workspace"),
        ("up-link", "Path escapes /workspace"),
        (
            "missing",
            "cwd must be a directory under /workspace: missing",
        ),
        ("file", "cwd must be a directory under /workspace: file"),
        (
            "/workspace/nope",
            "cwd must be a directory under /workspace: /workspace/nope",
        ),
    ];
    for (cwd, message) in cases {
        let r = pwd(Some(cwd));
        assert_eq!((r.status, r.message()), (400, message.to_string()), "{cwd}");
    }
    assert_eq!(pwd(Some("a\u{0}b")).status, 400);
    assert_eq!(pwd(Some(&"a".repeat(5000))).status, 400);
}

#[test]
fn timeout_kills_the_whole_group_promptly() {
    require_root!();
    let agent = Agent::start("timeout");
    let started = Instant::now();
    let r = agent
        .exec_ok(json!({"cmd": "echo begun; sleep 31.4159 & sleep 32.7182", "timeoutMs": 1000}));
    let elapsed = started.elapsed();
    assert_eq!(r["timedOut"], true);
    assert_eq!(r["exitCode"], -1);
    assert_eq!(r["stdout"], "begun\n");
    assert!(
        r["stderr"]
            .as_str()
            .unwrap()
            .ends_with("Timeout exceeded\n"),
        "{r}"
    );
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    common::wait_until(Duration::from_secs(3), "sleeps to die", || {
        (processes_with("sleep 31.4159").is_empty() && processes_with("sleep 32.7182").is_empty())
            .then_some(())
    });
}

#[test]
fn answers_soon_after_main_exit_even_if_descendants_hold_pipes() {
    require_root!();
    let agent = Agent::start("grace");
    let started = Instant::now();
    let r = agent.exec_ok(json!({"cmd": "sleep 3.1416 & echo main-done", "timeoutMs": 20000}));
    let elapsed = started.elapsed();
    assert_eq!(r["stdout"], "main-done\n");
    assert_eq!(r["exitCode"], 0);
    assert_eq!(r["timedOut"], false);
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
    // The descendant keeps running.
    assert!(!processes_with("sleep 3.1416").is_empty());
    for pid in processes_with("sleep 3.1416") {
        // SAFETY: plain kill(2) of our own test process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

#[test]
fn output_is_capped_and_fits_the_budget() {
    require_root!();
    let agent = Agent::start("output");
    let r = agent.exec_ok(json!({"cmd": "head -c 3000000 /dev/zero | tr '\\0' a; echo tail >&2"}));
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1_000_000);
    assert_eq!(r["stdoutTruncated"], true);
    assert_eq!(r["stderr"], "tail\n");
    assert_eq!(r["stderrTruncated"], false);
    assert_eq!(r["exitCode"], 0);

    let body = json!({"cmd": "head -c 50000 /dev/zero | tr '\\0' b; echo err >&2"}).to_string();
    let r = agent.request(
        "POST",
        "/exec",
        &[("X-RDS-Max-Response-Bytes", "10000")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.len() <= 10_000, "{}", r.body.len());
    let v = r.json();
    assert_eq!(v["stdoutTruncated"], true);
    assert_eq!(v["stderr"], "err\n");
    assert!(v["stdout"].as_str().unwrap().len() > 9_000);
}

#[test]
fn round_trip_latency() {
    require_root!();
    let agent = Agent::start("latency");
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let r = agent.exec_ok(json!({"cmd": "true"}));
            assert_eq!(r["exitCode"], 0);
            t.elapsed()
        })
        .collect();
    times.sort();
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.to_string())
        .unwrap();
    eprintln!(
        "exec `true` x100: p50 {:?}, p90 {:?}, max {:?}; agent {rss_kib}",
        times[50], times[90], times[99]
    );
}

/// From the second call on, an exec without environment runs in a warm shell (started ahead,
/// profile read); what the command sees is what a cold `bash -lc` shows it.
#[test]
fn warm_shells_stand_in_for_cold_starts() {
    require_root!();
    let agent = Agent::start("warm");
    std::fs::create_dir_all(agent.workspace.join("sub")).unwrap();
    let probe =
        "echo \"$0|$-|$(shopt -q login_shell && echo login)|${__rds_job-unset}|$(id -u)\"; \
                 tr '\\0' '\\n' < /proc/$$/environ | sort; pwd -P; echo \"$PWD|${OLDPWD-none}\"";
    let warm_execs = || {
        let r = agent.request("GET", "/health", &[], b"");
        r.json()["warmExecs"]
            .as_u64()
            .expect("warmExecs in /health")
    };
    assert_eq!(warm_execs(), 0);
    let cold = agent.exec_ok(json!({"cmd": probe}));
    let cold_sub = agent.exec_ok(json!({"cmd": probe, "cwd": "sub", "env": {"A": "1"}}));
    let deadline = Instant::now() + Duration::from_secs(20);
    while warm_execs() == 0 {
        assert!(Instant::now() < deadline, "no exec got a warm shell");
        let r = agent.exec_ok(json!({"cmd": probe}));
        assert_eq!(r["stdout"], cold["stdout"], "warm and cold differ");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = warm_execs();
    let r = agent.exec_ok(json!({"cmd": probe}));
    assert_eq!(r["stdout"], cold["stdout"], "warm and cold differ");
    // Another directory: the same as cold, apart from the variable the cold call added.
    std::thread::sleep(Duration::from_millis(500));
    let r = agent.exec_ok(json!({"cmd": probe, "cwd": "sub"}));
    assert_eq!(
        r["stdout"].as_str().unwrap(),
        cold_sub["stdout"].as_str().unwrap().replace("A=1\n", "")
    );
    let r = agent.exec_ok(json!({"cmd": "echo out; echo err >&2; exit 7"}));
    assert_eq!(
        (
            r["stdout"].as_str(),
            r["stderr"].as_str(),
            r["exitCode"].as_i64()
        ),
        (Some("out\n"), Some("err\n"), Some(7))
    );
    assert!(warm_execs() > before, "the later calls were not warm");
}
