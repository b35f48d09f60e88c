//! `VMM_BACKEND=auto` on a host where Firecracker does not qualify (the build machines: no binary,
//! paravirtual KVM) chooses QEMU and says why, in the line `/readyz` and the startup log show.

use rds_vmm::select::{select, which, BackendChoice, Requested};
use rds_vmm::BackendKind;
use std::path::PathBuf;

const CACHED_HELPER: &str =
    "/var/cache/run-dat-sheesh/tools/vhost-device-vsock-0.3.0/bin/vhost-device-vsock";

/// QEMU's own requirements, or the reason to skip.
fn qemu_choice(test: &str) -> Option<BackendChoice> {
    if which("qemu-system-x86_64").is_none() {
        println!("SKIP {test}: qemu-system-x86_64 not on PATH");
        return None;
    }
    let helper = which("vhost-device-vsock")
        .or_else(|| Some(PathBuf::from(CACHED_HELPER)).filter(|p| p.is_file()));
    let Some(helper) = helper else {
        println!("SKIP {test}: vhost-device-vsock not on PATH or in the tool cache");
        return None;
    };
    Some(BackendChoice {
        requested: Requested::Auto,
        vhost_vsock_bin: helper.to_string_lossy().into_owned(),
        ..BackendChoice::default()
    })
}

fn firecracker_qualifies_here() -> bool {
    let fc = PathBuf::from("/usr/local/bin/firecracker");
    let jl = PathBuf::from("/usr/local/bin/jailer");
    fc.is_file() && jl.is_file() && rds_vmm::probe::probe_kvm().is_usable()
}

#[test]
fn auto_chooses_qemu_and_says_why() {
    let test = "auto_chooses_qemu_and_says_why";
    let Some(choice) = qemu_choice(test) else {
        return;
    };
    if firecracker_qualifies_here() {
        println!("SKIP {test}: Firecracker qualifies on this host");
        return;
    }
    let sel = select(&choice).unwrap_or_else(|e| panic!("select: {e:?}"));
    assert_eq!(sel.backend.capabilities().kind, BackendKind::Qemu);
    println!("reason: {}", sel.reason);
    assert!(sel.reason.starts_with("qemu ("), "{}", sel.reason);
    let why = sel
        .reason
        .split("firecracker not used: ")
        .nth(1)
        .unwrap_or("");
    let fc = PathBuf::from("/usr/local/bin/firecracker");
    if !fc.is_file() {
        assert_eq!(
            why,
            "FIRECRACKER_BIN /usr/local/bin/firecracker is not an executable file"
        );
    } else {
        assert!(!why.is_empty(), "{}", sel.reason);
    }
}

/// A statically linked executable standing in for Firecracker and the jailer: busybox-static,
/// which scripts/install-deps.sh installs for the image build.
fn static_stand_in(test: &str) -> Option<std::path::PathBuf> {
    let busybox = std::path::PathBuf::from("/bin/busybox");
    if busybox.exists() {
        return Some(busybox);
    }
    println!("SKIP {test}: no /bin/busybox (busybox-static: scripts/install-deps.sh)");
    None
}

/// With static executables in place (stand-ins), the KVM probe is what keeps Firecracker out here;
/// on a host whose probe passes, the stand-in's missing version does, and QEMU still serves.
#[test]
fn auto_with_binaries_but_no_usable_kvm_names_the_probe() {
    let test = "auto_with_binaries_but_no_usable_kvm_names_the_probe";
    let Some(mut choice) = qemu_choice(test) else {
        return;
    };
    let Some(stand_in) = static_stand_in(test) else {
        return;
    };
    choice.firecracker_bin = stand_in.clone();
    choice.jailer_bin = stand_in;
    let sel = select(&choice).unwrap_or_else(|e| panic!("select: {e:?}"));
    assert_eq!(sel.backend.capabilities().kind, BackendKind::Qemu);
    println!("reason: {}", sel.reason);
    let probe = sel.kvm_probe.clone().expect("auto runs the probe");
    if probe.is_usable() {
        assert!(
            sel.reason.contains("firecracker not used: "),
            "{}",
            sel.reason
        );
    } else {
        assert!(
            sel.reason
                .contains(&format!("firecracker not used: kvm probe: {probe}")),
            "{}",
            sel.reason
        );
    }
}

/// A dynamically linked Firecracker cannot start inside the jailer's chroot: startup refuses it,
/// naming the variable, the loader and the fix, before any KVM question.
#[test]
fn firecracker_requested_with_a_dynamic_build_fails_saying_so() {
    let sh = which("sh").unwrap();
    let choice = BackendChoice {
        requested: Requested::Firecracker,
        firecracker_bin: sh.clone(),
        jailer_bin: sh.clone(),
        ..BackendChoice::default()
    };
    let errs = select(&choice).err().expect("must fail");
    assert_eq!(errs[0].variable, "VMM_BACKEND");
    let expected = format!(
        "firecracker cannot be used: FIRECRACKER_BIN {} is dynamically linked (interpreter ",
        sh.display()
    );
    assert!(errs[0].reason.starts_with(&expected), "{}", errs[0].reason);
    assert!(
        errs[0].reason.contains("statically linked build"),
        "{}",
        errs[0].reason
    );
}

#[test]
fn firecracker_requested_without_kvm_fails_naming_vmm_backend() {
    let test = "firecracker_requested_without_kvm_fails_naming_vmm_backend";
    let Some(stand_in) = static_stand_in(test) else {
        return;
    };
    let choice = BackendChoice {
        requested: Requested::Firecracker,
        firecracker_bin: stand_in.clone(),
        jailer_bin: stand_in,
        ..BackendChoice::default()
    };
    let probe = rds_vmm::probe::probe_kvm();
    if probe.is_usable() {
        println!("SKIP firecracker_requested_without_kvm_fails_naming_vmm_backend: kvm usable");
        return;
    }
    let errs = select(&choice).err().expect("must fail");
    assert_eq!(errs[0].variable, "VMM_BACKEND");
    assert_eq!(
        errs[0].reason,
        format!("firecracker cannot be used: kvm probe: {probe}")
    );
}
