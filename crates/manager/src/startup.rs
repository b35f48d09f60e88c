//! Wiring at startup: checks that need I/O (`docs/reference/configuration.md` §3), then the service
//! graph, then serving.

use crate::agent::AgentConfig;
use crate::api::{self, AppState, BackendInfo};
use crate::config::{ConfigError, Settings};
use crate::db::Db;
use crate::images::{format, ImageError, ImageService};
use crate::lifecycle::{LifecycleSettings, Network, NetworkSettings, ProvisionSettings, VmService};
use crate::storage::{can_reflink, CloneMode, Storage};
use rds_vmm::select::{AccelChoice, BackendChoice, Requested};
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct App {
    pub router: axum::Router,
    pub state: AppState,
    db: Db,
}

fn cfg_err(variable: &str, reason: impl Into<String>, value: Option<&Path>) -> ConfigError {
    ConfigError {
        variable: variable.to_string(),
        reason: reason.into(),
        value: value.map(|p| p.display().to_string()),
    }
}

/// Builds the whole manager from validated settings; every startup check that fails is returned.
pub async fn build(settings: &Settings) -> Result<App, Vec<ConfigError>> {
    let mut errors = image_checks(settings);
    let choice = BackendChoice {
        requested: match settings.backend.vmm_backend {
            "firecracker" => Requested::Firecracker,
            "qemu" => Requested::Qemu,
            _ => Requested::Auto,
        },
        qemu_accel: match settings.backend.qemu_accel {
            "kvm" => AccelChoice::Kvm,
            "tcg" => AccelChoice::Tcg,
            _ => AccelChoice::Auto,
        },
        qemu_bin: settings.backend.qemu_bin.clone(),
        vhost_vsock_bin: settings.backend.vhost_vsock_bin.clone(),
        firecracker_bin: settings.backend.firecracker_bin.clone(),
        jailer_bin: settings.backend.jailer_bin.clone(),
        runas: (settings.backend.jailer_uid, settings.backend.jailer_gid),
        jailer_chroot_base_dir: settings.backend.jailer_chroot_base_dir.clone(),
        firecracker_log_level: settings.backend.firecracker_log_level.to_string(),
    };
    let selection = match rds_vmm::select(&choice) {
        Ok(s) => Some(s),
        Err(errs) => {
            errors.extend(
                errs.into_iter()
                    .map(|e| cfg_err(e.variable, e.reason, None)),
            );
            None
        }
    };
    let storage = match Storage::init(
        &settings.storage_root,
        CloneMode::parse(settings.disks.clone_mode),
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(cfg_err(
                "STORAGE_ROOT",
                e.to_string(),
                Some(&settings.storage_root),
            ));
            None
        }
    };
    if settings.disks.clone_mode == "reflink"
        && !can_reflink(&settings.storage_root).unwrap_or(false)
    {
        errors.push(cfg_err(
            "ROOTFS_CLONE_MODE",
            format!(
                "reflink requested but {} cannot reflink (FICLONE refused)",
                settings.storage_root.display()
            ),
            None,
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(selection), Some(storage)) = (selection, storage) else {
        unreachable!("errors are empty only when both exist")
    };
    let variable = if settings.db.dialect == "postgres" {
        "DATABASE_URL"
    } else {
        "SQLITE_PATH"
    };
    let db = Db::connect(&settings.db)
        .await
        .map_err(|e| vec![cfg_err(variable, e.to_string(), None)])?;
    let activity = crate::activity::Activity::new(db.clone());
    // `docs/reference/lifecycle.md` §11: the built-in image, hashed (cached) and cloned into
    // IMAGES_DIR.
    let images_err = |e: ImageError| match e {
        ImageError::Db(e) => vec![cfg_err(variable, e.to_string(), None)],
        e => vec![cfg_err(
            "IMAGES_DIR",
            crate::error_chain(&e),
            Some(&settings.images_dir),
        )],
    };
    let images = ImageService::new(
        db.clone(),
        &settings.images_dir,
        &settings.storage_root.join("tmp"),
        &settings.storage_root.join("snapshots"),
        CloneMode::parse(settings.disks.clone_mode),
        activity.clone(),
    )
    .map_err(images_err)?;
    if let (Some(k), Some(r)) = (&settings.image.kernel, &settings.image.rootfs) {
        images
            .register_builtin(k, settings.image.initrd.as_deref(), r)
            .await
            .map_err(images_err)?;
    }

    let caps = selection.backend.capabilities().clone();
    tracing::info!(backend = caps.kind.as_str(), accel = caps.accel.as_str(), reason = %selection.reason, "vmm backend selected");
    if let Some(p) = &selection.kvm_probe {
        tracing::info!("kvm probe: {p}");
    }
    let vs = &settings.vsock;
    let lifecycle = LifecycleSettings {
        agent: AgentConfig {
            port: settings.agent_vsock_port,
            retry_attempts: vs.retry_attempts,
            retry_delay: Duration::from_millis(vs.retry_delay_ms),
            timeout: Duration::from_millis(vs.timeout_ms),
            binary_timeout: Duration::from_millis(vs.binary_timeout_ms),
            max_json_response_bytes: vs.max_json_response_bytes,
            max_binary_response_bytes: vs.max_binary_response_bytes,
        },
        health_timeout: Duration::from_millis(vs.health_timeout_ms),
        max_vms: settings.limits.max_vms,
        subnet: settings.vm_subnet,
        default_disk_mb: settings.default_disk_mb(),
        disk_wait_ms: settings.disks.overlay_device_wait_ms,
        provision: provision_settings(&settings.snapshots),
        secret_key: settings
            .vm_secret_key
            .as_deref()
            .map(|k| Arc::new(crate::secret_env::SecretKey::derive(k))),
        peer_base_url: settings.manager_internal_base_url.clone(),
        max_run_timeout_ms: settings.limits.max_runts_timeout_ms,
    };
    let net = Network::setup(network_settings(settings))
        .await
        .map_err(|e| {
            vec![cfg_err(
                "VM_SUBNET",
                format!(
                "cannot set up the guest network (needs CAP_NET_ADMIN, /dev/net/tun and nft): {}",
                crate::error_chain(&e)
            ),
                None,
            )]
        })?;
    let vms = VmService::new(
        db.clone(),
        selection.backend.clone(),
        storage,
        lifecycle,
        net,
        activity.clone(),
    );
    // `docs/reference/lifecycle.md` §5: before anything serves.
    vms.reconcile().await.map_err(|e| {
        vec![cfg_err(
            variable,
            format!("reconciliation at start failed: {}", crate::error_chain(&e)),
            None,
        )]
    })?;
    vms.start_dns().await.map_err(|e| {
        vec![cfg_err(
            "DNS_SERVER_IP",
            format!(
                "the DNS forwarder cannot start on the gateway (set DNS_SERVER_IP to use another resolver): {}",
                crate::error_chain(&e)
            ),
            None,
        )]
    })?;
    // `docs/snapshots.md` (Templates, Warm pool): after reconciliation removed every earlier
    // internal VM.
    vms.start_templates().await.map_err(|e| {
        vec![cfg_err(
            variable,
            format!("template state at start: {}", crate::error_chain(&e)),
            None,
        )]
    })?;
    vms.start_pool();
    // After reconciliation: deadlines that passed while the manager was down apply first.
    vms.start_expiry();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let policy = crate::webhooks::Policy {
        allow_private: settings.webhook_allow_private,
        vm_subnet: settings.vm_subnet,
    };
    let webhooks =
        crate::webhooks::Webhooks::new(db.clone(), policy, activity.clone(), metrics.clone())
            .map_err(|e| {
                vec![cfg_err(
                    "WEBHOOK_ALLOW_PRIVATE",
                    format!("webhook client: {e}"),
                    None,
                )]
            })?;
    webhooks.start();
    let state = AppState {
        vms,
        images,
        limits: Arc::new(settings.limits.clone()),
        default_disk_mb: settings.default_disk_mb(),
        auth: auth_service(&db, &activity, settings).await,
        activity,
        webhooks,
        cpu: crate::hoststats::CpuUsage::start(),
        expose_internal_errors: settings.expose_internal_errors,
        metrics,
        limiter: Arc::new(api::ratelimit::Limiter::new(settings.rate_limits.clone())),
        vm_subnet: settings.vm_subnet,
        backend_info: Arc::new(BackendInfo {
            backend: caps.kind.as_str(),
            accel: caps.accel.as_str(),
            kvm_probe: selection.kvm_probe.as_ref().map(|p| p.to_string()),
            reason: selection.reason.clone(),
        }),
    };
    Ok(App {
        router: api::router(state.clone()),
        state,
        db,
    })
}

/// Sessions, keys and the admin login; expired sessions and old activity are purged hourly.
async fn auth_service(
    db: &Db,
    activity: &crate::activity::Activity,
    settings: &Settings,
) -> crate::auth::AuthService {
    let auth = crate::auth::AuthService::new(
        db.clone(),
        activity.clone(),
        crate::auth::AuthSettings {
            api_key: &settings.api_key,
            admin_email: &settings.admin_email,
            admin_password: &settings.admin_password,
            session_ttl_hours: settings.session_ttl_hours,
            cookie_secure: settings.cookie_secure,
        },
    )
    .await;
    auth.start_maintenance();
    activity.start_pruning();
    auth
}

/// Templates with `ENABLE_SNAPSHOTS`; a pool of min(target, max) with `ENABLE_WARM_POOL`.
fn provision_settings(s: &crate::config::SnapshotSettings) -> ProvisionSettings {
    ProvisionSettings {
        templates: s.enable_snapshots,
        template_cpu: s.template_cpu,
        template_mem_mb: s.template_mem_mb,
        pool_target: if s.enable_warm_pool {
            s.warm_pool_target.min(s.warm_pool_max_vms)
        } else {
            0
        },
    }
}

/// Host-network settings: bridge `rds-br0` at the gateway of `VM_SUBNET`, TAPs owned by
/// `JAILER_UID:JAILER_GID`, the port of `MANAGER_INTERNAL_BASE_URL`, the forwarder iff
/// `DNS_SERVER_IP` is unset.
fn network_settings(settings: &Settings) -> NetworkSettings {
    let s = settings.vm_subnet;
    let cidr = rds_net::Ipv4Cidr::new(s.network, s.prefix).expect("VM_SUBNET was validated");
    let subnet = rds_net::Subnet::new(cidr).expect("VM_SUBNET prefix is at most /29");
    let owner = rds_net::TapOwner {
        uid: settings.backend.jailer_uid,
        gid: settings.backend.jailer_gid,
    };
    let mut host = rds_net::NetConfig::new(subnet, owner);
    host.manager_port = Some(url_port(&settings.manager_internal_base_url));
    host.dns_forwarder = settings.dns_server_ip.is_none();
    NetworkSettings {
        host,
        dns_server_ip: settings.dns_server_ip,
        guest_firewall: settings.guest_firewall,
    }
}

/// The port of an `http://host[:port][/…]` URL (80 when absent).
fn url_port(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80)
}

/// `KERNEL_PATH` / `BASE_ROOTFS_PATH` / `INITRD_PATH` must be readable files of the right format.
fn image_checks(settings: &Settings) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    type Check<'a> = (&'a str, Option<&'a Path>, fn(&[u8]) -> bool, &'a str);
    let checks: [Check; 3] = [
        (
            "KERNEL_PATH",
            settings.image.kernel.as_deref(),
            is_kernel,
            "is not an ELF vmlinux or bzImage",
        ),
        (
            "BASE_ROOTFS_PATH",
            settings.image.rootfs.as_deref(),
            is_ext4,
            "is not an ext4 image",
        ),
        (
            "INITRD_PATH",
            settings.image.initrd.as_deref(),
            format::is_initrd,
            "is not a cpio archive (newc, plain or gzip/lz4/zstd)",
        ),
    ];
    for (var, path, valid, what) in checks {
        let Some(path) = path else { continue };
        let mut head = vec![0u8; 2048];
        match std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) {
            Ok(n) if valid(&head[..n]) => {}
            Ok(_) => errors.push(cfg_err(var, what, Some(path))),
            Err(e) => errors.push(cfg_err(var, format!("cannot be read: {e}"), Some(path))),
        }
    }
    errors
}

pub fn is_kernel(head: &[u8]) -> bool {
    format::kernel_format(head).is_some()
}

pub fn is_ext4(head: &[u8]) -> bool {
    format::is_ext4(head)
}

/// Serves until `shutdown` resolves; in-flight requests get up to 10 s; VMs keep running.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let drain = async {
        let _ = rx.await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    tokio::select! {
        r = server => r?,
        _ = drain => tracing::warn!("in-flight requests cut off after 10 s"),
    }
    // Events recorded by the last requests are stored before the pool closes.
    let _ = tokio::time::timeout(Duration::from_secs(5), app.state.activity.flush()).await;
    app.db.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_port_from_the_internal_url() {
        assert_eq!(url_port("http://172.16.0.1:3000"), 3000);
        assert_eq!(url_port("http://172.16.0.1:7001/"), 7001);
        assert_eq!(url_port("http://172.16.0.1"), 80);
    }
}
