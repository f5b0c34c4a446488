//! `weir checkpoint inspect`: a read-only look at a checkpoint directory, for people.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::plan::{BatchTime, TopicPartition};

use super::chain::Chain;
use super::files;
use super::identity::PipelineIdentity;
use super::lock::LockStatus;
use super::plan_log;
use super::recovery::{self, file_name};
use super::snapshot::{Snapshot, SnapshotDefect};

/// Everything in a checkpoint directory, file by file, and what a recovery would do with it.
/// Its [`Display`](fmt::Display) is the report of `weir checkpoint inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The directory.
    pub dir: PathBuf,
    /// Whether a running weir holds it.
    pub lock: LockStatus,
    /// The snapshot files, newest first.
    pub snapshots: Vec<SnapshotReport>,
    /// The plan logs, newest first.
    pub plan_logs: Vec<PlanLogReport>,
    /// Temporary files of interrupted writes (removed at the next start).
    pub temp_files: Vec<PathBuf>,
    /// Files that are not part of a checkpoint.
    pub other_files: Vec<PathBuf>,
    /// What a recovery would do.
    pub recovery: RecoveryPreview,
}

/// One snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The file.
    pub path: PathBuf,
    /// The batch time in its name.
    pub batch_time: BatchTime,
    /// Whether it can be used.
    pub status: SnapshotStatus,
}

/// Whether a snapshot file can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// Whole and readable.
    Valid(SnapshotSummary),
    /// Torn, corrupt or from a newer weir, and why.
    Invalid(String),
}

/// A valid snapshot's contents, without the state bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The pipeline it belongs to.
    pub identity: PipelineIdentity,
    /// The fingerprint of that identity.
    pub fingerprint: u64,
    /// The batch interval when it was written.
    pub batch_interval: Duration,
    /// Where each partition's next batch starts.
    pub positions: BTreeMap<TopicPartition, i64>,
    /// The state held per operator id.
    pub operator_state: BTreeMap<String, OperatorSummary>,
}

/// One operator's state in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorSummary {
    /// The state's schema version.
    pub schema_version: u32,
    /// The state's size.
    pub bytes: usize,
}

/// One plan log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLogReport {
    /// The file.
    pub path: PathBuf,
    /// The snapshot it follows.
    pub base: BatchTime,
    /// How many whole plan records it holds.
    pub plans: usize,
    /// The first and last logged batch times.
    pub batches: Option<(BatchTime, BatchTime)>,
    /// A torn last record, corruption or a read error.
    pub problem: Option<String>,
}

/// What a recovery of the directory would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPreview {
    /// Start fresh: the directory holds no checkpoint.
    Fresh,
    /// Resume from a snapshot and replay the plans logged after it.
    Resume {
        /// The snapshot's batch time.
        snapshot: BatchTime,
        /// The batch times of the plans to replay, first and last, and how many.
        replay: Option<(BatchTime, BatchTime, usize)>,
        /// Where each partition's first new batch would start.
        positions: BTreeMap<TopicPartition, i64>,
    },
    /// Recovery would stop with this error.
    Fails(String),
}

/// Reads the checkpoint directory `dir` without changing it and without keeping its lock (it
/// takes a shared lock for an instant to see whether a weir runs there). While a weir runs, the
/// newest plan log may show a torn last record that is still being written.
pub fn inspect(dir: impl AsRef<Path>) -> Result<Inspection> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::checkpoint(
            dir,
            "no such checkpoint directory (see `pipeline.checkpoint_dir`)",
        ));
    }
    let lock = LockStatus::probe(dir)?;
    let listing = files::list(dir)?;
    let snapshots = listing
        .snapshots
        .iter()
        .rev()
        .map(|(t, path)| SnapshotReport {
            path: path.clone(),
            batch_time: *t,
            status: snapshot_status(path),
        })
        .collect();
    let plan_logs = listing
        .plan_logs
        .iter()
        .rev()
        .map(|(base, path)| plan_log_report(*base, path))
        .collect();
    let recovery = match recovery::find(dir, &listing) {
        Ok(None) => RecoveryPreview::Fresh,
        Ok(Some(found)) => {
            let mut chain = Chain::new(found.snapshot.batch_time, found.snapshot.positions);
            for plan in &found.plans {
                chain.advance(plan);
            }
            RecoveryPreview::Resume {
                snapshot: found.snapshot.batch_time,
                replay: found
                    .plans
                    .first()
                    .zip(found.plans.last())
                    .map(|(first, last)| (first.batch_time, last.batch_time, found.plans.len())),
                positions: chain.positions().clone(),
            }
        }
        Err(e) => RecoveryPreview::Fails(e.to_string()),
    };
    Ok(Inspection {
        dir: dir.to_path_buf(),
        lock,
        snapshots,
        plan_logs,
        temp_files: listing.temp_files,
        other_files: listing.other_files,
        recovery,
    })
}

fn snapshot_status(path: &Path) -> SnapshotStatus {
    let bytes = match files::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return SnapshotStatus::Invalid(e.to_string()),
    };
    match Snapshot::decode(&bytes) {
        Ok(snapshot) => SnapshotStatus::Valid(SnapshotSummary {
            fingerprint: snapshot.identity.fingerprint(),
            batch_interval: snapshot.batch_interval(),
            operator_state: snapshot
                .operator_state
                .iter()
                .map(|(id, state)| {
                    let summary = OperatorSummary {
                        schema_version: state.schema_version,
                        bytes: state.bytes.len(),
                    };
                    (id.clone(), summary)
                })
                .collect(),
            identity: snapshot.identity,
            positions: snapshot.positions,
        }),
        Err(SnapshotDefect::Damaged(why)) => SnapshotStatus::Invalid(why),
        Err(SnapshotDefect::NewerFormat(version)) => {
            SnapshotStatus::Invalid(SnapshotDefect::newer_format_error(path, version).to_string())
        }
    }
}

fn plan_log_report(base: BatchTime, path: &Path) -> PlanLogReport {
    let mut report = PlanLogReport {
        path: path.to_path_buf(),
        base,
        plans: 0,
        batches: None,
        problem: None,
    };
    let parsed = files::read(path)
        .and_then(|bytes| plan_log::parse(&bytes).map_err(|defect| defect.into_error(path)));
    match parsed {
        Ok(contents) => {
            report.plans = contents.plans.len();
            report.batches = contents
                .plans
                .first()
                .zip(contents.plans.last())
                .map(|(first, last)| (first.batch_time, last.batch_time));
            report.problem = contents.torn_tail.map(|tail| {
                format!(
                    "torn last record at byte offset {} ({}); dropped at the next start",
                    tail.offset, tail.reason
                )
            });
        }
        Err(e) => report.problem = Some(e.to_string()),
    }
    report
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "checkpoint {}: {}", self.dir.display(), self.lock)?;
        writeln!(f, "snapshots (newest first):")?;
        if self.snapshots.is_empty() {
            writeln!(f, "  none")?;
        }
        for snapshot in &self.snapshots {
            write!(f, "  {}  ", file_name(&snapshot.path))?;
            match &snapshot.status {
                SnapshotStatus::Invalid(why) => writeln!(f, "INVALID: {why}")?,
                SnapshotStatus::Valid(summary) => write_summary(f, summary)?,
            }
        }
        writeln!(f, "plan logs (newest first):")?;
        if self.plan_logs.is_empty() {
            writeln!(f, "  none")?;
        }
        for log in &self.plan_logs {
            write!(
                f,
                "  {}  {}",
                file_name(&log.path),
                count(log.plans, "plan")
            )?;
            if let Some((first, last)) = log.batches {
                write!(f, ", batches {first} to {last}")?;
            }
            match &log.problem {
                Some(problem) => writeln!(f, "; {problem}")?,
                None => writeln!(f)?,
            }
        }
        for (title, paths) in [
            (
                "temporary files of interrupted writes (removed at the next start)",
                &self.temp_files,
            ),
            ("files that are not part of a checkpoint", &self.other_files),
        ] {
            if !paths.is_empty() {
                let names: Vec<String> = paths.iter().map(|p| file_name(p)).collect();
                writeln!(f, "{title}: {}", names.join(", "))?;
            }
        }
        write!(f, "recovery: ")?;
        match &self.recovery {
            RecoveryPreview::Fresh => writeln!(f, "start fresh (no checkpoint yet)"),
            RecoveryPreview::Fails(error) => writeln!(f, "FAILS: {error}"),
            RecoveryPreview::Resume {
                snapshot,
                replay,
                positions,
            } => {
                write!(f, "resume from snapshot {snapshot}")?;
                match replay {
                    Some((first, last, n)) => {
                        let plans = count(*n, "logged plan");
                        write!(f, ", then replay {plans} (batches {first} to {last})")?;
                    }
                    None => write!(f, "; no logged plans to replay")?,
                }
                writeln!(f, "; new batches start at:")?;
                write_positions(f, positions)
            }
        }
    }
}

/// "1 plan", "2 plans".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn write_summary(f: &mut fmt::Formatter<'_>, summary: &SnapshotSummary) -> fmt::Result {
    writeln!(f, "valid")?;
    writeln!(
        f,
        "    {} (fingerprint {:016x})",
        summary.identity, summary.fingerprint
    )?;
    writeln!(
        f,
        "    batch interval {}",
        humantime::format_duration(summary.batch_interval)
    )?;
    if !summary.operator_state.is_empty() {
        let states: Vec<String> = summary
            .operator_state
            .iter()
            .map(|(id, op)| format!("{id} (schema {}, {} bytes)", op.schema_version, op.bytes))
            .collect();
        writeln!(f, "    state: {}", states.join(", "))?;
    }
    writeln!(f, "    positions:")?;
    write_positions(f, &summary.positions)
}

fn write_positions(
    f: &mut fmt::Formatter<'_>,
    positions: &BTreeMap<TopicPartition, i64>,
) -> fmt::Result {
    if positions.is_empty() {
        return writeln!(f, "      none");
    }
    for (tp, offset) in positions {
        writeln!(f, "      {tp}  {offset}")?;
    }
    Ok(())
}
