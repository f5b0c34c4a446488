//! Reads committed offset ranges from Kafka again, independently of the pipeline's own source:
//! one consumer assigned (never subscribed) to each partition at the start of its span, at the
//! pipeline's isolation level, reading until the position reaches the span's end.
//!
//! A span may end in a gap (a transaction marker, aborted records, compaction), so a partition
//! is done when its position reaches `until`, not when a record at `until - 1` arrives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::batch::Record;
use crate::error::{Error, Result};
use crate::plan::{OffsetRange, TopicPartition};
use crate::source::KafkaSourceConfig;

use super::{Progress, Spans};

/// How long one poll waits.
const POLL: Duration = Duration::from_millis(100);
/// Polls in a row without any progress after which the read fails (about 2 minutes).
const STALLED_POLLS: u32 = 1_200;
/// Records between two progress reports.
const PROGRESS_EVERY: u64 = 20_000;
/// How long one metadata or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The records of every span, by partition, in offset order.
#[derive(Debug, Default)]
pub(crate) struct Read {
    records: BTreeMap<TopicPartition, Vec<Record>>,
    /// Each partition's first offset still in Kafka.
    pub(crate) log_starts: BTreeMap<TopicPartition, i64>,
}

impl Read {
    /// The records of `range` (owned copies, as the sink's mapping takes them).
    pub(crate) fn within(&self, range: &OffsetRange) -> Vec<Record> {
        let Some(records) = self.records.get(&range.tp) else {
            return Vec::new();
        };
        let start = records.partition_point(|r| r.offset < range.from);
        let end = records.partition_point(|r| r.offset < range.until);
        records[start..end].to_vec()
    }
}

/// Reads every span of `spans`.
///
/// Fails when committed records are gone (retention deleted them: nothing can be verified),
/// or when a partition makes no progress for about two minutes.
///
/// # Cancel safety
///
/// The read runs on a blocking thread, which finishes even when the future is dropped.
pub(crate) async fn read_ranges(
    source: &KafkaSourceConfig,
    pipeline: &str,
    spans: &Spans,
    progress: &Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<Read> {
    let mut config = source.client_config(&format!("weir-verify-{pipeline}"));
    config.set("queued.max.messages.kbytes", "65536");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| Error::kafka(format!("creating a consumer for {}", source.brokers), e))?;
    let spans = spans.clone();
    let progress = Arc::clone(progress);
    tokio::task::spawn_blocking(move || read_blocking(&consumer, &spans, progress.as_ref()))
        .await
        .map_err(|e| Error::TaskFailed {
            what: "reading the committed ranges from Kafka".to_owned(),
            message: e.to_string(),
        })?
}

fn read_blocking(
    consumer: &BaseConsumer,
    spans: &Spans,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Read> {
    let mut read = Read::default();
    for (tp, &(from, until)) in spans {
        let (low, high) = consumer
            .fetch_watermarks(&tp.topic, tp.partition, REQUEST_TIMEOUT)
            .map_err(|e| Error::kafka(format!("reading the offsets of {tp}"), e))?;
        // Committed records that Kafka no longer holds cannot be read again: say so at once.
        if until > from && (from < low || until > high) {
            let why = if from < low {
                format!("offsets [{from}..{low}) were deleted by retention")
            } else {
                format!(
                    "its log now ends at {high}, below the committed {until}: the topic was recreated or truncated"
                )
            };
            return Err(Error::Unverifiable {
                pipeline: String::new(),
                reason: format!(
                    "the commits cover {} but {why}, so what the table holds for them cannot be recomputed",
                    OffsetRange::new(tp.clone(), from, until)
                ),
            });
        }
        read.log_starts.insert(tp.clone(), low);
    }
    let mut open: BTreeMap<TopicPartition, (i64, i64)> = spans
        .iter()
        .filter(|(_, (from, until))| until > from)
        .map(|(tp, &span)| (tp.clone(), span))
        .collect();
    let total: u64 = open
        .values()
        .map(|(from, until)| u64::try_from(until - from).unwrap_or(0))
        .sum();
    let mut assignment = TopicPartitionList::new();
    for (tp, (from, _)) in &open {
        assignment
            .add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*from))
            .map_err(|e| Error::kafka(format!("listing {tp}"), e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| Error::kafka("assigning the partitions to verify", e))?;

    let mut received: u64 = 0;
    let mut idle_polls = 0;
    let mut done_offsets: u64 = 0;
    while !open.is_empty() {
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                idle_polls = 0;
                let tp = TopicPartition::new(message.topic(), message.partition());
                let Some(&(from, until)) = open.get(&tp) else {
                    continue;
                };
                let offset = message.offset();
                if offset >= from && offset < until {
                    read.records
                        .entry(tp.clone())
                        .or_default()
                        .push(Record::from_message(&message));
                    received += 1;
                    if received.is_multiple_of(PROGRESS_EVERY) {
                        progress(Progress::Kafka {
                            offsets: done_offsets + offsets_read(&read, &open),
                            total,
                            records: received,
                        });
                    }
                }
                if offset + 1 >= until {
                    done_offsets += finish(consumer, &mut open, &tp)?;
                }
            }
            Some(Err(error)) => {
                idle_polls += 1;
                check_read_error(error, &open)?;
            }
            None => {
                idle_polls += 1;
                done_offsets += finish_by_position(consumer, &mut open)?;
            }
        }
        if idle_polls >= STALLED_POLLS {
            let stuck: Vec<String> = open
                .iter()
                .map(|(tp, (from, until))| format!("{tp}[{from}..{until})"))
                .collect();
            return Err(Error::Kafka {
                context: format!(
                    "reading the committed ranges {} (no progress for two minutes; is the broker up?)",
                    stuck.join(", ")
                ),
                source: KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
            });
        }
    }
    progress(Progress::Kafka {
        offsets: total,
        total,
        records: received,
    });
    for records in read.records.values_mut() {
        // One assign, so offsets arrive in order; a redelivery after a broker restart may not.
        records.sort_by_key(|r| r.offset);
        records.dedup_by_key(|r| r.offset);
    }
    Ok(read)
}

/// Offsets covered so far in the partitions still open.
fn offsets_read(read: &Read, open: &BTreeMap<TopicPartition, (i64, i64)>) -> u64 {
    open.iter()
        .map(|(tp, (from, _))| {
            let last = read
                .records
                .get(tp)
                .and_then(|r| r.last())
                .map_or(*from, |r| r.offset + 1);
            u64::try_from(last - from).unwrap_or(0)
        })
        .sum()
}

/// Closes `tp`: pauses it and returns the offsets its span covered.
fn finish(
    consumer: &BaseConsumer,
    open: &mut BTreeMap<TopicPartition, (i64, i64)>,
    tp: &TopicPartition,
) -> Result<u64> {
    let Some((from, until)) = open.remove(tp) else {
        return Ok(0);
    };
    let mut list = TopicPartitionList::new();
    list.add_partition(&tp.topic, tp.partition);
    consumer
        .pause(&list)
        .map_err(|e| Error::kafka(format!("pausing {tp}"), e))?;
    Ok(u64::try_from(until - from).unwrap_or(0))
}

/// Closes the partitions whose position passed the end of their span without a record there.
fn finish_by_position(
    consumer: &BaseConsumer,
    open: &mut BTreeMap<TopicPartition, (i64, i64)>,
) -> Result<u64> {
    let positions = consumer
        .position()
        .map_err(|e| Error::kafka("reading consumer positions", e))?;
    let mut finished = 0;
    for element in positions.elements() {
        let tp = TopicPartition::new(element.topic(), element.partition());
        if let (Offset::Offset(position), Some(&(_, until))) = (element.offset(), open.get(&tp))
            && position >= until
        {
            finished += finish(consumer, open, &tp)?;
        }
    }
    Ok(finished)
}

/// Records deleted by retention make verification impossible; other errors are retried.
fn check_read_error(error: KafkaError, open: &BTreeMap<TopicPartition, (i64, i64)>) -> Result<()> {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) {
        let spans: Vec<String> = open
            .iter()
            .map(|(tp, (from, until))| format!("{tp}[{from}..{until})"))
            .collect();
        return Err(Error::kafka(
            format!(
                "reading the committed ranges {}: some committed records are no longer in Kafka (deleted by retention?), so the table cannot be verified against them",
                spans.join(", ")
            ),
            error,
        ));
    }
    tracing::warn!(message = "Kafka read failed; retrying.", %error);
    Ok(())
}
