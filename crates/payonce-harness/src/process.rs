//! Real `payonce serve` processes: for multi-instance races, crash tests and the benchmark.
//! Each binds port 0 and reports its address on its first line of output.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct ServeProcess {
    pub child: Child,
    pub addr: String,
    pub pid: u32,
}

impl ServeProcess {
    /// Starts `exe serve` on `database_url` with the simulator's channels file.
    pub async fn spawn(
        exe: &Path,
        database_url: &str,
        channels_file: &Path,
        master_key_hex: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn_at(
            exe,
            database_url,
            channels_file,
            master_key_hex,
            "127.0.0.1:0",
            extra,
        )
        .await
    }

    /// Like `spawn`, on a given address (a restarted instance keeps its predecessor's).
    pub async fn spawn_at(
        exe: &Path,
        database_url: &str,
        channels_file: &Path,
        master_key_hex: &str,
        listen: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(["--listen", listen, "--database-url", database_url])
            .arg("--channels")
            .arg(channels_file)
            // Test receivers listen on 127.0.0.1; storms and benchmarks measure the engine, not
            // the per-app limiter.
            .arg("--allow-private-webhooks")
            .args(if extra.contains(&"--rate-limit") {
                &[][..]
            } else {
                &["--rate-limit", "off"][..]
            })
            // The scrapes of tests and benchmarks read `/metrics` on loopback without a token.
            .args(if extra.contains(&"--metrics-token") {
                &[][..]
            } else {
                &["--metrics-public"][..]
            })
            .args(extra)
            .env("PAYONCE_MASTER_KEY", master_key_hex)
            .env(
                "PAYONCE_LOG",
                std::env::var("PAYONCE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .unwrap_or_default();
        let addr = first
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {first:?}"))?
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let me = ServeProcess { child, addr, pid };
        me.wait_ready().await?;
        Ok(me)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `/readyz` answers (migrations done, database reachable).
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{}/readyz", self.base_url())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("server {} never became ready", self.addr)
    }

    /// CPU seconds (user + system) the process has used so far, from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&self.pid.to_string())
    }

    /// The process's peak resident memory (VmHWM, Linux), KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// The process's resident memory now (Linux), KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/{pid}/stat` (`pid` may be
/// `self`: the bench measures its own client this way).
pub fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, inside parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // USER_HZ is 100 on every Linux the kernel ABI allows to differ from it in practice.
    Some((utime + stime) / 100.0)
}
