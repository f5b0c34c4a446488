//! Sinks: the [`Sink`] trait and the built-in SQL sink ([`SqlSink`]) with its commit table.
//!
//! Every write is one output partition of one batch, identified by a [`CommitKey`]
//! `(pipeline, batch_time, partition_id)`, and lands exactly once (invariant 4): the write's
//! transaction first inserts the key into `weir_commits`, so a replay of a committed write finds
//! the row and does nothing ([`WriteOutcome::AlreadyCommitted`]). The same transaction checks
//! that the offset ranges continue exactly where this output partition's previous commit ended.
//!
//! Source-aligned pipelines write Kafka partition `k` of the `i`-th configured topic as output
//! partition [`source_aligned_partition_id`]`(i, k)`; pipelines that shuffle by key use
//! `hash(key) mod N`.

mod base64;
mod chunk;
mod config;
mod conn;
mod copy_text;
mod dead_letter;
mod dialect;
mod failpoint;
mod ident;
mod json;
mod mapping;
mod protocol;
mod retry;
mod sql;
mod types;
mod value;

use std::collections::BTreeMap;
use std::fmt;

pub use config::{
    ColumnConfig, DEFAULT_SQLITE_URL, KeySource, MAX_BIND_PARAMETERS, MetadataColumns,
    MetadataField, OnError, SqlSinkConfig, WriteMode,
};
pub use conn::SqlRow;
pub use dialect::Dialect;
pub use ident::{MAX_IDENTIFIER_BYTES, validate_identifier};
pub use retry::RetryPolicy;
pub use sql::SqlSink;
pub use types::ColumnType;
pub use value::SqlValue;
// For `weir verify`, which maps records exactly as the sink does and reads the table back.
pub(crate) use conn::SinkPool;
pub(crate) use mapping::{Op, RowMapper};

use crate::error::Result;
use crate::plan::{BatchTime, OffsetRange, TopicPartition};
use crate::source::{PartitionBatch, RangeReader};

/// The idempotency token of one atomic write: `(pipeline, batch time, output partition)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitKey {
    /// The pipeline's stable name.
    pub pipeline: String,
    /// The batch.
    pub batch_time: BatchTime,
    /// The output partition; see [`source_aligned_partition_id`].
    pub partition_id: i64,
}

impl CommitKey {
    /// A commit key.
    pub fn new(pipeline: impl Into<String>, batch_time: BatchTime, partition_id: i64) -> Self {
        Self {
            pipeline: pipeline.into(),
            batch_time,
            partition_id,
        }
    }
}

impl fmt::Display for CommitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}/{}",
            self.pipeline, self.batch_time, self.partition_id
        )
    }
}

/// What a committed write did (internal tally; see [`WriteOutcome::Committed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WriteCounts {
    /// Rows inserted, upserted or deleted.
    pub rows: u64,
    /// Bad records left out (`on_error = "skip"`).
    pub skipped: u64,
    /// Bad records stored in `weir_dead_letters` (`on_error = "dead_letter"`).
    pub dead_letters: u64,
    /// Records that asked for nothing: tombstones in append mode or with deletes off.
    pub ignored: u64,
}

/// The result of [`Sink::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// This call committed the write.
    Committed {
        /// Rows inserted, upserted or deleted.
        rows: u64,
        /// Bad records left out (`on_error = "skip"`).
        skipped: u64,
        /// Bad records stored in `weir_dead_letters` (`on_error = "dead_letter"`).
        dead_letters: u64,
    },
    /// The commit key was already in the commit table with the same ranges: an earlier run did
    /// the work, and nothing was written now.
    AlreadyCommitted,
}

impl WriteOutcome {
    pub(crate) fn committed(counts: WriteCounts) -> Self {
        if counts.ignored > 0 {
            tracing::debug!(
                ignored = counts.ignored,
                "tombstones with nothing to delete were ignored"
            );
        }
        Self::Committed {
            rows: counts.rows,
            skipped: counts.skipped,
            dead_letters: counts.dead_letters,
        }
    }
}

/// Where an output partition's newest commit ended in one Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedPosition {
    /// The batch of that commit.
    pub batch_time: BatchTime,
    /// The range it covered; `range.until` is where the next batch must start.
    pub range: OffsetRange,
}

/// The committed positions of a pipeline, by `(partition_id, Kafka partition)`.
pub type CommittedPositions = BTreeMap<(i64, TopicPartition), CommittedPosition>;

/// A destination that writes each output partition of each batch exactly once.
///
/// Implementations receive the [`CommitKey`] as the idempotency token, as Spark users build
/// from `(time, partitionId)` by hand: store it atomically with the data, and treat a key seen
/// before as done.
pub trait Sink: Send + Sync {
    /// Prepares the sink: connects, applies migrations, creates or checks the table.
    ///
    /// # Cancel safety
    /// Safe to drop; call again to retry.
    fn open(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Writes one output partition of one batch, exactly once. `ranges` are the offset ranges
    /// this write covers (stored with the commit and checked for contiguity); `input` holds the
    /// records.
    ///
    /// # Cancel safety
    /// Safe: a write dropped before its COMMIT is rolled back; one dropped after it is found
    /// committed by the next write with the same key.
    fn write(
        &self,
        key: &CommitKey,
        ranges: &[OffsetRange],
        input: &[PartitionBatch],
    ) -> impl Future<Output = Result<WriteOutcome>> + Send;

    /// [`write`](Sink::write) with the records of one Kafka range arriving in chunks while the
    /// write runs, as the main job streams a batch: a sink that can should open its transaction
    /// and write each chunk as it comes, so that a batch larger than memory streams through.
    /// The default collects the whole range, then calls [`write`](Sink::write).
    ///
    /// A reader that fails (its fetch stopped) must fail the write before COMMIT. A write that
    /// has taken chunks cannot retry by itself (they are gone): it fails, and the batch runs
    /// again from its logged plan.
    ///
    /// # Cancel safety
    /// As [`write`](Sink::write).
    fn write_stream(
        &self,
        key: &CommitKey,
        ranges: &[OffsetRange],
        input: RangeReader,
    ) -> impl Future<Output = Result<WriteOutcome>> + Send {
        async move {
            let batch = input.collect().await?;
            self.write(key, ranges, std::slice::from_ref(&batch)).await
        }
    }

    /// The newest committed range per `(partition_id, Kafka partition)` of `pipeline`, for the
    /// start-up cross-check against the checkpoint.
    ///
    /// # Cancel safety
    /// Safe: it only reads.
    fn committed_positions(
        &self,
        pipeline: &str,
    ) -> impl Future<Output = Result<CommittedPositions>> + Send;
}

/// The output partition of Kafka partition `kafka_partition` of the `topic_index`-th configured
/// topic in a source-aligned pipeline: `(topic_index << 32) | kafka_partition`. For a single topic
/// it is the Kafka partition itself.
///
/// ```
/// use weir::sink::{source_aligned_partition_id, split_partition_id};
/// assert_eq!(source_aligned_partition_id(0, 7), 7);
/// assert_eq!(source_aligned_partition_id(2, 3), (2 << 32) | 3);
/// assert_eq!(split_partition_id(source_aligned_partition_id(2, 3)), (2, 3));
/// ```
pub fn source_aligned_partition_id(topic_index: u16, kafka_partition: i32) -> i64 {
    (i64::from(topic_index) << 32) | (i64::from(kafka_partition) & 0xFFFF_FFFF)
}

/// [`source_aligned_partition_id`] of `tp`, whose topic's index is its position in `topics` (the
/// configured topic list). A topic missing from the list gets index `u16::MAX`, which no
/// configured topic has.
pub fn source_partition_id(topics: &[String], tp: &TopicPartition) -> i64 {
    let index = topics
        .iter()
        .position(|t| *t == tp.topic)
        .and_then(|i| u16::try_from(i).ok())
        .unwrap_or(u16::MAX);
    source_aligned_partition_id(index, tp.partition)
}

/// The `(topic_index, kafka_partition)` of a source-aligned partition id.
pub fn split_partition_id(partition_id: i64) -> (u16, i32) {
    let topic_index = u16::try_from((partition_id >> 32) & 0xFFFF).unwrap_or(u16::MAX);
    let low = u32::try_from(partition_id & 0xFFFF_FFFF).unwrap_or(0);
    (topic_index, i32::from_ne_bytes(low.to_ne_bytes()))
}
