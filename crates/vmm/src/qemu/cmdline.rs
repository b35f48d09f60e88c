//! Argument vectors for QEMU and the vsock helper (`docs/reference/vmm-backends.md` §5.1). Pure: no
//! I/O.
//!
//! The machine is `q35` with virtio-pci devices at fixed slots, not `microvm`: QEMU 7.2 cannot migrate
//! a vhost-user vsock device, so memory snapshots unplug it first, and only a PCIe root port offers
//! the hotplug for that (`docs/decisions.md`). Fixed slots keep a restore's devices where the
//! snapshot's were, whatever else changes between the two command lines.

use super::layout::Layout;
use super::QemuConfig;
use crate::{Accel, VmSpec};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The marker in QEMU's command line that names the VM (`-name rds-<vmId>`), checked by `is_alive` and
/// usable to find orphaned VMM processes.
pub fn vm_name(vm_id: &str) -> String {
    format!("rds-{vm_id}")
}

/// The guest kernel command line: the neutral one minus `reboot=k` (it delays the exit on `microvm` by
/// 1.5 s), plus `tsc_early_khz` under TCG (the boot hangs at TSC calibration without it).
pub(crate) fn guest_cmdline(cmdline: &str, accel: Accel, tsc_khz: Option<u64>) -> String {
    let mut words: Vec<String> = cmdline
        .split_whitespace()
        .filter(|w| *w != "reboot=k" && !w.starts_with("tsc_early_khz="))
        .map(str::to_string)
        .collect();
    if let (Accel::Tcg, Some(khz)) = (accel, tsc_khz) {
        words.push(format!("tsc_early_khz={khz}"));
    }
    words.join(" ")
}

/// `vhost-device-vsock --guest-cid <cid> --socket <run>/vhost.sock --uds-path <run>/v.sock`.
pub(crate) fn helper_args(l: &Layout, cid: u32) -> Vec<OsString> {
    vec![
        "--guest-cid".into(),
        cid.to_string().into(),
        "--socket".into(),
        l.vhost_sock().into(),
        "--uds-path".into(),
        l.agent_sock().into(),
    ]
}

/// QMP id of the vsock device, its chardev and the root port it is plugged into.
pub(crate) const VSOCK_DEVICE: &str = "rds-vsock";
pub(crate) const VSOCK_CHARDEV: &str = "rds-vsc";
pub(crate) const VSOCK_PORT: &str = "rds-vsock-port";

/// How QEMU starts: booting the kernel, or waiting for a snapshot's state (`-incoming defer`), in
/// which case the vsock device is left out (the snapshot was taken without it) and plugged after the
/// load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    Boot,
    Incoming,
}

/// QEMU's arguments (without the binary). Device order and PCI slots are fixed: `vda` rootfs, `vdb`
/// disk, `eth0`, then the root port holding the vsock device.
pub(crate) fn qemu_args(cfg: &QemuConfig, spec: &VmSpec, start: Start) -> Vec<OsString> {
    let l = Layout::of_spec(spec);
    let mut a = Args::default();
    a.arg("-name").arg(esc(vm_name(&spec.vm_id)));
    // No SMM: nothing here uses it, and emulating it slows firmware under TCG.
    a.arg("-M").arg("q35,smm=off");
    match cfg.accel {
        Accel::Tcg => a
            .arg("-accel")
            .arg("tcg,thread=multi")
            .arg("-cpu")
            .arg("max"),
        Accel::Kvm => a.arg("-accel").arg("kvm").arg("-cpu").arg("host"),
    };
    a.arg("-smp").arg(spec.cpu.to_string());
    a.arg("-m").arg(spec.mem_mb.to_string());
    for flag in [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ] {
        a.arg(flag);
    }
    // Guest memory is a memfd the manager made (memory.rs), shared: vhost-user maps it too.
    a.arg("-object").arg(format!(
        "memory-backend-file,id=mem,size={}M,mem-path=/proc/self/fd/{},share=on",
        spec.mem_mb,
        super::memory::RAM_FD
    ));
    a.arg("-machine").arg("memory-backend=mem");
    a.arg("-kernel").arg(&spec.kernel);
    if let Some(initrd) = &spec.initrd {
        a.arg("-initrd").arg(initrd);
    }
    a.arg("-append")
        .arg(guest_cmdline(&spec.cmdline, cfg.accel, cfg.tsc_khz));

    // Never cache=unsafe: it ignores the guest's flushes.
    a.arg("-drive").opt([
        ("id=rootfs,file=", esc(&spec.rootfs)),
        (",format=raw,readonly=on,if=none", OsString::new()),
    ]);
    a.arg("-device")
        .arg("virtio-blk-pci,drive=rootfs,bus=pcie.0,addr=0x3");
    // Relative to QEMU's working directory, the run directory, where `prepare` hard-links the disk:
    // the same name then still opens after `-chroot`, which QEMU needs when a snapshot inactivates
    // the disk and `cont` reactivates it (it reopens the file by name to change its access mode).
    a.arg("-drive").opt([
        ("id=disk,file=", esc(super::layout::DISK_LINK)),
        (",format=raw,if=none", OsString::new()),
    ]);
    a.arg("-device")
        .arg("virtio-blk-pci,drive=disk,bus=pcie.0,addr=0x4");

    if let Some(net) = &spec.net {
        a.arg("-netdev").opt([
            ("tap,id=n0,ifname=", esc(&net.tap)),
            (",script=no,downscript=no", OsString::new()),
        ]);
        a.arg("-device").opt([(
            "virtio-net-pci,netdev=n0,bus=pcie.0,addr=0x5,mac=",
            esc(&net.mac),
        )]);
    }

    a.arg("-device").arg(format!(
        "pcie-root-port,id={VSOCK_PORT},bus=pcie.0,addr=0x6,chassis=1"
    ));
    if start == Start::Boot {
        a.arg("-chardev").opt([(
            &*format!("socket,id={VSOCK_CHARDEV},path="),
            esc(l.vhost_sock()),
        )]);
        a.arg("-device").arg(format!(
            "vhost-user-vsock-pci,chardev={VSOCK_CHARDEV},id={VSOCK_DEVICE},bus={VSOCK_PORT}"
        ));
    }

    a.arg("-chardev").opt([
        ("file,id=con,path=", esc(l.console_log())),
        (",append=on", OsString::new()),
    ]);
    a.arg("-serial").arg("chardev:con");

    a.arg("-qmp").opt([
        ("unix:", esc(l.qmp_sock())),
        (",server=on,wait=off", OsString::new()),
    ]);
    if start == Start::Incoming {
        // The state arrives as a descriptor over QMP (`getfd`, `migrate-incoming`).
        a.arg("-incoming").arg("defer");
    }

    a.arg("-chroot").arg(&spec.run_dir);
    if let Some((uid, gid)) = cfg.runas {
        a.arg("-runas").arg(format!("{uid}:{gid}"));
    }
    // elevateprivileges=deny kills QEMU 7.2 at start together with -runas; -runas drops them instead.
    a.arg("-sandbox")
        .arg("on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny");
    a.0
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn arg(&mut self, s: impl AsRef<OsStr>) -> &mut Self {
        self.0.push(s.as_ref().to_os_string());
        self
    }

    /// One argument made of literal option text, each piece followed by an (escaped) value.
    fn opt<const N: usize>(&mut self, parts: [(&str, OsString); N]) -> &mut Self {
        let mut s = OsString::new();
        for (lit, val) in parts {
            s.push(lit);
            s.push(val);
        }
        self.0.push(s);
        self
    }
}

/// QEMU option values escape a comma by doubling it.
fn esc(v: impl AsRef<OsStr>) -> OsString {
    let mut out = Vec::new();
    for &b in v.as_ref().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NetSpec;

    const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 root=/dev/vda ro rootfstype=ext4 \
                           init=/usr/local/sbin/rds-init rds.agent_port=8080";

    fn spec() -> VmSpec {
        VmSpec {
            vm_id: "vm1".into(),
            cpu: 2,
            mem_mb: 512,
            kernel: "/img/vmlinux".into(),
            initrd: Some("/img/initrd".into()),
            rootfs: "/img/rootfs.ext4".into(),
            disk: "/s/vms/vm1/disk.ext4".into(),
            run_dir: "/s/vms/vm1/run".into(),
            logs_dir: "/s/vms/vm1/logs".into(),
            vsock_cid: 10001,
            cmdline: CMDLINE.into(),
            net: None,
        }
    }

    fn cfg(accel: Accel) -> QemuConfig {
        QemuConfig {
            qemu_bin: "qemu-system-x86_64".into(),
            vhost_vsock_bin: "vhost-device-vsock".into(),
            accel,
            runas: Some((1234, 1234)),
            tsc_khz: Some(2445000),
        }
    }

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    #[rustfmt::skip]
    fn tcg_command_line_is_exact() {
        let got = strings(qemu_args(&cfg(Accel::Tcg), &spec(), Start::Boot));
        let want = [
            "-name", "rds-vm1",
            "-M", "q35,smm=off",
            "-accel", "tcg,thread=multi", "-cpu", "max",
            "-smp", "2", "-m", "512",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-object", "memory-backend-file,id=mem,size=512M,mem-path=/proc/self/fd/3,share=on",
            "-machine", "memory-backend=mem",
            "-kernel", "/img/vmlinux",
            "-initrd", "/img/initrd",
            "-append", "console=ttyS0 panic=1 root=/dev/vda ro rootfstype=ext4 \
                        init=/usr/local/sbin/rds-init rds.agent_port=8080 tsc_early_khz=2445000",
            "-drive", "id=rootfs,file=/img/rootfs.ext4,format=raw,readonly=on,if=none",
            "-device", "virtio-blk-pci,drive=rootfs,bus=pcie.0,addr=0x3",
            "-drive", "id=disk,file=disk.ext4,format=raw,if=none",
            "-device", "virtio-blk-pci,drive=disk,bus=pcie.0,addr=0x4",
            "-device", "pcie-root-port,id=rds-vsock-port,bus=pcie.0,addr=0x6,chassis=1",
            "-chardev", "socket,id=rds-vsc,path=/s/vms/vm1/run/vhost.sock",
            "-device", "vhost-user-vsock-pci,chardev=rds-vsc,id=rds-vsock,bus=rds-vsock-port",
            "-chardev", "file,id=con,path=/s/vms/vm1/logs/console.log,append=on",
            "-serial", "chardev:con",
            "-qmp", "unix:/s/vms/vm1/run/qmp.sock,server=on,wait=off",
            "-chroot", "/s/vms/vm1/run",
            "-runas", "1234:1234",
            "-sandbox", "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny",
        ];
        assert_eq!(got, want);
        assert!(!got.iter().any(|a| a.contains("cache=unsafe")));
    }

    #[test]
    fn kvm_uses_host_cpu_and_no_tsc_hint() {
        let got = strings(qemu_args(&cfg(Accel::Kvm), &spec(), Start::Boot));
        let joined = got.join(" ");
        assert!(joined.contains("-accel kvm -cpu host -smp"), "{joined}");
        assert!(!joined.contains("tcg"), "{joined}");
        let append = &got[got.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(!append.contains("tsc_early_khz"), "{append}");
        assert!(!append.contains("reboot=k"), "{append}");
    }

    #[test]
    fn initrd_is_optional() {
        let mut s = spec();
        s.initrd = None;
        let got = strings(qemu_args(&cfg(Accel::Tcg), &s, Start::Boot));
        assert!(!got.iter().any(|a| a == "-initrd"));
        let k = got.iter().position(|a| a == "-kernel").unwrap();
        assert_eq!(got[k + 2], "-append");
    }

    #[test]
    fn net_adds_tap_nic_between_disks_and_vsock() {
        let mut s = spec();
        s.net = Some(NetSpec {
            tap: "rds-tap3".into(),
            mac: "06:00:ac:10:00:03".into(),
        });
        let got = strings(qemu_args(&cfg(Accel::Tcg), &s, Start::Boot));
        let nd = got.iter().position(|a| a == "-netdev").unwrap();
        assert_eq!(
            got[nd..nd + 4],
            [
                "-netdev",
                "tap,id=n0,ifname=rds-tap3,script=no,downscript=no",
                "-device",
                "virtio-net-pci,netdev=n0,bus=pcie.0,addr=0x5,mac=06:00:ac:10:00:03",
            ]
        );
        let disk = got
            .iter()
            .position(|a| a == "virtio-blk-pci,drive=disk,bus=pcie.0,addr=0x4")
            .unwrap();
        let vsock = got
            .iter()
            .position(|a| a.starts_with("vhost-user-vsock"))
            .unwrap();
        assert!(disk < nd && nd < vsock);
        // Without net there is no NIC at all.
        let plain = strings(qemu_args(&cfg(Accel::Tcg), &spec(), Start::Boot));
        assert!(!plain.iter().any(|a| a.contains("netdev")));
    }

    #[test]
    fn incoming_leaves_the_vsock_device_out_and_waits() {
        let boot = strings(qemu_args(&cfg(Accel::Tcg), &spec(), Start::Boot));
        let incoming = strings(qemu_args(&cfg(Accel::Tcg), &spec(), Start::Incoming));
        // The same line without `-chardev <vsock> -device <vsock>`, plus `-incoming defer` after QMP;
        // the empty root port stays where the snapshot had it.
        let mut want = boot.clone();
        let c = want
            .iter()
            .position(|a| a.starts_with("socket,id=rds-vsc"))
            .unwrap();
        want.drain(c - 1..c + 3);
        let q = want.iter().position(|a| a == "-qmp").unwrap();
        want.splice(q + 2..q + 2, ["-incoming".to_string(), "defer".to_string()]);
        assert_eq!(incoming, want);
        assert!(incoming
            .iter()
            .any(|a| a.starts_with("pcie-root-port,id=rds-vsock-port")));
    }

    #[test]
    fn rootfs_comes_before_disk() {
        let got = strings(qemu_args(&cfg(Accel::Tcg), &spec(), Start::Boot));
        let r = got
            .iter()
            .position(|a| a == "virtio-blk-pci,drive=rootfs,bus=pcie.0,addr=0x3")
            .unwrap();
        let d = got
            .iter()
            .position(|a| a == "virtio-blk-pci,drive=disk,bus=pcie.0,addr=0x4")
            .unwrap();
        assert!(r < d);
    }

    #[test]
    fn without_runas_there_is_no_runas_flag() {
        let mut c = cfg(Accel::Tcg);
        c.runas = None;
        let got = strings(qemu_args(&c, &spec(), Start::Boot));
        assert!(!got.iter().any(|a| a == "-runas"));
        assert!(got.iter().any(|a| a == "-chroot"));
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let mut s = spec();
        s.rootfs = "/s/a,b/rootfs.ext4".into();
        let got = strings(qemu_args(&cfg(Accel::Tcg), &s, Start::Boot));
        assert!(got.contains(
            &"id=rootfs,file=/s/a,,b/rootfs.ext4,format=raw,readonly=on,if=none".to_string()
        ));
        // -kernel is a plain argument, not an option list.
        s.kernel = "/k,1".into();
        let got = strings(qemu_args(&cfg(Accel::Tcg), &s, Start::Boot));
        assert!(got.contains(&"/k,1".to_string()));
    }

    #[test]
    fn guest_cmdline_rules() {
        assert_eq!(
            guest_cmdline("a reboot=k b", Accel::Tcg, Some(1000)),
            "a b tsc_early_khz=1000"
        );
        assert_eq!(guest_cmdline("a reboot=k b", Accel::Kvm, Some(1000)), "a b");
        // Unknown TSC: nothing to add (the caller warns).
        assert_eq!(guest_cmdline("a", Accel::Tcg, None), "a");
        // An existing hint is replaced, not duplicated; reboot=kbd-like words are kept.
        assert_eq!(
            guest_cmdline("tsc_early_khz=1 reboot=kbd", Accel::Tcg, Some(2)),
            "reboot=kbd tsc_early_khz=2"
        );
    }

    #[test]
    fn helper_command_line() {
        let s = spec();
        let got = strings(helper_args(&Layout::of_spec(&s), s.vsock_cid));
        assert_eq!(
            got,
            [
                "--guest-cid",
                "10001",
                "--socket",
                "/s/vms/vm1/run/vhost.sock",
                "--uds-path",
                "/s/vms/vm1/run/v.sock",
            ]
        );
    }
}
