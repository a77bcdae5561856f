//! A private PostgreSQL server on a free port (`initdb` + `pg_ctl`, run as the `postgres`
//! user when the tests run as root), for faults that would disturb every other test on the
//! shared server: restarts, stops, a streaming replica promoted in a fail-over. Removed when
//! dropped.

use std::path::PathBuf;
use std::process::Command;

/// What went wrong driving the private server: the tool that failed and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError(pub String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The server binaries of the newest installed PostgreSQL (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    let dir = PathBuf::from(format!("/usr/lib/postgresql/{}/bin", versions.last()?));
    dir.join("initdb").exists().then_some(dir)
}

/// A free port below the kernel's ephemeral range (32768–60999 by default). A restart leaves
/// the server's port unbound for a moment; a port from the ephemeral range could meanwhile go
/// to another test's listener or outgoing connection, and the server could not come back.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts at its own offset, so parallel suites rarely meet.
    let base = 20_000 + (std::process::id() % 400) as u16 * 25;
    loop {
        let port = 20_000 + (base - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl PrivatePostgres {
    /// `Err` when PostgreSQL's server binaries are not installed (callers skip off CI).
    pub fn start() -> Result<PrivatePostgres, PgError> {
        let bin = bin_dir().ok_or_else(|| {
            PgError("no PostgreSQL server binaries under /usr/lib/postgresql".into())
        })?;
        let dir =
            std::env::temp_dir().join(format!("payonce-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).map_err(|e| PgError(e.to_string()))?;
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
            bin,
        };
        pg.chown();
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.ctl("start")?;
        Ok(pg)
    }

    /// A streaming replica of this server (`pg_basebackup -R`: it follows this one as its
    /// primary), started on its own free port.
    pub fn replica(&self) -> Result<PrivatePostgres, PgError> {
        let dir =
            std::env::temp_dir().join(format!("payonce-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).map_err(|e| PgError(e.to_string()))?;
        let replica = PrivatePostgres {
            dir,
            port: free_port(),
            bin: self.bin.clone(),
        };
        replica.chown();
        let port = self.port.to_string();
        replica.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                replica.data().to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        )?;
        replica.ctl("start")?;
        Ok(replica)
    }

    /// Runs one SQL statement with `psql` (settings a test changes on the running server).
    pub fn psql(&self, sql: &str) -> Result<String, PgError> {
        let port = self.port.to_string();
        self.output(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-c",
                sql,
            ],
        )
    }

    /// `pg_ctl promote`: a replica becomes a writable primary.
    pub fn promote(&self) -> Result<(), PgError> {
        self.run(
            "pg_ctl",
            &["-D", self.data().to_str().unwrap(), "-w", "promote"],
        )
    }

    /// `pg_ctl stop -m immediate`: the server dies as on a crash or a lost machine.
    pub fn kill(&self) -> Result<(), PgError> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn chown(&self) {
        // initdb and postgres refuse to run as root.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&self.dir)
            .status();
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), PgError> {
        self.output(tool, args).map(|_| ())
    }

    fn output(&self, tool: &str, args: &[&str]) -> Result<String, PgError> {
        let exe = self.bin.join(tool);
        let out = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .map_err(|e| PgError(format!("{tool}: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(PgError(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    fn ctl(&self, action: &str) -> Result<(), PgError> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-m",
                "fast",
                "-w",
                action,
            ],
        )
    }

    /// A database URL on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is dropped, the server comes back.
    pub fn restart(&self) -> Result<(), PgError> {
        self.ctl("restart")
    }

    pub fn stop(&self) -> Result<(), PgError> {
        self.ctl("stop")
    }

    pub fn start_again(&self) -> Result<(), PgError> {
        self.ctl("start")
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
