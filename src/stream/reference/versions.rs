//! The versions of a reference table in the checkpoint, and the rules over them.
//!
//! Each load of a table is a version named by the batch time that loaded it,
//! `<checkpoint>/reference/<id>/<t>.version`, written durably (temporary file, fsync, rename,
//! fsync of the directory) before any batch uses it. The rules, each a pure function below:
//!
//! - a batch at `t` uses the version **in force** at `t`: the newest one loaded at or before `t`
//!   ([`in_force`]);
//! - a version loaded at `t` is reloaded at the first batch at or after the next multiple of
//!   the refresh interval ([`next_refresh`]), a time stored in the version itself, so that a
//!   replay decides exactly as the first run did even if the program's interval changed since
//!   ([`expired`]);
//! - a version is removed once no replay can need it ([`obsolete`]).
//!
//! File layout: magic, CRC32C of the rest, then bincode: a header (the load time, the next
//! refresh) and the entries. The table's id, which the program declares, is what identifies its
//! versions; Rust type names are not stored (they change with a module move or a compiler
//! release). Files of an older weir (magic `WEIRREF1`) also named the types in their header; they
//! are read, and the names ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checkpoint::REFERENCE_DIR;
use crate::checkpoint::{list_checkpoint, sync_dir, write_atomically};
use crate::error::{Error, Result};
use crate::plan::BatchTime;
use crate::stream::{Key, Persist};

const SUFFIX: &str = ".version";
const TEMP_SUFFIX: &str = ".version.tmp";
const MAGIC: &[u8; 8] = b"WEIRREF2";
const LEGACY_MAGIC: &[u8; 8] = b"WEIRREF1";

/// `<checkpoint>/reference/<id>`.
pub(crate) fn table_dir(checkpoint: &Path, id: &str) -> PathBuf {
    checkpoint.join(REFERENCE_DIR).join(id)
}

/// One loaded version of a table.
#[derive(Debug)]
pub(crate) struct Version<K, V> {
    /// The batch that loaded it, which names it.
    pub(crate) loaded_at: BatchTime,
    /// The first batch time that loads the table again; `None`: never.
    pub(crate) next_refresh: Option<BatchTime>,
    /// The table.
    pub(crate) entries: Arc<BTreeMap<K, V>>,
}

/// The version a batch at `t` uses: the newest loaded at or before `t`.
pub(crate) fn in_force(on_disk: &BTreeSet<BatchTime>, t: BatchTime) -> Option<BatchTime> {
    on_disk.range(..=t).next_back().copied()
}

/// Whether a version whose next refresh is `next_refresh` must be reloaded by the batch at `t`.
pub(crate) fn expired(next_refresh: Option<BatchTime>, t: BatchTime) -> bool {
    next_refresh.is_some_and(|next| t >= next)
}

/// When a version loaded at `t` is reloaded: the next multiple of `every` after `t` (the grid
/// does not depend on when the pipeline started); `None` without an interval.
pub(crate) fn next_refresh(t: BatchTime, every: Option<Duration>) -> Option<BatchTime> {
    every.map(|every| BatchTime::floor(t.as_millis(), every).next(every))
}

/// The versions no replay can need, given the oldest snapshot still in the checkpoint.
///
/// Recovery starts from a snapshot that is still there (the newest valid one, or an older one
/// if the newest is damaged) and replays only batches after it. Such a batch uses the version in
/// force at its time, which is the version in force at `oldest_snapshot` or a later one. Every
/// version older than the one in force at the oldest snapshot is therefore obsolete; without a
/// snapshot, none is.
pub(crate) fn obsolete(
    on_disk: &BTreeSet<BatchTime>,
    oldest_snapshot: Option<BatchTime>,
) -> Vec<BatchTime> {
    let Some(keep_from) = oldest_snapshot.and_then(|s| in_force(on_disk, s)) else {
        return Vec::new();
    };
    on_disk.range(..keep_from).copied().collect()
}

fn version_path(dir: &Path, t: BatchTime) -> PathBuf {
    dir.join(format!("{t}{SUFFIX}"))
}

/// The versions in `dir` (none if it does not exist). Temporary files of writes a crash
/// interrupted are removed: they were never used.
pub(crate) fn list(dir: &Path) -> Result<BTreeSet<BatchTime>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut found = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        if name.ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        } else if let Some(t) = parse_time(name, "", SUFFIX) {
            found.insert(t);
        }
    }
    Ok(found)
}

/// The batch time in a file name `<prefix><t><suffix>`, in its canonical spelling only.
fn parse_time(name: &str, prefix: &str, suffix: &str) -> Option<BatchTime> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let millis: i64 = digits.parse().ok()?;
    (millis.to_string() == digits).then(|| BatchTime::from_millis(millis))
}

/// The batch time of the oldest snapshot in the checkpoint directory.
pub(crate) fn oldest_snapshot(checkpoint: &Path) -> Result<Option<BatchTime>> {
    Ok(list_checkpoint(checkpoint)?
        .snapshots
        .first()
        .map(|(t, _)| *t))
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// What precedes the entries in a version file.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    loaded_at_ms: i64,
    next_refresh_ms: Option<i64>,
}

/// The header of a `WEIRREF1` file: the same, after the Rust type names of keys and values.
#[derive(Debug, Deserialize)]
struct LegacyHeader {
    _types: Vec<String>,
    loaded_at_ms: i64,
    next_refresh_ms: Option<i64>,
}

/// Writes `version` of table `id` into `dir` durably and atomically.
pub(crate) fn write<K: Key, V: Persist>(
    dir: &Path,
    id: &str,
    version: &Version<K, V>,
) -> Result<()> {
    let path = version_path(dir, version.loaded_at);
    let header = Header {
        loaded_at_ms: version.loaded_at.as_millis(),
        next_refresh_ms: version.next_refresh.map(BatchTime::as_millis),
    };
    let cannot_encode = |e: bincode::error::EncodeError| {
        Error::checkpoint(
            &path,
            format!(
                "reference table {id:?} cannot be encoded ({e}); its keys and values must be plain serde data (no #[serde(flatten)], no sequences of unknown length)"
            ),
        )
    };
    let mut body =
        bincode::serde::encode_to_vec(&header, bincode_config()).map_err(cannot_encode)?;
    body.extend(
        bincode::serde::encode_to_vec(&*version.entries, bincode_config())
            .map_err(cannot_encode)?,
    );
    let mut bytes = Vec::with_capacity(body.len() + 12);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend(body);

    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomically(&path, &bytes, None)?;
    // The directories above the table's that create_dir_all may have made.
    let mut synced = dir.parent();
    for _ in 0..2 {
        let Some(d) = synced else { break };
        sync_dir(d)?;
        synced = d.parent();
    }
    Ok(())
}

/// Reads version `t` of table `id` from `dir`.
pub(crate) fn read<K: Key, V: Persist>(
    dir: &Path,
    id: &str,
    t: BatchTime,
) -> Result<Version<K, V>> {
    let path = version_path(dir, t);
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let damaged = |why: String| {
        Error::checkpoint(
            &path,
            format!(
                "version {t} of reference table {id:?} is damaged ({why}); a batch replayed after a crash needs the version its first run used. Restore the checkpoint from a backup, or remove the file to load the table anew (replayed batches then may filter differently)"
            ),
        )
    };
    let (magic, rest) = bytes
        .split_at_checked(MAGIC.len())
        .ok_or_else(|| damaged("too short".into()))?;
    let (crc, body) = rest
        .split_at_checked(4)
        .ok_or_else(|| damaged("too short".into()))?;
    if magic != MAGIC && magic != LEGACY_MAGIC {
        return Err(damaged("not a reference table version".into()));
    }
    let crc: [u8; 4] = crc.try_into().map_err(|_| damaged("too short".into()))?;
    if u32::from_le_bytes(crc) != crc32c::crc32c(body) {
        return Err(damaged("checksum mismatch".into()));
    }
    let (header, used): (Header, usize) = if magic == LEGACY_MAGIC {
        let (legacy, used): (LegacyHeader, usize) =
            bincode::serde::decode_from_slice(body, bincode_config())
                .map_err(|e| damaged(format!("header: {e}")))?;
        let header = Header {
            loaded_at_ms: legacy.loaded_at_ms,
            next_refresh_ms: legacy.next_refresh_ms,
        };
        (header, used)
    } else {
        bincode::serde::decode_from_slice(body, bincode_config())
            .map_err(|e| damaged(format!("header: {e}")))?
    };
    // The checksum held: the bytes are as written, so entries that do not decode were written
    // for other types. The Rust types are named for people only.
    let changed = |why: String| {
        Error::checkpoint(
            &path,
            format!(
                "version {t} of reference table {id:?} cannot be decoded as entries of ({}, {}) ({why}); did the table's key or value type change? Go back to the old types until the pipeline has snapshotted past the logged batches, or give the table a new id to load it anew",
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            ),
        )
    };
    let rest = body.get(used..).unwrap_or_default();
    let (entries, read): (BTreeMap<K, V>, usize) =
        bincode::serde::decode_from_slice(rest, bincode_config())
            .map_err(|e| changed(e.to_string()))?;
    if read != rest.len() {
        return Err(changed(format!("{} bytes left over", rest.len() - read)));
    }
    Ok(Version {
        loaded_at: BatchTime::from_millis(header.loaded_at_ms),
        next_refresh: header.next_refresh_ms.map(BatchTime::from_millis),
        entries: Arc::new(entries),
    })
}

/// Removes versions `times` from `dir`; failures only cost disk space, so they are warnings.
pub(crate) fn remove(dir: &Path, times: &[BatchTime]) {
    for &t in times {
        let path = version_path(dir, t);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "Cannot remove an old reference table version.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(ms: &[i64]) -> BTreeSet<BatchTime> {
        ms.iter().copied().map(BatchTime::from_millis).collect()
    }

    fn t(ms: i64) -> BatchTime {
        BatchTime::from_millis(ms)
    }

    #[test]
    fn a_batch_uses_the_newest_version_at_or_before_it() {
        let on_disk = times(&[1_000, 4_000]);
        assert_eq!(in_force(&on_disk, t(900)), None);
        assert_eq!(in_force(&on_disk, t(1_000)), Some(t(1_000)));
        assert_eq!(in_force(&on_disk, t(3_900)), Some(t(1_000)));
        assert_eq!(in_force(&on_disk, t(4_000)), Some(t(4_000)));
        assert_eq!(in_force(&on_disk, t(9_000)), Some(t(4_000)));
    }

    #[test]
    fn refreshes_fall_on_the_grid_of_the_interval() {
        let every = Some(Duration::from_secs(3));
        // Loaded at 1 s (the first batch): reloaded at 3 s, then every 3 s.
        assert_eq!(next_refresh(t(1_000), every), Some(t(3_000)));
        assert_eq!(next_refresh(t(3_000), every), Some(t(6_000)));
        // After downtime the first batch past a grid point reloads, and the grid stays.
        assert_eq!(next_refresh(t(7_500), every), Some(t(9_000)));
        assert!(!expired(Some(t(3_000)), t(2_900)));
        assert!(expired(Some(t(3_000)), t(3_000)));
        assert!(expired(Some(t(3_000)), t(7_500)));
        // Without an interval a version never expires.
        assert_eq!(next_refresh(t(1_000), None), None);
        assert!(!expired(None, t(i64::MAX)));
    }

    #[test]
    fn only_versions_before_the_one_in_force_at_the_oldest_snapshot_go() {
        let on_disk = times(&[1_000, 3_000, 6_000, 9_000]);
        assert_eq!(obsolete(&on_disk, None), Vec::new());
        assert_eq!(obsolete(&on_disk, Some(t(500))), Vec::new());
        // A replay after the snapshot at 7 s may still use the version of 6 s.
        assert_eq!(obsolete(&on_disk, Some(t(7_000))), vec![t(1_000), t(3_000)]);
        assert_eq!(
            obsolete(&on_disk, Some(t(9_000))),
            vec![t(1_000), t(3_000), t(6_000)]
        );
    }

    #[test]
    fn versions_round_trip_and_refuse_entries_of_another_shape() {
        let dir = tempfile::tempdir().unwrap();
        let version = Version {
            loaded_at: t(3_000),
            next_refresh: Some(t(6_000)),
            entries: Arc::new(BTreeMap::from([("tom".to_owned(), true)])),
        };
        write(dir.path(), "b", &version).unwrap();
        assert_eq!(list(dir.path()).unwrap(), times(&[3_000]));
        let back: Version<String, bool> = read(dir.path(), "b", t(3_000)).unwrap();
        assert_eq!(back.loaded_at, t(3_000));
        assert_eq!(back.next_refresh, Some(t(6_000)));
        assert_eq!(back.entries, version.entries);

        let e = read::<String, String>(dir.path(), "b", t(3_000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "cannot be decoded as entries of (alloc::string::String, alloc::string::String)"
            ) && e.contains("give the table a new id"),
            "{e}"
        );

        let path = version_path(dir.path(), t(3_000));
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, bytes).unwrap();
        let e = read::<String, bool>(dir.path(), "b", t(3_000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn a_renamed_type_reads_its_versions_and_older_files_are_read() {
        mod before {
            #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
            pub(super) struct Blocked(pub(super) bool);
        }
        mod after {
            #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
            pub(super) struct IsBlocked(pub(super) bool);
        }
        let dir = tempfile::tempdir().unwrap();
        let version = Version {
            loaded_at: t(3_000),
            next_refresh: None,
            entries: Arc::new(BTreeMap::from([("tom".to_owned(), before::Blocked(true))])),
        };
        write(dir.path(), "b", &version).unwrap();
        let back: Version<String, after::IsBlocked> = read(dir.path(), "b", t(3_000)).unwrap();
        assert_eq!(
            *back.entries,
            BTreeMap::from([("tom".to_owned(), after::IsBlocked(true))])
        );

        // A file of an older weir, whose header named the Rust types.
        let mut body = bincode::serde::encode_to_vec(
            (
                vec!["alloc::string::String", "my_app::Blocked"],
                6_000_i64,
                Some(9_000_i64),
            ),
            bincode_config(),
        )
        .unwrap();
        body.extend(bincode::serde::encode_to_vec(&*version.entries, bincode_config()).unwrap());
        let mut bytes = LEGACY_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend(body);
        fs::write(version_path(dir.path(), t(6_000)), bytes).unwrap();
        let old: Version<String, after::IsBlocked> = read(dir.path(), "b", t(6_000)).unwrap();
        assert_eq!(old.loaded_at, t(6_000));
        assert_eq!(old.next_refresh, Some(t(9_000)));
        assert_eq!(*old.entries, *back.entries);
    }
}
