//! Real boots through the QEMU backend (TCG here); prerequisites and helpers in `common`. One VM at a
//! time: a booting guest keeps a core busy.

mod common;

use common::*;
use rds_vmm::{ExitStatus, VmRuntime, VmmBackend, VmmError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[tokio::test]
async fn boots_answers_health_and_shuts_down() {
    const T: &str = "boots_answers_health_and_shuts_down";
    let (Some(tools), Some(img)) = (tools(T), image(T)) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    println!("QEMU {}", b.capabilities().vmm_version);
    let s = spec(work.path(), "e2e-boot", &img);
    b.prepare(&s).await.unwrap();

    let t0 = Instant::now();
    let vm = b.boot(&s).await.unwrap();
    let t_qmp = t0.elapsed();
    assert!(b.is_alive(&vm));
    assert_eq!(vm.agent_socket(), s.run_dir.join("v.sock"));
    // QMP works beyond the launch handshake.
    b.pause(&vm).await.unwrap();
    b.pause(&vm).await.unwrap();
    b.resume(&vm).await.unwrap();

    let handshake = wait_handshake(&vm.agent_socket(), Duration::from_secs(60)).await;
    let t_vsock = t0.elapsed();
    let mut t_health = None;
    match handshake {
        Ok(stream) => {
            println!("TIMING qemu start -> QMP {t_qmp:?}, -> vsock handshake OK {t_vsock:?}");
            match health(stream).await {
                Ok(resp) if resp.starts_with("HTTP/1.1 200") => {
                    let compact: String = resp.chars().filter(|c| !c.is_whitespace()).collect();
                    assert!(compact.contains("\"protocol\":1"), "{resp}");
                    t_health = Some(t0.elapsed());
                    println!("TIMING qemu start -> /health 200 {:?}", t_health.unwrap());
                    // A repaired channel (new device, new helper) carries calls again.
                    let t = Instant::now();
                    b.repair_agent_channel(&vm).await.unwrap();
                    wait_health(&vm.agent_socket(), Duration::from_secs(30))
                        .await
                        .expect("/health after a channel repair");
                    println!(
                        "TIMING agent channel repair -> /health 200 {:?}",
                        t.elapsed()
                    );
                }
                other => println!("NOTE /health did not answer 200: {other:?}"),
            }
        }
        Err(e) => println!("NOTE no vsock handshake within 60 s: {e}"),
    }
    if t_health.is_none() {
        // The agent is optional for this crate; the guest must at least have reached rds-init.
        let con = console(&vm);
        println!("console.log tail:\n{}", tail(&con, 3000));
        assert!(
            con.contains("rds-init"),
            "console shows no rds-init:\n{}",
            tail(&con, 4000)
        );
        if std::env::var("RDS_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("RDS_REQUIRE_E2E=1 but the agent did not answer /health");
        }
    }

    let t1 = Instant::now();
    b.request_shutdown(&vm).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), b.wait_exit(&vm))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no exit within 15 s of system_powerdown; console tail:\n{}",
                console(&vm)
            )
        });
    println!(
        "TIMING system_powerdown -> exit {:?} ({status})",
        t1.elapsed()
    );
    assert_eq!(status, ExitStatus::Code(0));
    assert!(!b.is_alive(&vm));
    assert!(matches!(b.request_shutdown(&vm).await, Err(VmmError::Gone)));
    b.cleanup(&vm).await.unwrap();
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
    let log = std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_VMM)).unwrap();
    assert!(log.contains("\"system_powerdown\""), "{log}");
}

#[tokio::test]
async fn kill_stops_qemu_and_helper() {
    const T: &str = "kill_stops_qemu_and_helper";
    let (Some(tools), Some(img)) = (tools(T), image(T)) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    let s = spec(work.path(), "e2e-kill", &img);
    b.prepare(&s).await.unwrap();
    let vm = b.boot(&s).await.unwrap();
    assert_eq!(processes_of(&vm).len(), 2, "{:?}", processes_of(&vm));
    // Let the guest get going so the kill hits a running VM.
    tokio::time::sleep(Duration::from_secs(1)).await;

    b.kill(&vm).await;
    let status = tokio::time::timeout(Duration::from_secs(5), b.wait_exit(&vm))
        .await
        .expect("exit after SIGKILL");
    assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
    assert!(!b.is_alive(&vm));
    b.kill(&vm).await;
    assert_eq!(b.wait_exit(&vm).await, ExitStatus::Unknown);
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
}

#[tokio::test]
async fn qemu_dying_at_launch_reports_its_stderr() {
    const T: &str = "qemu_dying_at_launch_reports_its_stderr";
    let Some(tools) = tools(T) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    for f in ["vmlinux", "rootfs.ext4"] {
        std::fs::write(work.path().join(f), b"not an image").unwrap();
    }
    let img = Image {
        vmlinux: work.path().join("vmlinux"),
        initrd: work.path().join("vmlinux"),
        rootfs: work.path().join("rootfs.ext4"),
    };
    let mut s = spec(work.path(), "e2e-dies", &img);
    s.initrd = None;
    b.prepare(&s).await.unwrap();
    std::fs::remove_file(&s.disk).unwrap();
    std::fs::remove_file(s.run_dir.join("disk.ext4")).unwrap();

    let err = b.boot(&s).await.unwrap_err();
    match &err {
        VmmError::DiedDuringLaunch { stderr_tail, .. } => {
            assert!(stderr_tail.contains("disk.ext4"), "{stderr_tail}")
        }
        other => panic!("expected DiedDuringLaunch, got {other:?}"),
    }
    let vm = VmRuntime {
        vm_id: s.vm_id.clone(),
        run_dir: s.run_dir.clone(),
        logs_dir: s.logs_dir.clone(),
        pid: 0,
        start_time: 0,
        boot_id: String::new(),
    };
    // The helper was stopped with the failed launch.
    assert!(processes_of(&vm).is_empty(), "{:?}", processes_of(&vm));
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
}

/// A 211-byte PVH ELF "kernel" whose entry point halts forever: a real QEMU launch without a guest
/// image (command line, chroot, uid drop, seccomp, memfd, vhost-user link to the helper, QMP).
fn halting_kernel(path: &Path) {
    const BASE: u64 = 0x10_0000;
    let (ehsize, phsize, phnum) = (64u64, 56u64, 2u64);
    let note_off = ehsize + phsize * phnum;
    let note_len = 12 + 4 + 8; // header, "Xen\0", 64-bit entry
    let code_off = (note_off + note_len + 15) & !15;
    let entry = BASE + code_off;
    let code = [0xf4u8, 0xeb, 0xfd]; // hlt; jmp back to hlt
    let total = code_off + code.len() as u64;

    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&ehsize.to_le_bytes()); // phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [ehsize as u16, phsize as u16, phnum as u16, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let phdr = |f: &mut Vec<u8>, kind: u32, flags: u32, off: u64, len: u64, align: u64| {
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        for v in [off, BASE + off, BASE + off, len, len, align] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(&mut f, 1, 5, 0, total, 0x1000); // PT_LOAD, R+X
    phdr(&mut f, 4, 4, note_off, note_len, 4); // PT_NOTE
    for v in [4u32, 8, 18] {
        // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(b"Xen\0");
    f.extend_from_slice(&entry.to_le_bytes());
    f.resize(code_off as usize, 0);
    f.extend_from_slice(&code);
    std::fs::write(path, f).unwrap();
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap() // effective uid
}

#[tokio::test]
async fn launch_control_and_kill_with_a_halting_kernel() {
    const T: &str = "launch_control_and_kill_with_a_halting_kernel";
    let Some(tools) = tools(T) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let work = workdir();
    let b = backend(&tools);
    halting_kernel(&work.path().join("vmlinux"));
    std::fs::File::create(work.path().join("rootfs.ext4"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let img = Image {
        vmlinux: work.path().join("vmlinux"),
        initrd: PathBuf::new(),
        rootfs: work.path().join("rootfs.ext4"),
    };
    let mut s = spec(work.path(), "e2e-halt", &img);
    s.initrd = None;
    s.mem_mb = 128;
    b.prepare(&s).await.unwrap();

    let t0 = Instant::now();
    let vm = b.boot(&s).await.unwrap();
    println!("TIMING qemu spawn -> QMP ready {:?}", t0.elapsed());
    assert!(b.is_alive(&vm));
    let procs = processes_of(&vm);
    assert_eq!(procs.len(), 2, "{procs:?}");
    for (pid, _) in &procs {
        assert_eq!(
            uid_of(*pid),
            tools.runas.0,
            "pid {pid} did not drop to the VMM uid"
        );
    }
    let qmp_mode = std::fs::metadata(s.run_dir.join("qmp.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(qmp_mode & 0o777, 0o600);
    assert!(vm.agent_socket().exists(), "helper made no v.sock");

    b.pause(&vm).await.unwrap();
    b.resume(&vm).await.unwrap();
    b.resume(&vm).await.unwrap();
    // The halting guest ignores the power button; the request itself must be accepted.
    b.request_shutdown(&vm).await.unwrap();
    assert!(b.is_alive(&vm));

    b.kill(&vm).await;
    let status = tokio::time::timeout(Duration::from_secs(5), b.wait_exit(&vm))
        .await
        .expect("exit after SIGKILL");
    assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
    b.kill(&vm).await;
    b.cleanup(&vm).await.unwrap();
    assert_gone(&vm);
    let stderr = std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_VMM_STDERR)).unwrap();
    println!("vmm.stderr.log:\n{stderr}");
    let log = std::fs::read_to_string(vm.logs_dir.join(rds_vmm::LOG_VMM)).unwrap();
    for cmd in ["qmp_capabilities", "stop", "cont", "system_powerdown"] {
        assert!(
            log.contains(&format!("\"{cmd}\"")),
            "{cmd} missing in vmm.log:\n{log}"
        );
    }
}
