//! Memory snapshots through the QEMU backend with real guests
//! (`docs/reference/vmm-backends.md` §5.3): capture with the vsock device unplugged, the source
//! resumes and answers, two restores run independently, and a state file QEMU cannot load leaves
//! nothing running. Prerequisites and helpers in `common`.

mod common;

use base64::Engine;
use common::*;
use rds_vmm::{VmRuntime, VmSpec, VmmBackend, VmmError};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A VM of the template shape (1 vCPU, 256 MiB) under `dir`, on `disk`, with its own CID.
fn small_spec(dir: &Path, id: &str, img: &Image, disk: &Path, cid: u32, extra: &str) -> VmSpec {
    std::fs::create_dir_all(dir).unwrap();
    VmSpec {
        vm_id: id.into(),
        cpu: 1,
        mem_mb: 256,
        kernel: img.vmlinux.clone(),
        initrd: Some(img.initrd.clone()),
        rootfs: img.rootfs.clone(),
        disk: disk.to_path_buf(),
        run_dir: dir.join("run"),
        logs_dir: dir.join("logs"),
        vsock_cid: cid,
        cmdline: format!("{CMDLINE} {extra}"),
        net: None,
    }
}

async fn stdout(vm: &VmRuntime, cmd: &str) -> String {
    let r = guest_exec(&vm.agent_socket(), cmd).await;
    assert_eq!(r["exitCode"], 0, "{cmd}: {r}");
    r["stdout"].as_str().unwrap().trim().to_string()
}

/// What the manager does for every memory restore: a fresh seed and the host's clock.
async fn give_identity(vm: &VmRuntime, seed_byte: u8) {
    let seed = base64::engine::general_purpose::STANDARD.encode([seed_byte; 64]);
    let sock = vm.agent_socket();
    let r = agent_call(
        &sock,
        "POST",
        "/entropy/reseed",
        Some(&json!({ "seed": seed })),
    )
    .await;
    assert!(matches!(r, Ok((204, _))), "reseed: {r:?}");
    let r = agent_call(
        &sock,
        "POST",
        "/time/sync",
        Some(&json!({ "unixTimeMs": now_ms() })),
    )
    .await;
    assert!(matches!(r, Ok((204, _))), "time sync: {r:?}");
}

async fn finish(b: &impl VmmBackend, vm: &VmRuntime) {
    b.kill(vm).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), b.wait_exit(vm)).await;
    b.cleanup(vm).await.unwrap();
    assert_gone(vm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_resume_and_two_independent_restores() {
    const T: &str = "capture_resume_and_two_independent_restores";
    let (Some(tools), Some(img)) = (tools(T), image(T)) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    assert!(b.capabilities().supports_memory_snapshots);

    let src_disk = work.path().join("src.ext4");
    make_disk(&src_disk);
    let s = small_spec(
        &work.path().join("src"),
        "snap-src",
        &img,
        &src_disk,
        10_100,
        "",
    );
    b.prepare(&s).await.unwrap();
    let t0 = Instant::now();
    let src = b.boot(&s).await.unwrap();
    let boot = wait_health(&src.agent_socket(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("source never answered: {e}\n{}", tail(&console(&src), 3000)));
    println!("TIMING cold boot -> /health {:?}", t0.elapsed());
    let _ = boot;
    let pid = stdout(
        &src,
        "echo kept > /workspace/f; nohup sleep 1000 >/dev/null 2>&1 & echo $!",
    )
    .await;

    // Capture: pause (vsock unplugged), state file, disk copy at the same paused instant, resume.
    let snap = work.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    let t1 = Instant::now();
    b.pause_for_snapshot(&src).await.unwrap();
    let t_paused = t1.elapsed();
    if let Err(e) = b.snapshot_create(&src, &snap).await {
        let log = |f| std::fs::read_to_string(src.logs_dir.join(f)).unwrap_or_default();
        panic!(
            "snapshot_create: {e}\nvmm.stderr.log:\n{}\nvmm.log:\n{}",
            log(rds_vmm::LOG_VMM_STDERR),
            tail(&log(rds_vmm::LOG_VMM), 3000)
        );
    }
    let t_saved = t1.elapsed();
    std::fs::copy(&src_disk, snap.join("disk.ext4")).unwrap();
    b.resume(&src).await.unwrap();
    let back = wait_health(&src.agent_socket(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "source silent after resume: {e}\n{}",
                tail(&console(&src), 3000)
            )
        });
    let state = std::fs::metadata(snap.join("vmstate.snap")).unwrap();
    let mem = std::fs::metadata(snap.join("mem.snap")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let mem_used = mem.blocks() * 512;
    println!(
        "TIMING pause (vsock unplugged) {t_paused:?}, state + memory written {:?}: device state {} KB, \
         memory {} MB in use of {} MB; resumed -> /health {back:?}",
        t_saved - t_paused,
        state.len() / 1000,
        mem_used / 1_000_000,
        mem.len() / 1_000_000
    );
    // Device state only in the stream; the memory file as large as the guest's, its unused pages holes.
    assert!(state.len() < 4 << 20, "state file of {} bytes", state.len());
    assert_eq!(mem.len(), 256 << 20);
    assert!(
        mem_used > 8 << 20 && mem_used < mem.len(),
        "memory file uses {mem_used} bytes"
    );
    assert_eq!(state.permissions().mode() & 0o777, 0o444);
    assert_eq!(
        stdout(&src, &format!("kill -0 {pid} && cat /workspace/f")).await,
        "kept"
    );

    // Two restores at once, each on its own disk copy, CID and (different) kernel command line.
    let specs: Vec<VmSpec> = (0..2)
        .map(|i| {
            let dir = work.path().join(format!("r{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let disk = dir.join("disk.ext4");
            std::fs::copy(snap.join("disk.ext4"), &disk).unwrap();
            small_spec(
                &dir,
                &format!("snap-r{i}"),
                &img,
                &disk,
                10_101 + i,
                &format!("rds.test={i}"),
            )
        })
        .collect();
    let restores = specs.iter().map(|s| async {
        b.prepare(s).await.unwrap();
        let t = Instant::now();
        let vm = b.restore(s, &snap).await.unwrap();
        let up = wait_health(&vm.agent_socket(), Duration::from_secs(30)).await;
        (vm, t.elapsed(), up)
    });
    let mut vms = Vec::new();
    for (vm, took, up) in futures::future::join_all(restores).await {
        up.unwrap_or_else(|e| panic!("restore silent: {e}\n{}", tail(&console(&vm), 3000)));
        println!("TIMING restore -> /health {took:?}");
        vms.push(vm);
    }
    // The snapshot may go away now: the restored guests hold their state already.
    std::fs::remove_dir_all(&snap).unwrap();

    for (i, vm) in vms.iter().enumerate() {
        give_identity(vm, i as u8 + 1).await;
        assert_eq!(
            stdout(vm, &format!("kill -0 {pid} && cat /workspace/f")).await,
            "kept",
            "restore {i} lost the process or the file"
        );
        let guest_ms: u64 = stdout(vm, "date +%s%3N").await.parse().unwrap();
        let skew = guest_ms.abs_diff(now_ms());
        assert!(skew < 2000, "restore {i}: clock {skew} ms off");
    }
    stdout(&vms[0], "echo mine > /workspace/only-r0").await;
    for vm in [&vms[1], &src] {
        let r = guest_exec(&vm.agent_socket(), "test -e /workspace/only-r0").await;
        assert_eq!(r["exitCode"], 1, "a restore's write is visible elsewhere");
    }
    let rand = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
    let (a, c) = (stdout(&vms[0], rand).await, stdout(&vms[1], rand).await);
    assert_eq!(a.len(), 64);
    assert_ne!(a, c, "two restores produce the same random bytes");

    for vm in vms.iter().chain([&src]) {
        finish(&b, vm).await;
    }
}

#[tokio::test]
async fn a_state_file_qemu_cannot_load_leaves_nothing_running() {
    const T: &str = "a_state_file_qemu_cannot_load_leaves_nothing_running";
    let (Some(tools), Some(img)) = (tools(T), image(T)) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    let disk = work.path().join("disk.ext4");
    make_disk(&disk);
    let snap = work.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    std::fs::write(snap.join("vmstate.snap"), b"QEVM but not really").unwrap();
    let s = small_spec(&work.path().join("vm"), "snap-bad", &img, &disk, 10_110, "");
    b.prepare(&s).await.unwrap();
    // No memory file: refused before anything starts.
    let err = b.restore(&s, &snap).await.unwrap_err();
    assert!(err.to_string().contains("mem.snap"), "{err}");
    // Memory present, device state garbage: QEMU starts, fails the load and is gone.
    std::fs::File::create(snap.join("mem.snap"))
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let err = b.restore(&s, &snap).await.unwrap_err();
    println!("restore of a bad state file: {err}");
    assert!(
        matches!(
            err,
            VmmError::DiedDuringLaunch { .. } | VmmError::Rejected { .. }
        ),
        "{err:?}"
    );
    let vm = VmRuntime {
        vm_id: s.vm_id.clone(),
        run_dir: s.run_dir.clone(),
        logs_dir: s.logs_dir.clone(),
        pid: 0,
        start_time: 0,
        boot_id: String::new(),
    };
    assert!(processes_of(&vm).is_empty(), "{:?}", processes_of(&vm));
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
}
