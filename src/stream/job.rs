//! [`StreamJob`]: the operator graph as the scheduler's [`BatchJob`].
//!
//! A batch runs the whole graph on a blocking thread (operators are CPU work and user code), then
//! performs the sink writes the outputs asked for, each in its own transaction, up to the sink's
//! pool size at a time. The graph's state is what snapshots hold; recovery restores it and the
//! scheduler re-executes the logged plans through [`BatchJob::run_batch`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::batch::PartitionBatch;
use crate::blocking::run_blocking;
use crate::checkpoint::OperatorState;
use crate::error::{Error, Result};
use crate::plan::BatchPlan;
use crate::runtime::{BatchJob, BatchOutcome};
use crate::sink::{Sink, SqlSink, WriteOutcome};

use super::graph::{BatchInput, Graph};
use super::reference::prepare_all;
use super::sink::PendingWrite;

/// The operator graph of a [`StreamingContext`](super::StreamingContext), run batch by batch.
pub(crate) struct StreamJob {
    /// `None` after an operator panicked: the state is unknown, the run must end. In a mutex
    /// only to make the job `Sync` (user closures need not be); nothing contends for it.
    graph: Mutex<Option<Graph>>,
    sinks: Vec<(Arc<SqlSink>, usize)>,
    checkpoint_dir: PathBuf,
    /// Whether every stateful operator's state has been encoded once (to find a state type
    /// bincode cannot encode at the first batch, not at the first snapshot).
    encoding_checked: bool,
}

impl StreamJob {
    /// A job over `graph`, whose sinks are open and given with their parallelism.
    pub(crate) fn new(
        mut graph: Graph,
        sinks: Vec<(Arc<SqlSink>, usize)>,
        checkpoint_dir: PathBuf,
    ) -> Self {
        graph.checkpoint_dir = Some(checkpoint_dir.clone());
        Self {
            graph: Mutex::new(Some(graph)),
            sinks,
            checkpoint_dir,
            encoding_checked: false,
        }
    }

    fn state_error(&self, operator: &str, message: &str) -> Error {
        Error::checkpoint(
            &self.checkpoint_dir,
            format!("the state of stream operator {operator:?}: {message}"),
        )
    }
}

/// Performs `writes`, each sink's up to its parallelism at a time.
async fn write_all(
    sinks: &[(Arc<SqlSink>, usize)],
    writes: Vec<PendingWrite>,
) -> Result<BatchOutcome> {
    {
        let mut by_sink: BTreeMap<usize, Vec<PendingWrite>> = BTreeMap::new();
        for write in writes {
            by_sink.entry(write.sink).or_default().push(write);
        }
        let mut outcome = BatchOutcome::default();
        for (index, writes) in by_sink {
            let Some((sink, parallelism)) = sinks.get(index) else {
                continue;
            };
            let results = stream::iter(writes.into_iter().map(|write| {
                let sink = Arc::clone(sink);
                async move {
                    sink.write(&write.key, &write.ranges, std::slice::from_ref(&write.rows))
                        .await
                }
            }))
            .buffer_unordered((*parallelism).max(1))
            .try_collect::<Vec<WriteOutcome>>()
            .await?;
            for result in results {
                match result {
                    WriteOutcome::Committed {
                        rows,
                        skipped,
                        dead_letters,
                    } => {
                        outcome.rows += rows;
                        outcome.skipped += skipped;
                        outcome.dead_letters += dead_letters;
                    }
                    WriteOutcome::AlreadyCommitted => outcome.already_committed += 1,
                }
            }
        }
        Ok(outcome)
    }
}

/// The message of a panic, for the error that reports it.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl BatchJob for StreamJob {
    async fn run_batch(
        &mut self,
        plan: &BatchPlan,
        input: Vec<PartitionBatch>,
    ) -> Result<BatchOutcome> {
        let batch_time = plan.batch_time;
        // Reference tables load (or read their saved version) before the operators run, which
        // read them synchronously.
        let references = match self.graph.get_mut().unwrap_or_else(PoisonError::into_inner) {
            Some(graph) => graph.references.clone(),
            None => Vec::new(),
        };
        prepare_all(&references, &self.checkpoint_dir, batch_time).await?;
        let taken = self
            .graph
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut graph = taken.ok_or_else(|| Error::Batch {
            batch_time,
            message: "an earlier batch of this run failed inside an operator; restart the pipeline to recover from the checkpoint".to_owned(),
        })?;
        let records: u64 = input
            .iter()
            .map(|b| u64::try_from(b.records.len()).unwrap_or(u64::MAX))
            .sum();
        let owned_plan = plan.clone();
        let check_encoding = !self.encoding_checked;
        let joined = tokio::task::spawn_blocking(move || {
            let batch = BatchInput {
                batch_time: owned_plan.batch_time,
                plan: &owned_plan,
                records: &input,
            };
            let writes = graph.run(&batch);
            let encoded = match check_encoding && writes.is_ok() {
                true => graph.save().map(drop),
                false => Ok(()),
            };
            (graph, writes, encoded)
        })
        .await;
        let (graph, writes, encoded) = joined.map_err(|e| Error::Batch {
            batch_time,
            message: if e.is_panic() {
                format!(
                    "a stream operator panicked: {}; the next start replays this batch from the checkpoint",
                    panic_message(&*e.into_panic())
                )
            } else {
                format!("the operators' task was cancelled: {e}")
            },
        })?;
        *self.graph.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(graph);
        let writes = writes?;
        if let Err((operator, message)) = encoded {
            return Err(self.state_error(&operator, &message));
        }
        // An empty state proves nothing about encoding: check again until records came.
        self.encoding_checked |= records > 0;
        let sinks = self.sinks.clone();
        let outcome = write_all(&sinks, writes).await?;
        Ok(BatchOutcome { records, ..outcome })
    }

    async fn state(&self) -> Result<BTreeMap<String, OperatorState>> {
        let taken = self
            .graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let graph = taken.ok_or_else(|| {
            Error::checkpoint(
                &self.checkpoint_dir,
                "no snapshot is written: an earlier batch of this run failed inside an operator, so the state is unknown; restart the pipeline to recover from the checkpoint",
            )
        })?;
        // Checked at the first batch; a failure that depends on the values shows here.
        let (graph, state) = if graph.has_state() {
            run_blocking("encoding the operators' state", move || {
                let state = graph.save();
                Ok((graph, state))
            })
            .await?
        } else {
            (graph, Ok(BTreeMap::new()))
        };
        *self.graph.lock().unwrap_or_else(PoisonError::into_inner) = Some(graph);
        state.map_err(|(operator, message)| {
            self.state_error(
                &operator,
                &format!("{message}; the pipeline stops without writing this snapshot, and the next start recovers from the previous one"),
            )
        })
    }

    fn restore(&mut self, state: BTreeMap<String, OperatorState>) -> Result<()> {
        let Some(graph) = self.graph.get_mut().unwrap_or_else(PoisonError::into_inner) else {
            return Ok(());
        };
        let result = graph.load(state);
        result.map_err(|(operator, message)| self.state_error(&operator, &message))
    }
}
