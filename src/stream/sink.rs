//! `DStream::sink`: a stream into a SQL table through the transactional [`SqlSink`], exactly once.
//!
//! Each partition of each batch is one sink write keyed by `(pipeline, t, partition)`, in one
//! transaction with its commit row (invariant 4). The SQL sink maps JSON values to columns, so
//! each item is serialized to JSON and handed over as a record:
//!
//! - the record's value is the item's JSON, its timestamp the batch time, it has no key, and its
//!   offset is the item's index in its partition (errors name the row as `sink <table>/<p>@<i>`);
//! - a source-partitioned stream writes Kafka partition `tp` of the `i`-th topic as output
//!   partition `source_partition_id(tp)`, covering `tp`'s range of the plan;
//! - a keyed stream writes each output partition `p` (`0 ≤ p < N`) as output partition `p`,
//!   covering every range of the plan, since its items may come from any Kafka partition.
//!
//! A partition is written whenever its ranges are not all empty, with or without items (also
//! between the slides of a window), so that the offsets recorded per output partition stay
//! contiguous.

use serde::Serialize;

use crate::batch::{PartitionBatch, Record};
use crate::error::{Error, Result};
use crate::plan::{OffsetRange, TopicPartition};
use crate::sink::{CommitKey, SqlSink, SqlSinkConfig, source_partition_id};

use super::dstream::{DStream, Data, lock};
use super::graph::{Batch, BatchInput, Layout, Node, NodeId, PartitionId, Step};

/// A SQL sink of the program, not yet open.
pub(crate) struct StreamSink {
    /// The pipeline name its commit rows carry.
    pub(crate) commit_pipeline: String,
    /// The sink.
    pub(crate) sink: SqlSink,
}

/// One sink write a batch asks for.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    /// Index of the sink in the graph's sinks.
    pub(crate) sink: usize,
    /// Its commit key.
    pub(crate) key: CommitKey,
    /// The ranges it covers.
    pub(crate) ranges: Vec<OffsetRange>,
    /// The rows, as records with JSON values.
    pub(crate) rows: PartitionBatch,
}

impl<T: Data + Serialize> DStream<T> {
    /// Writes every batch into the table of `config`, exactly once, each partition in one
    /// transaction with its commit row. Items are mapped to columns by their JSON field names
    /// (or JSON pointers), in `append`, `upsert` or `increment` mode. The commit rows carry the
    /// context's pipeline name; use [`sink_named`](Self::sink_named) for a second sink.
    ///
    /// With `mode = "increment"` and `increment = ["count"]` instead of `mode = "upsert"` below,
    /// a stateless per-batch count (`reduce_by_key` without state) keeps running totals in the
    /// table: each batch's counts are added to the rows (`count = count + excluded.count`),
    /// exactly once, and weir holds no state for them.
    ///
    /// ```no_run
    /// # fn example(counts: weir::stream::DStream<(String, u64)>) -> weir::Result<()> {
    /// use weir::sink::SqlSinkConfig;
    ///
    /// #[derive(Clone, serde::Serialize)]
    /// struct Row { word: String, count: u64 }
    ///
    /// let config: SqlSinkConfig = toml::from_str(r#"
    ///     url = "sqlite://counts.db?mode=rwc"
    ///     table = "word_counts"
    ///     mode = "upsert"
    ///     key = ["word"]
    ///     create_table = true
    ///     columns = [{ name = "word", type = "text" }, { name = "count", type = "bigint" }]
    /// "#).expect("valid TOML");
    /// counts.map(|(word, count)| Row { word, count }).sink(config);
    /// # Ok(()) }
    /// ```
    pub fn sink(&self, config: SqlSinkConfig) {
        self.add_sink(None, config);
    }

    /// [`sink`](Self::sink) with a name of its own: its commit rows carry `<pipeline>.<name>`,
    /// so that several sinks of one program can share a database.
    pub fn sink_named(&self, name: &str, config: SqlSinkConfig) {
        self.add_sink(Some(name), config);
    }

    fn add_sink(&self, name: Option<&str>, config: SqlSinkConfig) {
        let layout = self.layout();
        let mut graph = lock(&self.graph);
        let commit_pipeline = match name {
            Some(name) => format!("{}.{name}", graph.pipeline),
            None => graph.pipeline.clone(),
        };
        let key = format!("sink {}", name.unwrap_or(&config.table));
        if layout == Layout::Mixed {
            graph.error(Error::config(
                key,
                "the stream unites a source-partitioned and a keyed stream, so its partitions are neither Kafka partitions nor key partitions; repartition it first (e.g. with transform, or map to pairs and reduce_by_key)",
            ));
            return;
        }
        if graph
            .sinks
            .iter()
            .any(|s| s.commit_pipeline == commit_pipeline)
        {
            graph.error(Error::config(
                key,
                format!("another sink already commits as pipeline {commit_pipeline:?}; give each sink its own name with sink_named"),
            ));
            return;
        }
        let label = format!("sink {}", config.table);
        let sink = match SqlSink::new(config) {
            Ok(sink) => sink,
            Err(e) => {
                graph.error(e);
                return;
            }
        };
        graph.sinks.push(StreamSink {
            commit_pipeline: commit_pipeline.clone(),
            sink,
        });
        let node = SinkNode::<T> {
            input: self.node,
            sink: graph.sinks.len() - 1,
            commit_pipeline,
            label,
            layout,
            _items: std::marker::PhantomData,
        };
        graph.add(Box::new(node), Layout::Mixed, &[self.node]);
    }
}

struct SinkNode<T> {
    input: NodeId,
    sink: usize,
    commit_pipeline: String,
    label: String,
    layout: Layout,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T: Data + Serialize> SinkNode<T> {
    fn write(
        &self,
        input: &BatchInput<'_>,
        partition_id: i64,
        row_partition: TopicPartition,
        ranges: Vec<OffsetRange>,
        items: Vec<T>,
    ) -> Result<Option<PendingWrite>> {
        if items.is_empty() && ranges.iter().all(OffsetRange::is_empty) {
            return Ok(None);
        }
        let t = input.batch_time;
        let mut records = Vec::with_capacity(items.len());
        for (offset, item) in (0_i64..).zip(&items) {
            let value = serde_json::to_vec(item).map_err(|e| Error::Record {
                tp: row_partition.clone(),
                offset,
                reason: format!("the row cannot be encoded as JSON: {e}"),
            })?;
            records.push(Record {
                offset,
                timestamp: Some(t.as_millis()),
                key: None,
                value: Some(value),
                headers: Vec::new(),
            });
        }
        let until = i64::try_from(records.len()).unwrap_or(i64::MAX);
        Ok(Some(PendingWrite {
            sink: self.sink,
            key: CommitKey::new(self.commit_pipeline.clone(), t, partition_id),
            ranges,
            rows: PartitionBatch {
                range: OffsetRange::new(row_partition, 0, until),
                records,
            },
        }))
    }
}

impl<T: Data + Serialize> Node for SinkNode<T> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let mut batch: Batch<T> = step.take::<T>(self.input)?.unwrap_or_default();
        match &self.layout {
            Layout::Source(topics) => {
                for range in &step.input.plan.ranges {
                    if !topics.contains(&range.tp.topic) {
                        continue;
                    }
                    let items = batch
                        .remove(&PartitionId::Source(range.tp.clone()))
                        .unwrap_or_default();
                    let row_partition = TopicPartition::new(
                        format!("{} from {}", self.label, range.tp.topic),
                        range.tp.partition,
                    );
                    let id = source_partition_id(&range.tp);
                    let ranges = step.input.plan.covered_by(range);
                    step.writes
                        .extend(self.write(step.input, id, row_partition, ranges, items)?);
                }
            }
            Layout::Keyed(n) => {
                for p in 0..*n {
                    let items = batch.remove(&PartitionId::Keyed(p)).unwrap_or_default();
                    let row_partition =
                        TopicPartition::new(self.label.clone(), i32::try_from(p).unwrap_or(-1));
                    let ranges = step.input.plan.covered();
                    step.writes.extend(self.write(
                        step.input,
                        i64::from(p),
                        row_partition,
                        ranges,
                        items,
                    )?);
                }
            }
            Layout::Mixed => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BatchPlan;
    use crate::plan::BatchTime;

    #[test]
    fn keyed_writes_cover_every_range_and_lost_ones() {
        let a = TopicPartition::new("a", 0);
        let b = TopicPartition::new("a", 1);
        let mut plan = BatchPlan::new(
            BatchTime::from_millis(1),
            vec![OffsetRange::new(a.clone(), 5, 9), OffsetRange::new(b, 3, 3)],
        );
        plan.lost.push(OffsetRange::new(a.clone(), 2, 5));
        let all = plan.covered();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], OffsetRange::new(a.clone(), 2, 5));
        assert_eq!(
            plan.covered_by(&plan.ranges[0]),
            vec![OffsetRange::new(a.clone(), 2, 5), OffsetRange::new(a, 5, 9)]
        );
    }
}
