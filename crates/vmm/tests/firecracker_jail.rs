//! The Firecracker jail on the filesystem (`docs/reference/vmm-backends.md` §4.1, §6): what
//! `prepare` makes, with which modes and owners, socket path lengths, the cross-filesystem rules,
//! and leftovers cleared. No process is started here.

use rds_vmm::firecracker::{CgroupV2, FirecrackerBackend, FirecrackerConfig, LaunchPlan, Launcher};
use rds_vmm::{VmSpec, VmmBackend, VmmError};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct NoLaunch;

#[async_trait::async_trait]
impl Launcher for NoLaunch {
    async fn launch(&self, _: &LaunchPlan) -> Result<u32, VmmError> {
        unreachable!("these tests start nothing")
    }
}

fn runas() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    unsafe {
        if libc::geteuid() == 0 {
            (1234, 1235)
        } else {
            (libc::geteuid(), libc::getegid())
        }
    }
}

fn backend(base: &Path, cgroup: Option<CgroupV2>) -> FirecrackerBackend {
    let cfg = FirecrackerConfig {
        firecracker_bin: "/opt/fc/firecracker-v1.16.1".into(),
        jailer_bin: "/opt/fc/jailer".into(),
        chroot_base_dir: base.to_path_buf(),
        runas: runas(),
        log_level: "Info".into(),
    };
    FirecrackerBackend::with_launcher(cfg, Arc::new(NoLaunch), "1.16.1".into(), cgroup)
}

const ID: &str = "6f1d2c1e-8f0a-4b8e-9a57-0c2f7d3b9e11";

fn spec(root: &Path, inputs: &Path) -> VmSpec {
    std::fs::create_dir_all(inputs).unwrap();
    for f in ["vmlinux", "initrd", "rootfs.ext4", "disk.ext4"] {
        std::fs::write(inputs.join(f), f.as_bytes()).unwrap();
    }
    VmSpec {
        vm_id: ID.into(),
        cpu: 1,
        mem_mb: 128,
        kernel: inputs.join("vmlinux"),
        initrd: Some(inputs.join("initrd")),
        rootfs: inputs.join("rootfs.ext4"),
        disk: inputs.join("disk.ext4"),
        run_dir: root.join("vms").join(ID).join("run"),
        logs_dir: root.join("vms").join(ID).join("logs"),
        vsock_cid: 10001,
        cmdline: "console=ttyS0".into(),
        net: None,
    }
}

fn same_inode(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[tokio::test]
async fn prepare_builds_the_jail_of_the_spec() {
    let dir = tempfile::Builder::new().prefix("fcj-").tempdir().unwrap();
    let base = dir.path().join("jailer");
    let b = backend(&base, None);
    let s = spec(dir.path(), &dir.path().join("in"));
    b.prepare(&s).await.unwrap();

    let jail = b.jail(ID);
    // Named after the binary's file name, as the jailer does.
    assert_eq!(
        jail.root,
        base.join("firecracker-v1.16.1").join(ID).join("root")
    );
    let (uid, gid) = runas();

    let d = std::fs::metadata(&jail.dir).unwrap();
    assert_eq!(d.mode() & 0o777, 0o700);
    let r = std::fs::metadata(&jail.root).unwrap();
    assert_eq!((r.mode() & 0o777, r.uid(), r.gid()), (0o700, uid, gid));

    // Hard links to the inputs, nothing else but the FIFOs.
    for (name, src) in [
        ("vmlinux", &s.kernel),
        ("initrd", s.initrd.as_ref().unwrap()),
        ("rootfs.ext4", &s.rootfs),
        ("disk.ext4", &s.disk),
    ] {
        assert!(
            same_inode(&jail.root.join(name), src),
            "{name} is not a hard link"
        );
    }
    let disk = std::fs::metadata(jail.root.join("disk.ext4")).unwrap();
    assert_eq!(
        (disk.mode() & 0o777, disk.uid(), disk.gid()),
        (0o600, uid, gid)
    );
    for fifo in ["log.fifo", "metrics.fifo", "console.fifo"] {
        let m = std::fs::metadata(jail.root.join(fifo)).unwrap();
        assert!(m.file_type().is_fifo(), "{fifo}");
        assert_eq!(
            (m.mode() & 0o777, m.uid(), m.gid()),
            (0o600, uid, gid),
            "{fifo}"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&jail.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "console.fifo",
            "disk.ext4",
            "initrd",
            "log.fifo",
            "metrics.fifo",
            "rootfs.ext4",
            "vmlinux"
        ]
    );

    // The run directory is a link to the jail root: `<run>/v.sock` is Firecracker's `/v.sock`.
    assert_eq!(std::fs::read_link(&s.run_dir).unwrap(), jail.root);
    for f in ["vmm.log", "console.log", "vmm.stderr.log", "metrics.log"] {
        assert!(s.logs_dir.join(f).is_file(), "{f}");
    }

    // Socket paths, as the manager and Firecracker use them, fit in sun_path.
    for sock in [
        jail.root.join("v.sock_65535"),
        jail.root.join("api.sock"),
        s.run_dir.join("v.sock_65535"),
    ] {
        assert!(sock.as_os_str().len() <= 107, "{}", sock.display());
    }

    // Leftovers are cleared: a second prepare starts from an empty jail again.
    std::fs::write(jail.root.join("firecracker.pid"), b"999999\n").unwrap();
    std::fs::write(jail.root.join("v.sock"), b"stale").unwrap();
    std::fs::create_dir_all(jail.root.join("dev/net")).unwrap();
    std::fs::write(s.logs_dir.join("console.log"), b"kept\n").unwrap();
    b.prepare(&s).await.unwrap();
    assert!(!jail.root.join("v.sock").exists() && !jail.root.join("dev").exists());
    assert_eq!(
        std::fs::read(s.logs_dir.join("console.log")).unwrap(),
        b"kept\n"
    );

    // The jailer arguments for this spec: absolute exec file, no cgroup on this host.
    let args: Vec<String> = b
        .jailer_args(&s)
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    assert_eq!(args[2..4], ["--exec-file", "/opt/fc/firecracker-v1.16.1"]);
    assert!(!args.iter().any(|a| a.starts_with("--cgroup")));
    assert_eq!(args[args.len() - 3..], ["--", "--api-sock", "/api.sock"]);
}

#[tokio::test]
async fn cgroup_v2_hosts_get_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cg = CgroupV2 {
        mount: "/sys/fs/cgroup".into(),
        cpu: false,
    };
    let b = backend(&dir.path().join("j"), Some(cg));
    let s = spec(dir.path(), &dir.path().join("in"));
    let args: Vec<String> = b
        .jailer_args(&s)
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    let joined = args.join(" ");
    assert!(
        joined.contains(
            "--new-pid-ns --cgroup-version 2 --parent-cgroup rds \
             --cgroup memory.max=268435456 --cgroup pids.max=33 -- --api-sock /api.sock"
        ),
        "{joined}"
    );
}

#[tokio::test]
async fn too_long_socket_paths_and_bad_inputs_fail_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("j".repeat(60));
    let b = backend(&long, None);
    let s = spec(dir.path(), &dir.path().join("in"));
    match b.prepare(&s).await {
        Err(VmmError::SocketPathTooLong { path, len }) => {
            assert!(len > 107);
            assert!(path.ends_with("root/v.sock_65535"), "{}", path.display());
        }
        other => panic!("expected SocketPathTooLong, got {other:?}"),
    }
    assert!(!long.exists());

    let b = backend(&dir.path().join("j"), None);
    let mut s = spec(dir.path(), &dir.path().join("in"));
    s.initrd = Some(dir.path().join("no-initrd"));
    let err = b.prepare(&s).await.unwrap_err().to_string();
    assert!(
        err.starts_with("missing input ") && err.contains("no-initrd"),
        "{err}"
    );
    assert!(!b.jail(ID).dir.exists());

    let mut s = spec(dir.path(), &dir.path().join("in"));
    s.vm_id = "../escape".into();
    assert!(b.prepare(&s).await.is_err());
    assert!(!dir.path().join("j").join("escape").exists());
}

/// Another filesystem than the jail's: `/dev/shm` (tmpfs) when it differs from the temp dir's.
fn other_fs(than: &Path) -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    let a = std::fs::metadata(shm).ok()?;
    let b = std::fs::metadata(than).ok()?;
    (a.dev() != b.dev()).then(|| shm.to_path_buf())
}

#[tokio::test]
async fn across_filesystems_read_only_inputs_are_copied_and_the_disk_refused() {
    let dir = tempfile::Builder::new().prefix("fcx-").tempdir().unwrap();
    let Some(shm) = other_fs(dir.path()) else {
        println!(
            "SKIP across_filesystems_read_only_inputs_are_copied_and_the_disk_refused: \
             /dev/shm is on the temp dir's filesystem"
        );
        return;
    };
    let far = tempfile::tempdir_in(shm).unwrap();
    let b = backend(&dir.path().join("j"), None);

    // Inputs on another filesystem: the read-only ones are copied (0444), the writable disk refused.
    let mut s = spec(dir.path(), far.path());
    let err = b.prepare(&s).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot hard-link the writable disk across filesystems")
            && err.contains("JAILER_CHROOT_BASE_DIR"),
        "{err}"
    );
    assert!(!b.jail(ID).dir.exists(), "a failed prepare leaves no jail");

    let near = dir.path().join("near");
    std::fs::create_dir_all(&near).unwrap();
    std::fs::write(near.join("disk.ext4"), b"d").unwrap();
    s.disk = near.join("disk.ext4");
    b.prepare(&s).await.unwrap();
    let root = b.jail(ID).root;
    let k = std::fs::metadata(root.join("vmlinux")).unwrap();
    assert_eq!(k.mode() & 0o777, 0o444);
    assert!(!same_inode(&root.join("vmlinux"), &s.kernel));
    assert_eq!(
        std::fs::read(root.join("rootfs.ext4")).unwrap(),
        b"rootfs.ext4"
    );
    assert!(same_inode(&root.join("disk.ext4"), &s.disk));
}
