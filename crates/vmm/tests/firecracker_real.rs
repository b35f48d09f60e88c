//! The Firecracker backend with the real binaries, through the real jailer. Runs only where
//! `FIRECRACKER_BIN` and `JAILER_BIN` (default `/usr/local/bin/firecracker`, `/usr/local/bin/jailer`)
//! are executable, as root, with `/dev/kvm` and a guest image (`RDS_TEST_IMAGE_DIR`, default
//! `/var/cache/run-dat-sheesh/images/current`); otherwise each test prints `SKIP <test>: <reason>` and
//! passes (`RDS_REQUIRE_FIRECRACKER=1` turns the skips into failures).
//!
//! The launch test holds on hosts whose KVM cannot finish a guest boot (nested/paravirtual KVM):
//! Firecracker still accepts the configuration and InstanceStart, and the test only then needs the
//! VMM, not the guest. The restore test needs a guest that runs, so it also needs the KVM probe to pass.

use rds_vmm::firecracker::{FirecrackerBackend, FirecrackerConfig, LOG_METRICS};
use rds_vmm::probe::probe_kvm;
use rds_vmm::{ExitStatus, VmRuntime, VmSpec, VmmBackend, VmmError};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 root=/dev/vda ro rootfstype=ext4 \
                       init=/usr/local/sbin/rds-init rds.agent_port=8080 rds.disk_wait_ms=2000";

fn skip<T>(test: &str, reason: String) -> Option<T> {
    if std::env::var("RDS_REQUIRE_FIRECRACKER").as_deref() == Ok("1") {
        panic!("{test}: RDS_REQUIRE_FIRECRACKER=1 but {reason}");
    }
    println!("SKIP {test}: {reason}");
    None
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

struct Setup {
    backend: FirecrackerBackend,
    work: tempfile::TempDir,
    image: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    let fc = PathBuf::from(
        std::env::var("FIRECRACKER_BIN").unwrap_or_else(|_| "/usr/local/bin/firecracker".into()),
    );
    let jailer = PathBuf::from(
        std::env::var("JAILER_BIN").unwrap_or_else(|_| "/usr/local/bin/jailer".into()),
    );
    for (var, p) in [("FIRECRACKER_BIN", &fc), ("JAILER_BIN", &jailer)] {
        if !executable(p) {
            return skip(
                test,
                format!("{var} {} is not an executable file", p.display()),
            );
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip(test, "not root (the jailer needs root)".into());
    }
    if !Path::new("/dev/kvm").exists() {
        return skip(test, "no /dev/kvm".into());
    }
    let image = PathBuf::from(
        std::env::var("RDS_TEST_IMAGE_DIR")
            .unwrap_or_else(|_| "/var/cache/run-dat-sheesh/images/current".into()),
    );
    for f in ["vmlinux", "initrd", "rootfs.ext4"] {
        if !image.join(f).is_file() {
            return skip(
                test,
                format!("guest image file {} missing", image.join(f).display()),
            );
        }
    }
    // Short paths: the jail's sockets must fit in sun_path. The jail must share the disk's filesystem.
    let work = tempfile::Builder::new().prefix("rfc-").tempdir().unwrap();
    let runas = std::env::var("RDS_TEST_RUNAS").unwrap_or_else(|_| "1234:1234".into());
    let (u, g) = runas.split_once(':').expect("RDS_TEST_RUNAS is uid:gid");
    let cfg = FirecrackerConfig {
        firecracker_bin: fc,
        jailer_bin: jailer,
        chroot_base_dir: work.path().join("j"),
        runas: (u.parse().unwrap(), g.parse().unwrap()),
        log_level: "Info".into(),
    };
    let backend = FirecrackerBackend::new(cfg).expect("FirecrackerBackend::new");
    Some(Setup {
        backend,
        work,
        image,
    })
}

fn spec(s: &Setup, vm_id: &str) -> VmSpec {
    let vm = s.work.path().join("vms").join(vm_id);
    std::fs::create_dir_all(&vm).unwrap();
    // Image files may live on another filesystem: the read-only ones are copied into the jail then.
    let disk = vm.join("disk.ext4");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let _ = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&disk)
        .status();
    VmSpec {
        vm_id: vm_id.into(),
        cpu: 1,
        mem_mb: 256,
        kernel: s.image.join("vmlinux"),
        initrd: Some(s.image.join("initrd")),
        rootfs: s.image.join("rootfs.ext4"),
        disk,
        run_dir: vm.join("run"),
        logs_dir: vm.join("logs"),
        vsock_cid: 10042,
        cmdline: CMDLINE.into(),
        net: None,
    }
}

async fn kill_and_clean(s: &Setup, vm: &VmRuntime, spec: &VmSpec) {
    s.backend.kill(vm).await;
    let status = tokio::time::timeout(Duration::from_secs(5), s.backend.wait_exit(vm))
        .await
        .expect("firecracker exits within 5 s of SIGKILL");
    // Re-parented to us (child subreaper) when the jailer exited.
    assert!(
        matches!(
            status,
            ExitStatus::Signal(libc::SIGKILL) | ExitStatus::Code(_)
        ),
        "{status}"
    );
    s.backend.cleanup(vm).await.unwrap();
    let jail = s.backend.jail(&vm.vm_id);
    assert!(!jail.dir.exists(), "jail left behind");
    assert!(
        std::fs::symlink_metadata(&spec.run_dir).is_err(),
        "run link left behind"
    );
    assert!(
        !Path::new(&format!("/proc/{}", vm.pid)).exists(),
        "VMM pid left"
    );
    for f in ["vmm.log", "console.log", "vmm.stderr.log", LOG_METRICS] {
        assert!(spec.logs_dir.join(f).is_file(), "{f}");
    }
}

/// Launch through the jailer, configure, InstanceStart accepted, pause, snapshot, kill, cleanup.
#[tokio::test]
async fn launch_configure_pause_snapshot_kill_cleanup() {
    let test = "launch_configure_pause_snapshot_kill_cleanup";
    let Some(s) = setup(test) else { return };
    let id = "3e0c7a11-93b4-4a5e-8d6f-5a0f00000001";
    let sp = spec(&s, id);
    s.backend.prepare(&sp).await.unwrap();
    let vm = s.backend.boot(&sp).await.unwrap_or_else(|e| {
        panic!(
            "boot: {e}\nstderr: {}",
            std::fs::read_to_string(sp.logs_dir.join("vmm.stderr.log")).unwrap_or_default()
        )
    });
    assert!(s.backend.is_alive(&vm));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", vm.pid)).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(id));
    let owner = std::fs::metadata(format!("/proc/{}", vm.pid))
        .unwrap()
        .uid();
    assert_eq!(
        owner,
        s.backend.config().runas.0,
        "firecracker runs as JAILER_UID"
    );

    match s.backend.pause(&vm).await {
        Ok(()) => {
            let snap = s.work.path().join("snap");
            std::fs::create_dir_all(&snap).unwrap();
            s.backend.snapshot_create(&vm, &snap).await.unwrap();
            let mem = std::fs::metadata(snap.join("mem.snap")).unwrap();
            assert_eq!(mem.len(), 256 << 20);
            assert!(std::fs::metadata(snap.join("vmstate.snap")).unwrap().len() > 0);
            s.backend.resume(&vm).await.unwrap();
        }
        // Nested/paravirtual KVM: the guest may already have died with a KVM error.
        Err(VmmError::Gone) => println!(
            "NOTE {test}: the VMM exited before pause (guest cannot run on this host's KVM: {})",
            probe_kvm()
        ),
        Err(e) => panic!("pause: {e}"),
    }
    kill_and_clean(&s, &vm, &sp).await;
}

/// A restore of a freshly captured snapshot into another VM's jail answers and is killable.
#[tokio::test]
async fn snapshot_restore_into_a_fresh_jail() {
    let test = "snapshot_restore_into_a_fresh_jail";
    let Some(s) = setup(test) else { return };
    let probe = probe_kvm();
    if !probe.is_usable() {
        skip::<()>(test, format!("kvm probe: {probe}"));
        return;
    }
    let a = "3e0c7a11-93b4-4a5e-8d6f-5a0f00000002";
    let sa = spec(&s, a);
    s.backend.prepare(&sa).await.unwrap();
    let vm = s.backend.boot(&sa).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = s.work.path().join("snap2");
    std::fs::create_dir_all(&snap).unwrap();
    s.backend.pause(&vm).await.unwrap();
    s.backend.snapshot_create(&vm, &snap).await.unwrap();
    kill_and_clean(&s, &vm, &sa).await;

    let b = "3e0c7a11-93b4-4a5e-8d6f-5a0f00000003";
    let sb = spec(&s, b);
    std::fs::copy(&sa.disk, &sb.disk).unwrap();
    s.backend.prepare(&sb).await.unwrap();
    let vm2 = s.backend.restore(&sb, &snap).await.unwrap();
    assert!(s.backend.is_alive(&vm2));
    s.backend.pause(&vm2).await.unwrap();
    s.backend.resume(&vm2).await.unwrap();
    kill_and_clean(&s, &vm2, &sb).await;
}
