//! The checkpoint directory's file names, atomic writes and directory listing.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::BatchTime;

/// The name of the lock file.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// The directory where sources keep what they need to read a logged plan again (a file
/// source's list of files).
pub(crate) const SOURCES_DIR: &str = "sources";
/// The directory where persisted streams spill large batches while a batch runs.
pub(crate) const SPILL_DIR: &str = "spill";
/// The directory of reference table versions.
pub(crate) const REFERENCE_DIR: &str = "reference";
/// The subdirectories that sources and operators keep in the checkpoint directory; they belong
/// to the checkpoint but are not one by themselves.
const DATA_DIRS: [&str; 3] = [SOURCES_DIR, SPILL_DIR, REFERENCE_DIR];

const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".ckpt";
const PLAN_LOG_PREFIX: &str = "plans-";
const PLAN_LOG_SUFFIX: &str = ".log";
const TEMP_SUFFIX: &str = ".tmp";

/// `snapshot-<t>.ckpt`.
pub(crate) fn snapshot_path(dir: &Path, t: BatchTime) -> PathBuf {
    dir.join(format!("{SNAPSHOT_PREFIX}{t}{SNAPSHOT_SUFFIX}"))
}

/// `plans-<t>.log`.
pub(crate) fn plan_log_path(dir: &Path, t: BatchTime) -> PathBuf {
    dir.join(format!("{PLAN_LOG_PREFIX}{t}{PLAN_LOG_SUFFIX}"))
}

/// The batch time in a file name `<prefix><t><suffix>`.
fn parse_time(name: &str, prefix: &str, suffix: &str) -> Option<BatchTime> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    // Only the canonical spelling, so that two names never denote the same batch time.
    let millis: i64 = digits.parse().ok()?;
    (millis.to_string() == digits).then(|| BatchTime::from_millis(millis))
}

/// What the checkpoint directory holds, each list in ascending batch time.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// `snapshot-<t>.ckpt` files.
    pub snapshots: Vec<(BatchTime, PathBuf)>,
    /// `plans-<t>.log` files.
    pub plan_logs: Vec<(BatchTime, PathBuf)>,
    /// Temporary files of writes a crash interrupted.
    pub temp_files: Vec<PathBuf>,
    /// Anything else but the lock file.
    pub other_files: Vec<PathBuf>,
}

/// Lists the checkpoint directory.
pub(crate) fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            listing.other_files.push(path);
            continue;
        };
        if name == LOCK_FILE || DATA_DIRS.contains(&name) && path.is_dir() {
            continue;
        }
        if let Some(t) = parse_time(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push((t, path));
        } else if let Some(t) = parse_time(name, PLAN_LOG_PREFIX, PLAN_LOG_SUFFIX) {
            listing.plan_logs.push((t, path));
        } else if is_temp_name(name) {
            listing.temp_files.push(path);
        } else {
            listing.other_files.push(path);
        }
    }
    listing.snapshots.sort();
    listing.plan_logs.sort();
    listing.temp_files.sort();
    listing.other_files.sort();
    Ok(listing)
}

/// Only the temporary names weir itself uses, so that nothing of anyone else's is ever removed.
fn is_temp_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX).is_some_and(|target| {
        parse_time(target, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX).is_some()
            || parse_time(target, PLAN_LOG_PREFIX, PLAN_LOG_SUFFIX).is_some()
    })
}

/// Failpoint names for the steps of one kind of atomic write.
pub(crate) struct AtomicWriteFailpoints {
    pub after_temp_write: &'static str,
    pub before_fsync: &'static str,
    pub after_fsync_before_rename: &'static str,
    pub after_rename_before_dir_fsync: &'static str,
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one, never a
/// mix: [`replace`], then [`sync_replaced`].
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    failpoints: Option<&AtomicWriteFailpoints>,
) -> Result<()> {
    replace(path, bytes, failpoints)?;
    sync_replaced(path, failpoints)
}

/// Puts `bytes` in place of `path`: temporary file in the same directory, fsync, rename. When it
/// fails (a full disk, say), `path` is as it was and the temporary file is removed, so that the
/// write can simply be tried again.
pub(crate) fn replace(
    path: &Path,
    bytes: &[u8],
    failpoints: Option<&AtomicWriteFailpoints>,
) -> Result<()> {
    let temp = temp_path(path);
    let replaced = write_synced(&temp, bytes, failpoints)
        .and_then(|()| failpoint(failpoints.map(|f| f.after_fsync_before_rename), &temp))
        .and_then(|()| fs::rename(&temp, path).map_err(|e| Error::io(path, e)));
    if replaced.is_err() {
        // Best effort: what is left is removed at the next open. On a full disk this frees space.
        let _ = fs::remove_file(&temp);
    }
    replaced
}

fn write_synced(
    temp: &Path,
    bytes: &[u8],
    failpoints: Option<&AtomicWriteFailpoints>,
) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(temp)
        .map_err(|e| Error::io(temp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(temp, e))?;
    failpoint(failpoints.map(|f| f.after_temp_write), temp)?;
    failpoint(failpoints.map(|f| f.before_fsync), temp)?;
    file.sync_all().map_err(|e| Error::io(temp, e))
}

/// Makes the rename of a [`replace`] durable. Until it has, a crash may leave the old file.
pub(crate) fn sync_replaced(path: &Path, failpoints: Option<&AtomicWriteFailpoints>) -> Result<()> {
    failpoint(failpoints.map(|f| f.after_rename_before_dir_fsync), path)?;
    sync_parent(path)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

/// Makes a file's creation, rename or removal durable by syncing its directory.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Syncs a directory, so that the names in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// Evaluates the failpoint `name`, if any. With the `failpoints` feature a test can make it panic,
/// or make the write fail there with an error: `return` fails every write, `return(<dir>)` only
/// writes under `<dir>`, so that tests running in parallel do not trip each other. With
/// `return(enospc)` or `return(enospc:<dir>)` the error is the one of a full disk
/// ([`std::io::ErrorKind::StorageFull`]).
pub(crate) fn failpoint(name: Option<&str>, path: &Path) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    let _ = (name, path); // used only when failpoints are compiled in
    fail::fail_point!(name, |arg: Option<String>| {
        let arg = arg.unwrap_or_default();
        let (disk_full, only_under) = match arg.strip_prefix("enospc") {
            Some(rest) => (true, rest.strip_prefix(':').unwrap_or(rest)),
            None => (false, arg.as_str()),
        };
        if !only_under.is_empty() && !path.starts_with(only_under) {
            return Ok(());
        }
        if disk_full {
            let full = std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("no space left on device (failpoint {name})"),
            );
            return Err(Error::io(path, full));
        }
        Err(Error::checkpoint(
            path,
            format!("failpoint {name} triggered"),
        ))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_canonical_ones_parse() {
        let dir = Path::new("/ckpt");
        let t = BatchTime::from_millis(1_700_000_000_000);
        let name = snapshot_path(dir, t);
        assert_eq!(name, Path::new("/ckpt/snapshot-1700000000000.ckpt"));
        let file = name
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(parse_time(file, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX), Some(t));
        assert_eq!(
            parse_time("snapshot-01.ckpt", SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX),
            None
        );
        assert_eq!(
            parse_time("snapshot-+1.ckpt", SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX),
            None
        );
        assert!(is_temp_name("plans-5.log.tmp"));
        assert!(!is_temp_name("notes.tmp"));
    }
}
