//! An in-process manager for tests: fresh storage and database per test, router called with
//! `oneshot`. Each manager lives in a network namespace of its own (`netns.rs`), so its bridge, TAPs
//! and nftables rules never touch the host network; requests run on the manager's runtime there.
//!
//! The database is SQLite unless `RDS_TEST_DB=postgres`: then every manager gets a database of its
//! own on the server `RDS_TEST_DATABASE_URL` names, so the same tests run on both dialects
//! (`scripts/test.sh` runs the manager's API tests a second time that way).
#![allow(dead_code)]

pub mod admin;
pub mod guest;
pub mod netns;

use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use rds_manager::config::Settings;
use rds_testkit::GuestImage;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use tower::ServiceExt;

pub const KEY: &str = "test-key-0123456789abcdef";

pub struct TestManager {
    // Field order is drop order: the manager stops, then its namespace and files go.
    host: Option<netns::Hosted>,
    pub router: axum::Router,
    pub ns: netns::Ns,
    pub settings: Settings,
    resolv: Option<PathBuf>,
    tmpfs: bool,
    pub dir: tempfile::TempDir,
    _pg: Option<rds_testkit::TestPostgres>,
}

impl Drop for TestManager {
    fn drop(&mut self) {
        self.host.take();
        // A test that failed half-way leaves VMs behind: their processes reference this storage.
        let root = self.storage().display().to_string();
        for pid in rds_testkit::pids_matching(&root) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        if self.tmpfs {
            // Lazy: a process killed just now may still hold a file open for a moment.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.storage())
                .status();
        }
    }
}

/// Options beyond settings.
#[derive(Debug, Default, Clone)]
pub struct Opts {
    /// Contents the manager sees as `/etc/resolv.conf` (its DNS forwarder's upstreams).
    pub resolv_conf: Option<String>,
    /// `STORAGE_ROOT` on a tmpfs of this many MiB (a small filesystem to fill); unmounted on drop.
    pub storage_tmpfs_mb: Option<u64>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl TestManager {
    /// A manager over `image` (or none) with `extra` settings on top of test defaults.
    pub async fn start(
        image: Option<&GuestImage>,
        vhost: &str,
        extra: &[(&str, &str)],
    ) -> TestManager {
        Self::start_with(image, vhost, extra, Opts::default()).await
    }

    pub async fn start_with(
        image: Option<&GuestImage>,
        vhost: &str,
        extra: &[(&str, &str)],
        opts: Opts,
    ) -> TestManager {
        let dir = tempfile::tempdir().expect("tempdir");
        let (env, pg) = test_env(&dir, image, vhost, extra).await;
        let settings = Settings::from_env(&env).expect("test settings");
        let resolv = opts.resolv_conf.map(|text| {
            let p = dir.path().join("resolv.conf");
            std::fs::write(&p, text).unwrap();
            p
        });
        if let Some(mb) = opts.storage_tmpfs_mb {
            let root = dir.path().join("s");
            std::fs::create_dir_all(&root).unwrap();
            let ok = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={mb}m,mode=0711"),
                    "tmpfs",
                ])
                .arg(&root)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mounting a tmpfs at {}", root.display());
        }
        let ns = netns::Ns::new("mgr");
        let host = netns::Hosted::start(&ns.name, settings.clone(), resolv.clone())
            .await
            .unwrap_or_else(|e| panic!("manager startup failed: {e}"));
        TestManager {
            router: host.app.router.clone(),
            host: Some(host),
            ns,
            settings,
            resolv,
            tmpfs: opts.storage_tmpfs_mb.is_some(),
            dir,
            _pg: pg,
        }
    }

    pub fn app(&self) -> &rds_manager::App {
        &self.host.as_ref().expect("manager running").app
    }

    /// Stops the manager without touching its VMs, as a killed manager would (VMM processes run in
    /// their own sessions), and leaves it stopped.
    pub fn kill(&mut self) {
        self.host.take();
    }

    /// Builds a new manager on the same settings, storage, database and namespace (startup
    /// reconciliation included).
    pub async fn restart(&mut self) -> Result<(), String> {
        self.host.take();
        let host =
            netns::Hosted::start(&self.ns.name, self.settings.clone(), self.resolv.clone()).await?;
        self.router = host.app.router.clone();
        self.host = Some(host);
        Ok(())
    }

    fn hosted(&self) -> &netns::Hosted {
        self.host.as_ref().expect("manager running")
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.send(request(method, path, body)).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let router = self.router.clone();
        let (status, headers, bytes) = self
            .hosted()
            .run(async move {
                let resp = router.oneshot(req).await.expect("router");
                let status = resp.status();
                let headers = resp.headers().clone();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                (status, headers, bytes)
            })
            .await;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp {
            status,
            headers,
            json,
        }
    }

    /// PUT raw bytes as `application/octet-stream` (image parts).
    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Resp {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(path)
            .header("x-api-key", KEY)
            .header("content-type", "application/octet-stream")
            .body(Body::from(bytes))
            .unwrap();
        self.send(req).await
    }

    /// The `/metrics` exposition text.
    pub async fn metrics_text(&self) -> String {
        let r = self.call(Method::GET, "/metrics", None).await;
        assert_eq!(r.status, StatusCode::OK);
        r.json.as_str().unwrap_or_default().to_string()
    }

    /// Status and `message` of a call, for refusals.
    pub async fn message(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let r = self.call(method, path, body).await;
        let m = r.json["message"].as_str().unwrap_or_default().to_string();
        (r.status, m)
    }

    /// The `id`s a list endpoint answers, in its order.
    pub async fn ids(&self, path: &str) -> Vec<String> {
        let r = self.call(Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.json);
        r.json
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Asserts that a call answers `status` with `message` (refusals).
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: StatusCode,
        message: impl Into<String>,
    ) {
        let what = format!("{method} {path} {body:?}");
        let got = self.message(method, path, body).await;
        assert_eq!(got, (status, message.into()), "{what}");
    }

    /// Starts a request on the manager's runtime and returns at once; the handle fails if the
    /// manager is killed first.
    pub fn call_detached(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> tokio::task::JoinHandle<(StatusCode, Value)> {
        let (req, router) = (request(method, path, body), self.router.clone());
        self.hosted().spawn(async move {
            let resp = router.oneshot(req).await.expect("router");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// Starts `f` on the manager's runtime (open streams, requests that must overlap).
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.hosted().spawn(f)
    }

    pub async fn exec(&self, id: &str, body: Value) -> Resp {
        self.call(Method::POST, &format!("/v1/vms/{id}/exec"), Some(body))
            .await
    }
}

impl TestManager {
    /// The last lines of every VM's console and VMM stderr, for failure messages.
    pub fn console_tails(&self) -> String {
        let mut out = String::new();
        for id in vm_dirs(self) {
            for log in ["console.log", "vmm.stderr.log"] {
                let p = self.storage().join(format!("vms/{id}/logs/{log}"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                out.push_str(&format!("--- {id} {log}\n"));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A request with the master key and, when given, a JSON body.
fn request(method: Method, path: &str, body: Option<Value>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", KEY);
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    b.body(body).unwrap()
}

/// The image and vhost helper for a test that boots guests, or `None` after printing why it skips
/// (a failure under `RDS_REQUIRE_E2E=1`).
pub fn guest_prerequisites(test: &str) -> Option<(GuestImage, String)> {
    // The managers' warnings (fallbacks, retries) belong in a failing test's output.
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,netlink_packet_route=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    match rds_testkit::e2e_prerequisites() {
        Ok(p) => Some(p),
        Err(reason) => {
            rds_testkit::skip(test, &reason);
            None
        }
    }
}

/// The vhost helper for a test that starts a manager but boots nothing (the QEMU backend still
/// needs its binaries at startup), or `None` after printing why it skips.
pub fn manager_prerequisites(test: &str) -> Option<String> {
    let vhost = match rds_testkit::vhost_vsock_bin() {
        Ok(v) => v,
        Err(reason) => {
            rds_testkit::skip(test, &reason);
            return None;
        }
    };
    if rds_vmm::select::which("qemu-system-x86_64").is_none() {
        rds_testkit::skip(test, "qemu-system-x86_64 not installed");
        return None;
    }
    Some(vhost)
}

/// The environment of a test manager, in-process or a real process: test defaults, storage and
/// database under `dir`, the guest image, then `extra`. With `RDS_TEST_DB=postgres` the database is
/// a fresh one on the test server, dropped with the returned handle.
pub async fn test_env(
    dir: &tempfile::TempDir,
    image: Option<&GuestImage>,
    vhost: &str,
    extra: &[(&str, &str)],
) -> (HashMap<String, String>, Option<rds_testkit::TestPostgres>) {
    // The VMM's helpers run as JAILER_UID and must traverse to their run directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut env: HashMap<String, String> = [
        ("API_KEY", KEY),
        ("ADMIN_EMAIL", "admin@example.com"),
        ("ADMIN_PASSWORD", "admin-password-123"),
        ("VHOST_VSOCK_BIN", vhost),
        // TCG boots take seconds, longer while the other core compiles.
        ("VSOCK_HEALTH_TIMEOUT_MS", "120000"),
        ("OVERLAY_SIZE_BYTES", "268435456"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.insert(
        "STORAGE_ROOT".into(),
        dir.path().join("s").display().to_string(),
    );
    env.insert(
        "SQLITE_PATH".into(),
        dir.path().join("db/manager.db").display().to_string(),
    );
    if let Some(img) = image {
        env.insert("KERNEL_PATH".into(), img.kernel.display().to_string());
        env.insert("BASE_ROOTFS_PATH".into(), img.rootfs.display().to_string());
        if let Some(i) = &img.initrd {
            env.insert("INITRD_PATH".into(), i.display().to_string());
        }
    }
    let pg = test_database().await;
    if let Some(pg) = &pg {
        env.insert("DB_DIALECT".into(), "postgres".into());
        env.insert("DATABASE_URL".into(), pg.url().to_string());
    }
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    (env, pg)
}

/// A Postgres database for one manager when `RDS_TEST_DB=postgres`, `None` for SQLite.
async fn test_database() -> Option<rds_testkit::TestPostgres> {
    match std::env::var("RDS_TEST_DB").as_deref() {
        Ok("postgres") => Some(
            rds_testkit::TestPostgres::create("manager")
                .await
                .expect("RDS_TEST_DB=postgres needs RDS_TEST_DATABASE_URL"),
        ),
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("RDS_TEST_DB must be sqlite or postgres, got {other:?}"),
    }
}

/// Names of entries under `vms/` of a manager's storage.
pub fn vm_dirs(tm: &TestManager) -> Vec<String> {
    std::fs::read_dir(tm.storage().join("vms"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

impl TestManager {
    /// POST a tar.gz to `files/upload?dest=`.
    pub async fn upload(&self, id: &str, dest: &str, archive: Vec<u8>) -> Resp {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/vms/{id}/files/upload?dest={dest}"))
            .header("x-api-key", KEY)
            .header("content-type", "application/gzip")
            .body(Body::from(archive))
            .unwrap();
        self.send(req).await
    }

    /// GET `files/download?path=`: status, headers and raw bytes.
    pub async fn download(&self, id: &str, path: &str) -> (StatusCode, HeaderMap, bytes::Bytes) {
        let req = Request::builder()
            .uri(format!("/v1/vms/{id}/files/download?path={path}"))
            .header("x-api-key", KEY)
            .body(Body::empty())
            .unwrap();
        let router = self.router.clone();
        self.hosted()
            .run(async move {
                let resp = router.oneshot(req).await.expect("router");
                let (status, headers) = (resp.status(), resp.headers().clone());
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                (status, headers, bytes)
            })
            .await
    }

    /// Creates a RUNNING VM and returns its id.
    pub async fn create_vm(&self, body: Value) -> String {
        let r = self.call(Method::POST, "/v1/vms", Some(body)).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}\n{}",
            r.json,
            self.console_tails()
        );
        r.json["id"].as_str().unwrap().to_string()
    }
}

/// Builds tar.gz archives, including malformed entries the `tar` crate would refuse to write.
pub mod archive {
    use flate2::write::GzEncoder;
    use std::io::Write;

    pub enum Entry<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    pub fn targz(entries: &[Entry]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data, kind, link): (&str, &[u8], tar::EntryType, Option<&str>) = match e {
                Entry::File(n, d) => (n, d, tar::EntryType::Regular, None),
                Entry::Dir(n) => (n, &[], tar::EntryType::Directory, None),
                Entry::Symlink(n, t) => (n, &[], tar::EntryType::Symlink, Some(t)),
                Entry::Hardlink(n, t) => (n, &[], tar::EntryType::Link, Some(t)),
            };
            // Raw name bytes: set_path would refuse `..` and absolute paths, which these tests need.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(t) = link {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if matches!(kind, tar::EntryType::Directory) {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            tar.append(&h, data).unwrap();
        }
        gz(&tar.into_inner().unwrap())
    }

    pub fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A tar.gz of one file of `size` zero bytes, streamed through the encoder (a gzip bomb).
    pub fn zeros(name: &str, size: u64) -> Vec<u8> {
        let enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut tar = tar::Builder::new(enc);
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, std::io::repeat(0).take_bytes(size)).unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    }

    trait TakeBytes: std::io::Read + Sized {
        fn take_bytes(self, n: u64) -> std::io::Take<Self> {
            std::io::Read::take(self, n)
        }
    }
    impl<R: std::io::Read> TakeBytes for R {}

    /// File name → content of every regular file in a tar.gz.
    pub fn files(targz: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
        use std::io::Read;
        let mut out = std::collections::BTreeMap::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(targz));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type() == tar::EntryType::Regular {
                let name = e
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                out.insert(name, data);
            }
        }
        out
    }
}
