//! A batch's records, beside the plan vocabulary: owned copies of Kafka messages ([`Record`]),
//! grouped by offset range ([`PartitionBatch`]), and the channels that stream a range from a
//! source to a sink in chunks ([`range_channels`]). Sources produce them and sinks consume them;
//! neither imports the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::error::{Error, Result};
use crate::plan::{BatchTime, OffsetRange};

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

/// What a fetch sends down a range's channel.
#[derive(Debug)]
enum Chunk {
    /// The next records of the range, in offset order.
    Records(Vec<Record>),
    /// The range is complete: its consumer position reached `until`.
    End,
}

/// A range's records as they are fetched, in chunks, with an explicit end: a channel closed
/// without [`RangeSender::finish`] (a fetch that failed or was cancelled) is an error to the
/// reader, never the end of the range, so that a partial range is never committed.
#[derive(Debug)]
pub struct RangeReader {
    range: OffsetRange,
    batch_time: BatchTime,
    chunks: mpsc::Receiver<Chunk>,
    /// Wakes the fetch when a chunk was taken: a full channel has room again.
    taken: Arc<Notify>,
    /// Records taken by every reader of the same fetch.
    read: Arc<AtomicU64>,
    /// Set at the first call of [`RangeReader::next_chunk`]: the writer is ready, so the fetch
    /// may wait for it to take chunks.
    wanted: Arc<AtomicBool>,
    /// Records and bytes (keys and values) this reader took, for the metrics.
    taken_count: Arc<TakenCount>,
    /// True once a chunk of records was taken.
    started: bool,
    ended: bool,
}

/// The records and bytes a [`RangeReader`] took, readable after it is gone.
#[derive(Debug, Default)]
pub struct TakenCount {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl TakenCount {
    /// `(records, bytes)` taken so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The fetch's end of a [`RangeReader`].
#[derive(Debug)]
pub struct RangeSender {
    range: OffsetRange,
    chunks: mpsc::Sender<Chunk>,
    taken: Arc<Notify>,
    wanted: Arc<AtomicBool>,
}

/// What [`RangeSender::try_send`] did with a chunk.
#[derive(Debug)]
pub enum Sent {
    /// The chunk is in the channel.
    Sent,
    /// The channel is full: here is the chunk back.
    Full(Vec<Record>),
    /// The reader is gone (its write found the batch already committed, or failed): the
    /// records are not needed.
    Dropped,
}

/// Channels for the ranges of one fetch (for [`Source::fetch_into`](crate::source::Source::fetch_into)),
/// each holding up to `capacity` chunks: senders and readers in the order of `ranges`.
pub fn range_channels(
    batch_time: BatchTime,
    ranges: &[OffsetRange],
    capacity: usize,
) -> (Vec<RangeSender>, Vec<RangeReader>) {
    let taken = Arc::new(Notify::new());
    let read = Arc::new(AtomicU64::new(0));
    let (senders, readers) = ranges
        .iter()
        .map(|range| {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            let wanted = Arc::new(AtomicBool::new(false));
            let reader = RangeReader {
                wanted: Arc::clone(&wanted),
                range: range.clone(),
                batch_time,
                chunks: rx,
                taken: Arc::clone(&taken),
                read: Arc::clone(&read),
                taken_count: Arc::default(),
                started: false,
                ended: false,
            };
            let sender = RangeSender {
                range: range.clone(),
                chunks: tx,
                taken: Arc::clone(&taken),
                wanted,
            };
            (sender, reader)
        })
        .unzip();
    (senders, readers)
}

impl RangeSender {
    /// The range whose records this sends.
    pub fn range(&self) -> &OffsetRange {
        &self.range
    }

    /// Notified whenever a reader of the same fetch takes a chunk (a full channel may have
    /// room again).
    pub(crate) fn taken(&self) -> Arc<Notify> {
        Arc::clone(&self.taken)
    }

    /// Sends a chunk if the channel has room.
    pub fn try_send(&self, records: Vec<Record>) -> Sent {
        match self.chunks.try_send(Chunk::Records(records)) {
            Ok(()) => Sent::Sent,
            Err(mpsc::error::TrySendError::Full(Chunk::Records(records))) => Sent::Full(records),
            Err(_) => Sent::Dropped,
        }
    }

    /// True once the reader is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.chunks.is_closed()
    }

    /// True once the reader asked for its first chunk.
    pub(crate) fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// Sends a chunk, waiting up to `wait` for room.
    pub(crate) async fn send_within(&self, records: Vec<Record>, wait: Duration) -> Sent {
        match self
            .chunks
            .send_timeout(Chunk::Records(records), wait)
            .await
        {
            Ok(()) => Sent::Sent,
            Err(mpsc::error::SendTimeoutError::Timeout(Chunk::Records(records))) => {
                Sent::Full(records)
            }
            Err(_) => Sent::Dropped,
        }
    }

    /// Sends a chunk, waiting for room; false when the reader is gone.
    pub async fn send(&self, records: Vec<Record>) -> bool {
        self.chunks.send(Chunk::Records(records)).await.is_ok()
    }

    /// True when a chunk (or the end) can be sent without waiting.
    pub(crate) fn has_room(&self) -> bool {
        self.chunks.capacity() > 0
    }

    /// Marks the range complete if the channel has room (see [`RangeSender::has_room`]).
    pub(crate) fn try_finish(self) {
        let _ = self.chunks.try_send(Chunk::End);
    }

    /// Marks the range complete.
    pub async fn finish(self) {
        // A reader that is gone needs no end.
        let _ = self.chunks.send(Chunk::End).await;
    }
}

impl RangeReader {
    /// What this reader takes, counted as it goes.
    pub fn taken_count(&self) -> Arc<TakenCount> {
        Arc::clone(&self.taken_count)
    }

    /// The range being read.
    pub fn range(&self) -> &OffsetRange {
        &self.range
    }

    /// True once a chunk of records was taken: the range cannot be read again from here.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Records taken so far by every reader of the same fetch.
    pub(crate) fn read_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.read)
    }

    /// The next chunk of records; `None` once the whole range has been read.
    ///
    /// # Errors
    ///
    /// When the fetch stopped before the end of the range (it failed or was cancelled).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a chunk is taken only when the future completes.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<Record>>> {
        if self.ended {
            return Ok(None);
        }
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.taken.notify_one();
        }
        let chunk = self.chunks.recv().await;
        self.taken.notify_one();
        match chunk {
            Some(Chunk::Records(records)) => {
                self.started = true;
                self.read.fetch_add(records.len() as u64, Ordering::Relaxed);
                let bytes: usize = records
                    .iter()
                    .map(|r| {
                        r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len)
                    })
                    .sum();
                self.taken_count
                    .records
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                self.taken_count
                    .bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(Some(records))
            }
            Some(Chunk::End) => {
                self.ended = true;
                Ok(None)
            }
            None => Err(Error::Batch {
                batch_time: self.batch_time,
                message: format!(
                    "the fetch of {} stopped before the end of the range",
                    self.range
                ),
            }),
        }
    }

    /// The whole range at once.
    ///
    /// # Errors
    ///
    /// As [`RangeReader::next_chunk`].
    pub async fn collect(mut self) -> Result<PartitionBatch> {
        let mut records = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            if records.is_empty() {
                records = chunk;
            } else {
                records.extend(chunk);
            }
        }
        Ok(PartitionBatch {
            range: self.range,
            records,
        })
    }

    /// A reader over records already in memory, in these chunks (for sources that read a
    /// range whole, and tests).
    pub fn from_chunks(
        batch_time: BatchTime,
        range: OffsetRange,
        chunks: Vec<Vec<Record>>,
    ) -> Self {
        let (senders, mut readers) =
            range_channels(batch_time, std::slice::from_ref(&range), chunks.len() + 1);
        let reader = readers.remove(0);
        if let Some(sender) = senders.into_iter().next() {
            // The channel holds every chunk and the end.
            for chunk in chunks {
                let _ = sender.chunks.try_send(Chunk::Records(chunk));
            }
            let _ = sender.chunks.try_send(Chunk::End);
        }
        reader
    }
}
