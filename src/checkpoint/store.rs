//! The checkpoint store: the one writer of a checkpoint directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::plan::{BatchPlan, BatchTime, TopicPartition};

use super::chain::Chain;
use super::files::{self, AtomicWriteFailpoints};
use super::identity::PipelineIdentity;
use super::lock::DirLock;
use super::plan_log::{self, PlanLogWriter};
use super::recovery::{self, file_name};
use super::snapshot::Snapshot;

/// How many snapshots are kept unless told otherwise.
pub const DEFAULT_KEEP_SNAPSHOTS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(2);

const SNAPSHOT_FAILPOINTS: AtomicWriteFailpoints = AtomicWriteFailpoints {
    after_temp_write: "checkpoint::snapshot::after_temp_write",
    before_fsync: "checkpoint::snapshot::before_fsync",
    after_fsync_before_rename: "checkpoint::snapshot::after_fsync_before_rename",
    after_rename_before_dir_fsync: "checkpoint::snapshot::after_rename_before_dir_fsync",
};

/// What [`CheckpointStore::recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The directory holds no checkpoint: resolve the starting offsets, write the initial
    /// snapshot ([`Snapshot::initial`]), then plan the first batch.
    Fresh,
    /// Resume: restore `snapshot`, execute `plans` again verbatim and in order (they were logged
    /// and may have had effects), then plan new batches from where the last one ends.
    Resume {
        /// The newest valid snapshot.
        snapshot: Snapshot,
        /// Every plan logged after it, in batch-time order, contiguous from its positions.
        plans: Vec<BatchPlan>,
    },
}

/// The owner of a checkpoint directory: holds its lock for as long as it lives, writes snapshots
/// and appends plans. Calls block on file I/O and fsync: from async code, call them in
/// `tokio::task::spawn_blocking`.
///
/// The order of use is [`open`](Self::open), [`recover`](Self::recover), then on a fresh start
/// the initial [`write_snapshot`](Self::write_snapshot); then [`append_plan`](Self::append_plan)
/// before each batch runs and `write_snapshot` every checkpoint interval.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep_snapshots: NonZeroUsize,
    state: State,
    _lock: DirLock,
}

#[derive(Debug)]
enum State {
    /// `recover` has not run: writing could clobber what is there.
    NotRecovered,
    /// The directory was empty; the initial snapshot comes next.
    Empty,
    /// A snapshot exists.
    Active(Active),
}

#[derive(Debug)]
struct Active {
    pipeline: String,
    snapshot_time: BatchTime,
    snapshot_positions: BTreeMap<TopicPartition, i64>,
    /// Plans logged after the snapshot, in order.
    logged: Vec<BatchPlan>,
    /// The snapshot's positions advanced by every logged plan.
    chain: Chain,
    /// The writer of `plans-<snapshot_time>.log`; `None` until the next append opens it by name.
    log: Option<PlanLogWriter>,
}

// Some methods serve only the engine tests (the `internals` feature).
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
impl CheckpointStore {
    /// Opens the checkpoint directory `dir`, creating it if needed, and takes its lock, held until
    /// the store is dropped. Temporary files of writes a crash interrupted are removed.
    ///
    /// Fails with [`Error::CheckpointLocked`] at once when another store, in this process or
    /// another one, holds the directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            files::sync_parent(dir)?;
        }
        let lock = DirLock::acquire(dir)?;
        let temp_files = files::list(dir)?.temp_files;
        for temp in &temp_files {
            fs::remove_file(temp).map_err(|e| Error::io(temp, e))?;
            info!(file = %temp.display(), "Removed a temporary file left by an interrupted write.");
        }
        if !temp_files.is_empty() {
            files::sync_dir(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            keep_snapshots: DEFAULT_KEEP_SNAPSHOTS,
            state: State::NotRecovered,
            _lock: lock,
        })
    }

    /// Keeps the newest `keep` snapshots (and the plan logs needed to recover from the oldest of
    /// them) instead of [`DEFAULT_KEEP_SNAPSHOTS`].
    #[must_use]
    pub fn with_keep_snapshots(mut self, keep: NonZeroUsize) -> Self {
        self.keep_snapshots = keep;
        self
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the checkpoint: the newest valid snapshot and the plans logged after it (see the
    /// [module documentation](super) for the rule). Damaged newer snapshots are skipped and torn
    /// last plan records cut off, each with a warning.
    ///
    /// Fails with [`Error::FingerprintMismatch`] when the checkpoint belongs to a pipeline whose
    /// identity differs from `identity`, and with [`Error::Checkpoint`] when the directory holds
    /// files but no valid snapshot, when a plan log is corrupt, or when the logged plans do not
    /// line up with the snapshot.
    pub fn recover(&mut self, identity: &PipelineIdentity) -> Result<Recovery> {
        self.recover_as(Some(identity))
    }

    /// [`recover`](Self::recover), checking the identity only when one is given.
    fn recover_as(&mut self, identity: Option<&PipelineIdentity>) -> Result<Recovery> {
        let listing = files::list(&self.dir)?;
        let Some(found) = recovery::find(&self.dir, &listing)? else {
            // Plan logs without a snapshot here hold no plan (see `recovery::find`): leftovers.
            for (_, path) in &listing.plan_logs {
                fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            }
            self.state = State::Empty;
            // Debug: the start-up cross-check and the scheduler both recover; the scheduler's
            // "Started a new pipeline." says it once.
            debug!(dir = %self.dir.display(), "The checkpoint is empty: starting fresh.");
            return Ok(Recovery::Fresh);
        };
        for (path, why) in &found.skipped {
            warn!(file = %path.display(), reason = %why, "Skipping a damaged snapshot; recovering from an older one.");
        }
        if let Some(identity) = identity {
            let changes = found.snapshot.identity.diff(identity);
            if !changes.is_empty() {
                return Err(Error::FingerprintMismatch {
                    path: self.dir.clone(),
                    changes: changes.join("; "),
                });
            }
        }
        for torn in &found.torn {
            warn!(
                file = %torn.path.display(),
                offset = torn.tail.offset,
                reason = %torn.tail.reason,
                "Dropping a torn last plan record: the crash came before it was durable, so its batch never ran."
            );
            plan_log::truncate(&torn.path, torn.valid_len)?;
        }
        let snapshot = found.snapshot;
        let mut chain = Chain::new(snapshot.batch_time, snapshot.positions.clone());
        for plan in &found.plans {
            chain.advance(plan);
        }
        // The scheduler says it at info level once recovery is done; the start-up cross-check
        // reads the checkpoint before it, so this would be said twice.
        debug!(
            snapshot = %found.snapshot_path.display(),
            logged_plans = found.plans.len(),
            "Recovered the checkpoint."
        );
        self.state = State::Active(Active {
            pipeline: snapshot.identity.pipeline.clone(),
            snapshot_time: snapshot.batch_time,
            snapshot_positions: snapshot.positions.clone(),
            logged: found.plans.clone(),
            chain,
            log: None,
        });
        Ok(Recovery::Resume {
            snapshot,
            plans: found.plans,
        })
    }

    /// Writes a snapshot durably and atomically, then removes snapshots and plan logs beyond the
    /// newest [`with_keep_snapshots`](Self::with_keep_snapshots).
    ///
    /// The snapshot must not be older than the current one, and its positions must be where the
    /// plans logged up to its batch time end (invariant 5); plans logged after its batch time are
    /// carried into its new plan log. Fails with [`Error::Contiguity`] when the positions do not
    /// match, and before [`recover`](Self::recover) has run.
    ///
    /// A write that fails on I/O (a full disk: [`Error::is_retryable`]) leaves the previous
    /// snapshot and plan log in use, removes its temporary files, and may be tried again.
    pub fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let t = snapshot.batch_time;
        let carried: Vec<BatchPlan> = match &self.state {
            State::NotRecovered => return Err(self.not_recovered()),
            State::Empty => Vec::new(),
            State::Active(active) => {
                active.check_snapshot(snapshot, &self.dir)?;
                active
                    .logged
                    .iter()
                    .filter(|plan| plan.batch_time > t)
                    .cloned()
                    .collect()
            }
        };
        let snapshot_path = files::snapshot_path(&self.dir, t);
        let log_path = files::plan_log_path(&self.dir, t);
        let mut chain = Chain::new(t, snapshot.positions.clone());
        for plan in &carried {
            chain.push(plan).map_err(|violation| Error::Contiguity {
                what: format!("snapshot {} of pipeline {}", t, snapshot.pipeline()),
                detail: format!("the plans logged after it do not follow it: {violation}"),
            })?;
        }
        let bytes = snapshot.encode(&snapshot_path)?;
        if let State::Active(active) = &mut self.state
            && active.snapshot_time == t
        {
            // Its file is about to be replaced: an open handle would append to the old one. The
            // next append opens it by name, so it must not end in what a failed append left.
            if let Some(writer) = &mut active.log {
                writer.cut_failed_append()?;
            }
            active.log = None;
        }
        let log_is_new = !log_path.exists();
        // The log first: once the snapshot exists, its log must hold every plan after it.
        let replaced = PlanLogWriter::create(&log_path, &carried)
            .and_then(|()| files::replace(&snapshot_path, &bytes, Some(&SNAPSHOT_FAILPOINTS)));
        if let Err(e) = replaced {
            if log_is_new {
                self.remove_unused_log(&log_path);
            }
            return Err(e);
        }
        // The snapshot is in place: a crash from here on may recover from it, so plans go to
        // its log even if making the rename durable fails.
        self.state = State::Active(Active {
            pipeline: snapshot.identity.pipeline.clone(),
            snapshot_time: t,
            snapshot_positions: snapshot.positions.clone(),
            logged: carried,
            chain,
            log: None,
        });
        files::sync_replaced(&snapshot_path, Some(&SNAPSHOT_FAILPOINTS))?;
        self.remove_old_files(t);
        Ok(())
    }

    /// Appends `plan` to the plan log and fsyncs it: when this returns, the plan survives a crash
    /// and will be executed again verbatim (invariant 2). Call it before the batch has any effect.
    ///
    /// Fails with [`Error::Contiguity`] when `plan` does not follow the last logged plan (or the
    /// snapshot): its batch time must be later and each range must start where its partition's
    /// previous range ended.
    ///
    /// An append that fails on I/O (a full disk: [`Error::is_retryable`]) logs nothing: what it
    /// may have written is cut off, at once or before the next append, and recovery reads only
    /// whole records meanwhile. The same plan can then be appended again once the cause is gone.
    pub fn append_plan(&mut self, plan: &BatchPlan) -> Result<()> {
        let dir = self.dir.clone();
        let active = match &mut self.state {
            State::Active(active) => active,
            State::NotRecovered => return Err(self.not_recovered()),
            State::Empty => {
                return Err(Error::checkpoint(
                    &self.dir,
                    "no snapshot yet: a fresh pipeline writes its initial snapshot (starting \
                     offsets, batch time before the first batch) before logging its first plan; \
                     this is a weir bug",
                ));
            }
        };
        let log_path = files::plan_log_path(&dir, active.snapshot_time);
        active
            .chain
            .check(plan)
            .map_err(|violation| Error::Contiguity {
                what: format!(
                    "pipeline {}, plan log {}",
                    active.pipeline,
                    log_path.display()
                ),
                detail: violation.to_string(),
            })?;
        active.writer(&log_path)?.append(plan)?;
        active.chain.advance(plan);
        active.logged.push(plan.clone());
        Ok(())
    }

    /// The batch time of the current snapshot, once there is one.
    pub fn snapshot_time(&self) -> Option<BatchTime> {
        self.active().map(|active| active.snapshot_time)
    }

    /// The plans logged after the current snapshot, in order.
    pub fn logged_plans(&self) -> &[BatchPlan] {
        self.active().map_or(&[], |active| &active.logged)
    }

    /// The last batch the checkpoint knows: the last logged plan's, or the snapshot's.
    pub fn last_batch_time(&self) -> Option<BatchTime> {
        self.active().map(|active| active.chain.last())
    }

    /// Where each partition's next batch starts: the snapshot's positions advanced by every
    /// logged plan.
    pub fn positions(&self) -> Option<&BTreeMap<TopicPartition, i64>> {
        self.active().map(|active| active.chain.positions())
    }

    fn active(&self) -> Option<&Active> {
        match &self.state {
            State::Active(active) => Some(active),
            State::NotRecovered | State::Empty => None,
        }
    }

    fn not_recovered(&self) -> Error {
        Error::checkpoint(
            &self.dir,
            "the checkpoint must be recovered before it is written; this is a weir bug",
        )
    }

    /// Removes the plan log a failed [`write_snapshot`](Self::write_snapshot) created for its
    /// snapshot: it holds only plans the current log holds too, and in an otherwise empty
    /// directory it would look like a checkpoint without a snapshot. On a full disk this frees
    /// space. Failures are warnings: a retry replaces the file.
    fn remove_unused_log(&self, path: &Path) {
        match fs::remove_file(path) {
            Ok(()) => {
                if let Err(e) = files::sync_dir(&self.dir) {
                    warn!(error = %e, "Cannot sync the checkpoint directory after removing an unused plan log.");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(file = %path.display(), error = %e, "Cannot remove the plan log of a snapshot that was not written.");
            }
        }
    }

    /// Keeps the newest `keep_snapshots` snapshots up to `newest` and the plan logs from the
    /// oldest kept one on. Failures only cost disk space, so they are warnings.
    fn remove_old_files(&self, newest: BatchTime) {
        let listing = match files::list(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                warn!(error = %e, "Cannot list the checkpoint to remove old snapshots.");
                return;
            }
        };
        let kept: Vec<BatchTime> = listing
            .snapshots
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t <= newest)
            .rev()
            .take(self.keep_snapshots.get())
            .collect();
        let Some(&oldest_kept) = kept.last() else {
            return;
        };
        let old = listing
            .snapshots
            .iter()
            .chain(&listing.plan_logs)
            .filter(|(t, _)| *t < oldest_kept);
        let mut removed = false;
        for (_, path) in old {
            match fs::remove_file(path) {
                Ok(()) => removed = true,
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "Cannot remove an old checkpoint file.")
                }
            }
        }
        if removed && let Err(e) = files::sync_dir(&self.dir) {
            warn!(error = %e, "Cannot sync the checkpoint directory after removing old files.");
        }
    }
}

impl Active {
    /// The writer of the plan log at `path`, opened (and created, if missing) on first use.
    fn writer(&mut self, path: &Path) -> Result<&mut PlanLogWriter> {
        let writer = match self.log.take() {
            Some(writer) => writer,
            None => {
                if !path.exists() {
                    PlanLogWriter::create(path, &[])?;
                }
                PlanLogWriter::open(path)?
            }
        };
        Ok(self.log.insert(writer))
    }

    /// Invariant 5: a snapshot at `t` holds the positions after every batch up to `t`.
    fn check_snapshot(&self, snapshot: &Snapshot, dir: &Path) -> Result<()> {
        let t = snapshot.batch_time;
        if t < self.snapshot_time {
            return Err(Error::checkpoint(
                files::snapshot_path(dir, t),
                format!(
                    "a snapshot at batch {t} is older than the current one at {}; this is a weir bug",
                    self.snapshot_time
                ),
            ));
        }
        let mut expected = Chain::new(self.snapshot_time, self.snapshot_positions.clone());
        let mut read_since = BTreeSet::new();
        for plan in self.logged.iter().take_while(|plan| plan.batch_time <= t) {
            expected.advance(plan);
            read_since.extend(plan.ranges.iter().map(|range| &range.tp));
        }
        for (tp, &position) in expected.positions() {
            let problem = match snapshot.positions.get(tp) {
                Some(&held) if held == position => continue,
                Some(held) => format!("it holds position {held}"),
                // Dropping a partition no batch read since the last snapshot is the runtime's call.
                None if !read_since.contains(tp) => continue,
                None => "it holds no position for it".to_owned(),
            };
            return Err(Error::Contiguity {
                what: format!("{tp} in snapshot {t} of pipeline {}", self.pipeline),
                detail: format!(
                    "the batches up to {t} end at offset {position} but {problem} (invariant 5)"
                ),
            });
        }
        Ok(())
    }
}

/// What `weir checkpoint reset --keep-offsets` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The batch time of the snapshot that was replaced.
    pub batch_time: BatchTime,
    /// How the new identity differs from the old one.
    pub changes: Vec<String>,
    /// The operators whose state was dropped.
    pub dropped_state: Vec<String>,
    /// How many partition positions were kept.
    pub positions: usize,
    /// How many logged plans will be executed again, with fresh state.
    pub logged_plans: usize,
}

impl fmt::Display for ResetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reset checkpoint {} at batch {}: kept {} partition positions",
            self.dir.display(),
            self.batch_time,
            self.positions
        )?;
        if self.logged_plans > 0 {
            write!(
                f,
                " and {} logged plans (executed again, with fresh state, at the next start)",
                self.logged_plans
            )?;
        }
        if !self.dropped_state.is_empty() {
            write!(
                f,
                "; dropped the state of {}",
                self.dropped_state.join(", ")
            )?;
        }
        if !self.changes.is_empty() {
            write!(f, "; identity changes: {}", self.changes.join("; "))?;
        }
        Ok(())
    }
}

/// `weir checkpoint reset --keep-offsets`: starts fresh state at the stored offsets under a new
/// identity, after a change that [`Error::FingerprintMismatch`] refused.
///
/// The newest valid snapshot is replaced by one at the same batch time with the same positions
/// and batch interval, the new `identity` and no operator state. Positions of partitions the new
/// identity no longer reads are kept: they are inert, and resume the topic where it stopped if it
/// comes back. The plan logs are kept as they are, because plans logged after the snapshot may
/// already have been committed to the sink, and only their verbatim replay keeps the sink's
/// commit table contiguous (invariants 1, 2 and 4); positions are therefore *not* advanced to the
/// end of the logged plans. Older snapshots, which still hold the old identity, expire by
/// retention.
///
/// Takes the directory's lock, so the pipeline must be stopped.
pub fn reset_keep_offsets(
    dir: impl AsRef<Path>,
    identity: &PipelineIdentity,
) -> Result<ResetReport> {
    let dir = dir.as_ref();
    let mut store = CheckpointStore::open(dir)?;
    let Recovery::Resume { snapshot, plans } = store.recover_as(None)? else {
        return Err(Error::checkpoint(
            dir,
            "holds no checkpoint, so there is nothing to reset; a pipeline starts fresh without one",
        ));
    };
    let reset = Snapshot {
        identity: identity.clone(),
        operator_state: BTreeMap::new(),
        ..snapshot.clone()
    };
    store.write_snapshot(&reset)?;
    info!(
        snapshot = %file_name(&files::snapshot_path(dir, reset.batch_time)),
        "Reset the checkpoint's identity and state; offsets and logged plans are kept."
    );
    Ok(ResetReport {
        dir: dir.to_path_buf(),
        batch_time: reset.batch_time,
        changes: snapshot.identity.diff(identity),
        dropped_state: snapshot.operator_state.into_keys().collect(),
        positions: reset.positions.len(),
        logged_plans: plans.len(),
    })
}

#[cfg(test)]
mod tests;
