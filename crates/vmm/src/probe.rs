//! The KVM probe (`docs/reference/vmm-backends.md` §2): can KVM run a stock guest here, not merely
//! does `/dev/kvm` exist. Paravirtual KVM (PVM) passes the first step and fails the second.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    Usable,
    Unusable { step: &'static str, reason: String },
}

impl KvmProbe {
    pub fn is_usable(&self) -> bool {
        matches!(self, KvmProbe::Usable)
    }
}

impl fmt::Display for KvmProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmProbe::Usable => write!(f, "usable"),
            KvmProbe::Unusable { step, reason } => write!(f, "unusable: {step}: {reason}"),
        }
    }
}

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// Steps 1 and 2 of the probe. (Step 3, booting the image's kernel under KVM, belongs to the backend
/// that would use it.)
pub fn probe_kvm() -> KvmProbe {
    if let Err(reason) = api_version() {
        return KvmProbe::Unusable {
            step: "open /dev/kvm",
            reason,
        };
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_step(
        &cpuinfo,
        std::path::Path::new("/sys/module/kvm_pvm").exists(),
    )
}

fn api_version() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| e.to_string())?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if v != 12 {
        return Err(format!("KVM_GET_API_VERSION returned {v}, expected 12"));
    }
    Ok(())
}

fn cpu_step(cpuinfo: &str, pvm_loaded: bool) -> KvmProbe {
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has_virt = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    if !has_virt {
        return KvmProbe::Unusable {
            step: "cpu flags",
            reason: "no vmx or svm in /proc/cpuinfo (nested virtualisation unavailable)".into(),
        };
    }
    if pvm_loaded {
        return KvmProbe::Unusable {
            step: "cpu flags",
            reason: "kvm_pvm is loaded: paravirtual KVM cannot run stock guest kernels".into(),
        };
    }
    KvmProbe::Usable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_step_rules() {
        let vmx = "processor: 0\nflags\t: fpu vmx sse\n";
        let none = "flags\t: fpu hypervisor sse\n";
        assert_eq!(cpu_step(vmx, false), KvmProbe::Usable);
        assert!(!cpu_step(vmx, true).is_usable());
        let msg = cpu_step(none, false).to_string();
        assert!(msg.starts_with("unusable: cpu flags: no vmx"), "{msg}");
    }
}
