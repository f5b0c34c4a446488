//! Snapshots, the plan log and recovery: the durable half of the exactly-once protocol.
//!
//! # The directory
//!
//! ```text
//! <checkpoint_dir>/
//!   LOCK                 flock held by the one process that owns the checkpoint (its pid inside)
//!   snapshot-<t>.ckpt    positions + operator state after batch t; header + bincode payload
//!   plans-<t>.log        every plan logged after snapshot t, append-only, one record per batch
//! ```
//!
//! A snapshot file is a fixed header (magic `WEIRSNAP`, format version, identity fingerprint,
//! payload length, payload CRC32C, header CRC32C) followed by the bincode [`Snapshot`]. A plan log
//! starts with the magic `WEIRPLAN` and its format version; each record is a little-endian `u32`
//! length, a CRC32C over that length and the payload, and the bincode [`BatchPlan`]. Snapshots and
//! new plan logs are written atomically (temporary file, fsync, rename, fsync the directory);
//! plans are appended and fsynced before `CheckpointStore::append_plan` returns, which is
//! invariant 2: no effect of a batch precedes its durable plan.
//!
//! When a snapshot at `t` is written, the plans already logged after `t` are copied into the new
//! `plans-<t>.log`, so `plans-<t>.log` always holds every logged plan after snapshot `t`. Once the
//! new snapshot is durable, only the newest [`DEFAULT_KEEP_SNAPSHOTS`] snapshots are kept, with the
//! plan logs from the oldest kept one on; temporary files of interrupted writes are removed when
//! the directory is opened.
//!
//! # The recovery rule
//!
//! `CheckpointStore::recover` loads the newest snapshot that is whole (a torn or corrupt newer
//! one is skipped with a warning; one written by a newer weir stops recovery), checks that it
//! belongs to this pipeline ([`PipelineIdentity`]), and reads the plans logged after it from every
//! plan log at or after its batch time, in batch-time order. Those plans are replayed verbatim by
//! the runtime (outputs already committed are skipped by the sink's commit table, state is
//! recomputed), and only then are new batches planned. A torn last plan record is dropped: it was
//! never acted on. Everything that could lose or double records is an error that names the file:
//! a directory that holds files but no valid snapshot (never a silent fresh start), a damaged plan
//! record with intact ones after it, a missing `plans-<t>.log` of the chosen snapshot, plans that
//! do not line up with the snapshot's positions (invariant 1).
//!
//! `weir checkpoint inspect` and `weir checkpoint reset --keep-offsets` are [`inspect()`] and
//! [`reset_keep_offsets`].
//!
//! # Failpoints
//!
//! With the `failpoints` feature, `checkpoint::snapshot::after_temp_write`,
//! `checkpoint::snapshot::before_fsync`, `checkpoint::snapshot::after_fsync_before_rename`,
//! `checkpoint::snapshot::after_rename_before_dir_fsync` and
//! `checkpoint::plan_log::after_append_before_fsync` accept `panic`, `return` (the write fails
//! with an error there) and `return(<dir>)` (only writes under `<dir>` fail, so that tests in one
//! process do not trip each other).
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use weir::checkpoint::{CheckpointStore, PipelineIdentity, Recovery, Snapshot};
//! use weir::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
//!
//! # fn main() -> weir::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| weir::Error::io("tempdir", e))?;
//! let identity = PipelineIdentity::new("orders", ["orders"], "sqlite://orders.db table=orders");
//! let interval = Duration::from_secs(1);
//! let tp = TopicPartition::new("orders", 0);
//!
//! let mut store = CheckpointStore::open(dir.path())?;
//! assert!(matches!(store.recover(&identity)?, Recovery::Fresh));
//! // A fresh start: the initial snapshot holds the starting offsets, then plans are logged.
//! let start = BTreeMap::from([(tp.clone(), 0)]);
//! store.write_snapshot(&Snapshot::initial(identity.clone(), interval, BatchTime::from_millis(0), start))?;
//! store.append_plan(&BatchPlan::new(BatchTime::from_millis(1_000), vec![OffsetRange::new(tp, 0, 10)]))?;
//! drop(store);
//!
//! // After a crash: the logged plan comes back, to be executed again verbatim.
//! let mut store = CheckpointStore::open(dir.path())?;
//! let Recovery::Resume { snapshot, plans } = store.recover(&identity)? else { unreachable!() };
//! assert_eq!(snapshot.batch_time, BatchTime::from_millis(0));
//! assert_eq!(plans.len(), 1);
//! # Ok(())
//! # }
//! ```

mod chain;
mod files;
mod identity;
mod inspect;
mod lock;
mod plan_log;
mod recovery;
mod snapshot;
mod store;

use std::time::Duration;

pub(crate) use files::{
    REFERENCE_DIR, SOURCES_DIR, SPILL_DIR, list as list_checkpoint, sync_dir, write_atomically,
};
pub use identity::PipelineIdentity;
pub use inspect::{
    Inspection, OperatorSummary, PlanLogReport, RecoveryPreview, SnapshotReport, SnapshotStatus,
    SnapshotSummary, inspect,
};
pub use lock::LockStatus;
pub use plan_log::PLAN_LOG_FORMAT_VERSION;
pub use snapshot::{OperatorState, SNAPSHOT_FORMAT_VERSION, Snapshot};
/// The engine's own parts: public only for weir's integration tests and benchmarks
/// (the `internals` feature, which they enable), not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use store::{CheckpointStore, Recovery};
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use store::{CheckpointStore, Recovery};
pub use store::{DEFAULT_KEEP_SNAPSHOTS, ResetReport, reset_keep_offsets};

#[cfg(doc)]
use crate::plan::BatchPlan;

/// The least time between snapshots when none is configured.
const MIN_DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// The default time between snapshots: the smallest multiple of `batch_interval` that is at
/// least 10 seconds (Spark's rule), so that snapshots fall on batch boundaries. A zero interval
/// gives 10 seconds.
///
/// ```
/// use std::time::Duration;
/// use weir::checkpoint::default_checkpoint_interval;
///
/// assert_eq!(default_checkpoint_interval(Duration::from_secs(3)), Duration::from_secs(12));
/// assert_eq!(default_checkpoint_interval(Duration::from_millis(50)), Duration::from_secs(10));
/// assert_eq!(default_checkpoint_interval(Duration::from_secs(30)), Duration::from_secs(30));
/// ```
pub fn default_checkpoint_interval(batch_interval: Duration) -> Duration {
    if batch_interval.is_zero() || batch_interval >= MIN_DEFAULT_CHECKPOINT_INTERVAL {
        return batch_interval.max(MIN_DEFAULT_CHECKPOINT_INTERVAL);
    }
    let step = batch_interval.as_nanos();
    let batches = MIN_DEFAULT_CHECKPOINT_INTERVAL.as_nanos().div_ceil(step);
    u32::try_from(batches)
        .ok()
        .and_then(|n| batch_interval.checked_mul(n))
        .unwrap_or(MIN_DEFAULT_CHECKPOINT_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_checkpoint_interval_is_a_multiple_of_the_batch_interval() {
        let ms = Duration::from_millis;
        assert_eq!(default_checkpoint_interval(ms(700)), ms(10_500));
        assert_eq!(default_checkpoint_interval(ms(1_000)), ms(10_000));
        assert_eq!(default_checkpoint_interval(ms(0)), ms(10_000));
        assert_eq!(
            default_checkpoint_interval(Duration::from_nanos(1)),
            ms(10_000)
        );
        assert_eq!(default_checkpoint_interval(ms(25_000)), ms(25_000));
    }
}
