//! What a batch does once its records are read: the [`BatchJob`] trait, and [`TableJob`], the
//! main job that writes each Kafka partition's records into a SQL table.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::checkpoint::OperatorState;
use crate::error::Result;
use crate::plan::BatchPlan;
use crate::sink::{CommitKey, Sink, WriteOutcome, source_partition_id};
use crate::source::PartitionBatch;

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

    /// The state of every stateful operator after the last batch, keyed by operator id.
    fn state(&self) -> BTreeMap<String, OperatorState> {
        BTreeMap::new()
    }

    /// Replaces the operators' state with a snapshot's.
    fn restore(&mut self, state: BTreeMap<String, OperatorState>) -> Result<()> {
        let _ = state;
        Ok(())
    }
}

/// The main job: each Kafka partition's records go into the sink in one transaction keyed by
/// `(pipeline, t, partition)`, up to `parallelism` partitions at a time.
pub struct TableJob<S> {
    pipeline: String,
    topics: Vec<String>,
    sink: Arc<S>,
    parallelism: usize,
}

impl<S: Sink + 'static> TableJob<S> {
    /// A job writing through `sink`; `topics` in configuration order (the index of a topic is part
    /// of its partitions' ids).
    pub fn new(pipeline: String, topics: Vec<String>, sink: Arc<S>, parallelism: usize) -> Self {
        Self {
            pipeline,
            topics,
            sink,
            parallelism: parallelism.max(1),
        }
    }
}

impl<S: Sink + 'static> BatchJob for TableJob<S> {
    async fn run_batch(
        &mut self,
        plan: &BatchPlan,
        input: Vec<PartitionBatch>,
    ) -> Result<BatchOutcome> {
        let records: u64 = input.iter().map(|b| b.records.len() as u64).sum();
        let writes = input
            .into_iter()
            // An empty range moves no offset and writes nothing: no transaction needed.
            .filter(|batch| !batch.range.is_empty())
            .map(|batch| {
                let sink = Arc::clone(&self.sink);
                let key = CommitKey {
                    pipeline: self.pipeline.clone(),
                    batch_time: plan.batch_time,
                    partition_id: source_partition_id(&self.topics, &batch.range.tp),
                };
                async move {
                    let ranges = [batch.range.clone()];
                    sink.write(&key, &ranges, std::slice::from_ref(&batch))
                        .await
                }
            });
        let outcome = stream::iter(writes)
            .buffer_unordered(self.parallelism)
            .try_fold(BatchOutcome::default(), |acc, outcome| async move {
                Ok(acc.add(&outcome))
            })
            .await?;
        Ok(BatchOutcome { records, ..outcome })
    }
}
