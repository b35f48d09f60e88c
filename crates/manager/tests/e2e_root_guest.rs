//! Root inside a guest, as after a guest kernel exploit or a subverted agent: the test plants a
//! program in the VM's writable layer while the VM is stopped (through its disk, with `debugfs`)
//! that runs as root in place of the agent at the next boot, flushes the guest's own firewall, and
//! tries what the host's boundary must still refuse: writing the read-only base image, writing
//! past the end of its own disk, and reaching the metadata address, the manager's port, another
//! host port and another VM. Then it starts the real agent, which answers as before; on the test's
//! word it freezes the agent for 20 s (an exec answers 504 at its deadline, the agent answers
//! again after) and then panics the guest kernel while it runs: the VM becomes STOPPED with
//! `lastError`.
//!
//! Run under the e2e lock: `flock /tmp/rds-e2e.lock cargo test -p rds-manager --test e2e_root_guest`.

mod common;

use common::guest::sh;
use common::TestManager;
use http::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn debugfs(image: &Path, write: bool, request: &str) -> String {
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    let out = cmd.arg("-R").arg(request).arg(image).output().unwrap();
    assert!(out.status.success(), "debugfs {request}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `data` as `path` (mode 0755, root) into the overlay's upper layer of a stopped VM's disk,
/// making the directories on the way.
fn plant(disk: &Path, path: &str, data: &[u8], scratch: &Path) {
    let mut dir = String::from("upper");
    for part in Path::new(path).parent().unwrap().iter().skip(1) {
        dir = format!("{dir}/{}", part.to_string_lossy());
        // An existing directory makes debugfs complain on stderr only.
        debugfs(disk, true, &format!("mkdir {dir}"));
    }
    let src = scratch.join("planted");
    std::fs::write(&src, data).unwrap();
    let dst = format!("upper{path}");
    debugfs(disk, true, &format!("write {} {dst}", src.display()));
    debugfs(disk, true, &format!("set_inode_field {dst} mode 0100755"));
}

const PROBE: &str = r#"#!/bin/sh
# Planted by e2e_root_guest.rs: runs as root, where the agent would.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
(
  # Wait until the manager configured the network and the guest firewall, then remove the latter.
  i=0
  until ip -4 addr show dev eth0 | grep -q 'inet ' && nft list tables | grep -q rds_guest; do
    i=$((i + 1)); [ "$i" -gt 1200 ] && break; sleep 0.1
  done
  {
    echo "uid $(id -u)"
    nft flush ruleset && echo "guest-rules flushed"
    dd if=/dev/vda of=/dev/null bs=4096 count=1 2>/dev/null && echo "base-read ok"
    dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=notrunc oflag=direct 2>/dev/null \
      && echo "base-write WRITTEN" || echo "base-write refused"
    blockdev --setrw /dev/vda 2>/dev/null
    dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=notrunc oflag=direct 2>/dev/null \
      && echo "base-write-after-setrw WRITTEN" || echo "base-write-after-setrw refused"
    size=$(blockdev --getsize64 /dev/vdb)
    echo "disk-bytes $size"
    dd if=/dev/zero of=/dev/vdb bs=1M seek=$((size / 1048576)) count=1 oflag=direct 2>/dev/null \
      && echo "disk-grow WRITTEN" || echo "disk-grow refused"
    for target in http://169.254.169.254/ http://@GATEWAY@:3000/v1/vms http://@GATEWAY@:22/ \
        http://@OTHER@:1/; do
      echo "reach $target $(curl -s -m 3 -o /dev/null -w '%{http_code}' "$target")"
    done
    echo done
  } > /workspace/.root-probe 2>&1
  mv /workspace/.root-probe /workspace/root-probe.txt
  # On the test's word: the agent frozen for 20 s ($$ is the agent: the script exec'd into it).
  until [ -e /workspace/freeze-now ]; do sleep 0.2; done
  kill -STOP $$
  sleep 20
  kill -CONT $$
  # Then, on the test's word: a guest kernel panic while running.
  until [ -e /workspace/panic-now ]; do sleep 0.2; done
  echo c > /proc/sysrq-trigger
) &
exec /usr/local/sbin/rds-agent.real "$@"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_in_a_guest_stays_inside_its_vm() {
    let Some((image, vhost)) = common::guest_prerequisites("root_in_a_guest") else {
        return;
    };
    // A short vsock timeout: a call to the frozen agent ends at max(it, timeoutMs + 5 s).
    let extra = [("WARM_POOL_MAX_VMS", "0"), ("VSOCK_TIMEOUT_MS", "3000")];
    let tm = TestManager::start(Some(&image), &vhost, &extra).await;
    let a = tm
        .create_vm(json!({"cpu": 1, "memMb": 256, "diskSizeMb": 128}))
        .await;
    let b = tm.create_vm(json!({"cpu": 1, "memMb": 256})).await;
    let other = tm
        .call(Method::GET, &format!("/v1/vms/{b}"), None)
        .await
        .json["guestIp"]
        .as_str()
        .unwrap()
        .to_string();
    let gateway = tm.settings.vm_subnet.gateway().to_string();
    let base = &image.rootfs;
    let base_before = std::fs::metadata(base).unwrap();
    let r = tm
        .call(Method::POST, &format!("/v1/vms/{a}/stop"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);

    // The real agent, from the base image, beside the planted program that takes its place.
    let scratch = tempfile::tempdir().unwrap();
    let agent = scratch.path().join("rds-agent");
    debugfs(
        base,
        false,
        &format!("dump /usr/local/sbin/rds-agent {}", agent.display()),
    );
    let disk = tm.storage().join(format!("vms/{a}/disk.ext4"));
    let probe = PROBE
        .replace("@GATEWAY@", &gateway)
        .replace("@OTHER@", &other);
    plant(
        &disk,
        "/usr/local/sbin/rds-agent.real",
        &std::fs::read(&agent).unwrap(),
        scratch.path(),
    );
    plant(
        &disk,
        "/usr/local/sbin/rds-agent",
        probe.as_bytes(),
        scratch.path(),
    );

    let r = tm
        .call(Method::POST, &format!("/v1/vms/{a}/start"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let report = rds_testkit::wait_until(Duration::from_secs(120), || async {
        let r = tm
            .exec(
                &a,
                json!({"cmd": "cat /workspace/root-probe.txt 2>/dev/null"}),
            )
            .await;
        r.json["stdout"]
            .as_str()
            .filter(|s| s.ends_with("done\n"))
            .map(str::to_string)
    })
    .await
    .expect("the planted root program reports");
    println!("root in guest {a:.8}:\n{report}");
    let line = |key: &str| {
        report
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {report}"))
            .to_string()
    };
    assert_eq!(line("uid "), "uid 0", "the program ran as root");
    assert_eq!(line("guest-rules "), "guest-rules flushed");
    // dd itself works (a control for the refusals below).
    assert_eq!(line("base-read "), "base-read ok");
    assert_eq!(line("base-write "), "base-write refused");
    assert_eq!(
        line("base-write-after-setrw "),
        "base-write-after-setrw refused"
    );
    assert_eq!(line("disk-bytes "), format!("disk-bytes {}", 128u64 << 20));
    assert_eq!(line("disk-grow "), "disk-grow refused");
    for l in report.lines().filter(|l| l.starts_with("reach ")) {
        // 000: no HTTP answer at all (dropped); a manager port that answered would say 403.
        assert!(l.ends_with(" 000") || l.ends_with(" 403"), "{l}");
    }
    assert_eq!(
        report.lines().filter(|l| l.starts_with("reach ")).count(),
        4
    );

    // The base image on the host is untouched, the other VM and the real agent work.
    let base_after = std::fs::metadata(base).unwrap();
    assert_eq!(base_after.len(), base_before.len());
    assert_eq!(
        base_after.modified().unwrap(),
        base_before.modified().unwrap()
    );
    assert_eq!(sh(&tm, &a, "echo agent").await, "agent\n");
    assert_eq!(sh(&tm, &b, "echo other").await, "other\n");

    // The agent frozen inside the guest (SIGSTOP from root): an exec answers 504 at its deadline
    // and the agent answers again once it runs on.
    sh(&tm, &a, "touch /workspace/freeze-now").await;
    let frozen = rds_testkit::wait_until(Duration::from_secs(30), || async {
        let r = tm
            .exec(&a, json!({"cmd": "echo thawed", "timeoutMs": 1000}))
            .await;
        (r.status == StatusCode::GATEWAY_TIMEOUT).then_some(r.json)
    })
    .await
    .expect("an exec to the frozen agent times out");
    println!("exec to the frozen agent: 504 {frozen}");
    let thawed = rds_testkit::wait_until(Duration::from_secs(60), || async {
        let r = tm.exec(&a, json!({"cmd": "echo thawed"})).await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(thawed.is_some(), "the agent answers after SIGCONT");

    // The guest kernel panics while running (root writes `c` to /proc/sysrq-trigger): the guest
    // reboots (`panic=1`), QEMU exits (`-no-reboot`), and the VM becomes STOPPED with lastError,
    // its processes gone; the other VM runs on.
    sh(&tm, &a, "touch /workspace/panic-now").await;
    let vm = rds_testkit::wait_until(Duration::from_secs(60), || async {
        let v = tm
            .call(Method::GET, &format!("/v1/vms/{a}"), None)
            .await
            .json;
        (v["state"] == "STOPPED").then_some(v)
    })
    .await
    .expect("STOPPED after the kernel panic");
    println!("after the panic: {} {}", vm["state"], vm["lastError"]);
    let last = vm["lastError"].as_str().unwrap_or_default();
    assert!(last.starts_with("VMM exited unexpectedly"), "{last}");
    let gone = rds_testkit::wait_until(Duration::from_secs(10), || async {
        rds_testkit::pids_matching(&a).is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "processes of the panicked VM left");
    let console = tm.storage().join(format!("vms/{a}/logs/console.log"));
    let text = std::fs::read_to_string(console).unwrap_or_default();
    assert!(text.contains("Kernel panic"), "console has the panic");
    assert_eq!(sh(&tm, &b, "echo other").await, "other\n");
    for vm in [&a, &b] {
        let r = tm
            .call(Method::DELETE, &format!("/v1/vms/{vm}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    }
}
