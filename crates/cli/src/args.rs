//! The command line: every subcommand and flag of `rds`.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "rds",
    version,
    about = "Command-line client of the run-dat-sheesh manager"
)]
pub struct Cli {
    /// Manager address, e.g. http://127.0.0.1:3000 (else RDS_URL, else the saved profile)
    #[arg(long, global = true, env = "RDS_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// API key (else RDS_API_KEY, else the saved profile)
    #[arg(long, global = true, env = "RDS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the API's JSON answer (one document) instead of tables; exec and runs wait, unstreamed
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Save the connection (--url, --api-key) or, with --email, an admin session to the profile
    Login(LoginArgs),
    /// End the saved admin session
    Logout,
    /// Create, list and control VMs
    #[command(subcommand)]
    Vm(VmCmd),
    /// Run a command in a VM, its output streamed as it comes, and exit with its exit code
    Exec(ExecArgs),
    /// Run a local TypeScript file in a VM (Deno), its output streamed as it comes
    RunTs(RunArgs),
    /// Run a local JavaScript file in a VM (Node.js), its output streamed as it comes
    RunJs(RunArgs),
    /// Copy files or directories: `cp <local> <vm-id>:<path>` or `cp <vm-id>:<path> <local>`
    Cp { src: String, dst: String },
    /// Show a VM's VMM or console log
    Logs {
        id: String,
        /// vmm.log (default), console.log or vmm.stderr.log
        #[arg(long = "type")]
        kind: Option<String>,
        /// Number of lines (1..1000, default 200)
        #[arg(long)]
        tail: Option<u32>,
    },
    /// List the exec and run calls of a VM, newest first
    ExecLogs {
        id: String,
        /// all (default), exec, run-ts or run-js
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Manage guest images
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage snapshots
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Manage API keys (admin session)
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage webhooks (admin session)
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// Print a shell completion script
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Log in as the admin (ADMIN_EMAIL) for keys and webhooks; the password is read from
    /// RDS_PASSWORD, a prompt, or the first line of stdin
    #[arg(long)]
    pub email: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Create a VM and wait until it is RUNNING
    Create(CreateArgs),
    /// List VMs
    Ls {
        /// Only VMs in this state (RUNNING, STOPPED, PAUSED, ...)
        #[arg(long)]
        state: Option<String>,
        /// Only VMs whose metadata has key=value (repeatable)
        #[arg(long = "meta", value_parser = parse_kv)]
        meta: Vec<(String, String)>,
    },
    /// Show one VM
    Get { id: String },
    /// Boot a STOPPED VM
    Start { id: String },
    /// Power a VM off (disk kept)
    Stop { id: String },
    /// Save a VM's memory and end its VMM
    Pause { id: String },
    /// Restore a PAUSED VM
    Resume { id: String },
    /// Set a VM's deadline to SECONDS from now, or clear it with `off` (keep-alive)
    Timeout {
        id: String,
        /// Seconds from now, or `off`
        seconds: String,
        /// Also change what happens at the deadline
        #[arg(long, value_enum)]
        action: Option<TimeoutAction>,
    },
    /// Rebuild /workspace/peers of a RUNNING VM from its linked providers as they are now
    PeersSync { id: String },
    /// Change how a peer link shows its provider: hidden (proxies only) or mounted (also sources)
    PeerMode {
        id: String,
        alias: String,
        #[arg(value_enum)]
        mode: SourceMode,
    },
    /// Set labels (key=value) and remove others (--rm key)
    Label {
        id: String,
        #[arg(value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Label to remove (repeatable)
        #[arg(long = "rm")]
        remove: Vec<String>,
    },
    /// Destroy VMs
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// vCPUs
    #[arg(long, default_value_t = 1)]
    pub cpu: u32,
    /// Memory in MiB
    #[arg(long, default_value_t = 512)]
    pub mem: u32,
    /// Image id (default: the default image)
    #[arg(long)]
    pub image: Option<String>,
    /// Disk size in MiB
    #[arg(long)]
    pub disk: Option<u32>,
    /// Address or CIDR the VM may reach (repeatable)
    #[arg(long = "allow-ip")]
    pub allow_ip: Vec<String>,
    /// Allow outbound internet access
    #[arg(long)]
    pub outbound: bool,
    /// Restore this user snapshot
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Lifetime in seconds
    #[arg(long)]
    pub timeout: Option<u64>,
    /// What happens at the deadline
    #[arg(long, value_enum)]
    pub timeout_action: Option<TimeoutAction>,
    /// Label key=value (repeatable)
    #[arg(long = "metadata", short = 'm', value_parser = parse_kv)]
    pub metadata: Vec<(String, String)>,
    /// Secret for the VM's programs: KEY=value, or KEY to take the value from this environment
    /// (keeps it out of shell history and process lists); repeatable
    #[arg(long = "secret-env", value_parser = parse_secret)]
    pub secret_env: Vec<String>,
    /// Link to a RUNNING provider VM whose functions the VM may call (docs/peers.md):
    /// ALIAS=VM_ID, with :mounted for a copy of its sources too (default :hidden); repeatable
    #[arg(long = "peer", value_name = "ALIAS=VM_ID[:MODE]", value_parser = parse_peer)]
    pub peer: Vec<Peer>,
}

/// One `--peer`: a link of `peerLinks` on create.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub alias: String,
    pub vm_id: String,
    /// None: the manager's default (hidden).
    pub mode: Option<SourceMode>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum SourceMode {
    Hidden,
    Mounted,
}

impl SourceMode {
    pub fn name(self) -> &'static str {
        match self {
            SourceMode::Hidden => "hidden",
            SourceMode::Mounted => "mounted",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum TimeoutAction {
    Destroy,
    Pause,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    pub id: String,
    /// Working directory under /workspace
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variable KEY=value (repeatable)
    #[arg(long, short = 'e', value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// The command: one argument is a shell command line, several are quoted as words
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub id: String,
    /// Local file whose text is sent as the code
    pub file: std::path::PathBuf,
    /// Argument passed to the module (repeatable)
    #[arg(long = "arg")]
    pub args: Vec<String>,
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Register a new image (files are uploaded afterwards)
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Upload a kernel, rootfs, initrd or zip bundle to an image
    Upload {
        id: String,
        #[arg(value_enum)]
        kind: ImageFile,
        file: std::path::PathBuf,
    },
    /// List images
    Ls,
    /// Show one image
    Get { id: String },
    /// Make an image the default for creates
    Default { id: String },
    /// Delete an image
    Rm { id: String },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ImageFile {
    Kernel,
    Rootfs,
    Initrd,
    Bundle,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Snapshot a RUNNING VM
    Create { vm_id: String },
    /// List snapshots
    Ls {
        /// user (default), internal or all
        #[arg(long)]
        scope: Option<String>,
    },
    /// Show one snapshot
    Get { id: String },
    /// Delete a snapshot
    Rm { id: String },
    /// Create a VM from a snapshot
    Restore {
        id: String,
        #[command(flatten)]
        create: CreateArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create an API key (the key is shown once)
    Create {
        name: String,
        /// RFC 3339 expiry time
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List API keys
    Ls,
    /// Revoke an API key
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCmd {
    /// Create a webhook (the signing secret is shown once)
    Create {
        name: String,
        /// Where events are POSTed (named apart from the global --url, which clap would merge)
        #[arg(value_name = "URL")]
        target: String,
        /// Event type to send (repeatable; default all: *)
        #[arg(long = "event")]
        events: Vec<String>,
        /// Create it disabled
        #[arg(long)]
        disabled: bool,
    },
    /// List webhooks
    Ls,
    /// Delete a webhook
    Rm { id: String },
    /// List a webhook's delivery attempts
    Deliveries {
        id: String,
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `KEY=value` as given, or `KEY` completed from the environment.
pub fn parse_secret(s: &str) -> Result<String, String> {
    if s.contains('=') {
        return Ok(s.to_string());
    }
    std::env::var(s)
        .map(|v| format!("{s}={v}"))
        .map_err(|_| format!("{s} is not set in the environment (give KEY=value or export {s})"))
}

/// `ALIAS=VM_ID`, `ALIAS=VM_ID:hidden` or `ALIAS=VM_ID:mounted` (VM ids hold no colon).
pub fn parse_peer(s: &str) -> Result<Peer, String> {
    let shape = || format!("expected ALIAS=VM_ID[:hidden|:mounted], got '{s}'");
    let (alias, rest) = s.split_once('=').ok_or_else(shape)?;
    let (vm_id, mode) = match rest.split_once(':') {
        None => (rest, None),
        Some((id, "hidden")) => (id, Some(SourceMode::Hidden)),
        Some((id, "mounted")) => (id, Some(SourceMode::Mounted)),
        Some((_, m)) => {
            return Err(format!(
                "unknown source mode '{m}' in '{s}' (hidden or mounted)"
            ))
        }
    };
    if alias.is_empty() || vm_id.is_empty() {
        return Err(shape());
    }
    Ok(Peer {
        alias: alias.to_string(),
        vm_id: vm_id.to_string(),
        mode,
    })
}

pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_create_flags_and_exec_words() {
        let c = Cli::try_parse_from([
            "rds",
            "vm",
            "create",
            "--cpu",
            "2",
            "-m",
            "a=b=c",
            "--allow-ip",
            "10.0.0.1",
            "--timeout-action",
            "pause",
            "--json",
        ])
        .unwrap();
        let Cmd::Vm(VmCmd::Create(a)) = c.cmd else {
            panic!("not vm create")
        };
        assert_eq!((a.cpu, a.mem), (2, 512));
        assert_eq!(a.metadata, vec![("a".into(), "b=c".into())]);
        assert!(c.json && matches!(a.timeout_action, Some(TimeoutAction::Pause)));
        let c = Cli::try_parse_from(["rds", "exec", "x", "--", "sh", "-c", "exit 7"]).unwrap();
        let Cmd::Exec(e) = c.cmd else {
            panic!("not exec")
        };
        assert_eq!(e.cmd, ["sh", "-c", "exit 7"]);
        let c = Cli::try_parse_from([
            "rds",
            "--url",
            "http://m",
            "webhooks",
            "create",
            "n",
            "https://h",
        ])
        .unwrap();
        assert_eq!(c.url.as_deref(), Some("http://m"));
        let Cmd::Webhooks(WebhooksCmd::Create { target, .. }) = c.cmd else {
            panic!("not webhooks")
        };
        assert_eq!(target, "https://h");
    }

    #[test]
    fn parses_peer_links_and_peer_commands() {
        let c = Cli::try_parse_from([
            "rds",
            "vm",
            "create",
            "--peer",
            "math=p-1",
            "--peer",
            "src=p-2:mounted",
            "--peer",
            "h=p-3:hidden",
        ])
        .unwrap();
        let Cmd::Vm(VmCmd::Create(a)) = c.cmd else {
            panic!("not vm create")
        };
        let peer = |alias: &str, vm_id: &str, mode| Peer {
            alias: alias.into(),
            vm_id: vm_id.into(),
            mode,
        };
        assert_eq!(
            a.peer,
            vec![
                peer("math", "p-1", None),
                peer("src", "p-2", Some(SourceMode::Mounted)),
                peer("h", "p-3", Some(SourceMode::Hidden)),
            ]
        );
        let c = Cli::try_parse_from(["rds", "snapshot", "restore", "s", "--peer", "a=b"]).unwrap();
        let Cmd::Snapshot(SnapshotCmd::Restore { create, .. }) = c.cmd else {
            panic!("not snapshot restore")
        };
        assert_eq!(create.peer, vec![peer("a", "b", None)]);
        let c = Cli::try_parse_from(["rds", "vm", "peer-mode", "v", "math", "mounted"]).unwrap();
        let Cmd::Vm(VmCmd::PeerMode { id, alias, mode }) = c.cmd else {
            panic!("not vm peer-mode")
        };
        assert_eq!(
            (id.as_str(), alias.as_str(), mode),
            ("v", "math", SourceMode::Mounted)
        );
        let c = Cli::try_parse_from(["rds", "vm", "peers-sync", "v"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Vm(VmCmd::PeersSync { id }) if id == "v"));

        for bad in ["math", "=p-1", "math=", "math=:mounted"] {
            assert_eq!(
                parse_peer(bad).unwrap_err(),
                format!("expected ALIAS=VM_ID[:hidden|:mounted], got '{bad}'")
            );
        }
        assert_eq!(
            parse_peer("m=p:rw").unwrap_err(),
            "unknown source mode 'rw' in 'm=p:rw' (hidden or mounted)"
        );
        assert!(Cli::try_parse_from(["rds", "vm", "create", "--peer", "nope"]).is_err());
        assert!(Cli::try_parse_from(["rds", "vm", "peer-mode", "v", "math", "shown"]).is_err());
        assert!(Cli::try_parse_from(["rds", "vm", "peer-mode", "v", "math"]).is_err());
    }

    #[test]
    fn refuses_bad_command_lines() {
        assert!(Cli::try_parse_from(["rds", "vm", "create", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["rds", "vm", "ls", "--meta", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["rds", "exec", "x"]).is_err());
    }
}
