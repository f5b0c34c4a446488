//! An in-memory [`Source`] and [`Sink`], so that the scheduler's run and recovery loop is tested
//! without Kafka or a database: plan, log, run, snapshot; a failure between a logged plan and
//! its commit, then a recovery that executes the logged plans again verbatim; and contiguity
//! across the restart.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::job::{BatchJob, BatchOutcome};
use super::scheduler::{RunSummary, Schedule, Scheduler};
use crate::batch::{PartitionBatch, Record};
use crate::checkpoint::{CheckpointStore, PipelineIdentity, Recovery};
use crate::error::{Error, Result};
use crate::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
use crate::rate::{RateConfig, RateController};
use crate::sink::{CommitKey, CommittedPosition, CommittedPositions, Sink, WriteOutcome};
use crate::source::{OnDataLoss, Planner, Source, Watermarks};

/// Partitions and their records; every log starts at offset 0. Shared by the sources of
/// successive runs, as a topic outlives the processes that read it.
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<BTreeMap<TopicPartition, Vec<Record>>>>);

impl Log {
    /// Appends `count` records to each of `partitions` (created if new).
    fn append(&self, partitions: &[TopicPartition], count: usize) {
        let mut log = self.0.lock().unwrap();
        for tp in partitions {
            let records = log.entry(tp.clone()).or_default();
            for _ in 0..count {
                let offset = i64::try_from(records.len()).unwrap();
                records.push(Record {
                    offset,
                    timestamp: Some(offset),
                    key: None,
                    value: Some(format!("{tp}@{offset}").into_bytes()),
                    headers: Vec::new(),
                });
            }
        }
    }
}

/// Reads a [`Log`]; remembers every plan it fetched and whether it was a replay.
struct MemorySource {
    log: Log,
    assigned: BTreeMap<TopicPartition, i64>,
    fetched: Arc<Mutex<Vec<(BatchPlan, bool)>>>,
}

impl Source for MemorySource {
    async fn discover(&mut self) -> Result<BTreeSet<TopicPartition>> {
        Ok(self.log.0.lock().unwrap().keys().cloned().collect())
    }

    async fn watermarks(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Watermarks>> {
        let log = self.log.0.lock().unwrap();
        Ok(partitions
            .iter()
            .filter_map(|tp| {
                let end = i64::try_from(log.get(tp)?.len()).unwrap();
                Some((
                    tp.clone(),
                    Watermarks {
                        log_start: 0,
                        stable_end: end,
                    },
                ))
            })
            .collect())
    }

    async fn starting_positions(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        Ok(partitions.iter().map(|tp| (tp.clone(), 0)).collect())
    }

    fn assign(&mut self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        self.assigned = positions.clone();
        Ok(())
    }

    fn assigned(&self) -> BTreeSet<TopicPartition> {
        self.assigned.keys().cloned().collect()
    }

    async fn fetch(&mut self, plan: &BatchPlan, replay: bool) -> Result<Vec<PartitionBatch>> {
        self.fetched.lock().unwrap().push((plan.clone(), replay));
        let log = self.log.0.lock().unwrap();
        plan.ranges
            .iter()
            .map(|range| {
                let records = log.get(&range.tp).map_or(&[][..], Vec::as_slice);
                let at = |offset: i64| usize::try_from(offset).ok();
                let slice = at(range.from)
                    .zip(at(range.until))
                    .and_then(|(from, until)| records.get(from..until))
                    .ok_or_else(|| Error::Batch {
                        batch_time: plan.batch_time,
                        message: format!("{range} is beyond the log"),
                    })?;
                Ok(PartitionBatch {
                    range: range.clone(),
                    records: slice.to_vec(),
                })
            })
            .collect()
    }
}

/// What the in-memory database holds.
#[derive(Debug, Default)]
struct Tables {
    /// The commit table: the ranges of each committed key.
    commits: BTreeMap<(String, BatchTime, i64), Vec<OffsetRange>>,
    /// Where the next range of each `(pipeline, partition id, Kafka partition)` must start.
    next: BTreeMap<(String, i64, TopicPartition), (BatchTime, OffsetRange)>,
    /// The rows: the coordinates of each record written.
    rows: Vec<(TopicPartition, i64)>,
    /// Write calls so far.
    writes: usize,
    /// The write call (counting from 1) that fails, as a crash before its commit would.
    fail_at_write: Option<usize>,
}

/// A sink into [`Tables`], with a commit table and the contiguity check of the SQL sink.
#[derive(Debug, Clone, Default)]
struct MemorySink(Arc<Mutex<Tables>>);

impl Sink for MemorySink {
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }

    async fn write(
        &self,
        key: &CommitKey,
        ranges: &[OffsetRange],
        input: &[PartitionBatch],
    ) -> Result<WriteOutcome> {
        let mut tables = self.0.lock().unwrap();
        tables.writes += 1;
        if tables.fail_at_write == Some(tables.writes) {
            return Err(Error::Batch {
                batch_time: key.batch_time,
                message: "the database went away before the commit".to_owned(),
            });
        }
        let commit = (key.pipeline.clone(), key.batch_time, key.partition_id);
        if tables.commits.contains_key(&commit) {
            return Ok(WriteOutcome::AlreadyCommitted);
        }
        for range in ranges {
            let at = (key.pipeline.clone(), key.partition_id, range.tp.clone());
            if let Some((_, last)) = tables.next.get(&at)
                && last.until != range.from
            {
                return Err(Error::Contiguity {
                    what: format!("{}/{}", key.pipeline, range.tp),
                    detail: format!("{last} then {range}"),
                });
            }
        }
        for range in ranges {
            let at = (key.pipeline.clone(), key.partition_id, range.tp.clone());
            tables.next.insert(at, (key.batch_time, range.clone()));
        }
        let mut rows = 0;
        for batch in input {
            for record in &batch.records {
                tables.rows.push((batch.range.tp.clone(), record.offset));
                rows += 1;
            }
        }
        tables.commits.insert(commit, ranges.to_vec());
        Ok(WriteOutcome::Committed {
            rows,
            skipped: 0,
            dead_letters: 0,
        })
    }

    async fn committed_positions(&self, pipeline: &str) -> Result<CommittedPositions> {
        let tables = self.0.lock().unwrap();
        Ok(tables
            .next
            .iter()
            .filter(|((p, _, _), _)| p == pipeline)
            .map(|((_, id, tp), (batch_time, range))| {
                (
                    (*id, tp.clone()),
                    CommittedPosition {
                        batch_time: *batch_time,
                        range: range.clone(),
                    },
                )
            })
            .collect())
    }
}

/// Writes each Kafka partition's records through the sink, keyed by `(pipeline, t, partition)`.
struct MemoryJob {
    pipeline: String,
    sink: MemorySink,
}

impl BatchJob for MemoryJob {
    async fn run_batch(
        &mut self,
        plan: &BatchPlan,
        input: Vec<PartitionBatch>,
    ) -> Result<BatchOutcome> {
        let mut outcome = BatchOutcome::default();
        for batch in &input {
            outcome.records += u64::try_from(batch.records.len()).unwrap();
            let ranges = plan.covered_by(&batch.range);
            if ranges.iter().all(OffsetRange::is_empty) {
                continue;
            }
            let key = CommitKey::new(
                &self.pipeline,
                plan.batch_time,
                i64::from(batch.range.tp.partition),
            );
            match self
                .sink
                .write(&key, &ranges, std::slice::from_ref(batch))
                .await?
            {
                WriteOutcome::Committed { rows, .. } => outcome.rows += rows,
                WriteOutcome::AlreadyCommitted => outcome.already_committed += 1,
            }
        }
        Ok(outcome)
    }
}

const PIPELINE: &str = "memory";
const INTERVAL: Duration = Duration::from_millis(20);
/// 500 records/s over 20 ms: 10 records per partition and batch.
const PER_BATCH: i64 = 10;

fn partitions() -> Vec<TopicPartition> {
    vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)]
}

fn identity() -> PipelineIdentity {
    PipelineIdentity::new(PIPELINE, ["t"], "memory")
}

/// One process's worth of pipeline over the shared `log` and `sink`.
struct Run {
    fetched: Arc<Mutex<Vec<(BatchPlan, bool)>>>,
    result: Result<RunSummary>,
}

async fn run(dir: &Path, log: &Log, sink: &MemorySink, max_batches: u64) -> Run {
    let fetched = Arc::new(Mutex::new(Vec::new()));
    let source = MemorySource {
        log: log.clone(),
        assigned: BTreeMap::new(),
        fetched: Arc::clone(&fetched),
    };
    let job = MemoryJob {
        pipeline: PIPELINE.to_owned(),
        sink: sink.clone(),
    };
    let store = CheckpointStore::open(dir)
        .unwrap()
        .with_keep_snapshots(NonZeroUsize::new(1_000).unwrap());
    let rate = RateConfig {
        max_rate_per_partition: Some(500),
        ..RateConfig::default()
    };
    let schedule = Schedule {
        pipeline: PIPELINE.to_owned(),
        batch_interval: INTERVAL,
        // Only the snapshots of a start and of a graceful stop.
        checkpoint_interval: Duration::from_secs(3_600),
        metadata_refresh_interval: Duration::from_secs(3_600),
        commit_offsets: false,
        identity: identity(),
        max_batches: Some(max_batches),
    };
    let scheduler = Scheduler::new(
        schedule,
        source,
        Planner::new(OnDataLoss::Fail),
        RateController::new(rate, INTERVAL).unwrap(),
        store,
        job,
        CancellationToken::new(),
    );
    let result = scheduler.run().await;
    Run { fetched, result }
}

/// The plans fetched, new ones (`replay` false) or replayed ones.
fn plans(run: &Run, replay: bool) -> Vec<BatchPlan> {
    run.fetched
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, r)| *r == replay)
        .map(|(plan, _)| plan.clone())
        .collect()
}

/// What a new process finds in the checkpoint directory.
fn recovered(dir: &Path) -> (BTreeMap<TopicPartition, i64>, BatchTime, Vec<BatchPlan>) {
    match CheckpointStore::open(dir)
        .unwrap()
        .recover(&identity())
        .unwrap()
    {
        Recovery::Resume { snapshot, plans } => (snapshot.positions, snapshot.batch_time, plans),
        Recovery::Fresh => panic!("no checkpoint in {}", dir.display()),
    }
}

/// Asserts that `plans` chain without gap or overlap from `starts`, and returns where they end.
fn assert_chain(
    plans: &[BatchPlan],
    starts: &BTreeMap<TopicPartition, i64>,
) -> BTreeMap<TopicPartition, i64> {
    let mut at = starts.clone();
    for plan in plans {
        for range in &plan.ranges {
            assert_eq!(
                at.get(&range.tp),
                Some(&range.from),
                "{plan:?} after {at:?}"
            );
            at.insert(range.tp.clone(), range.until);
        }
    }
    at
}

/// Asserts that the sink holds each offset below `ends` exactly once, and nothing else.
fn assert_rows_once(sink: &MemorySink, ends: &BTreeMap<TopicPartition, i64>) {
    let mut rows = sink.0.lock().unwrap().rows.clone();
    rows.sort();
    let expected: Vec<(TopicPartition, i64)> = ends
        .iter()
        .flat_map(|(tp, &end)| (0..end).map(move |offset| (tp.clone(), offset)))
        .collect();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn batches_are_planned_logged_run_and_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    log.append(&partitions(), 100);
    let sink = MemorySink::default();

    let first = run(dir.path(), &log, &sink, 3).await;
    let summary = first.result.as_ref().unwrap();
    assert_eq!((summary.batches, summary.replayed), (3, 0));
    let new = plans(&first, false);
    assert_eq!(new.len(), 3);
    assert!(plans(&first, true).is_empty());
    let zero: BTreeMap<TopicPartition, i64> = partitions().into_iter().map(|tp| (tp, 0)).collect();
    let ends = assert_chain(&new, &zero);
    for plan in &new {
        assert!(
            plan.ranges.iter().all(|r| r.until - r.from == PER_BATCH),
            "{plan:?}"
        );
    }
    // Each batch time is later than the one before, on the grid of the interval.
    assert!(new.windows(2).all(|w| w[0].batch_time < w[1].batch_time));
    assert_eq!(summary.last_batch, new.last().map(|p| p.batch_time));
    assert_rows_once(&sink, &ends);
    assert_eq!(sink.0.lock().unwrap().commits.len(), 6);

    // The graceful stop wrote a snapshot at the last batch: nothing is left to replay.
    let (positions, at, logged) = recovered(dir.path());
    assert_eq!((positions, Some(at)), (ends.clone(), summary.last_batch));
    assert!(logged.is_empty(), "{logged:?}");

    // A restart goes on from there.
    let second = run(dir.path(), &log, &sink, 2).await;
    let summary = second.result.as_ref().unwrap();
    assert_eq!((summary.batches, summary.replayed), (2, 0));
    let ends = assert_chain(&plans(&second, false), &ends);
    assert_rows_once(&sink, &ends);
}

#[tokio::test]
async fn a_failure_after_the_plan_is_logged_is_recovered_by_replaying_it_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    log.append(&partitions(), 100);
    let sink = MemorySink::default();
    // Batch 3 writes partition 0 (write 5), then fails on partition 1 (write 6): its plan is
    // logged, half of it committed.
    sink.0.lock().unwrap().fail_at_write = Some(6);

    let crashed = run(dir.path(), &log, &sink, 5).await;
    let error = crashed.result.as_ref().unwrap_err();
    assert!(error.to_string().contains("went away"), "{error}");
    let attempted = plans(&crashed, false);
    assert_eq!(attempted.len(), 3);
    let zero: BTreeMap<TopicPartition, i64> = partitions().into_iter().map(|tp| (tp, 0)).collect();
    let ends = assert_chain(&attempted, &zero);
    {
        let tables = sink.0.lock().unwrap();
        assert_eq!(
            tables.commits.len(),
            5,
            "batch 3 of partition 1 never committed"
        );
        assert_eq!(tables.rows.len(), 50);
    }

    // Every plan run since the start's snapshot is in the log, exactly as it was run.
    let (positions, _, logged) = recovered(dir.path());
    assert_eq!(positions, zero);
    assert_eq!(logged, attempted);

    // More records arrive while the pipeline is down: replaying must not take them in.
    log.append(&partitions(), 50);
    sink.0.lock().unwrap().fail_at_write = None;
    let resumed = run(dir.path(), &log, &sink, 2).await;
    let summary = resumed.result.as_ref().unwrap();
    assert_eq!((summary.replayed, summary.batches), (3, 2));
    assert_eq!(plans(&resumed, true), attempted, "replayed verbatim");
    // New batches start where the logged ones end, and later than they ran.
    let new = plans(&resumed, false);
    let ends = assert_chain(&new, &ends);
    assert!(new[0].batch_time > attempted[2].batch_time);
    // Batches 1 and 2 and half of 3 were found committed; the rest was written once.
    assert_rows_once(&sink, &ends);
    let commits = sink.0.lock().unwrap().commits.len();
    assert_eq!(commits, 10);
}
