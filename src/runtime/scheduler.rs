//! The scheduler: Spark's JobGenerator, done right.
//!
//! Batches run on a fixed grid of the batch interval, one at a time. For each tick `t` the
//! scheduler asks the source for watermarks, the rate controller for caps and the planner for
//! `P(t)`; it appends `P(t)` to the plan log and fsyncs it before anything else happens
//! (invariant 2), then reads the ranges and hands them to the job. Every checkpoint interval it
//! writes a snapshot. After downtime it does not create one batch per missed interval: the next
//! batch time is the current grid point, and the caps spread the backlog over batches.
//!
//! Recovery runs before the first tick: the newest valid snapshot is loaded, the plans logged
//! after it are executed again verbatim (the sink's commit table turns repeated writes into
//! no-ops, and state is recomputed), and only then is anything planned anew.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, debug_span, field, info, info_span, warn};

use super::job::{BatchJob, BatchOutcome};
use crate::batch::{TakenCount, range_channels};
use crate::blocking::run_blocking;
use crate::checkpoint::{CheckpointStore, PipelineIdentity, Recovery, Snapshot};
use crate::error::{Error, Result};
use crate::ops::metrics as m;
use crate::ops::status::{BatchPoint, CommitPoint, PartitionLag, PipelineStatus};
use crate::plan::{BatchPlan, BatchTime, TopicPartition, interval_millis};
use crate::rate::{BatchStats, RateController};
use crate::sink::RetryPolicy;
use crate::source::{Planner, Source, Watermarks, lags};

/// Chunks a range's channel holds between the source and its writer.
const CHUNKS_IN_FLIGHT: usize = 2;

/// Time between attempts to write a checkpoint that failed with an error that may pass.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// Timing of a pipeline.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The pipeline's stable name.
    pub pipeline: String,
    /// Time between batches.
    pub batch_interval: Duration,
    /// Time between snapshots (a multiple of the batch interval).
    pub checkpoint_interval: Duration,
    /// How often to look for new partitions.
    pub metadata_refresh_interval: Duration,
    /// Commit finished offsets to the consumer group (for lag tools only).
    pub commit_offsets: bool,
    /// What the checkpoint must belong to.
    pub identity: PipelineIdentity,
    /// Stop after this many batches planned anew (tests and benchmarks); `None` runs until
    /// shutdown.
    pub max_batches: Option<u64>,
}

/// What a run did, for the log and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Logged plans executed again during recovery.
    pub replayed: u64,
    /// Batches planned and run anew.
    pub batches: u64,
    /// Records read in new batches.
    pub records: u64,
    /// The last batch time completed.
    pub last_batch: Option<BatchTime>,
}

/// Runs one pipeline until shutdown.
pub struct Scheduler<S, J> {
    schedule: Schedule,
    source: S,
    planner: Planner,
    rate: RateController,
    store: Arc<Mutex<CheckpointStore>>,
    job: J,
    shutdown: CancellationToken,
    /// How often a failed batch runs again (see [`BatchJob::reruns`]).
    rerun: RetryPolicy,
    ops: Arc<PipelineStatus>,
}

impl<S: Source, J: BatchJob> Scheduler<S, J> {
    /// A scheduler over an open checkpoint store.
    pub fn new(
        schedule: Schedule,
        source: S,
        planner: Planner,
        rate: RateController,
        store: CheckpointStore,
        job: J,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            ops: crate::ops::status::status(&schedule.pipeline),
            schedule,
            source,
            planner,
            rate,
            store: Arc::new(Mutex::new(store)),
            job,
            shutdown,
            rerun: RetryPolicy::default(),
        }
    }

    /// Recovers, then runs batches until the shutdown token is cancelled (or `max_batches` is
    /// reached), then finishes the running batch and writes a snapshot.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense of finishing work: dropping the future mid-batch is safe for
    /// exactly-once (the next start re-runs the logged plan), but skips the final snapshot. Use
    /// the shutdown token to stop gracefully.
    pub async fn run(mut self) -> Result<RunSummary> {
        let mut summary = RunSummary::default();
        let interval = self.schedule.batch_interval;
        let (mut last_t, mut last_snapshot) = self.recover(&mut summary).await?;
        self.ops.set_recovered();
        let mut known: BTreeSet<TopicPartition> =
            self.planner.positions().keys().cloned().collect();
        let mut last_refresh = Instant::now();

        while !self.shutdown.is_cancelled()
            && self
                .schedule
                .max_batches
                .is_none_or(|max| summary.batches < max)
        {
            let t = next_batch_time(last_t, now_millis(), interval);
            if !self.sleep_until(t).await {
                break;
            }
            let scheduling_delay = Duration::from_millis(
                u64::try_from(now_millis().saturating_sub(t.as_millis())).unwrap_or(0),
            );
            let started = Instant::now();

            if last_refresh.elapsed() >= self.schedule.metadata_refresh_interval {
                last_refresh = Instant::now();
                let found = self.source.discover().await?;
                for tp in found.difference(&known) {
                    info!(message = "Found a new partition; it starts at its first record.", partition = %tp);
                }
                known.extend(found);
            }
            let watermarks = self.source.watermarks(&known).await?;
            let caps = self
                .rate
                .caps(&lags(self.planner.positions(), &watermarks), interval);
            // The first batch after a start is kept small, so that the first rows land within
            // about a second even on a backlog; later ones take what the caps allow (a batch
            // streams, so memory does not depend on its size).
            let caps = if summary.batches == 0 {
                limit_batch(caps)
            } else {
                caps
            };
            self.ops.set_rate_limit(self.rate.rate());
            let plan = self.planner.plan(t, &watermarks, &caps)?;
            let lag = Lag::measure(&lags(&plan.end_positions(), &watermarks));
            let span = batch_span(&plan, scheduling_delay, &lag);
            self.log_plan(&plan).instrument(span.clone()).await?;
            self.planner.advance(&plan)?;
            fail::fail_point!("runtime::after_plan_logged");

            let outcome = self.execute(&plan, false).instrument(span.clone()).await?;
            fail::fail_point!("runtime::after_sink_before_snapshot");
            let processing = started.elapsed();
            last_t = t;
            summary.batches += 1;
            summary.records += outcome.records;
            summary.last_batch = Some(t);
            self.rate.update(BatchStats {
                batch_time: t,
                records: outcome.records,
                processing_delay: processing,
                scheduling_delay,
            });
            span.in_scope(|| log_batch(&plan, &outcome, processing, &span));
            self.report(&plan, &outcome, &watermarks, processing, scheduling_delay);

            if t.as_millis() - last_snapshot.as_millis()
                >= interval_millis(self.schedule.checkpoint_interval)
            {
                self.snapshot(t).await?;
                last_snapshot = t;
            }
            if self.schedule.commit_offsets
                && let Err(error) = self.source.commit_offsets(self.planner.positions())
            {
                warn!(message = "Could not commit offsets to the consumer group; lag tools will lag.", %error);
            }
        }
        fail::fail_point!("runtime::during_graceful_stop");
        if last_t > last_snapshot {
            self.snapshot(last_t).await?;
        }
        info!(
            message = "Pipeline stopped.",
            pipeline = %self.schedule.pipeline,
            batches = summary.batches,
            replayed = summary.replayed,
            last_batch = ?summary.last_batch.map(BatchTime::as_millis),
        );
        Ok(summary)
    }

    /// Loads the checkpoint and re-executes the logged plans; returns the last batch time and
    /// the time of the newest snapshot.
    async fn recover(&mut self, summary: &mut RunSummary) -> Result<(BatchTime, BatchTime)> {
        let store = Arc::clone(&self.store);
        let identity = self.schedule.identity.clone();
        let recovery = run_blocking("recovering the checkpoint", move || {
            lock(&store)?.recover(&identity)
        })
        .await?;
        match recovery {
            Recovery::Fresh => {
                let partitions = self.source.discover().await?;
                let positions = self.source.starting_positions(&partitions).await?;
                let t = BatchTime::floor(now_millis(), self.schedule.batch_interval);
                self.planner.restore(positions.clone());
                self.source.assign(&positions)?;
                self.snapshot(t).await?;
                info!(message = "Started a new pipeline.", pipeline = %self.schedule.pipeline, partitions = positions.len());
                Ok((t, t))
            }
            Recovery::Resume { snapshot, plans } => {
                // MUTANT (scripts/chaos --mutant replan): logged plans are re-planned, not replayed.
                #[cfg(feature = "mutant-replan")]
                let plans: Vec<BatchPlan> = plans.into_iter().take(0).collect();
                self.job.restore(snapshot.operator_state.clone())?;
                let mut positions = snapshot.positions.clone();
                for plan in &plans {
                    for range in &plan.ranges {
                        positions.entry(range.tp.clone()).or_insert(range.from);
                    }
                }
                self.source.assign(&positions)?;
                self.planner.restore(snapshot.positions.clone());
                let mut last_t = snapshot.batch_time;
                for plan in &plans {
                    let span = info_span!("replay", batch_time = %plan.batch_time);
                    self.execute(plan, true).instrument(span).await?;
                    self.planner.advance(plan)?;
                    last_t = plan.batch_time;
                    summary.replayed += 1;
                    fail::fail_point!("runtime::during_recovery");
                }
                info!(
                    message = "Recovered from the checkpoint.",
                    pipeline = %self.schedule.pipeline,
                    snapshot = %snapshot.batch_time,
                    replayed = plans.len(),
                );
                Ok((last_t, snapshot.batch_time))
            }
        }
    }

    /// Runs a batch; a job that keeps no state runs it again from its plan after an error that
    /// may pass (a database restart mid-stream), re-reading its ranges: committed output
    /// partitions find their commit rows, the others write again.
    async fn execute(&mut self, plan: &BatchPlan, replay: bool) -> Result<BatchOutcome> {
        let mut attempt = 0;
        // Not ready while a failed batch waits to run again.
        let mut _failing = None;
        loop {
            attempt += 1;
            let error = match self.execute_once(plan, replay).await {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            if !self.job.reruns()
                || !error.is_retryable()
                || attempt >= self.rerun.max_attempts
                || self.shutdown.is_cancelled()
            {
                return Err(error);
            }
            let wait = self.rerun.backoff(attempt);
            metrics::counter!(m::SINK_RETRIES, "pipeline" => self.schedule.pipeline.clone(), "cause" => m::retry_cause(&error))
                .increment(1);
            _failing = Some(self.ops.sink_retrying(format!(
                "batch {} failed ({}); running it again, attempt {} of {}",
                plan.batch_time,
                m::retry_cause(&error),
                attempt + 1,
                self.rerun.max_attempts
            )));
            warn!(message = "Batch failed; running it again from its plan.", batch_time = %plan.batch_time, attempt, ?wait, %error);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => return Err(error),
            }
            // The source's buffers are in an unknown state: read the ranges again from their
            // starts.
            let positions = plan.ranges.iter().map(|r| (r.tp.clone(), r.from)).collect();
            self.source.assign(&positions)?;
        }
    }

    /// Reads the plan's ranges and runs the job on them at once: each range streams from the
    /// source into the job. A fetch that fails ends the batch with its error (the job's writes,
    /// dropped, roll back); a job that fails stops the fetch.
    async fn execute_once(&mut self, plan: &BatchPlan, replay: bool) -> Result<BatchOutcome> {
        let assigned = self.source.assigned();
        if plan.ranges.iter().any(|r| !assigned.contains(&r.tp)) {
            // A partition appeared: assign everything again at the plan's starting offsets.
            let positions = plan.ranges.iter().map(|r| (r.tp.clone(), r.from)).collect();
            self.source.assign(&positions)?;
        }
        let (senders, readers) = range_channels(plan.batch_time, &plan.ranges, CHUNKS_IN_FLIGHT);
        let counts: Vec<_> = readers
            .iter()
            .map(|r| (r.range().tp.clone(), r.taken_count()))
            .collect();
        let fetch = self.source.fetch_into(plan, replay, senders);
        let run = self.job.run_streamed(plan, readers);
        tokio::pin!(fetch, run);
        let (read, outcome) = tokio::select! {
            biased;
            read = &mut fetch => {
                let read = read?;
                fail::fail_point!("runtime::after_fetch");
                (read, run.await?)
            }
            outcome = &mut run => {
                let outcome = outcome?;
                (fetch.await?, outcome)
            }
        };
        count_input(&self.schedule.pipeline, &counts);
        Ok(BatchOutcome {
            records: read,
            ..outcome
        })
    }

    async fn log_plan(&self, plan: &BatchPlan) -> Result<()> {
        let record = plan.clone();
        self.write_checkpoint("logging a plan", move |store| store.append_plan(&record))
            .await?;
        if is_idle(plan) {
            debug!(message = "Planned batch.", batch_time = %plan.batch_time);
        } else {
            info!(message = "Planned batch.", batch_time = %plan.batch_time, planned = plan.record_upper_bound());
        }
        Ok(())
    }

    async fn snapshot(&self, t: BatchTime) -> Result<()> {
        let snapshot = Snapshot {
            batch_interval_ms: u64::try_from(interval_millis(self.schedule.batch_interval))
                .unwrap_or(u64::MAX),
            batch_time: t,
            positions: self.planner.positions().clone(),
            // A state that cannot be encoded stops the run; no snapshot is written.
            operator_state: self.job.state().await?,
            identity: self.schedule.identity.clone(),
        };
        self.write_checkpoint("writing a snapshot", move |store| {
            store.write_snapshot(&snapshot)
        })
        .await?;
        self.report_checkpoint_size().await;
        Ok(())
    }

    /// Sets the checkpoint size gauge to the size of the checkpoint directory's files.
    async fn report_checkpoint_size(&self) {
        let store = Arc::clone(&self.store);
        let size = run_blocking("measuring the checkpoint", move || {
            let dir = lock(&store)?.dir().to_owned();
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            Ok(entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|meta| meta.len())
                .sum::<u64>())
        })
        .await;
        if let Ok(size) = size {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(m::CHECKPOINT_BYTES, "pipeline" => self.schedule.pipeline.clone())
                .set(size as f64);
        }
    }

    /// Metrics and the status page's record of a finished batch.
    fn report(
        &self,
        plan: &BatchPlan,
        outcome: &BatchOutcome,
        watermarks: &BTreeMap<TopicPartition, Watermarks>,
        processing: Duration,
        scheduling_delay: Duration,
    ) {
        let pipeline = &self.schedule.pipeline;
        metrics::counter!(m::BATCHES, "pipeline" => pipeline.clone()).increment(1);
        metrics::histogram!(m::BATCH_PROCESSING, "pipeline" => pipeline.clone()).record(processing);
        metrics::histogram!(m::BATCH_SCHEDULING_DELAY, "pipeline" => pipeline.clone())
            .record(scheduling_delay);
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let commit = (!is_idle(plan)).then(|| CommitPoint {
            batch_time_ms: plan.batch_time.as_millis(),
            committed_at_ms: now_millis(),
            ranges: plan
                .ranges
                .iter()
                .filter(|r| !r.is_empty())
                .map(ToString::to_string)
                .collect(),
            records: outcome.records,
            rows: outcome.rows,
            already_committed: outcome.already_committed,
        });
        self.ops.record_batch(
            BatchPoint {
                time_ms: plan.batch_time.as_millis(),
                records: outcome.records,
                rows: outcome.rows,
                processing_ms: millis(processing),
                scheduling_delay_ms: millis(scheduling_delay),
            },
            commit,
        );
        self.ops.set_lag(
            plan.end_positions()
                .into_iter()
                .filter_map(|(tp, position)| {
                    let end = watermarks.get(&tp)?.stable_end;
                    Some(PartitionLag {
                        lag: u64::try_from(end.saturating_sub(position)).unwrap_or(0),
                        topic: tp.topic,
                        partition: tp.partition,
                        position,
                        end,
                    })
                }),
        );
    }

    /// Runs a checkpoint write, and while it fails with an error that may pass (a full disk),
    /// tries again every second: the pipeline pauses instead of exiting, and resumes by itself
    /// once space is freed. Nothing is planned or written to the sink while it waits, so the
    /// sink stops advancing too. Shutdown ends the wait with the error.
    async fn write_checkpoint(
        &self,
        what: &'static str,
        write: impl Fn(&mut CheckpointStore) -> Result<()> + Send + Sync + 'static,
    ) -> Result<()> {
        let write = Arc::new(write);
        let mut paused = false;
        loop {
            let store = Arc::clone(&self.store);
            let attempt = Arc::clone(&write);
            let started = Instant::now();
            let result = run_blocking(what, move || attempt(&mut *lock(&store)?)).await;
            metrics::histogram!(m::CHECKPOINT_WRITE, "pipeline" => self.schedule.pipeline.clone())
                .record(started.elapsed());
            match result {
                Ok(()) => {
                    if paused {
                        self.ops.set_paused(None);
                        info!(message = "Checkpoint writes succeed again; resuming.", pipeline = %self.schedule.pipeline);
                    }
                    return Ok(());
                }
                Err(error) if error.is_retryable() => {
                    if !paused {
                        warn!(
                            message = "Checkpoint directory is full or failing; pausing until a write succeeds. Free space to resume.",
                            pipeline = %self.schedule.pipeline,
                            %error,
                        );
                        paused = true;
                        self.ops
                            .set_paused(Some("the checkpoint directory is full or failing"));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(CHECKPOINT_RETRY) => {}
                        () = self.shutdown.cancelled() => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Sleeps until the wall clock reaches `t`; false when shutdown came first.
    async fn sleep_until(&self, t: BatchTime) -> bool {
        let wait = u64::try_from(t.as_millis().saturating_sub(now_millis())).unwrap_or(0);
        if wait == 0 {
            return !self.shutdown.is_cancelled();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait)) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// Records the first batch after a start covers at most, over all partitions, whatever the
/// rate caps.
const MAX_BATCH_RECORDS: u64 = 100_000;

/// `caps`, each at most its share of [`MAX_BATCH_RECORDS`] (at least 1,000 records).
fn limit_batch(
    caps: BTreeMap<TopicPartition, Option<u64>>,
) -> BTreeMap<TopicPartition, Option<u64>> {
    let share = (MAX_BATCH_RECORDS / caps.len().max(1) as u64).max(1_000);
    caps.into_iter()
        .map(|(tp, cap)| (tp, Some(cap.map_or(share, |c| c.min(share)))))
        .collect()
}

/// Counts the records and bytes read, per partition.
fn count_input(pipeline: &str, counts: &[(TopicPartition, Arc<TakenCount>)]) {
    for (tp, count) in counts {
        let (records, bytes) = count.get();
        let labels = [
            ("pipeline", pipeline.to_owned()),
            ("topic", tp.topic.clone()),
            ("partition", tp.partition.to_string()),
        ];
        metrics::counter!(m::RECORDS_READ, &labels).increment(records);
        metrics::counter!(m::BYTES_READ, &labels).increment(bytes);
    }
}

/// The next batch time after `last`: one interval later, or the current grid point when the
/// pipeline is behind, so missed intervals are not each given a batch.
fn next_batch_time(last: BatchTime, now_ms: i64, interval: Duration) -> BatchTime {
    last.next(interval).max(BatchTime::floor(now_ms, interval))
}

/// The records waiting beyond a batch: what its partitions still hold after their ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Lag {
    /// Over all partitions.
    total: u64,
    /// The partition with the most, and how many.
    max: Option<(TopicPartition, u64)>,
}

impl Lag {
    fn measure(lags: &BTreeMap<TopicPartition, u64>) -> Self {
        let max = lags
            .iter()
            .max_by_key(|&(tp, &lag)| (lag, std::cmp::Reverse(tp)))
            .filter(|&(_, &lag)| lag > 0)
            .map(|(tp, &lag)| (tp.clone(), lag));
        Self {
            total: lags.values().sum(),
            max,
        }
    }
}

/// True when a batch covers no offset: an idle pipeline's batches, logged at debug level so
/// that they do not flood the log.
fn is_idle(plan: &BatchPlan) -> bool {
    plan.record_upper_bound() == 0 && plan.lost.is_empty()
}

/// The span of one batch: its time, ranges, scheduling delay and the lag left after it; the
/// records read and the processing time are recorded when it is done.
fn batch_span(plan: &BatchPlan, scheduling_delay: Duration, lag: &Lag) -> Span {
    let ranges: Vec<String> = plan.ranges.iter().map(ToString::to_string).collect();
    let (lag_max_partition, lag_max) = match &lag.max {
        Some((tp, lag)) => (tp.to_string(), *lag),
        None => (String::new(), 0),
    };
    macro_rules! span_at {
        ($span:ident) => {
            $span!(
                "batch",
                batch_time = %plan.batch_time,
                ranges = %ranges.join(" "),
                planned = plan.record_upper_bound(),
                scheduling_delay_ms = scheduling_delay.as_millis(),
                lag_total = lag.total,
                lag_max,
                lag_max_partition = %lag_max_partition,
                records = field::Empty,
                processing_ms = field::Empty,
            )
        };
    }
    if is_idle(plan) {
        span_at!(debug_span)
    } else {
        span_at!(info_span)
    }
}

fn log_batch(plan: &BatchPlan, outcome: &BatchOutcome, processing: Duration, span: &Span) {
    span.record("records", outcome.records);
    span.record("processing_ms", processing.as_millis());
    macro_rules! done_at {
        ($event:ident) => {
            $event!(
                message = "Batch done.",
                batch_time = %plan.batch_time,
                records = outcome.records,
                rows = outcome.rows,
                replayed_partitions = outcome.already_committed,
                skipped = outcome.skipped,
                dead_letters = outcome.dead_letters,
                processing_ms = processing.as_millis(),
            )
        };
    }
    if is_idle(plan) {
        done_at!(debug);
    } else {
        done_at!(info);
    }
}

pub(super) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lock(store: &Mutex<CheckpointStore>) -> Result<std::sync::MutexGuard<'_, CheckpointStore>> {
    store.lock().map_err(|_| Error::TaskFailed {
        what: "a checkpoint write".to_owned(),
        message: "an earlier checkpoint operation panicked".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::OffsetRange;

    #[test]
    fn a_batch_is_limited_whatever_the_caps() {
        let tp = |p| TopicPartition::new("t", p);
        let caps = BTreeMap::from([(tp(0), None), (tp(1), Some(5)), (tp(2), Some(1_000_000))]);
        let limited = limit_batch(caps);
        let share = MAX_BATCH_RECORDS / 3;
        assert_eq!(
            limited,
            BTreeMap::from([(tp(0), Some(share)), (tp(1), Some(5)), (tp(2), Some(share))])
        );
    }

    #[test]
    fn no_flood_of_missed_batches() {
        let i = Duration::from_millis(100);
        let last = BatchTime::from_millis(1_000);
        assert_eq!(next_batch_time(last, 1_050, i).as_millis(), 1_100);
        // Ten seconds of downtime give one batch at the current grid point, not a hundred.
        assert_eq!(next_batch_time(last, 11_042, i).as_millis(), 11_000);
    }

    #[test]
    fn lag_is_totalled_and_its_largest_partition_named() {
        let tp = |p| TopicPartition::new("t", p);
        let lag = Lag::measure(&BTreeMap::from([(tp(0), 5), (tp(1), 40), (tp(2), 40)]));
        assert_eq!(lag.total, 85);
        // Ties go to the first partition, so the log names a stable one.
        assert_eq!(lag.max, Some((tp(1), 40)));
        let idle = Lag::measure(&BTreeMap::from([(tp(0), 0)]));
        assert_eq!(idle, Lag::default());
    }

    #[test]
    fn only_batches_without_offsets_are_idle() {
        let tp = TopicPartition::new("t", 0);
        let at = BatchTime::from_millis(100);
        assert!(is_idle(&BatchPlan::new(
            at,
            vec![OffsetRange::new(tp.clone(), 7, 7)]
        )));
        assert!(!is_idle(&BatchPlan::new(
            at,
            vec![OffsetRange::new(tp.clone(), 7, 8)]
        )));
        let mut skipped = BatchPlan::new(at, vec![OffsetRange::new(tp.clone(), 9, 9)]);
        skipped.lost = vec![OffsetRange::new(tp, 7, 9)];
        assert!(
            !is_idle(&skipped),
            "a recorded gap is worth a line at info level"
        );
    }
}
