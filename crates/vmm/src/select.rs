//! Picks the backend once at startup (`docs/reference/vmm-backends.md` §2) and says why.

use crate::firecracker::{FirecrackerBackend, FirecrackerConfig};
use crate::probe::{probe_kvm, KvmProbe};
use crate::qemu::{QemuBackend, QemuConfig};
use crate::{Accel, VmmBackend};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Auto,
    Firecracker,
    Qemu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone)]
pub struct BackendChoice {
    pub requested: Requested,
    pub qemu_accel: AccelChoice,
    pub qemu_bin: String,
    pub vhost_vsock_bin: String,
    pub firecracker_bin: PathBuf,
    pub jailer_bin: PathBuf,
    /// uid:gid the VMM processes drop to.
    pub runas: (u32, u32),
    /// `JAILER_CHROOT_BASE_DIR` (absolute).
    pub jailer_chroot_base_dir: PathBuf,
    /// `FIRECRACKER_LOG_LEVEL`: `Error` | `Warning` | `Info` | `Debug` | `Trace` | `Off`.
    pub firecracker_log_level: String,
}

impl Default for BackendChoice {
    /// The defaults of `docs/reference/configuration.md` (with `STORAGE_ROOT` at
    /// `/var/lib/run-dat-sheesh`).
    fn default() -> Self {
        BackendChoice {
            requested: Requested::Auto,
            qemu_accel: AccelChoice::Auto,
            qemu_bin: "qemu-system-x86_64".into(),
            vhost_vsock_bin: "vhost-device-vsock".into(),
            firecracker_bin: "/usr/local/bin/firecracker".into(),
            jailer_bin: "/usr/local/bin/jailer".into(),
            runas: (1234, 1234),
            jailer_chroot_base_dir: "/var/lib/run-dat-sheesh/jailer".into(),
            firecracker_log_level: "Warning".into(),
        }
    }
}

impl BackendChoice {
    pub fn firecracker_config(&self) -> FirecrackerConfig {
        FirecrackerConfig {
            firecracker_bin: self.firecracker_bin.clone(),
            jailer_bin: self.jailer_bin.clone(),
            chroot_base_dir: self.jailer_chroot_base_dir.clone(),
            runas: self.runas,
            log_level: self.firecracker_log_level.clone(),
        }
    }
}

pub struct Selection {
    pub backend: Arc<dyn VmmBackend>,
    /// One line for the startup log and `/readyz`.
    pub reason: String,
    /// None when the probe was not run (`QEMU_ACCEL=tcg`).
    pub kvm_probe: Option<KvmProbe>,
}

/// A selection failure, naming the configuration variable at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectError {
    pub variable: &'static str,
    pub reason: String,
}

pub fn select(choice: &BackendChoice) -> Result<Selection, Vec<SelectError>> {
    let needs_probe = choice.requested != Requested::Qemu || choice.qemu_accel != AccelChoice::Tcg;
    let probe = needs_probe.then(probe_kvm);

    let why_not_fc = match firecracker_verdict(choice, probe.as_ref()) {
        Verdict::Qualifies => match select_firecracker(choice, probe.clone()) {
            Ok(selection) => return Ok(selection),
            // A configuration error of a host that qualifies fails startup, naming the variable.
            Err(Failure::Config(e)) => return Err(vec![e]),
            Err(Failure::Unusable(reason)) => reason,
        },
        Verdict::No(reason) => reason,
    };
    if choice.requested == Requested::Firecracker {
        return Err(vec![SelectError {
            variable: "VMM_BACKEND",
            reason: format!("firecracker cannot be used: {why_not_fc}"),
        }]);
    }

    let mut errors = Vec::new();
    let qemu_bin = resolve("QEMU_BIN", &choice.qemu_bin, &mut errors);
    let vhost_bin = resolve("VHOST_VSOCK_BIN", &choice.vhost_vsock_bin, &mut errors);
    let kvm_ok = probe.as_ref().is_some_and(KvmProbe::is_usable);
    let accel = match choice.qemu_accel {
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto if kvm_ok => Accel::Kvm,
        AccelChoice::Auto => Accel::Tcg,
        AccelChoice::Kvm if kvm_ok => Accel::Kvm,
        AccelChoice::Kvm => {
            errors.push(SelectError {
                variable: "QEMU_ACCEL",
                reason: format!(
                    "kvm requested but {}",
                    probe
                        .as_ref()
                        .map(|p| format!("kvm probe: {p}"))
                        .unwrap_or_default()
                ),
            });
            Accel::Tcg
        }
    };
    let (Some(qemu_bin), Some(vhost_vsock_bin)) = (qemu_bin, vhost_bin) else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let cfg = QemuConfig {
        qemu_bin,
        vhost_vsock_bin,
        accel,
        runas: Some(choice.runas),
        tsc_khz: host_tsc_khz(),
    };
    let backend = QemuBackend::new(cfg).map_err(|e| {
        vec![SelectError {
            variable: "QEMU_BIN",
            reason: e.to_string(),
        }]
    })?;
    Ok(Selection {
        backend: Arc::new(backend),
        reason: format!(
            "qemu ({}), firecracker not used: {why_not_fc}",
            accel.as_str()
        ),
        kvm_probe: probe,
    })
}

enum Verdict {
    Qualifies,
    No(String),
}

enum Failure {
    Config(SelectError),
    Unusable(String),
}

/// Firecracker qualifies when both binaries are executable files and the KVM probe passes
/// (`docs/reference/vmm-backends.md` §2).
fn firecracker_verdict(choice: &BackendChoice, probe: Option<&KvmProbe>) -> Verdict {
    if choice.requested == Requested::Qemu {
        return Verdict::No("VMM_BACKEND=qemu".into());
    }
    if let Some(missing) = firecracker_missing(choice) {
        return Verdict::No(missing);
    }
    match probe {
        Some(p) if p.is_usable() => Verdict::Qualifies,
        Some(p) => Verdict::No(format!("kvm probe: {p}")),
        None => Verdict::No("kvm probe not run".into()),
    }
}

fn select_firecracker(
    choice: &BackendChoice,
    probe: Option<KvmProbe>,
) -> Result<Selection, Failure> {
    let cfg = choice.firecracker_config();
    if let Err((variable, reason)) = cfg.validate() {
        return Err(Failure::Config(SelectError { variable, reason }));
    }
    let backend = FirecrackerBackend::new(cfg).map_err(|e| Failure::Unusable(e.to_string()))?;
    let version = backend.capabilities().vmm_version.clone();
    Ok(Selection {
        backend: Arc::new(backend),
        reason: format!("firecracker {version} (kvm): binaries executable, kvm probe: usable"),
        kvm_probe: probe,
    })
}

fn firecracker_missing(choice: &BackendChoice) -> Option<String> {
    crate::firecracker::check_binaries(&choice.firecracker_bin, &choice.jailer_bin).err()
}

/// `Err("<VARIABLE> <path> is not an executable file")` for the first of `programs` that is not one.
pub fn check_executables(programs: &[(&str, &Path)]) -> Result<(), String> {
    for (var, path) in programs {
        if !is_executable(path) {
            return Err(format!(
                "{var} {} is not an executable file",
                path.display()
            ));
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A bare name is looked up on `PATH`; anything with a slash is taken as a path.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn resolve(variable: &'static str, name: &str, errors: &mut Vec<SelectError>) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        errors.push(SelectError {
            variable,
            reason: format!("{name} is not an executable file or not found on PATH"),
        });
    }
    found
}

/// Host TSC frequency in kHz from `/proc/cpuinfo`; TCG guests hang at calibration without it.
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh_and_rejects_missing() {
        assert!(which("sh").is_some());
        assert!(which("no-such-binary-rds").is_none());
        assert!(which("/nonexistent/x").is_none());
    }

    #[test]
    fn firecracker_requested_without_binaries_names_the_variable() {
        let choice = BackendChoice {
            requested: Requested::Firecracker,
            qemu_accel: AccelChoice::Auto,
            qemu_bin: "qemu-system-x86_64".into(),
            vhost_vsock_bin: "vhost-device-vsock".into(),
            firecracker_bin: "/nonexistent/firecracker".into(),
            jailer_bin: "/nonexistent/jailer".into(),
            ..BackendChoice::default()
        };
        let err = select(&choice).err().unwrap();
        assert_eq!(err[0].variable, "VMM_BACKEND");
        assert!(
            err[0].reason.contains("FIRECRACKER_BIN"),
            "{}",
            err[0].reason
        );
    }

    fn verdict_of(c: &BackendChoice, p: Option<&KvmProbe>) -> String {
        match firecracker_verdict(c, p) {
            Verdict::Qualifies => "qualifies".into(),
            Verdict::No(r) => r,
        }
    }

    #[test]
    fn firecracker_verdicts_say_why() {
        let usable = KvmProbe::Usable;
        let pvm = KvmProbe::Unusable {
            step: "cpu flags",
            reason: "kvm_pvm is loaded".into(),
        };
        let c = BackendChoice {
            firecracker_bin: "/nonexistent/firecracker".into(),
            ..BackendChoice::default()
        };
        assert_eq!(
            verdict_of(&c, Some(&usable)),
            "FIRECRACKER_BIN /nonexistent/firecracker is not an executable file"
        );
        let sh = which("sh").unwrap();
        let c = BackendChoice {
            firecracker_bin: sh.clone(),
            jailer_bin: "/nonexistent/jailer".into(),
            ..BackendChoice::default()
        };
        assert!(verdict_of(&c, Some(&usable)).starts_with("JAILER_BIN /nonexistent/jailer"));
        // An executable but dynamically linked build (Debian's sh) is refused, saying why.
        let c = BackendChoice {
            firecracker_bin: sh.clone(),
            jailer_bin: sh,
            ..BackendChoice::default()
        };
        let why = verdict_of(&c, Some(&usable));
        assert!(why.contains("is dynamically linked"), "{why}");
        // Any static executable passes the binary checks; busybox-static (installed by
        // scripts/install-deps.sh for the image build) stands in for both.
        let busybox = std::path::PathBuf::from("/bin/busybox");
        if !busybox.exists() {
            println!("SKIP the static half: no /bin/busybox (busybox-static)");
            return;
        }
        let c = BackendChoice {
            firecracker_bin: busybox.clone(),
            jailer_bin: busybox,
            ..BackendChoice::default()
        };
        assert_eq!(
            verdict_of(&c, Some(&pvm)),
            "kvm probe: unusable: cpu flags: kvm_pvm is loaded"
        );
        assert_eq!(verdict_of(&c, Some(&usable)), "qualifies");
        let q = BackendChoice {
            requested: Requested::Qemu,
            ..c
        };
        assert_eq!(verdict_of(&q, Some(&usable)), "VMM_BACKEND=qemu");
    }
}
