//! The jailer's argument vector (`docs/reference/vmm-backends.md` §4.1) and every Firecracker API
//! call with its exact body (§4.2, §4.3). Pure: no I/O, so the whole launch plan is unit-tested
//! here.

use super::cgroup::{CgroupV2, PARENT};
use super::jail::{self, Jail};
use super::FirecrackerConfig;
use crate::VmSpec;
use serde::Serialize;
use std::ffi::OsString;

/// Extra memory the VMM itself may use above the guest's (`docs/reference/security.md` §2, row 2).
pub const MEMORY_OVERHEAD_MIB: u64 = 128;
/// Tasks the jailer, Firecracker's API and event threads and one thread per vCPU need, with room.
pub const PIDS_BASE: u32 = 32;
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup v2 limits the jailer writes (`name=value`), in this order.
pub fn cgroup_limits(spec: &VmSpec, cg: &CgroupV2) -> Vec<String> {
    let mut v = vec![
        format!(
            "memory.max={}",
            (u64::from(spec.mem_mb) + MEMORY_OVERHEAD_MIB) << 20
        ),
        format!("pids.max={}", PIDS_BASE + spec.cpu),
    ];
    if cg.cpu {
        v.push(format!(
            "cpu.max={} {CPU_PERIOD_US}",
            u64::from(spec.cpu) * CPU_PERIOD_US
        ));
    }
    v
}

/// `jailer --id … --exec-file … -- --api-sock /api.sock` (without the jailer binary itself). Cgroup
/// arguments only where the host offers cgroup v2 controllers (`cg`); no `--daemonize` (its stdio would
/// go to `/dev/null`), no `--netns` (TAPs stay in the host namespace).
pub fn jailer_args(cfg: &FirecrackerConfig, spec: &VmSpec, cg: Option<&CgroupV2>) -> Vec<OsString> {
    let (uid, gid) = cfg.runas;
    let mut a: Vec<OsString> = vec![
        "--id".into(),
        spec.vm_id.clone().into(),
        "--exec-file".into(),
        cfg.firecracker_bin.clone().into(),
        "--uid".into(),
        uid.to_string().into(),
        "--gid".into(),
        gid.to_string().into(),
        "--chroot-base-dir".into(),
        cfg.chroot_base_dir.clone().into(),
        "--new-pid-ns".into(),
    ];
    if let Some(cg) = cg {
        a.extend(
            ["--cgroup-version", "2", "--parent-cgroup", PARENT]
                .into_iter()
                .map(OsString::from),
        );
        for limit in cgroup_limits(spec, cg) {
            a.push("--cgroup".into());
            a.push(limit.into());
        }
    }
    a.extend(
        ["--", "--api-sock", jail::API_SOCK]
            .into_iter()
            .map(OsString::from),
    );
    a
}

/// One API request: method, path and JSON body (compact, fields in the order of the spec's tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<String>,
}

impl Call {
    fn put(path: &str, body: &impl Serialize) -> Call {
        Call::with("PUT", path, body)
    }

    fn with(method: &'static str, path: &str, body: &impl Serialize) -> Call {
        Call {
            method,
            path: path.to_string(),
            // Serialising these plain structs cannot fail.
            body: Some(serde_json::to_string(body).unwrap_or_default()),
        }
    }

    /// `PUT /machine-config`, as errors and logs name the call.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Serialize)]
struct Logger<'a> {
    log_path: &'a str,
    level: &'a str,
    show_level: bool,
}

#[derive(Serialize)]
struct Metrics<'a> {
    metrics_path: &'a str,
}

#[derive(Serialize)]
struct Serial<'a> {
    serial_out_path: &'a str,
}

#[derive(Serialize)]
struct MachineConfig {
    vcpu_count: u32,
    mem_size_mib: u32,
    smt: bool,
}

#[derive(Serialize)]
struct BootSource<'a> {
    kernel_image_path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    initrd_path: Option<&'a str>,
    boot_args: &'a str,
}

#[derive(Serialize)]
struct Drive<'a> {
    drive_id: &'a str,
    path_on_host: &'a str,
    is_root_device: bool,
    is_read_only: bool,
}

#[derive(Serialize)]
struct NetworkInterface<'a> {
    iface_id: &'a str,
    host_dev_name: &'a str,
    guest_mac: &'a str,
}

#[derive(Serialize)]
struct Vsock<'a> {
    guest_cid: u32,
    uds_path: &'a str,
}

#[derive(Serialize)]
struct Action<'a> {
    action_type: &'a str,
}

#[derive(Serialize)]
struct VmState<'a> {
    state: &'a str,
}

#[derive(Serialize)]
struct SnapshotCreate<'a> {
    snapshot_type: &'a str,
    snapshot_path: &'a str,
    mem_file_path: &'a str,
}

#[derive(Serialize)]
struct MemBackend<'a> {
    backend_type: &'a str,
    backend_path: &'a str,
}

#[derive(Serialize)]
struct NetworkOverride<'a> {
    iface_id: &'a str,
    host_dev_name: &'a str,
}

#[derive(Serialize)]
struct VsockOverride<'a> {
    uds_path: &'a str,
}

#[derive(Serialize)]
struct SnapshotLoad<'a> {
    snapshot_path: &'a str,
    mem_backend: MemBackend<'a>,
    resume_vm: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    network_overrides: Vec<NetworkOverride<'a>>,
    vsock_override: VsockOverride<'a>,
}

/// The guest NIC's name inside the VM and in the API.
pub const IFACE: &str = "eth0";

/// Logger, metrics and serial output to the jail's FIFOs: the first three calls of a boot and a restore.
pub fn log_calls(level: &str) -> Vec<Call> {
    vec![
        Call::put(
            "/logger",
            &Logger {
                log_path: jail::LOG_FIFO,
                level,
                show_level: true,
            },
        ),
        Call::put(
            "/metrics",
            &Metrics {
                metrics_path: jail::METRICS_FIFO,
            },
        ),
        Call::put(
            "/serial",
            &Serial {
                serial_out_path: jail::CONSOLE_FIFO,
            },
        ),
    ]
}

/// A cold boot, in the order of `docs/reference/vmm-backends.md` §4.2. `root=` stays in
/// `boot_args`; so does `reboot=k` (Firecracker's exit path).
pub fn boot_calls(level: &str, spec: &VmSpec) -> Vec<Call> {
    let mut calls = log_calls(level);
    calls.push(Call::put(
        "/machine-config",
        &MachineConfig {
            vcpu_count: spec.cpu,
            mem_size_mib: spec.mem_mb,
            smt: false,
        },
    ));
    calls.push(Call::put(
        "/boot-source",
        &BootSource {
            kernel_image_path: jail::KERNEL,
            initrd_path: spec.initrd.as_ref().map(|_| jail::INITRD),
            boot_args: &spec.cmdline,
        },
    ));
    calls.push(Call::put(
        "/drives/rootfs",
        &Drive {
            drive_id: "rootfs",
            path_on_host: jail::ROOTFS,
            is_root_device: false,
            is_read_only: true,
        },
    ));
    calls.push(Call::put(
        "/drives/disk",
        &Drive {
            drive_id: "disk",
            path_on_host: jail::DISK,
            is_root_device: false,
            is_read_only: false,
        },
    ));
    if let Some(net) = &spec.net {
        calls.push(Call::put(
            &format!("/network-interfaces/{IFACE}"),
            &NetworkInterface {
                iface_id: IFACE,
                host_dev_name: &net.tap,
                guest_mac: &net.mac,
            },
        ));
    }
    calls.push(Call::put(
        "/vsock",
        &Vsock {
            guest_cid: spec.vsock_cid,
            uds_path: jail::VSOCK,
        },
    ));
    calls.push(action("InstanceStart"));
    calls
}

/// A restore (`docs/reference/vmm-backends.md` §4.3): the log calls, then one load that resumes the
/// VM with this VM's TAP and socket.
pub fn restore_calls(level: &str, spec: &VmSpec) -> Vec<Call> {
    let mut calls = log_calls(level);
    calls.push(Call::put(
        "/snapshot/load",
        &SnapshotLoad {
            snapshot_path: jail::VMSTATE_SNAP,
            mem_backend: MemBackend {
                backend_type: "File",
                backend_path: jail::MEM_SNAP,
            },
            resume_vm: true,
            network_overrides: spec
                .net
                .iter()
                .map(|n| NetworkOverride {
                    iface_id: IFACE,
                    host_dev_name: &n.tap,
                })
                .collect(),
            vsock_override: VsockOverride {
                uds_path: jail::VSOCK,
            },
        },
    ));
    calls
}

pub fn action(action_type: &str) -> Call {
    Call::put("/actions", &Action { action_type })
}

/// `PATCH /vm {"state":"Paused"|"Resumed"}`.
pub fn vm_state(state: &str) -> Call {
    Call::with("PATCH", "/vm", &VmState { state })
}

pub fn snapshot_create() -> Call {
    Call::put(
        "/snapshot/create",
        &SnapshotCreate {
            snapshot_type: "Full",
            snapshot_path: jail::VMSTATE_SNAP,
            mem_file_path: jail::MEM_SNAP,
        },
    )
}

/// `GET /`: instance information, whose `state` is `Not started`, `Running` or `Paused`.
pub fn instance_info() -> Call {
    Call {
        method: "GET",
        path: "/".into(),
        body: None,
    }
}

/// The jail this config gives `vm_id`.
pub fn jail_of(cfg: &FirecrackerConfig, vm_id: &str) -> Jail {
    Jail::new(&cfg.chroot_base_dir, &cfg.exec_name(), vm_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NetSpec;
    use std::path::PathBuf;

    fn cfg() -> FirecrackerConfig {
        FirecrackerConfig {
            firecracker_bin: "/usr/local/bin/firecracker".into(),
            jailer_bin: "/usr/local/bin/jailer".into(),
            chroot_base_dir: "/srv/rds/jailer".into(),
            runas: (1234, 1235),
            log_level: "Warning".into(),
        }
    }

    fn spec() -> VmSpec {
        VmSpec {
            vm_id: "6f1d2c1e-8f0a-4b8e-9a57-0c2f7d3b9e11".into(),
            cpu: 2,
            mem_mb: 512,
            kernel: "/i/vmlinux".into(),
            initrd: Some("/i/initrd".into()),
            rootfs: "/i/rootfs.ext4".into(),
            disk: "/v/disk.ext4".into(),
            run_dir: "/v/run".into(),
            logs_dir: "/v/logs".into(),
            vsock_cid: 10003,
            cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda ro".into(),
            net: Some(NetSpec {
                tap: "rds-tap3".into(),
                mac: "02:fc:00:00:00:03".into(),
            }),
        }
    }

    fn strs(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn jailer_args_without_cgroup_v2() {
        let a = strs(jailer_args(&cfg(), &spec(), None));
        assert_eq!(
            a.join(" "),
            "--id 6f1d2c1e-8f0a-4b8e-9a57-0c2f7d3b9e11 --exec-file /usr/local/bin/firecracker \
             --uid 1234 --gid 1235 --chroot-base-dir /srv/rds/jailer --new-pid-ns \
             -- --api-sock /api.sock"
        );
    }

    #[test]
    fn jailer_args_with_cgroup_v2() {
        let mut cg = CgroupV2 {
            mount: PathBuf::from("/sys/fs/cgroup"),
            cpu: true,
        };
        let a = strs(jailer_args(&cfg(), &spec(), Some(&cg)));
        let tail: Vec<&str> = a.iter().skip(11).map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--cgroup-version",
                "2",
                "--parent-cgroup",
                "rds",
                "--cgroup",
                "memory.max=671088640",
                "--cgroup",
                "pids.max=34",
                "--cgroup",
                "cpu.max=200000 100000",
                "--",
                "--api-sock",
                "/api.sock"
            ]
        );
        cg.cpu = false;
        let a = strs(jailer_args(&cfg(), &spec(), Some(&cg)));
        assert!(!a.iter().any(|s| s.starts_with("cpu.max")), "{a:?}");
        // Never a flag that weakens the jail.
        assert!(!a
            .iter()
            .any(|s| s == "--no-seccomp" || s == "--daemonize" || s == "--netns"));
    }

    #[test]
    fn boot_calls_match_the_spec_table() {
        let got: Vec<(String, String)> = boot_calls("Warning", &spec())
            .into_iter()
            .map(|c| (c.name(), c.body.unwrap()))
            .collect();
        let want = [
            (
                "PUT /logger",
                r#"{"log_path":"/log.fifo","level":"Warning","show_level":true}"#,
            ),
            ("PUT /metrics", r#"{"metrics_path":"/metrics.fifo"}"#),
            ("PUT /serial", r#"{"serial_out_path":"/console.fifo"}"#),
            (
                "PUT /machine-config",
                r#"{"vcpu_count":2,"mem_size_mib":512,"smt":false}"#,
            ),
            (
                "PUT /boot-source",
                r#"{"kernel_image_path":"/vmlinux","initrd_path":"/initrd","boot_args":"console=ttyS0 reboot=k panic=1 root=/dev/vda ro"}"#,
            ),
            (
                "PUT /drives/rootfs",
                r#"{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":false,"is_read_only":true}"#,
            ),
            (
                "PUT /drives/disk",
                r#"{"drive_id":"disk","path_on_host":"/disk.ext4","is_root_device":false,"is_read_only":false}"#,
            ),
            (
                "PUT /network-interfaces/eth0",
                r#"{"iface_id":"eth0","host_dev_name":"rds-tap3","guest_mac":"02:fc:00:00:00:03"}"#,
            ),
            ("PUT /vsock", r#"{"guest_cid":10003,"uds_path":"/v.sock"}"#),
            ("PUT /actions", r#"{"action_type":"InstanceStart"}"#),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn boot_without_initrd_or_nic_omits_them() {
        let mut s = spec();
        s.initrd = None;
        s.net = None;
        let calls = boot_calls("Info", &s);
        assert_eq!(calls.len(), 9);
        assert!(!calls.iter().any(|c| c.path.starts_with("/network")));
        let boot = calls.iter().find(|c| c.path == "/boot-source").unwrap();
        assert!(!boot.body.as_ref().unwrap().contains("initrd"));
    }

    #[test]
    fn restore_and_control_bodies() {
        let calls = restore_calls("Warning", &spec());
        assert_eq!(calls.len(), 4);
        assert_eq!(
            calls[3].body.as_deref().unwrap(),
            r#"{"snapshot_path":"/vmstate.snap","mem_backend":{"backend_type":"File","backend_path":"/mem.snap"},"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"rds-tap3"}],"vsock_override":{"uds_path":"/v.sock"}}"#
        );
        let mut s = spec();
        s.net = None;
        assert!(!restore_calls("Warning", &s)[3]
            .body
            .as_ref()
            .unwrap()
            .contains("network_overrides"));
        assert_eq!(
            snapshot_create().body.unwrap(),
            r#"{"snapshot_type":"Full","snapshot_path":"/vmstate.snap","mem_file_path":"/mem.snap"}"#
        );
        let p = vm_state("Paused");
        assert_eq!((p.method, p.path.as_str()), ("PATCH", "/vm"));
        assert_eq!(p.body.unwrap(), r#"{"state":"Paused"}"#);
        assert_eq!(
            action("SendCtrlAltDel").body.unwrap(),
            r#"{"action_type":"SendCtrlAltDel"}"#
        );
    }
}
