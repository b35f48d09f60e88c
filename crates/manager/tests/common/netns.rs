//! Network namespaces for in-process managers. Every test manager runs in a namespace of its own, so
//! its bridge `rds-br0`, TAPs, nftables tables, `ip_forward` and DNS forwarder never touch the host's
//! network and managers of parallel tests cannot see each other.
//!
//! The manager's code acts on the namespace of the thread it runs on (netlink, `/dev/net/tun`, `nft`,
//! and the VMM processes it spawns all inherit it), so a [`Hosted`] manager gets a dedicated thread
//! that enters the namespace and runs a multi-thread tokio runtime whose workers inherit it. Requests
//! are executed on that runtime.

use rds_manager::config::Settings;
use std::future::Future;
use std::time::Duration;

pub use rds_testkit::netns::{enter, Ns};

/// Gives the calling thread a private mount namespace in which `resolv` is bind-mounted over
/// `/etc/resolv.conf` (the DNS forwarder's upstreams). Nothing propagates back to the host.
fn private_resolv_conf(resolv: &std::path::Path) {
    use std::ffi::CString;
    // SAFETY: plain syscalls with valid NUL-terminated strings; they affect only this thread's
    // namespaces (unshare(CLONE_NEWNS) implies CLONE_FS for the calling thread).
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNS),
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
        let root = CString::new("/").unwrap();
        let rc = libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        assert_eq!(rc, 0, "make / private: {}", std::io::Error::last_os_error());
        let src = CString::new(resolv.as_os_str().as_encoded_bytes()).unwrap();
        let dst = CString::new("/etc/resolv.conf").unwrap();
        let rc = libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        );
        assert_eq!(
            rc,
            0,
            "bind resolv.conf: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A multi-thread tokio runtime whose threads live in a namespace (and, with `resolv`, see that
/// file as `/etc/resolv.conf`): sockets, netlink and processes made by its tasks belong there.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    pub fn start(ns: &str, resolv: Option<std::path::PathBuf>) -> NsRuntime {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let name = ns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("ns-{name}"))
            .spawn(move || {
                enter(&name);
                if let Some(r) = &resolv {
                    private_resolv_conf(r);
                }
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("namespace runtime");
                let _ = ready_tx.send(rt.handle().clone());
                let _ = rt.block_on(stop_rx);
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("namespace thread");
        let handle = ready_rx.recv().expect("namespace runtime started");
        NsRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` on the runtime (inside its namespace) and returns its output.
    pub async fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(f).await.expect("task on the namespace runtime")
    }

    /// Starts `f` on the runtime; the handle fails if the runtime stops first.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A manager built and running on its own runtime inside a namespace. Dropping it stops the
/// runtime (like a killed manager: VMM processes, in their own sessions, keep running).
pub struct Hosted {
    // Field order is drop order: the runtime stops first, as with a killed manager.
    rt: NsRuntime,
    pub app: rds_manager::App,
}

impl Hosted {
    /// Builds the manager (`rds_manager::build`, reconciliation included) inside `ns`; with
    /// `resolv`, the manager sees that file as `/etc/resolv.conf`.
    pub async fn start(
        ns: &str,
        settings: Settings,
        resolv: Option<std::path::PathBuf>,
    ) -> Result<Hosted, String> {
        let rt = NsRuntime::start(ns, resolv);
        let app = rt
            .run(async move { rds_manager::build(&settings).await })
            .await
            .map_err(|errs| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        Ok(Hosted { rt, app })
    }

    /// Runs `f` on the manager's runtime (inside its namespace) and returns its output.
    pub async fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.run(f).await
    }

    /// Starts `f` on the manager's runtime without waiting for it.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f)
    }
}
