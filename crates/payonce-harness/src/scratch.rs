//! Scratch directories removed when dropped (what `tempfile` gives tests, without shipping it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, empty directory under the system's temp dir, private to this process.
    pub fn new() -> std::io::Result<ScratchDir> {
        Self::under(&std::env::temp_dir())
    }

    /// `new`, in memory (`/dev/shm`) where the machine has it: a scratch database's commits
    /// then cost no disk flush. What the suites judge — a process killed, a transaction rolled
    /// back, a connection cut — behaves the same; the disk's own durability is the bench's and
    /// the operator's (`payonce bench` and `serve` never use this).
    pub fn in_memory() -> std::io::Result<ScratchDir> {
        let shm = Path::new("/dev/shm");
        match Self::under(shm) {
            Ok(dir) => Ok(dir),
            Err(_) => Self::new(),
        }
    }

    fn under(parent: &Path) -> std::io::Result<ScratchDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(
            "payonce-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(ScratchDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
