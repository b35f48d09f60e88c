//! Environment → typed settings, parsed once at startup (`docs/reference/configuration.md`). Lower
//! layers receive the parts they need and never read the environment themselves.

mod parse;
mod subnet;

pub use parse::ConfigError;
pub use subnet::Subnet;

use parse::Env;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Clone)]
pub struct Settings {
    pub api_key: String,
    pub admin_email: String,
    pub admin_password: String,
    pub port: u16,
    pub storage_root: PathBuf,
    pub images_dir: PathBuf,
    pub agent_vsock_port: u32,
    pub log_format: LogFormat,
    pub rust_log: String,
    pub expose_internal_errors: bool,
    pub image: BuiltinImage,
    pub dns_server_ip: Option<std::net::Ipv4Addr>,
    /// `GUEST_FIREWALL`: apply the guest half of the egress policy (`/firewall/allowlist`). The
    /// host rules are the authority either way; tests switch this off to prove that.
    pub guest_firewall: bool,
    pub db: DbSettings,
    pub backend: BackendSettings,
    pub disks: DiskSettings,
    pub snapshots: SnapshotSettings,
    pub limits: Limits,
    pub vsock: VsockSettings,
    pub vm_subnet: Subnet,
    pub manager_internal_base_url: String,
    pub session_ttl_hours: u64,
    pub cookie_secure: bool,
    pub rate_limits: RateLimits,
    pub webhook_allow_private: bool,
    pub vm_secret_key: Option<String>,
    pub otel: OtelSettings,
}

/// OTLP/HTTP trace export (`docs/reference/configuration.md` §3): off unless an endpoint is set.
#[derive(Debug, Clone)]
pub struct OtelSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, the collector's base URL (`/v1/traces` is appended).
    pub endpoint: Option<String>,
    pub service_name: String,
    /// `OTEL_DIAGNOSTIC_LOG_LEVEL` as a tracing level directive (`off`, `error` … `trace`).
    pub diagnostic_level: Option<&'static str>,
}

impl std::fmt::Debug for Settings {
    // Secrets never reach Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("port", &self.port)
            .field("storage_root", &self.storage_root)
            .field("backend", &self.backend.vmm_backend)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct BuiltinImage {
    pub kernel: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

#[derive(Clone)]
pub struct DbSettings {
    pub dialect: &'static str,
    pub sqlite_path: PathBuf,
    pub database_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub vmm_backend: &'static str,
    pub qemu_bin: String,
    pub vhost_vsock_bin: String,
    pub qemu_accel: &'static str,
    pub firecracker_bin: PathBuf,
    pub jailer_bin: PathBuf,
    pub jailer_chroot_base_dir: PathBuf,
    pub jailer_uid: u32,
    pub jailer_gid: u32,
    pub firecracker_log_level: &'static str,
}

#[derive(Debug, Clone)]
pub struct DiskSettings {
    pub clone_mode: &'static str,
    pub overlay_size_bytes: u64,
    pub overlay_device_wait_ms: u64,
}

#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    pub enable_snapshots: bool,
    pub template_cpu: u32,
    pub template_mem_mb: u32,
    pub enable_warm_pool: bool,
    pub warm_pool_target: u64,
    pub warm_pool_max_vms: u64,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_vms: u64,
    pub max_cpu: u32,
    pub max_mem_mb: u32,
    pub max_allow_ips: usize,
    pub max_exec_timeout_ms: u64,
    pub max_runts_timeout_ms: u64,
    /// Longest `timeoutSec` a VM may have.
    pub max_vm_timeout_sec: u64,
    /// Lifetime of a VM created without `timeoutSec`; 0: none.
    pub default_vm_timeout_sec: u64,
}

#[derive(Debug, Clone)]
pub struct VsockSettings {
    pub retry_attempts: u32,
    pub retry_delay_ms: u64,
    pub timeout_ms: u64,
    pub health_timeout_ms: u64,
    pub binary_timeout_ms: u64,
    pub max_json_response_bytes: u64,
    pub max_binary_response_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    pub global: u64,
    pub login: u64,
    pub vm_create: u64,
    pub exec: u64,
    pub run_ts: u64,
    pub run_js: u64,
    pub files_upload: u64,
    pub files_download: u64,
    pub peer_invoke: u64,
}

const MIB: u64 = 1024 * 1024;

impl Settings {
    /// Parses every variable, then the cross-checks that need no I/O; returns all problems at once.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Settings, Vec<ConfigError>> {
        let mut e = Env::new(vars);
        let api_key = e.required("API_KEY");
        if api_key.chars().any(char::is_whitespace) {
            e.fail("API_KEY", "must not contain whitespace");
        }
        let admin_email = e.required("ADMIN_EMAIL");
        if !admin_email.is_empty() && (!admin_email.contains('@') || admin_email.len() > 254) {
            e.fail(
                "ADMIN_EMAIL",
                "must contain @ and be at most 254 characters",
            );
        }
        let admin_password = e.required("ADMIN_PASSWORD");
        if admin_password.starts_with("$argon2id$")
            && !crate::auth::hashing::is_argon2id_phc(&admin_password)
        {
            e.fail(
                "ADMIN_PASSWORD",
                "starts with $argon2id$ but is not a valid argon2id PHC hash",
            );
        }
        let port = e.int("PORT", 3000, 1, 65535) as u16;
        let storage_root = e.abs_path("STORAGE_ROOT", "/var/lib/run-dat-sheesh");
        let images_default = storage_root.join("images");
        let images_dir = e.abs_path("IMAGES_DIR", &images_default.to_string_lossy());
        let agent_vsock_port = e.int("AGENT_VSOCK_PORT", 8080, 1, 65535) as u32;
        let log_format = match e.choice("LOG_FORMAT", "json", &["json", "pretty"]) {
            "pretty" => LogFormat::Pretty,
            _ => LogFormat::Json,
        };
        let rust_log = e.string("RUST_LOG", "info");
        if tracing_subscriber::EnvFilter::try_new(&rust_log).is_err() {
            e.fail("RUST_LOG", "is not a valid tracing filter");
        }
        let expose_internal_errors = e.bool("EXPOSE_INTERNAL_ERRORS", false);

        let image = BuiltinImage {
            kernel: e.opt_abs_path("KERNEL_PATH"),
            rootfs: e.opt_abs_path("BASE_ROOTFS_PATH"),
            initrd: e.opt_abs_path("INITRD_PATH"),
        };
        match (&image.kernel, &image.rootfs) {
            (Some(_), None) => e.fail("BASE_ROOTFS_PATH", "must be set together with KERNEL_PATH"),
            (None, Some(_)) => e.fail("KERNEL_PATH", "must be set together with BASE_ROOTFS_PATH"),
            _ => {}
        }
        if image.initrd.is_some() && image.kernel.is_none() {
            e.fail("INITRD_PATH", "is only valid with KERNEL_PATH");
        }
        let dns_server_ip = e.get("DNS_SERVER_IP").and_then(|v| match v.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                e.fail("DNS_SERVER_IP", "must be an IPv4 address");
                None
            }
        });
        let guest_firewall = e.bool("GUEST_FIREWALL", true);

        let db = DbSettings {
            dialect: e.choice("DB_DIALECT", "sqlite", &["sqlite", "postgres"]),
            sqlite_path: PathBuf::from(e.string("SQLITE_PATH", "./db/manager.db")),
            database_url: e.get("DATABASE_URL").map(str::to_string),
        };
        if db.dialect == "postgres" {
            match &db.database_url {
                None => e.fail("DATABASE_URL", "is required when DB_DIALECT=postgres"),
                Some(u) if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) => e
                    .fail(
                        "DATABASE_URL",
                        "must start with postgres:// or postgresql://",
                    ),
                _ => {}
            }
        }

        let jail_default = storage_root.join("jailer");
        let backend = BackendSettings {
            vmm_backend: e.choice("VMM_BACKEND", "auto", &["auto", "firecracker", "qemu"]),
            qemu_bin: e.string("QEMU_BIN", "qemu-system-x86_64"),
            vhost_vsock_bin: e.string("VHOST_VSOCK_BIN", "vhost-device-vsock"),
            qemu_accel: e.choice("QEMU_ACCEL", "auto", &["auto", "kvm", "tcg"]),
            firecracker_bin: e.abs_path("FIRECRACKER_BIN", "/usr/local/bin/firecracker"),
            jailer_bin: e.abs_path("JAILER_BIN", "/usr/local/bin/jailer"),
            jailer_chroot_base_dir: e
                .abs_path("JAILER_CHROOT_BASE_DIR", &jail_default.to_string_lossy()),
            jailer_uid: e.int("JAILER_UID", 1234, 1, 4_294_967_294) as u32,
            jailer_gid: e.int("JAILER_GID", 1234, 1, 4_294_967_294) as u32,
            firecracker_log_level: e.choice(
                "FIRECRACKER_LOG_LEVEL",
                "Warning",
                &["Error", "Warning", "Info", "Debug", "Trace", "Off"],
            ),
        };

        let overlay_size_bytes =
            e.int("OVERLAY_SIZE_BYTES", 512 * MIB, 64 * MIB, 1024 * 1024 * MIB);
        if !overlay_size_bytes.is_multiple_of(MIB) {
            e.fail("OVERLAY_SIZE_BYTES", "must be a multiple of 1 MiB");
        }
        let disks = DiskSettings {
            clone_mode: e.choice("ROOTFS_CLONE_MODE", "auto", &["auto", "reflink", "copy"]),
            overlay_size_bytes,
            overlay_device_wait_ms: e.int("OVERLAY_DEVICE_WAIT_MS", 2000, 10, 60000),
        };

        let limits = Limits {
            max_vms: e.int("MAX_VMS", 20, 1, 1_000_000),
            max_cpu: e.int("MAX_CPU", 4, 1, 32) as u32,
            max_mem_mb: e.int("MAX_MEM_MB", 2048, 128, 16 * 1024 * 1024) as u32,
            max_allow_ips: e.int("MAX_ALLOW_IPS", 64, 0, 4096) as usize,
            max_exec_timeout_ms: e.int("MAX_EXEC_TIMEOUT_MS", 120_000, 1000, 3_600_000),
            max_runts_timeout_ms: e.int("MAX_RUNTS_TIMEOUT_MS", 120_000, 1000, 3_600_000),
            max_vm_timeout_sec: e.int("MAX_VM_TIMEOUT_SEC", 86_400, 1, 31_536_000),
            default_vm_timeout_sec: e.int("DEFAULT_VM_TIMEOUT_SEC", 0, 0, 31_536_000),
        };
        if limits.default_vm_timeout_sec > limits.max_vm_timeout_sec {
            e.fail(
                "DEFAULT_VM_TIMEOUT_SEC",
                format!(
                    "must not exceed MAX_VM_TIMEOUT_SEC={}",
                    limits.max_vm_timeout_sec
                ),
            );
        }
        let snapshots = SnapshotSettings {
            enable_snapshots: e.bool("ENABLE_SNAPSHOTS", false),
            template_cpu: e.int("SNAPSHOT_TEMPLATE_CPU", 1, 1, 32) as u32,
            template_mem_mb: e.int("SNAPSHOT_TEMPLATE_MEM_MB", 256, 128, 16 * 1024 * 1024) as u32,
            enable_warm_pool: e.bool("ENABLE_WARM_POOL", false),
            warm_pool_target: e.int("WARM_POOL_TARGET", 1, 0, 1_000_000),
            warm_pool_max_vms: e.int("WARM_POOL_MAX_VMS", 4, 0, 1_000_000),
        };
        if snapshots.template_cpu > limits.max_cpu {
            e.fail(
                "SNAPSHOT_TEMPLATE_CPU",
                format!("must not exceed MAX_CPU={}", limits.max_cpu),
            );
        }
        if snapshots.template_mem_mb > limits.max_mem_mb {
            e.fail(
                "SNAPSHOT_TEMPLATE_MEM_MB",
                format!("must be within 128..MAX_MEM_MB={}", limits.max_mem_mb),
            );
        }

        let vsock = VsockSettings {
            retry_attempts: e.int("VSOCK_RETRY_ATTEMPTS", 30, 1, 10_000) as u32,
            retry_delay_ms: e.int("VSOCK_RETRY_DELAY_MS", 100, 1, 60_000),
            timeout_ms: e.int("VSOCK_TIMEOUT_MS", 15_000, 100, 3_600_000),
            health_timeout_ms: e.int("VSOCK_HEALTH_TIMEOUT_MS", 15_000, 100, 3_600_000),
            binary_timeout_ms: e.int("VSOCK_BINARY_TIMEOUT_MS", 30_000, 100, 3_600_000),
            max_json_response_bytes: e.int(
                "VSOCK_MAX_JSON_RESPONSE_BYTES",
                2_000_000,
                65_536,
                1 << 30,
            ),
            max_binary_response_bytes: e.int(
                "VSOCK_MAX_BINARY_RESPONSE_BYTES",
                50_000_000,
                65_536,
                16 << 30,
            ),
        };

        let vm_subnet = match Subnet::parse(&e.string("VM_SUBNET", "172.16.0.0/24")) {
            Ok(s) => s,
            Err(reason) => {
                e.fail("VM_SUBNET", reason);
                Subnet::parse("172.16.0.0/24").expect("default subnet")
            }
        };
        let reserved = limits.max_vms
            + if snapshots.enable_warm_pool {
                snapshots.warm_pool_max_vms
            } else {
                0
            }
            + u64::from(snapshots.enable_snapshots);
        if vm_subnet.usable_guests() < reserved {
            e.fail(
                "MAX_VMS",
                format!(
                    "VM_SUBNET {} has {} guest addresses, fewer than the {} needed",
                    vm_subnet,
                    vm_subnet.usable_guests(),
                    reserved
                ),
            );
        }
        let default_internal = format!("http://{}:{}", vm_subnet.gateway(), port);
        let manager_internal_base_url = e.string("MANAGER_INTERNAL_BASE_URL", &default_internal);
        let gateway_prefix = format!("http://{}:", vm_subnet.gateway());
        if !manager_internal_base_url.starts_with(&gateway_prefix)
            && manager_internal_base_url != format!("http://{}", vm_subnet.gateway())
        {
            e.fail(
                "MANAGER_INTERNAL_BASE_URL",
                "must be an http URL on the gateway address of VM_SUBNET",
            );
        }

        let rate = |e: &mut Env, n: &str, d: u64| e.int(n, d, 0, 1_000_000);
        let rate_limits = RateLimits {
            global: rate(&mut e, "RATE_LIMIT_GLOBAL", 3000),
            login: rate(&mut e, "RATE_LIMIT_LOGIN", 10),
            vm_create: rate(&mut e, "RATE_LIMIT_VM_CREATE", 30),
            exec: rate(&mut e, "RATE_LIMIT_EXEC", 300),
            run_ts: rate(&mut e, "RATE_LIMIT_RUN_TS", 60),
            run_js: rate(&mut e, "RATE_LIMIT_RUN_JS", 60),
            files_upload: rate(&mut e, "RATE_LIMIT_FILES_UPLOAD", 30),
            files_download: rate(&mut e, "RATE_LIMIT_FILES_DOWNLOAD", 60),
            peer_invoke: rate(&mut e, "RATE_LIMIT_PEER_INVOKE", 300),
        };
        let session_ttl_hours = e.int("SESSION_TTL_HOURS", 12, 1, 8760);
        let cookie_secure = e.bool("COOKIE_SECURE", false);
        let webhook_allow_private = e.bool("WEBHOOK_ALLOW_PRIVATE", false);
        let vm_secret_key = e.get("VM_SECRET_KEY").map(str::to_string);
        if vm_secret_key
            .as_ref()
            .is_some_and(|k| k.chars().count() < 32)
        {
            e.fail("VM_SECRET_KEY", "must be at least 32 characters");
        }
        let otel = otel_settings(&mut e);

        if !e.errors.is_empty() {
            return Err(e.errors);
        }
        Ok(Settings {
            api_key,
            admin_email,
            admin_password,
            port,
            storage_root,
            images_dir,
            agent_vsock_port,
            log_format,
            rust_log,
            expose_internal_errors,
            image,
            dns_server_ip,
            guest_firewall,
            db,
            backend,
            disks,
            snapshots,
            limits,
            vsock,
            vm_subnet,
            manager_internal_base_url,
            session_ttl_hours,
            cookie_secure,
            rate_limits,
            webhook_allow_private,
            vm_secret_key,
            otel,
        })
    }

    /// Warnings of `docs/reference/configuration.md` §4 that need no I/O.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.api_key.len() < 16 {
            w.push("API_KEY is shorter than 16 characters".to_string());
        }
        if self.admin_password.len() < 12 && !self.admin_password.starts_with("$argon2id$") {
            w.push("ADMIN_PASSWORD is shorter than 12 characters".to_string());
        }
        if self.expose_internal_errors {
            w.push("EXPOSE_INTERNAL_ERRORS=true: 500 bodies carry internal error text".to_string());
        }
        w
    }

    pub fn default_disk_mb(&self) -> u64 {
        self.disks.overlay_size_bytes / MIB
    }
}

fn otel_settings(e: &mut Env) -> OtelSettings {
    let endpoint = e.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_string);
    if let Some(url) = &endpoint {
        let valid = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !valid {
            e.fail(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "must be an http or https URL",
            );
        }
    }
    let service_name = e.string("OTEL_SERVICE_NAME", "run-dat-sheesh-manager");
    if service_name.trim().is_empty() {
        e.fail("OTEL_SERVICE_NAME", "must not be empty");
    }
    let diagnostic_level = e.get("OTEL_DIAGNOSTIC_LOG_LEVEL").is_some().then(|| {
        let levels = ["NONE", "ERROR", "WARN", "INFO", "DEBUG", "VERBOSE", "ALL"];
        match e.choice("OTEL_DIAGNOSTIC_LOG_LEVEL", "WARN", &levels) {
            "NONE" => "off",
            "ERROR" => "error",
            "WARN" => "warn",
            "INFO" => "info",
            "DEBUG" => "debug",
            _ => "trace",
        }
    });
    OtelSettings {
        endpoint,
        service_name,
        diagnostic_level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Variables the property test sets: numbers, flags, addresses, paths and choices.
    const FUZZED: &[&str] = &[
        "PORT",
        "MAX_VMS",
        "MAX_CPU",
        "MAX_MEM_MB",
        "MAX_ALLOW_IPS",
        "MAX_EXEC_TIMEOUT_MS",
        "VM_SUBNET",
        "DNS_SERVER_IP",
        "STORAGE_ROOT",
        "IMAGES_DIR",
        "DB_DIALECT",
        "DATABASE_URL",
        "VMM_BACKEND",
        "QEMU_ACCEL",
        "ENABLE_SNAPSHOTS",
        "WARM_POOL_TARGET",
        "WARM_POOL_MAX_VMS",
        "VSOCK_TIMEOUT_MS",
        "RATE_LIMIT_GLOBAL",
        "SESSION_TTL_HOURS",
        "JAILER_UID",
        "COOKIE_SECURE",
        "LOG_FORMAT",
        "MANAGER_INTERNAL_BASE_URL",
        "OVERLAY_SIZE_BYTES",
    ];
    const SECRETS: &[&str] = &["API_KEY", "ADMIN_PASSWORD", "VM_SECRET_KEY", "DATABASE_URL"];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("99999999999999999999".to_string()),
            Just("true".to_string()),
            Just("10.0.0.0/33".to_string()),
            Just("172.30.0.0/29".to_string()),
            Just("relative/path".to_string()),
            "[ -~]{0,12}",
            (0u64..100_000).prop_map(|n| n.to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any mix of values never panics; every error names a configuration variable, and no
        /// error repeats a secret's value.
        #[test]
        fn any_environment_is_parsed_or_refused_by_name(
            set in proptest::collection::btree_map(proptest::sample::select(FUZZED), value(), 0..8),
            // Secrets of any length (some too short to be accepted), recognisable in a message.
            secrets in proptest::collection::btree_map(
                proptest::sample::select(SECRETS), "sekrit-[a-z0-9]{0,40}", 0..4),
        ) {
            let mut vars = base();
            for (k, v) in set.iter().chain(&secrets) {
                vars.insert(k.to_string(), v.clone());
            }
            if let Err(errors) = Settings::from_env(&vars) {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    prop_assert!(
                        e.variable.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                            && !e.variable.is_empty(),
                        "{e:?}"
                    );
                    let shown = format!("{e} {:?}", e.value);
                    for (secret, v) in &secrets {
                        prop_assert!(!shown.contains(v.as_str()), "{secret} shown in {shown}");
                    }
                }
            }
        }
    }

    fn base() -> HashMap<String, String> {
        [
            ("API_KEY", "k-0123456789abcdef"),
            ("ADMIN_EMAIL", "a@b.c"),
            ("ADMIN_PASSWORD", "pw-0123456789"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn defaults_follow_the_seed() {
        let s = Settings::from_env(&base()).unwrap();
        assert_eq!(s.port, 3000);
        assert_eq!(s.storage_root, PathBuf::from("/var/lib/run-dat-sheesh"));
        assert_eq!(
            s.images_dir,
            PathBuf::from("/var/lib/run-dat-sheesh/images")
        );
        assert_eq!(s.agent_vsock_port, 8080);
        assert_eq!(s.limits.max_vms, 20);
        assert_eq!(s.limits.max_cpu, 4);
        assert_eq!(s.limits.max_mem_mb, 2048);
        assert_eq!(s.vsock.retry_attempts, 30);
        assert_eq!(s.vsock.max_json_response_bytes, 2_000_000);
        assert_eq!(s.default_disk_mb(), 512);
        assert_eq!(s.db.dialect, "sqlite");
        assert_eq!(s.manager_internal_base_url, "http://172.16.0.1:3000");
        assert!(s.guest_firewall);
        assert_eq!(
            s.backend.jailer_chroot_base_dir,
            PathBuf::from("/var/lib/run-dat-sheesh/jailer")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut vars = base();
        vars.remove("API_KEY");
        vars.insert("PORT".into(), "70000".into());
        vars.insert("MAX_CPU".into(), "1.5".into());
        vars.insert("KERNEL_PATH".into(), "/k".into());
        vars.insert("DB_DIALECT".into(), "postgres".into());
        vars.insert("VM_SUBNET".into(), "10.0.0.1/24".into());
        let errs = Settings::from_env(&vars).unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.variable.as_str()).collect();
        for want in [
            "API_KEY",
            "PORT",
            "MAX_CPU",
            "BASE_ROOTFS_PATH",
            "DATABASE_URL",
            "VM_SUBNET",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn subnet_must_fit_max_vms() {
        let mut vars = base();
        vars.insert("VM_SUBNET".into(), "10.9.0.0/29".into());
        vars.insert("MAX_VMS".into(), "6".into());
        let errs = Settings::from_env(&vars).unwrap_err();
        assert_eq!(errs[0].variable, "MAX_VMS");
        assert!(
            errs[0].reason.contains("has 5 guest addresses"),
            "{}",
            errs[0].reason
        );
    }

    #[test]
    fn otel_export_is_off_by_default_and_checked_when_set() {
        let s = Settings::from_env(&base()).unwrap();
        assert_eq!(s.otel.endpoint, None);
        assert_eq!(s.otel.service_name, "run-dat-sheesh-manager");
        assert_eq!(s.otel.diagnostic_level, None);

        let mut vars = base();
        vars.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://127.0.0.1:4318".into(),
        );
        vars.insert("OTEL_SERVICE_NAME".into(), "rds-a".into());
        vars.insert("OTEL_DIAGNOSTIC_LOG_LEVEL".into(), "verbose".into());
        let s = Settings::from_env(&vars).unwrap();
        assert_eq!(s.otel.endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(s.otel.service_name, "rds-a");
        assert_eq!(s.otel.diagnostic_level, Some("trace"));

        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
            ("OTEL_SERVICE_NAME", " "),
            ("OTEL_DIAGNOSTIC_LOG_LEVEL", "LOUD"),
        ] {
            let mut vars = base();
            vars.insert(name.into(), value.into());
            let errs = Settings::from_env(&vars).unwrap_err();
            assert_eq!(errs[0].variable, name, "{value}");
        }
    }
}
