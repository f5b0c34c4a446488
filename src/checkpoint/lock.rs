//! One process per checkpoint: an exclusive `flock` on `<dir>/LOCK`.
//!
//! `flock` locks belong to an open file description, so two opens of the same file conflict even
//! inside one process, and the kernel releases the lock when the process dies, however it dies.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::{Error, Result};

use super::files::LOCK_FILE;

/// The held lock of a checkpoint directory; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` or fails at once with [`Error::CheckpointLocked`]. The holder's
    /// process id is written into the file for `weir checkpoint inspect`.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::CheckpointLocked {
                    path: dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // Informational only: the flock is the lock, the pid is for people. A full disk must not
        // stop a restart (the pipeline waits for space once it runs), so a failed write is
        // reported and the lock kept.
        let written = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(error) = written {
            warn!(message = "Could not write the process id into the checkpoint's lock file; `weir checkpoint inspect` will not show it.", file = %path.display(), %error);
        }
        Ok(Self { _file: file })
    }
}

/// Whether a process holds a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockStatus {
    /// No `LOCK` file: no weir has opened the directory.
    NoLockFile,
    /// Nobody holds the lock.
    Free,
    /// A process holds the lock.
    Held {
        /// The holder's process id as it wrote it, when readable.
        pid: Option<u32>,
    },
}

impl LockStatus {
    /// Looks at the lock of `dir` without keeping it: a shared lock is taken and released at once,
    /// so a weir starting in that instant may fail with [`Error::CheckpointLocked`] and can
    /// simply be started again.
    pub(crate) fn probe(dir: &Path) -> Result<Self> {
        let path: PathBuf = dir.join(LOCK_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Self::NoLockFile),
            Err(e) => return Err(Error::io(&path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Self::Free),
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                Ok(Self::Held { pid })
            }
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

impl fmt::Display for LockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLockFile => f.write_str("no LOCK file"),
            Self::Free => f.write_str("not in use"),
            Self::Held { pid: Some(pid) } => write!(f, "in use by a running weir (pid {pid})"),
            Self::Held { pid: None } => f.write_str("in use by a running weir"),
        }
    }
}
