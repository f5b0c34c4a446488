//! What a batch does once its records are read: the [`BatchJob`] trait, and [`TableJob`], the
//! main job that writes each Kafka partition's records into a SQL table.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, Span};

use crate::batch::{PartitionBatch, RangeReader};
use crate::checkpoint::OperatorState;
use crate::error::{Error, Result};
use crate::plan::{BatchPlan, TopicPartition};
use crate::sink::{CommitKey, Sink, WriteOutcome, source_partition_id};

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records read from Kafka.
    pub records: u64,
    /// Rows written to the sink.
    pub rows: u64,
    /// Output partitions whose commit row was already there (a replay).
    pub already_committed: u64,
    /// Records skipped by `on_error = "skip"`.
    pub skipped: u64,
    /// Records sent to the dead-letter table.
    pub dead_letters: u64,
}

impl BatchOutcome {
    fn add(mut self, outcome: &WriteOutcome) -> Self {
        match outcome {
            WriteOutcome::Committed {
                rows,
                skipped,
                dead_letters,
            } => {
                self.rows += rows;
                self.skipped += skipped;
                self.dead_letters += dead_letters;
            }
            WriteOutcome::AlreadyCommitted => self.already_committed += 1,
        }
        self
    }
}

/// The work of one batch, given its plan and its records. The output of `(t, p)` must be a pure
/// function of the plan, the state after the previous batch and static inputs (invariant 3), and
/// every effect must go through a sink write keyed by `(pipeline, t, p)` (invariant 4), because
/// a batch may run again after a crash.
pub trait BatchJob: Send {
    /// Runs one batch.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelled mid-way, some output partitions may be committed and others
    /// not. That is safe for exactly-once (the batch is re-run from its logged plan), but the
    /// job's in-memory state must then be rebuilt from the checkpoint.
    fn run_batch(
        &mut self,
        plan: &BatchPlan,
        input: Vec<PartitionBatch>,
    ) -> impl Future<Output = Result<BatchOutcome>> + Send;

    /// Runs one batch whose records arrive while it runs: one reader per range of the plan.
    /// The default collects every range whole, then calls [`run_batch`](BatchJob::run_batch)
    /// (jobs that shuffle need the whole batch anyway).
    ///
    /// # Cancel safety
    ///
    /// As [`run_batch`](BatchJob::run_batch).
    fn run_streamed(
        &mut self,
        plan: &BatchPlan,
        input: Vec<RangeReader>,
    ) -> impl Future<Output = Result<BatchOutcome>> + Send {
        async move {
            let input =
                futures::future::try_join_all(input.into_iter().map(RangeReader::collect)).await?;
            self.run_batch(plan, input).await
        }
    }

    /// Whether a batch that failed with an error that may pass can simply run again from its
    /// plan in the same process: true for jobs that keep no state between batches.
    fn reruns(&self) -> bool {
        false
    }

    /// The state of every stateful operator after the last batch, keyed by operator id, for a
    /// snapshot. Encoding a large state takes CPU: a job with state does it on a blocking
    /// thread ([`tokio::task::spawn_blocking`]), not on the runtime's workers.
    ///
    /// # Errors
    ///
    /// A state that cannot be encoded fails with an error naming its operator: the scheduler
    /// then stops without writing the snapshot, so that recovery never finds a state it cannot
    /// read.
    fn state(&self) -> impl Future<Output = Result<BTreeMap<String, OperatorState>>> + Send {
        std::future::ready(Ok(BTreeMap::new()))
    }

    /// Replaces the operators' state with a snapshot's.
    fn restore(&mut self, state: BTreeMap<String, OperatorState>) -> Result<()> {
        let _ = state;
        Ok(())
    }
}

/// The tracing target of progress events, for a status line: after every batch the job emits a
/// debug event "Batch written." (`batch_time` in epoch ms, `records`, `rows`, `write_ms`), and a
/// running pipeline whose target is enabled measures its lag about once a second ("Lag.",
/// `total_lag`, `partitions`).
pub(crate) const PROGRESS_TARGET: &str = "weir::progress";

/// Where each Kafka partition's next batch starts, as far as the job has written.
pub(crate) type Positions = Arc<Mutex<BTreeMap<TopicPartition, i64>>>;

/// The main job: each Kafka partition's records go into the sink in one transaction keyed by
/// `(pipeline, t, partition)`, up to `parallelism` partitions at a time.
pub struct TableJob<S> {
    pipeline: String,
    sink: Arc<S>,
    parallelism: usize,
    positions: Option<Positions>,
}

impl<S: Sink + 'static> TableJob<S> {
    /// A job writing through `sink`, each Kafka partition as output partition
    /// [`source_partition_id`]`(tp)`.
    pub fn new(pipeline: String, sink: Arc<S>, parallelism: usize) -> Self {
        Self {
            pipeline,
            sink,
            parallelism: parallelism.max(1),
            positions: None,
        }
    }

    /// Keeps `positions` up to date after every batch (for the lag probe).
    #[must_use]
    pub(crate) fn with_positions(mut self, positions: Positions) -> Self {
        self.positions = Some(positions);
        self
    }

    fn report(&self, plan: &BatchPlan, outcome: &BatchOutcome, write: Duration) {
        tracing::debug!(
            target: PROGRESS_TARGET,
            message = "Batch written.",
            batch_time = plan.batch_time.as_millis(),
            records = outcome.records,
            rows = outcome.rows,
            write_ms = u64::try_from(write.as_millis()).unwrap_or(u64::MAX),
        );
        if let Some(positions) = &self.positions {
            // Poisoned only by a panic elsewhere: the positions themselves are whole.
            let mut positions = positions.lock().unwrap_or_else(PoisonError::into_inner);
            positions.extend(plan.end_positions());
        }
    }
}

impl<S: Sink + 'static> BatchJob for TableJob<S> {
    async fn run_batch(
        &mut self,
        plan: &BatchPlan,
        input: Vec<PartitionBatch>,
    ) -> Result<BatchOutcome> {
        let started = Instant::now();
        let records: u64 = input.iter().map(|b| b.records.len() as u64).sum();
        let writes = input
            .into_iter()
            .map(|batch| (plan.covered_by(&batch.range), batch))
            // Nothing read and nothing lost moves no offset: no transaction needed.
            .filter(|(ranges, _)| ranges.iter().any(|r| !r.is_empty()))
            .map(|(ranges, batch)| {
                let sink = Arc::clone(&self.sink);
                let key = CommitKey {
                    pipeline: self.pipeline.clone(),
                    batch_time: plan.batch_time,
                    partition_id: source_partition_id(&batch.range.tp),
                };
                // A task of its own, so that mapping records onto rows, which takes CPU, runs
                // on every core; dropped with the batch, it is aborted (its transaction rolls
                // back, or its commit row says it is done).
                let write = async move {
                    sink.write(&key, &ranges, std::slice::from_ref(&batch))
                        .await
                };
                AbortOnDropHandle::new(tokio::spawn(write.instrument(Span::current())))
            });
        let outcome = join_writes(plan, writes, self.parallelism).await?;
        let outcome = BatchOutcome { records, ..outcome };
        self.report(plan, &outcome, started.elapsed());
        Ok(outcome)
    }

    /// Each range goes into its output partition's transaction chunk by chunk as it is read.
    /// A writer beyond `parallelism` starts when one finishes; until then its range waits in
    /// the source (its channel full, the partition paused), which bounds memory.
    async fn run_streamed(
        &mut self,
        plan: &BatchPlan,
        input: Vec<RangeReader>,
    ) -> Result<BatchOutcome> {
        let started = Instant::now();
        let read = input.first().map(RangeReader::read_counter);
        let writes = input
            .into_iter()
            .map(|reader| (plan.covered_by(reader.range()), reader))
            // Nothing read and nothing lost moves no offset: no transaction needed.
            .filter(|(ranges, _)| ranges.iter().any(|r| !r.is_empty()))
            .map(|(ranges, reader)| {
                let sink = Arc::clone(&self.sink);
                let key = CommitKey {
                    pipeline: self.pipeline.clone(),
                    batch_time: plan.batch_time,
                    partition_id: source_partition_id(&reader.range().tp),
                };
                // A task of its own, so that mapping runs on every core; dropped with the
                // batch, it is aborted (its transaction rolls back).
                let write = async move { sink.write_stream(&key, &ranges, reader).await };
                AbortOnDropHandle::new(tokio::spawn(write.instrument(Span::current())))
            });
        let outcome = join_writes(plan, writes, self.parallelism).await?;
        let records = read.map_or(0, |r| r.load(Ordering::Relaxed));
        let outcome = BatchOutcome { records, ..outcome };
        self.report(plan, &outcome, started.elapsed());
        Ok(outcome)
    }

    fn reruns(&self) -> bool {
        true
    }
}

/// Runs the writes of a batch's output partitions, `parallelism` at a time, and adds up what
/// they did; the first failure fails the batch (the other writes, dropped, are aborted).
async fn join_writes(
    plan: &BatchPlan,
    writes: impl Iterator<Item = AbortOnDropHandle<Result<WriteOutcome>>>,
    parallelism: usize,
) -> Result<BatchOutcome> {
    stream::iter(writes)
        .buffer_unordered(parallelism)
        .map(|joined| {
            joined.map_err(|e| Error::TaskFailed {
                what: format!("a sink write of batch {}", plan.batch_time),
                message: e.to_string(),
            })?
        })
        .try_fold(BatchOutcome::default(), |acc, outcome| async move {
            Ok(acc.add(&outcome))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BatchTime;
    use crate::plan::OffsetRange;

    #[test]
    fn a_recorded_loss_is_part_of_the_write() {
        let tp = TopicPartition::new("t", 0);
        let read = OffsetRange::new(tp.clone(), 50, 60);
        let mut plan = BatchPlan::new(BatchTime::from_millis(1), vec![read.clone()]);
        assert_eq!(plan.covered_by(&read), vec![read.clone()]);
        let lost = OffsetRange::new(tp, 10, 50);
        plan.lost.push(lost.clone());
        plan.lost
            .push(OffsetRange::new(TopicPartition::new("t", 1), 0, 5));
        assert_eq!(plan.covered_by(&read), vec![lost, read]);
    }
}
