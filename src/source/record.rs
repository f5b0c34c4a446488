//! Records as the source hands them on: owned copies of Kafka messages, grouped by partition.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

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

impl Record {
    /// An owned copy of a message received from Kafka.
    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
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
