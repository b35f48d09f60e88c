//! The database story: one test body, run on SQLite and on Postgres (style.md, after Atuin's
//! `db_story.rs`). It goes through the `Db` API the manager uses: the built-in image, creates up to the
//! quota, address allocation and its derived identities, state changes, tombstones, listing, snapshot
//! rows, and a restart (a second `Db` on the same database). The Postgres half needs `RDS_TEST_DATABASE_URL`
//! (`scripts/test-postgres.sh`); without it it prints SKIP, or fails under `RDS_REQUIRE_E2E=1`.

use rds_manager::config::{DbSettings, Subnet};
use rds_manager::db::{
    ActivityEvent, ApiKeyRecord, AttemptOutcome, CreateVmError, Db, DeliveryRecord, InsertKeyError,
    NewVm, PoolRole, SessionRecord, SnapshotScope, WebhookRecord,
};
use rds_manager::model::{SnapshotKind, SnapshotRecord, VmRecord, VmState};
use rds_testkit::TestPostgres;
use std::net::Ipv4Addr;

fn sqlite(dir: &tempfile::TempDir) -> DbSettings {
    DbSettings {
        dialect: "sqlite",
        sqlite_path: dir.path().join("db/manager.db"),
        database_url: None,
    }
}

fn postgres(pg: &TestPostgres) -> DbSettings {
    DbSettings {
        dialect: "postgres",
        sqlite_path: "unused.db".into(),
        database_url: Some(pg.url().to_string()),
    }
}

fn new_vm(id: &str, image_id: &str) -> NewVm {
    NewVm {
        id: id.into(),
        cpu: 2,
        mem_mb: 512,
        disk_size_mb: 1024,
        outbound_internet: true,
        allow_ips: vec!["10.0.0.0/8".into()],
        image_id: image_id.into(),
        source_snapshot_id: None,
        backend: "qemu".into(),
        pool_role: None,
        timeout_sec: None,
        timeout_action: Default::default(),
        metadata: Default::default(),
        secret_env: None,
        peer_links: Vec::new(),
    }
}

fn guest(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 0, last)
}

fn ids(vms: &[VmRecord]) -> Vec<&str> {
    vms.iter().map(|v| v.id.as_str()).collect()
}

/// Creates with the creation timestamps (millisecond precision) kept apart, so "newest first" is
/// decided by `created_at`, not by the id tie-break.
async fn create(db: &Db, id: &str, image: &str, quota: u64, subnet: &Subnet) -> VmRecord {
    std::thread::sleep(std::time::Duration::from_millis(3));
    db.create_vm(&new_vm(id, image), quota, subnet)
        .await
        .unwrap_or_else(|e| panic!("create {id}: {e}"))
}

async fn story(settings: DbSettings) {
    // /29: gateway .1, guests .2–.6, broadcast .7.
    let subnet = Subnet::parse("172.16.0.0/29").unwrap();
    let db = Db::connect(&settings).await.expect("connect and migrate");
    db.ping().await.unwrap();

    // Built-in image: registered once, the default while none is set; a second one does not take over.
    let builtin = db
        .ensure_builtin_image("/img/vmlinux", None, "/img/rootfs.ext4")
        .await
        .unwrap();
    assert!(builtin.built_in);
    assert_eq!(builtin.name, "built-in");
    let again = db
        .ensure_builtin_image("/img/vmlinux", None, "/img/rootfs.ext4")
        .await
        .unwrap();
    assert_eq!(again.id, builtin.id, "registration is idempotent");
    assert_eq!(db.default_image().await.unwrap().unwrap().id, builtin.id);
    let other = db
        .ensure_builtin_image("/img2/vmlinux", Some("/img2/initrd"), "/img2/rootfs.ext4")
        .await
        .unwrap();
    assert_ne!(other.id, builtin.id);
    assert_eq!(db.default_image().await.unwrap().unwrap().id, builtin.id);
    let got = db.get_image(&other.id).await.unwrap().unwrap();
    assert_eq!(got.initrd_path.as_deref(), Some("/img2/initrd"));
    assert_eq!(got.kernel_path.as_deref(), Some("/img2/vmlinux"));
    db.set_default_image(&other.id).await.unwrap();
    assert_eq!(db.default_image().await.unwrap().unwrap().id, other.id);
    db.set_default_image(&builtin.id).await.unwrap();
    assert_eq!(db.default_image().await.unwrap().unwrap().id, builtin.id);
    assert!(db.get_image("img-missing").await.unwrap().is_none());
    let img = builtin.id.as_str();

    // Creates up to the quota; ids sort against creation order so the listing proves created_at order.
    let z = create(&db, "vm-z", img, 3, &subnet).await;
    assert_eq!(z.state, VmState::Created);
    assert_eq!(
        (z.guest_ip, z.tap_name.as_str(), z.mac.as_str(), z.vsock_cid),
        (guest(2), "rds-tap2", "02:00:ac:10:00:02", 10_002)
    );
    assert_eq!((z.cpu, z.mem_mb, z.disk_size_mb), (2, 512, 1024));
    assert!(z.outbound_internet);
    assert_eq!(z.allow_ips, vec!["10.0.0.0/8".to_string()]);
    assert_eq!((z.image_id.as_str(), z.backend.as_str()), (img, "qemu"));
    assert_eq!(
        (
            z.vmm_pid,
            z.provision_mode.as_deref(),
            z.last_error.as_deref()
        ),
        (None, None, None)
    );
    let y = create(&db, "vm-y", img, 3, &subnet).await;
    let x = create(&db, "vm-x", img, 3, &subnet).await;
    assert_eq!(
        (y.guest_ip, y.tap_name.as_str(), y.vsock_cid),
        (guest(3), "rds-tap3", 10_003)
    );
    assert_eq!(
        (x.guest_ip, x.mac.as_str()),
        (guest(4), "02:00:ac:10:00:04")
    );
    match db.create_vm(&new_vm("vm-over", img), 3, &subnet).await {
        Err(CreateVmError::Quota(3)) => {}
        other => panic!("expected the quota error, got {other:?}"),
    }
    assert!(
        db.get_vm("vm-over").await.unwrap().is_none(),
        "nothing kept"
    );
    assert_eq!(ids(&db.list_vms().await.unwrap()), ["vm-x", "vm-y", "vm-z"]);

    // State changes persist; STOPPED and ERROR keep their addresses.
    db.set_runtime("vm-z", 4242, 987_654_321, "boot-1")
        .await
        .unwrap();
    // Only STARTING becomes RUNNING: a row still CREATED is left alone.
    assert!(!db.set_running("vm-z", "boot").await.unwrap());
    let starting = [VmState::Created];
    assert!(db
        .transition("vm-z", &starting, VmState::Starting, None)
        .await
        .unwrap());
    assert!(db.set_running("vm-z", "boot").await.unwrap());
    let z = db.get_vm("vm-z").await.unwrap().unwrap();
    assert_eq!(z.state, VmState::Running);
    assert_eq!(z.provision_mode.as_deref(), Some("boot"));
    assert_eq!(
        (z.vmm_pid, z.vmm_start_time, z.vmm_boot_id.as_deref()),
        (Some(4242), Some(987_654_321), Some("boot-1"))
    );
    for (from, to) in [
        (VmState::Created, VmState::Starting),
        (VmState::Starting, VmState::Running),
        (VmState::Running, VmState::Stopping),
        (VmState::Stopping, VmState::Stopped),
    ] {
        assert!(
            db.transition("vm-y", &[from], to, None).await.unwrap(),
            "{from} -> {to}"
        );
    }
    // A change from a state the row is not in does nothing (a concurrent change won)...
    assert!(!db
        .transition("vm-y", &[VmState::Running], VmState::Stopped, Some("late"))
        .await
        .unwrap());
    let y = db.get_vm("vm-y").await.unwrap().unwrap();
    assert_eq!((y.state, y.last_error), (VmState::Stopped, None));
    // ...and one the transition table forbids is refused before any SQL.
    assert!(matches!(
        db.transition("vm-y", &[VmState::Stopped], VmState::Running, None)
            .await,
        Err(rds_manager::db::DbError::Transition { .. })
    ));
    assert!(db
        .transition(
            "vm-x",
            &[VmState::Created],
            VmState::Error,
            Some("VMM exited: boom")
        )
        .await
        .unwrap());
    let x = db.get_vm("vm-x").await.unwrap().unwrap();
    assert_eq!(
        (x.state, x.last_error.as_deref()),
        (VmState::Error, Some("VMM exited: boom"))
    );
    db.clear_runtime("vm-z").await.unwrap();
    let z = db.get_vm("vm-z").await.unwrap().unwrap();
    assert_eq!((z.vmm_pid, z.vmm_boot_id), (None, None));
    assert_eq!(
        z.state,
        VmState::Running,
        "clearing the runtime keeps the state"
    );
    let w = create(&db, "vm-w", img, 10, &subnet).await;
    assert_eq!(w.guest_ip, guest(5), "STOPPED .3 and ERROR .4 stay held");

    // Delete: a tombstone that is never listed, whose address is free again and whose id stays taken.
    db.mark_deleted("vm-y").await.unwrap();
    assert!(db.get_vm("vm-y").await.unwrap().is_none());
    assert_eq!(ids(&db.list_vms().await.unwrap()), ["vm-w", "vm-x", "vm-z"]);
    let v = create(&db, "vm-v", img, 10, &subnet).await;
    assert_eq!(
        (v.guest_ip, v.tap_name.as_str(), v.vsock_cid),
        (guest(3), "rds-tap3", 10_003),
        "lowest free address: the deleted VM's"
    );
    match db.create_vm(&new_vm("vm-y", img), 10, &subnet).await {
        Err(CreateVmError::Db(_)) => {}
        other => panic!("a tombstoned id must not be reused, got {other:?}"),
    }
    // That failed create rolled back its allocation: .6 is still the next one, then the subnet is full.
    let u = create(&db, "vm-u", img, 10, &subnet).await;
    assert_eq!(u.guest_ip, guest(6));
    match db.create_vm(&new_vm("vm-t", img), 10, &subnet).await {
        Err(CreateVmError::NoAddress) => {}
        other => panic!("expected no free address, got {other:?}"),
    }
    let before = db.list_vms().await.unwrap();
    assert_eq!(ids(&before), ["vm-u", "vm-v", "vm-w", "vm-x", "vm-z"]);
    let ips: std::collections::HashSet<_> = before.iter().map(|v| v.guest_ip).collect();
    let cids: std::collections::HashSet<_> = before.iter().map(|v| v.vsock_cid).collect();
    assert_eq!((ips.len(), cids.len()), (5, 5), "unique among live VMs");

    // Restart: a new Db on the same database (migrations re-run) sees the same rows and allocations.
    db.close().await;
    let db = Db::connect(&settings).await.expect("reopen");
    let after = db.list_vms().await.unwrap();
    assert_eq!(ids(&after), ids(&before));
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(
            (
                a.state,
                a.guest_ip,
                &a.tap_name,
                &a.mac,
                a.vsock_cid,
                &a.created_at
            ),
            (
                b.state,
                b.guest_ip,
                &b.tap_name,
                &b.mac,
                b.vsock_cid,
                &b.created_at
            )
        );
    }
    assert_eq!(db.default_image().await.unwrap().unwrap().id, builtin.id);
    let again = db
        .ensure_builtin_image("/img/vmlinux", None, "/img/rootfs.ext4")
        .await
        .unwrap();
    assert_eq!(
        again.id, builtin.id,
        "still one built-in image after a restart"
    );
    match db.create_vm(&new_vm("vm-t", img), 10, &subnet).await {
        Err(CreateVmError::NoAddress) => {}
        other => panic!("allocations survive the restart, got {other:?}"),
    }
    db.mark_deleted("vm-x").await.unwrap();
    let t = create(&db, "vm-t", img, 10, &subnet).await;
    assert_eq!((t.guest_ip, t.vsock_cid), (guest(4), 10_004));
    db.close().await;
}

/// The image queries beyond the built-in one, on both dialects (typed NULL binds, upserts, the
/// default-image expression, `IN` across tables).
async fn image_queries(settings: DbSettings) {
    let subnet = Subnet::parse("172.16.0.0/29").unwrap();
    let db = Db::connect(&settings).await.unwrap();
    assert_eq!(db.default_image_id().await.unwrap(), None);
    let builtin = db
        .ensure_builtin_image("/img/vmlinux", None, "/img/rootfs.ext4")
        .await
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3));
    let user = db
        .insert_image("img-user", "mine", "uploaded later")
        .await
        .unwrap();
    assert!(!user.built_in);
    assert_eq!(user.description, "uploaded later");
    let listed: Vec<_> = db.list_images().await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["img-user", builtin.id.as_str()]
    );
    db.set_default_image("img-user").await.unwrap();
    assert_eq!(
        db.default_image_id().await.unwrap().as_deref(),
        Some("img-user")
    );
    create(&db, "vm-on-user", "img-user", 5, &subnet).await;
    assert_eq!(
        db.vm_using_image("img-user").await.unwrap().as_deref(),
        Some("vm-on-user")
    );
    db.mark_deleted("vm-on-user").await.unwrap();
    assert_eq!(db.vm_using_image("img-user").await.unwrap(), None);
    db.delete_image("img-user").await.unwrap();
    assert!(db.get_image("img-user").await.unwrap().is_none());
    assert_eq!(
        db.default_image_id().await.unwrap(),
        Some(builtin.id.clone()),
        "the built-in image again once the default is gone"
    );
    assert_eq!(db.cached_digest("/img/vmlinux", 10, 7).await.unwrap(), None);
    db.store_digest("/img/vmlinux", 10, 7, "aa").await.unwrap();
    db.store_digest("/img/vmlinux", 11, 8, "bb").await.unwrap();
    assert_eq!(db.cached_digest("/img/vmlinux", 10, 7).await.unwrap(), None);
    assert_eq!(
        db.cached_digest("/img/vmlinux", 11, 8)
            .await
            .unwrap()
            .as_deref(),
        Some("bb")
    );
    db.close().await;
}

fn snapshot(id: &str, kind: SnapshotKind, image: &str) -> SnapshotRecord {
    std::thread::sleep(std::time::Duration::from_millis(3));
    SnapshotRecord {
        id: id.into(),
        kind,
        image_id: image.into(),
        source_vm_id: (kind == SnapshotKind::UserOverlay).then(|| "vm-src".to_string()),
        base_seed_snapshot_id: None,
        cpu: 2,
        mem_mb: 768,
        disk_size_mb: 1024,
        has_memory: kind == SnapshotKind::Template,
        size_bytes: 5_000_000_000,
        backend: "qemu".into(),
        vmm_version: "7.2.19".into(),
        agent_port: 8080,
        kernel_sha256: Some("k".repeat(64)),
        initrd_sha256: None,
        rootfs_sha256: Some("r".repeat(64)),
        created_at: rds_manager::model::now_rfc3339(),
    }
}

/// Snapshot rows: every column round-trips (large sizes, nulls, flags), listings by scope are
/// newest first, and the image queries see user snapshots and templates apart.
async fn snapshot_queries(settings: DbSettings) {
    let db = Db::connect(&settings).await.unwrap();
    let img = db.insert_image("img-a", "a", "a").await.unwrap().id;
    let tpl = snapshot("snap-t", SnapshotKind::Template, &img);
    let old = snapshot("snap-b", SnapshotKind::UserOverlay, &img);
    let new = SnapshotRecord {
        base_seed_snapshot_id: Some("snap-t".into()),
        ..snapshot("snap-a", SnapshotKind::UserOverlay, &img)
    };
    for s in [&tpl, &old, &new] {
        db.insert_snapshot(s).await.unwrap();
    }
    assert_eq!(
        db.get_snapshot("snap-a").await.unwrap().as_ref(),
        Some(&new)
    );
    assert_eq!(
        db.get_snapshot("snap-t").await.unwrap().as_ref(),
        Some(&tpl)
    );
    assert!(db.get_snapshot("snap-x").await.unwrap().is_none());
    let ids = |v: Vec<SnapshotRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.list_snapshots(SnapshotScope::User).await.unwrap()),
        ["snap-a", "snap-b"]
    );
    assert_eq!(
        ids(db.list_snapshots(SnapshotScope::Internal).await.unwrap()),
        ["snap-t"]
    );
    assert_eq!(
        ids(db.list_snapshots(SnapshotScope::All).await.unwrap()),
        ["snap-a", "snap-b", "snap-t"]
    );
    assert_eq!(
        db.count_snapshots().await.unwrap(),
        vec![("template".to_string(), 1), ("user_overlay".to_string(), 2)]
    );
    assert_eq!(
        db.user_snapshot_using_image(&img).await.unwrap().as_deref(),
        Some("snap-a")
    );
    assert_eq!(db.template_snapshot_ids(&img).await.unwrap(), ["snap-t"]);
    assert_eq!(db.image_seeded_by("snap-t").await.unwrap(), None);
    db.set_image_seed_ready(&img, "snap-t").await.unwrap();
    assert_eq!(
        db.image_seeded_by("snap-t").await.unwrap().as_deref(),
        Some(img.as_str())
    );
    let seed = db.get_image(&img).await.unwrap().unwrap().seed.unwrap();
    assert_eq!(
        (seed.snapshot_id.as_deref(), seed.status.as_str()),
        (Some("snap-t"), "ready")
    );
    assert!(db.delete_snapshot("snap-b").await.unwrap());
    assert!(!db.delete_snapshot("snap-b").await.unwrap());
    assert!(db.delete_snapshot("snap-a").await.unwrap());
    assert_eq!(db.user_snapshot_using_image(&img).await.unwrap(), None);
    // Deleting the image takes its templates along.
    db.delete_image(&img).await.unwrap();
    assert!(db.get_snapshot("snap-t").await.unwrap().is_none());
    assert!(db
        .list_snapshots(SnapshotScope::All)
        .await
        .unwrap()
        .is_empty());
    db.close().await;
}

/// Two managers on one database, creating at once: the quota holds and no address is handed out twice.
async fn concurrent_creates(settings: DbSettings) {
    let subnet = Subnet::parse("172.16.0.0/27").unwrap();
    let (a, b) = (
        Db::connect(&settings).await.unwrap(),
        Db::connect(&settings).await.unwrap(),
    );
    let quota = 9;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let db = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                db.create_vm(&new_vm(&format!("vm-{i:02}"), "img"), quota, &subnet)
                    .await
            })
        })
        .collect();
    let (mut made, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(vm) => made.push(vm),
            Err(CreateVmError::Quota(_)) => refused += 1,
            Err(e) => panic!("concurrent create failed: {e}"),
        }
    }
    assert_eq!((made.len(), refused), (quota as usize, 16 - quota as usize));
    let mut ips: Vec<_> = made.iter().map(|v| v.guest_ip).collect();
    ips.sort();
    let lowest: Vec<_> = (2..2 + quota as u8).map(guest).collect();
    assert_eq!(ips, lowest, "the lowest addresses, each once");
    assert_eq!(a.list_vms().await.unwrap().len(), quota as usize);
    a.close().await;
    b.close().await;
}

/// Internal VMs and templates (`docs/snapshots.md` Templates, Warm pool): internal rows take
/// addresses but no quota and stay out of user listings; a pool checkout is one transaction with
/// the quota check and only takes a RUNNING pool VM once; the image's template state moves pending
/// → failed → ready → none.
async fn internal_queries(settings: DbSettings) {
    let subnet = Subnet::parse("172.16.0.0/29").unwrap();
    let db = Db::connect(&settings).await.unwrap();
    let img = db.insert_image("img-p", "p", "p").await.unwrap().id;
    let internal = |id: &str, role| NewVm {
        pool_role: Some(role),
        ..new_vm(id, &img)
    };
    // A quota of 1 already used by a user VM does not stop internal VMs.
    create(&db, "user-1", &img, 1, &subnet).await;
    let pool = db
        .create_vm(&internal("pool-1", PoolRole::Pool), 1, &subnet)
        .await
        .unwrap();
    assert_eq!(pool.pool_role.as_deref(), Some("pool"));
    assert_eq!(pool.guest_ip, guest(3));
    db.create_vm(&internal("tpl-1", PoolRole::Template), 1, &subnet)
        .await
        .unwrap();
    assert_eq!(db.list_vms().await.unwrap().len(), 1, "internal VMs listed");
    assert!(db.get_vm("pool-1").await.unwrap().is_none());
    assert!(db.get_any_vm("pool-1").await.unwrap().is_some());
    let pools = db.internal_vms(PoolRole::Pool).await.unwrap();
    assert_eq!(
        pools.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        ["pool-1"]
    );

    // Not RUNNING yet: nothing to take. Quota full: 429 before anything changes.
    assert!(db
        .claim_pool_vm("pool-1", 5, true, &[])
        .await
        .unwrap()
        .is_none());
    assert!(db
        .transition("pool-1", &[VmState::Created], VmState::Starting, None)
        .await
        .unwrap());
    assert!(db.set_running("pool-1", "snapshot").await.unwrap());
    assert!(matches!(
        db.claim_pool_vm("pool-1", 1, true, &[]).await,
        Err(CreateVmError::Quota(1))
    ));
    let allow = vec!["10.1.0.0/16".to_string()];
    std::thread::sleep(std::time::Duration::from_millis(3));
    let taken = db
        .claim_pool_vm("pool-1", 5, true, &allow)
        .await
        .unwrap()
        .expect("a RUNNING pool VM is taken");
    assert_eq!(taken.pool_role, None);
    assert!(taken.outbound_internet);
    assert_eq!(taken.allow_ips, allow);
    assert!(
        taken.created_at > pool.created_at,
        "createdAt is the checkout time"
    );
    assert_eq!(taken.provision_mode.as_deref(), Some("snapshot"));
    assert!(db
        .claim_pool_vm("pool-1", 5, true, &[])
        .await
        .unwrap()
        .is_none());
    assert_eq!(db.list_vms().await.unwrap().len(), 2);
    db.delete_internal_vm("tpl-1").await.unwrap();
    assert!(db.get_any_vm("tpl-1").await.unwrap().is_none());
    db.delete_internal_vm("pool-1").await.unwrap();
    assert!(
        db.get_vm("pool-1").await.unwrap().is_some(),
        "a user VM is never deleted as internal"
    );

    let seed = |i: &rds_manager::model::ImageRecord| {
        i.seed
            .as_ref()
            .map(|s| (s.status.clone(), s.snapshot_id.clone(), s.error.clone()))
    };
    db.set_image_seed(&img, Some("pending"), None)
        .await
        .unwrap();
    let i = db.get_image(&img).await.unwrap().unwrap();
    assert_eq!(seed(&i), Some(("pending".into(), None, None)));
    assert!(i.seed.as_ref().unwrap().updated_at.is_some());
    db.set_image_seed(&img, Some("failed"), Some("boom"))
        .await
        .unwrap();
    let i = db.get_image(&img).await.unwrap().unwrap();
    assert_eq!(seed(&i), Some(("failed".into(), None, Some("boom".into()))));
    db.set_image_seed_ready(&img, "snap-t1").await.unwrap();
    db.set_image_seed(&img, Some("pending"), None)
        .await
        .unwrap();
    let i = db.get_image(&img).await.unwrap().unwrap();
    assert_eq!(
        seed(&i),
        Some(("pending".into(), Some("snap-t1".into()), None)),
        "a rebuild keeps the old template named until the new one is ready"
    );
    db.set_image_seed(&img, None, None).await.unwrap();
    assert_eq!(seed(&db.get_image(&img).await.unwrap().unwrap()), None);
    db.close().await;
}

/// Sessions (live only under the right fingerprint and before expiry), API keys (unique prefix,
/// usable only unrevoked and unexpired, revocation kept), activity (order, paging, replay, pruning),
/// all surviving a reconnect.
async fn auth_and_activity_queries(settings: DbSettings) {
    let db = Db::connect(&settings).await.unwrap();
    let (t0, t1, t2) = (
        "2030-01-01T00:00:00.000Z",
        "2030-01-01T01:00:00.000Z",
        "2030-01-01T02:00:00.000Z",
    );
    let session = |hash: &str, expires: &str| SessionRecord {
        id_hash: hash.into(),
        email: "a@b.c".into(),
        csrf_token: "csrf".into(),
        credential_fingerprint: "fp1".into(),
        created_at: t0.into(),
        expires_at: expires.into(),
    };
    db.insert_session(&session("h1", t1)).await.unwrap();
    db.insert_session(&session("h2", t2)).await.unwrap();
    let live = db.live_session("h1", "fp1", t0).await.unwrap().unwrap();
    assert_eq!(
        (live.email.as_str(), live.csrf_token.as_str()),
        ("a@b.c", "csrf")
    );
    assert!(
        db.live_session("h1", "fp2", t0).await.unwrap().is_none(),
        "other credentials"
    );
    assert!(
        db.live_session("h1", "fp1", t1).await.unwrap().is_none(),
        "expired"
    );
    assert!(db.live_session("nope", "fp1", t0).await.unwrap().is_none());
    assert_eq!(db.purge_sessions(t1).await.unwrap(), 1);
    assert!(db.live_session("h2", "fp1", t1).await.unwrap().is_some());
    db.delete_session("h2").await.unwrap();
    assert!(db.live_session("h2", "fp1", t0).await.unwrap().is_none());

    let key = |id: &str, prefix: &str, created: &str, expires: Option<&str>| ApiKeyRecord {
        id: id.into(),
        name: format!("key {id}"),
        prefix: prefix.into(),
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: created.into(),
        expires_at: expires.map(str::to_string),
        revoked_at: None,
        last_used_at: None,
    };
    db.insert_api_key(&key("k1", "aaaaaaaaaaaa", t0, None))
        .await
        .unwrap();
    db.insert_api_key(&key("k2", "bbbbbbbbbbbb", t1, Some(t1)))
        .await
        .unwrap();
    let dup = db
        .insert_api_key(&key("k3", "aaaaaaaaaaaa", t2, None))
        .await;
    assert!(
        matches!(dup, Err(InsertKeyError::PrefixTaken(_))),
        "{dup:?}"
    );
    let listed: Vec<String> = db
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, ["k2", "k1"], "newest first");
    assert_eq!(
        db.usable_api_key("aaaaaaaaaaaa", t0)
            .await
            .unwrap()
            .unwrap()
            .id,
        "k1"
    );
    assert!(db
        .usable_api_key("bbbbbbbbbbbb", t0)
        .await
        .unwrap()
        .is_some());
    assert!(
        db.usable_api_key("bbbbbbbbbbbb", t1)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    db.touch_api_key("k1", t1).await.unwrap();
    let (revoked, fresh) = db.revoke_api_key("k1", t1).await.unwrap().unwrap();
    assert!(fresh);
    assert_eq!(revoked.revoked_at.as_deref(), Some(t1));
    assert_eq!(revoked.last_used_at.as_deref(), Some(t1));
    let (again, fresh) = db.revoke_api_key("k1", t2).await.unwrap().unwrap();
    assert!(!fresh);
    assert_eq!(
        again.revoked_at.as_deref(),
        Some(t1),
        "the first revocation stays"
    );
    assert!(
        db.usable_api_key("aaaaaaaaaaaa", t0)
            .await
            .unwrap()
            .is_none(),
        "revoked"
    );
    assert!(db.revoke_api_key("k9", t1).await.unwrap().is_none());

    let mut stored = Vec::new();
    for i in 0..5 {
        let e = ActivityEvent {
            seq: 0,
            id: format!("00000000-0000-4000-8000-00000000000{i}"),
            created_at: t0.into(),
            kind: "image.created".into(),
            entity_type: "image".into(),
            entity_id: (i % 2 == 0).then(|| format!("img-{i}")),
            message: format!("event {i}"),
            meta_json: format!("{{\"n\":{i}}}"),
        };
        let seq = db.insert_activity(&e).await.unwrap();
        stored.push(ActivityEvent { seq, ..e });
    }
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq), "seq grows");
    let newest: Vec<ActivityEvent> = stored.iter().rev().cloned().collect();
    assert_eq!(db.list_activity(None, 2).await.unwrap(), newest[..2]);
    assert_eq!(
        db.list_activity(Some(&stored[3].id), 10).await.unwrap(),
        newest[2..]
    );
    assert!(db
        .list_activity(Some("unknown"), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.activity_seq(&stored[1].id).await.unwrap(),
        Some(stored[1].seq)
    );
    assert_eq!(db.activity_seq("unknown").await.unwrap(), None);
    // Replay: the newest `limit` after a point, oldest first.
    assert_eq!(
        db.activity_after(stored[0].seq, 2).await.unwrap(),
        stored[3..]
    );
    assert_eq!(
        db.activity_after(stored[1].seq, 10).await.unwrap(),
        stored[2..]
    );
    // A full catch-up: the oldest `limit` after a point, page by page.
    assert_eq!(
        db.activity_since(stored[0].seq, 2).await.unwrap(),
        stored[1..3]
    );
    assert_eq!(
        db.activity_since(stored[2].seq, 10).await.unwrap(),
        stored[3..]
    );
    assert_eq!(db.prune_activity(3).await.unwrap(), 2);
    assert_eq!(db.list_activity(None, 10).await.unwrap(), newest[..3]);
    assert_eq!(db.prune_activity(3).await.unwrap(), 0);
    db.close().await;

    let db = Db::connect(&settings).await.unwrap();
    assert_eq!(db.list_activity(None, 10).await.unwrap(), newest[..3]);
    assert_eq!(db.list_api_keys().await.unwrap().len(), 2);
    // A new event after pruning still sorts after the kept ones.
    let late = ActivityEvent {
        id: "00000000-0000-4000-8000-000000000009".into(),
        ..stored[0].clone()
    };
    let seq = db.insert_activity(&late).await.unwrap();
    assert!(seq > stored[4].seq);
    db.close().await;
}

#[tokio::test]
async fn auth_and_activity_queries_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    auth_and_activity_queries(sqlite(&dir)).await;
}

#[tokio::test]
async fn auth_and_activity_queries_postgres() {
    let Some(pg) = TestPostgres::create("db_story::auth_and_activity_queries_postgres").await
    else {
        return;
    };
    auth_and_activity_queries(postgres(&pg)).await;
}

/// Hooks, their delivery queue and attempts, and a delete that takes pending deliveries along.
async fn webhook_queries(settings: DbSettings) {
    let db = Db::connect(&settings).await.unwrap();
    let hook = |id: &str, t: &str| WebhookRecord {
        id: id.into(),
        name: format!("hook {id}"),
        url: "http://198.18.0.11:8080/".into(),
        enabled: true,
        event_types: vec!["vm.created".into(), "*".into()],
        secret: "s3cret".into(),
        created_at: t.into(),
        updated_at: t.into(),
    };
    let (a, b) = ("a".repeat(8), "b".repeat(8));
    db.insert_webhook(&hook(&a, "2026-01-01T00:00:00.000Z"))
        .await
        .unwrap();
    db.insert_webhook(&hook(&b, "2026-01-02T00:00:00.000Z"))
        .await
        .unwrap();
    let listed = db.list_webhooks().await.unwrap();
    assert_eq!(
        listed.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        [&b, &a]
    );
    assert_eq!(
        listed[1],
        hook(&a, "2026-01-01T00:00:00.000Z"),
        "every field round-trips"
    );
    let mut changed = hook(&a, "2026-01-01T00:00:00.000Z");
    changed.enabled = false;
    changed.event_types = vec!["image.deleted".into()];
    changed.updated_at = "2026-01-03T00:00:00.000Z".into();
    assert!(db.update_webhook(&changed).await.unwrap());
    assert_eq!(db.get_webhook(&a).await.unwrap(), Some(changed));
    assert!(!db.update_webhook(&hook("nope", "x")).await.unwrap());

    let delivery = |id: &str, hook: &str, due: &str| DeliveryRecord {
        id: id.into(),
        webhook_id: hook.into(),
        event_id: "e1".into(),
        event_type: "vm.created".into(),
        payload: "{\"id\":\"e1\"}".into(),
        attempt: 0,
        status: "pending".into(),
        response_status: None,
        error: None,
        next_attempt_at: Some(due.into()),
        created_at: "2026-01-04T00:00:00.000Z".into(),
        completed_at: None,
    };
    db.insert_deliveries(&[
        delivery("d1", &a, "2026-01-04T00:00:00.000Z"),
        delivery("d2", &b, "2026-01-05T00:00:00.000Z"),
    ])
    .await
    .unwrap();
    let due = db
        .due_deliveries("2026-01-04T12:00:00.000Z", 10)
        .await
        .unwrap();
    assert_eq!(due, [delivery("d1", &a, "2026-01-04T00:00:00.000Z")]);
    assert_eq!(
        db.next_delivery_due().await.unwrap().as_deref(),
        Some("2026-01-04T00:00:00.000Z")
    );
    let retry = AttemptOutcome {
        status: "pending",
        response_status: Some(500),
        error: Some("HTTP 500".into()),
        next_attempt_at: Some("2026-01-06T00:00:00.000Z".into()),
    };
    db.record_attempt("d1", &retry).await.unwrap();
    let d1 = &db.list_deliveries(&a, 10).await.unwrap()[0];
    assert_eq!((d1.attempt, d1.response_status), (1, Some(500)));
    assert!(d1.completed_at.is_none());
    assert_eq!(
        db.next_delivery_due().await.unwrap().as_deref(),
        Some("2026-01-05T00:00:00.000Z")
    );
    let done = AttemptOutcome {
        status: "succeeded",
        response_status: Some(204),
        error: None,
        next_attempt_at: None,
    };
    db.record_attempt("d2", &done).await.unwrap();
    let d2 = &db.list_deliveries(&b, 10).await.unwrap()[0];
    assert_eq!((d2.status.as_str(), d2.attempt), ("succeeded", 1));
    assert!(d2.completed_at.is_some() && d2.next_attempt_at.is_none());
    assert!(db.delete_webhook(&a).await.unwrap());
    assert!(!db.delete_webhook(&a).await.unwrap());
    assert!(db.list_deliveries(&a, 10).await.unwrap().is_empty());
    assert_eq!(
        db.next_delivery_due().await.unwrap(),
        None,
        "d1 went with its hook"
    );
    db.close().await;
}

#[tokio::test]
async fn webhook_queries_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    webhook_queries(sqlite(&dir)).await;
}

#[tokio::test]
async fn webhook_queries_postgres() {
    let Some(pg) = TestPostgres::create("db_story::webhook_queries_postgres").await else {
        return;
    };
    webhook_queries(postgres(&pg)).await;
}

#[tokio::test]
async fn internal_queries_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    internal_queries(sqlite(&dir)).await;
}

#[tokio::test]
async fn internal_queries_postgres() {
    let Some(pg) = TestPostgres::create("db_story::internal_queries_postgres").await else {
        return;
    };
    internal_queries(postgres(&pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    story(sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_postgres() {
    let Some(pg) = TestPostgres::create("db_story::story_postgres").await else {
        return;
    };
    story(postgres(&pg)).await;
}

#[tokio::test]
async fn image_queries_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    image_queries(sqlite(&dir)).await;
}

#[tokio::test]
async fn image_queries_postgres() {
    let Some(pg) = TestPostgres::create("db_story::image_queries_postgres").await else {
        return;
    };
    image_queries(postgres(&pg)).await;
}

#[tokio::test]
async fn snapshot_queries_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    snapshot_queries(sqlite(&dir)).await;
}

#[tokio::test]
async fn snapshot_queries_postgres() {
    let Some(pg) = TestPostgres::create("db_story::snapshot_queries_postgres").await else {
        return;
    };
    snapshot_queries(postgres(&pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_creates(sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_postgres() {
    let Some(pg) = TestPostgres::create("db_story::concurrent_creates_postgres").await else {
        return;
    };
    concurrent_creates(postgres(&pg)).await;
}

/// `DATABASE_URL` trouble is reported without the URL or its password
/// (`docs/reference/configuration.md` §1).
#[tokio::test]
async fn postgres_connect_error_hides_the_url() {
    let settings = DbSettings {
        dialect: "postgres",
        sqlite_path: "unused.db".into(),
        database_url: Some("postgres://rds:hunter2-secret@127.0.0.1:1/rds".into()),
    };
    let err = match Db::connect(&settings).await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e.to_string(),
    };
    assert!(!err.is_empty());
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!err.contains("postgres://"), "{err}");
}
