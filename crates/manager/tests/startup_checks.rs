//! Startup checks that need I/O (`docs/reference/configuration.md` §3) fail with the variable
//! named.

use rds_manager::config::Settings;
use std::collections::HashMap;

#[tokio::test]
async fn reflink_mode_on_a_filesystem_without_reflink_is_refused() {
    let Ok(vhost) = rds_testkit::vhost_vsock_bin() else {
        rds_testkit::skip("reflink_mode_refused", "vhost-device-vsock not found");
        return;
    };
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let env: HashMap<String, String> = [
        ("API_KEY", "k-0123456789abcdef"),
        ("ADMIN_EMAIL", "a@b.c"),
        ("ADMIN_PASSWORD", "pw-0123456789"),
        ("ROOTFS_CLONE_MODE", "reflink"),
        ("VHOST_VSOCK_BIN", vhost.as_str()),
        ("STORAGE_ROOT", &dir.path().join("s").display().to_string()),
        (
            "SQLITE_PATH",
            &dir.path().join("m.db").display().to_string(),
        ),
        ("KERNEL_PATH", "/nonexistent/vmlinux"),
        ("BASE_ROOTFS_PATH", "/nonexistent/rootfs.ext4"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = Settings::from_env(&env).unwrap();
    let errors = match rds_manager::build(&settings).await {
        Ok(_) => panic!("startup accepted reflink on tmpfs"),
        Err(e) => e,
    };
    let names: Vec<&str> = errors.iter().map(|e| e.variable.as_str()).collect();
    for want in ["ROOTFS_CLONE_MODE", "KERNEL_PATH", "BASE_ROOTFS_PATH"] {
        assert!(names.contains(&want), "{want} not reported: {names:?}");
    }
    assert!(
        !dir.path().join("m.db").exists(),
        "a refused startup touched the DB"
    );
}
