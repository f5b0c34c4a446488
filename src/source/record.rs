//! Records as the source hands them on: owned copies of Kafka messages, grouped by partition.

use crate::plan::OffsetRange;

/// One Kafka record, owned. The topic and partition live in the [`PartitionBatch`] that holds
/// it, so records do not repeat them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record's timestamp in epoch milliseconds, when the broker gave one.
    pub timestamp: Option<i64>,
    /// The key; `None` for records without a key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for tombstones.
    pub value: Option<Vec<u8>>,
    /// Headers in the order the producer wrote them.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Every record of one offset range, in offset order. `records` may hold fewer than
/// `range.len()` records: compaction, transaction markers and aborted records leave gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// The range these records cover.
    pub range: OffsetRange,
    /// The records, by increasing offset.
    pub records: Vec<Record>,
}
