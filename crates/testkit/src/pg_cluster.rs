//! A Postgres server of one test's own, for tests that stop and start it (a database outage): the
//! shared test server (`scripts/test-postgres.sh`) must stay up for the tests running beside them.
//! Same recipe as that script: the Debian package's binaries run as `postgres`, Unix socket only,
//! trust authentication, durability off.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PgCluster {
    dir: PathBuf,
    bindir: PathBuf,
}

impl PgCluster {
    /// Creates and starts a cluster, or explains why it cannot run here (not root, no server
    /// binaries or `postgres` user: `scripts/install-deps.sh` installs them).
    pub fn start() -> Result<PgCluster, String> {
        if !crate::nix_is_root() {
            return Err("not running as root".into());
        }
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|_| "no PostgreSQL server binaries (run scripts/install-deps.sh)")?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("pg_ctl").exists())
            .max()
            .ok_or("no pg_ctl under /usr/lib/postgresql")?;
        let uid = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .map_err(|e| e.to_string())?;
        let uid: u32 = String::from_utf8_lossy(&uid.stdout)
            .trim()
            .parse()
            .map_err(|_| "no postgres user")?;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rds-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).map_err(|e| e.to_string())?;
        for d in [dir.clone(), dir.join("run")] {
            std::os::unix::fs::chown(&d, Some(uid), None).map_err(|e| e.to_string())?;
        }
        let cluster = PgCluster { dir, bindir };
        cluster.as_postgres(&[
            "initdb",
            "-D",
            &cluster.data(),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ])?;
        let conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\n",
            cluster.socket_dir().display()
        );
        let path = Path::new(&cluster.data()).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        text.push_str(&conf);
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        cluster.resume()?;
        Ok(cluster)
    }

    /// `postgres://` URL of the cluster's `postgres` database over its socket.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}",
            self.socket_dir().display()
        )
    }

    /// Stops the server (fast shutdown: open sessions are ended, as in an operator's restart).
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "fast"])
    }

    /// Starts the stopped server again and waits until it accepts connections.
    pub fn resume(&self) -> Result<(), String> {
        let log = self.dir.join("server.log").display().to_string();
        self.pg_ctl(&["start", "-l", &log])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data();
        let mut all = vec!["pg_ctl", "-D", &data, "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.as_postgres(&all)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Runs one of the server's programs as `postgres`; no descriptor of the test reaches the
    /// server it may start (a daemon holding the test's output pipe would hang its reader).
    fn as_postgres(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bindir.join(args[0]))
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(format!(
            "{} failed: {}{}",
            args[0],
            String::from_utf8_lossy(&out.stderr),
            log
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
