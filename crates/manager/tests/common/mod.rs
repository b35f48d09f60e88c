//! An in-process manager for tests: fresh storage and SQLite per test, router called with `oneshot`.
#![allow(dead_code)]

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
    pub app: rds_manager::App,
    pub router: axum::Router,
    pub dir: tempfile::TempDir,
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
        let dir = tempfile::tempdir().expect("tempdir");
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
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::from_env(&env).expect("test settings");
        let app = rds_manager::build(&settings).await.unwrap_or_else(|errs| {
            panic!(
                "manager startup failed: {}",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
        TestManager {
            router: app.router.clone(),
            app,
            dir,
        }
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
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
        self.send(b.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.expect("router");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
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

    pub async fn exec(&self, id: &str, body: Value) -> Resp {
        self.call(Method::POST, &format!("/v1/vms/{id}/exec"), Some(body))
            .await
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
