//! Sinks: the [`Sink`] trait and the built-in SQL sink ([`SqlSink`]) with its commit table.
//!
//! Every write is one output partition of one batch, identified by a [`CommitKey`]
//! `(pipeline, batch_time, partition_id)`, and lands exactly once (invariant 4): the write's
//! transaction first inserts the key into `weir_commits`, so a replay of a committed write finds
//! the row and does nothing ([`WriteOutcome::AlreadyCommitted`]). The same transaction checks
//! that the offset ranges continue exactly where this output partition's previous commit ended.
//!
//! Source-aligned pipelines write Kafka partition `tp` as output partition
//! [`source_partition_id`]`(tp)`, derived from the topic-partition alone; pipelines that shuffle
//! by key use `hash(key) mod N`.

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
mod retention;
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

use crate::batch::{PartitionBatch, RangeReader};
use crate::error::Result;
use crate::plan::{BatchTime, OffsetRange, TopicPartition};

/// The idempotency token of one atomic write: `(pipeline, batch time, output partition)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitKey {
    /// The pipeline's stable name.
    pub pipeline: String,
    /// The batch.
    pub batch_time: BatchTime,
    /// The output partition; see [`source_partition_id`].
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
    /// Of `rows`, those deleted.
    pub deleted: u64,
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

    /// Renames output partition ids in the sink's bookkeeping: each `(old, tp, new)` moves the
    /// commits, positions and dead letters of output partition `old` (which wrote `tp`) to
    /// `new`, in one transaction. Called at start when the sink holds ids of an older weir,
    /// which derived them from the order of `source.topics` (see [`source_partition_id`]).
    ///
    /// The default refuses any rename: a sink of your own never received such ids.
    ///
    /// # Cancel safety
    /// Safe: the renames commit together or not at all.
    fn adopt_partition_ids(
        &self,
        pipeline: &str,
        renames: &[(i64, TopicPartition, i64)],
    ) -> impl Future<Output = Result<()>> + Send {
        let refused = (!renames.is_empty()).then(|| crate::error::Error::Config {
            file: None,
            key: "sink".into(),
            message: format!(
                "pipeline {pipeline:?}: this sink holds output partition ids that this weir cannot rename"
            ),
        });
        async move { refused.map_or(Ok(()), Err) }
    }

    /// Folds the commit rows of `pipeline` older than `before` into one row per output
    /// partition covering the same ranges (`sink.commit_retention`). Returns how many rows went.
    ///
    /// The default keeps every row.
    ///
    /// # Cancel safety
    /// Safe: each output partition's fold commits on its own or not at all.
    fn fold_commits(
        &self,
        pipeline: &str,
        before: BatchTime,
    ) -> impl Future<Output = Result<u64>> + Send {
        let _ = (pipeline, before);
        async { Ok(0) }
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

/// The output partition id of Kafka partition `tp` in a source-aligned pipeline, derived from the
/// topic-partition alone, so that it is the same in every release, on every instance, and
/// whatever the order of `source.topics` or the topics added or removed beside it: the topic
/// name's hash in the high 32 bits (FNV-1a folded to 30 bits, with bit 30 set, so that it never
/// meets the small ids `0..N` of pipelines that shuffle by key), the partition in the low 32.
///
/// ```
/// use weir::plan::TopicPartition;
/// use weir::sink::{is_source_partition_id, source_partition_id};
/// let id = source_partition_id(&TopicPartition::new("orders", 7));
/// assert_eq!(id & 0xFFFF_FFFF, 7);
/// assert!(is_source_partition_id(id));
/// assert_ne!(id, source_partition_id(&TopicPartition::new("payments", 7)));
/// assert!(!is_source_partition_id(7));
/// ```
pub fn source_partition_id(tp: &TopicPartition) -> i64 {
    let mut hash = crate::hash::Fnv1a::new();
    hash.bytes(tp.topic.as_bytes());
    let wide = hash.finish();
    let folded = (wide ^ (wide >> 30) ^ (wide >> 60)) & SOURCE_ID_HASH_MASK;
    let high = i64::try_from(folded | SOURCE_ID_MARK).unwrap_or(i64::MAX);
    (high << 32) | (i64::from(tp.partition) & 0xFFFF_FFFF)
}

/// True for an id made by [`source_partition_id`].
pub fn is_source_partition_id(partition_id: i64) -> bool {
    let high = u64::try_from(partition_id >> 32).unwrap_or(0);
    high & SOURCE_ID_MARK != 0 && high >> 31 == 0
}

/// The hash bits of a source partition id's high half, and the bit that marks it.
const SOURCE_ID_HASH_MASK: u64 = (1 << 30) - 1;
const SOURCE_ID_MARK: u64 = 1 << 30;

/// The output partition id an older weir gave Kafka partition `kafka_partition` of the
/// `topic_index`-th configured topic: `(topic_index << 32) | kafka_partition`. It depended on the
/// order of `source.topics`; a sink holding such ids has them replaced at start (see
/// [`Sink::adopt_partition_ids`]).
pub(crate) fn legacy_partition_id(topic_index: u16, kafka_partition: i32) -> i64 {
    (i64::from(topic_index) << 32) | (i64::from(kafka_partition) & 0xFFFF_FFFF)
}
