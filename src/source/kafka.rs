//! The direct Kafka consumer: one long-lived consumer assigned (never subscribed) to every
//! partition of the pipeline's topics at explicit offsets, reading exactly the ranges of a plan.
//!
//! A range `[from, until)` is finished when the partition's position reaches `until`, not when
//! a record at `until - 1` arrives: compaction, transaction markers and aborted records
//! (`read_committed`) leave offsets without records. A range streams: its records go to its
//! reader in chunks as they arrive ([`KafkaSource::fetch_into`]), and the range's end is sent
//! only once its position reached `until`. A partition is resumed when its reader (the writer
//! of its output partition) is ready, and the fetch waits for a ready reader to take a chunk, so
//! memory stays within the [`MemoryBudget`] whatever the size of a range. A partition that holds
//! its range goes on reading ahead until it also holds as many records as its current range has
//! offsets (and at least 64 KiB, and at most its share of the budget), then it is paused, so a
//! backlog is read without a pause and a resume per batch. A partition with nothing planned is
//! paused; it is resumed when a plan needs it.
//!
//! All partitions are read from the consumer's one queue by a dispatcher rather than through
//! split per-partition queues: a record fetched between `assign` and the split would land on the
//! main queue and advance the position past a record the partition never saw. The dispatcher
//! costs one copy per record; decoding and sink writes run per partition in parallel.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::budget::{ChunkLimits, MemoryBudget};
use super::config::{KafkaSourceConfig, StartingOffsets};
use super::planner::Watermarks;
use crate::batch::{PartitionBatch, RangeReader, RangeSender, Record, Sent, range_channels};
use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use crate::plan::{BatchPlan, OffsetRange, TopicPartition};

/// How long one metadata or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the dispatcher waits for a record before it checks the positions.
const IDLE_CHECK: Duration = Duration::from_millis(10);
/// A partition that has not reached its `until` after this long is reported (and waited for).
const SLOW_WARNING: Duration = Duration::from_secs(10);
/// The least a partition with a backlog reads ahead (see [`PartitionState::wants_more`]), so
/// that small ranges of small records do not pause and resume it at every batch.
const MIN_READ_AHEAD_BYTES: usize = 64 << 10;
/// How long the fetch waits for a ready reader to take a chunk before it pauses the partition
/// instead (pausing drops what librdkafka prefetched for it, so it is the exception).
const SEND_WAIT: Duration = Duration::from_millis(500);
/// librdkafka's `fetch.wait.max.ms` unless the user sets it (librdkafka's default is 500).
const FETCH_WAIT_MAX_MS: &str = "20";

/// What the source knows about one assigned partition.
#[derive(Debug, Default)]
struct PartitionState {
    /// One past the highest offset received from Kafka since the last assign; anything below is a
    /// redelivery and is dropped.
    received: i64,
    /// Records received beyond the current range, kept for the next one.
    ahead: Ahead,
    /// True while consumption of the partition is paused.
    paused: bool,
    /// How many records beyond its range the partition may hold before it is paused: the length
    /// of its latest range.
    read_ahead: usize,
}

impl PartitionState {
    /// True while the partition should go on reading beyond its range: it holds fewer records
    /// than its latest range had offsets, or less than [`MIN_READ_AHEAD_BYTES`], and less than
    /// its share of the memory budget. A partition whose latest range was empty is idle and
    /// reads nothing ahead.
    fn wants_more(&self, max_ahead_bytes: usize) -> bool {
        self.read_ahead > 0
            && self.ahead.bytes < max_ahead_bytes
            && (self.ahead.records.len() < self.read_ahead
                || self.ahead.bytes < MIN_READ_AHEAD_BYTES)
    }
}

/// Records received beyond the current range, with their approximate size in memory.
#[derive(Debug, Default)]
struct Ahead {
    records: VecDeque<Record>,
    bytes: usize,
}

impl Ahead {
    fn push(&mut self, record: Record) {
        self.bytes += record_bytes(&record);
        self.records.push_back(record);
    }

    fn pop(&mut self) -> Option<Record> {
        let record = self.records.pop_front()?;
        self.bytes = self.bytes.saturating_sub(record_bytes(&record));
        Some(record)
    }

    fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }
}

/// About the memory a record takes: its bytes and a fixed overhead.
fn record_bytes(record: &Record) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// The consumer, with weir's context.
type SourceConsumer = StreamConsumer<SourceContext>;

/// The consumer's context. librdkafka answers a refused login or a failed TLS handshake by
/// logging it and reconnecting, forever: meanwhile every request just times out, as if the
/// brokers were down. The context keeps the first refusal it sees in librdkafka's log, so that
/// the source's calls fail with it, final, naming the keys to check.
pub(crate) struct SourceContext {
    refusal: std::sync::Mutex<Option<Refusal>>,
    /// `sasl.password`, kept out of every log line and error.
    password: Option<String>,
}

/// What the brokers refused, and what to check.
struct Refusal {
    problem: &'static str,
    reason: String,
    advice: &'static str,
}

impl SourceContext {
    fn new(password: Option<String>) -> Self {
        Self {
            refusal: std::sync::Mutex::new(None),
            password: password.filter(|p| !p.is_empty()),
        }
    }

    /// The brokers' refusal, once there was one.
    fn refusal(&self) -> Option<Error> {
        let refusal = self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        refusal.as_ref().map(|r| Error::KafkaRefused {
            problem: r.problem.to_owned(),
            reason: r.reason.clone(),
            advice: r.advice.to_owned(),
        })
    }

    fn redact(&self, text: &str) -> String {
        match &self.password {
            Some(password) => text.replace(password.as_str(), "[redacted]"),
            None => text.to_owned(),
        }
    }
}

/// What a librdkafka error code says was refused: a login (SASL) or a TLS handshake, with
/// the keys to check.
fn refusal_of(code: RDKafkaErrorCode) -> Option<(&'static str, &'static str)> {
    match code {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::UnsupportedSASLMechanism
        | RDKafkaErrorCode::IllegalSASLState => Some((
            "authentication failed",
            "check `source.properties.sasl.username` and `source.properties.sasl.password` (and `sasl.mechanisms`): the brokers refused them, and weir does not retry a refused login",
        )),
        RDKafkaErrorCode::SSL => Some((
            "the TLS handshake failed",
            "check `source.properties.ssl.ca.location`: it must name the CA certificate (PEM) that signed the brokers' certificates (and `security.protocol` must match the listener)",
        )),
        _ => None,
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let line = self.redact(log_message);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", facility = fac, "{line}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility = fac, "{line}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility = fac, "{line}");
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility = fac, "{line}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.redact(reason);
        let Some((problem, advice)) = error.rdkafka_error_code().and_then(refusal_of) else {
            warn!(message = "Kafka client error.", %error, %reason);
            return;
        };
        let mut refusal = self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if refusal.is_none() {
            error!(message = "Kafka refused the connection; stopping.", problem, %reason);
            *refusal = Some(Refusal {
                problem,
                reason,
                advice,
            });
        }
    }
}

impl ConsumerContext for SourceContext {}

/// The error of a failed call on `consumer`: the brokers' refusal when there was one (the call
/// itself saw only a timeout or a lost connection), else the call's own.
fn call_error(consumer: &SourceConsumer, context: impl Into<String>, e: KafkaError) -> Error {
    consumer
        .context()
        .refusal()
        .unwrap_or_else(|| Error::kafka(context, e))
}

/// A planned range during a fetch: its records on their way to its output.
#[derive(Debug)]
struct OpenRange {
    range: OffsetRange,
    /// `None` once the reader is gone (or when nobody reads the range): records are dropped.
    sender: Option<RangeSender>,
    limits: ChunkLimits,
    /// The chunk being filled, and its approximate size.
    chunk: Vec<Record>,
    chunk_bytes: usize,
    /// Full chunks the output has no room for yet.
    pending: VecDeque<Vec<Record>>,
    /// True once the partition's position reached `until`.
    complete: bool,
    /// True while the partition is paused because the output is full.
    throttled: bool,
    /// Records of the range received.
    read: u64,
}

impl OpenRange {
    fn push(&mut self, record: Record) {
        self.read += 1;
        if self.sender.is_none() {
            return;
        }
        self.chunk_bytes += record_bytes(&record);
        self.chunk.push(record);
        if self.chunk.len() >= self.limits.records || self.chunk_bytes >= self.limits.bytes {
            self.seal();
        }
    }

    fn seal(&mut self) {
        if !self.chunk.is_empty() {
            self.pending.push_back(std::mem::take(&mut self.chunk));
            self.chunk_bytes = 0;
        }
    }

    fn complete(&mut self) {
        self.complete = true;
        self.seal();
    }

    /// Sends pending chunks while the output takes them (waiting up to [`SEND_WAIT`] for a
    /// ready reader); true when some are left.
    async fn deliver(&mut self) -> bool {
        if self.sender.as_ref().is_some_and(RangeSender::is_closed) {
            self.sender = None;
        }
        let Some(sender) = &self.sender else {
            self.pending.clear();
            return false;
        };
        let wanted = sender.is_wanted();
        while let Some(chunk) = self.pending.pop_front() {
            let sent = if wanted {
                sender.send_within(chunk, SEND_WAIT).await
            } else {
                sender.try_send(chunk)
            };
            match sent {
                Sent::Sent => {}
                Sent::Full(chunk) => {
                    self.pending.push_front(chunk);
                    return true;
                }
                Sent::Dropped => {
                    self.sender = None;
                    self.pending.clear();
                    self.chunk.clear();
                    return false;
                }
            }
        }
        false
    }

    /// True when the range is read and delivered, and its end can be sent without waiting.
    fn is_delivered(&self) -> bool {
        self.complete
            && self.pending.is_empty()
            && self.sender.as_ref().is_none_or(RangeSender::has_room)
    }
}

/// The direct Kafka source.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    config: KafkaSourceConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// True while a background request wakes librdkafka's fetchers (see
    /// [`KafkaSource::wake_fetchers`]).
    waking: Arc<AtomicBool>,
    budget: MemoryBudget,
    /// What each partition may read ahead, by the budget and the partitions of the last plan.
    max_ahead_bytes: usize,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topics", &self.config.topics)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer with the default memory budget; nothing is assigned until
    /// [`KafkaSource::assign`].
    pub fn connect(config: &KafkaSourceConfig, group_id: &str) -> Result<Self> {
        Self::connect_with_budget(config, group_id, MemoryBudget::default())
    }

    /// Creates the consumer, its prefetch and the chunks of its fetches sized by `budget`
    /// (librdkafka properties the user set in `source.properties` win); nothing is assigned
    /// until [`KafkaSource::assign`].
    pub fn connect_with_budget(
        config: &KafkaSourceConfig,
        group_id: &str,
        budget: MemoryBudget,
    ) -> Result<Self> {
        let mut client = config.client_config(group_id);
        for (key, value) in budget.kafka_properties() {
            if !config.properties.contains_key(key) {
                client.set(key, value);
            }
        }
        if client.get("fetch.wait.max.ms").is_none() {
            // A Fetch still waiting when its partitions are paused holds up the next Fetch and
            // every offsets request on the connection for this long: keep it short. Ranges end
            // at offsets that exist, so long polls would gain nothing.
            client.set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
        }
        if client.get("fetch.queue.backoff.ms").is_none() {
            // A partition whose prefetch queue is full waits this long before its next fetch
            // (librdkafka's default is a second): with the queue sized by the memory budget and
            // writers slower than Kafka, that second stalled every backlog read.
            client.set("fetch.queue.backoff.ms", FETCH_WAIT_MAX_MS);
        }
        let context = SourceContext::new(config.properties.get("sasl.password").cloned());
        let consumer: SourceConsumer = client
            .create_with_context(context)
            .map_err(|e| Error::kafka(format!("creating a consumer for {}", config.brokers), e))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            config: config.clone(),
            partitions: BTreeMap::new(),
            waking: Arc::new(AtomicBool::new(false)),
            budget,
            max_ahead_bytes: budget.ahead_bytes(1),
        })
    }

    /// `result`, or when it failed and the brokers refused the consumer, their refusal: the
    /// failed call itself saw only a timeout or a lost connection. librdkafka queues its errors
    /// for the consumer's poll; while nothing is assigned no record can be taken by polling, so
    /// the queue is drained here (the fetch loop polls it otherwise).
    async fn or_refusal<T>(&self, result: Result<T>) -> Result<T> {
        let Err(error) = result else {
            return result;
        };
        if self.partitions.is_empty() {
            while let Ok(Err(_)) = tokio::time::timeout(IDLE_CHECK, self.consumer.recv()).await {}
        }
        Err(self.consumer.context().refusal().unwrap_or(error))
    }

    /// Every partition of the configured topics, as the brokers see them now.
    ///
    /// A topic that does not exist is an error (weir never creates topics).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads metadata.
    pub async fn discover(&self) -> Result<BTreeSet<TopicPartition>> {
        let consumer = Arc::clone(&self.consumer);
        let topics = self.config.topics.clone();
        let result = run_blocking("a Kafka request", move || {
            let mut found = BTreeSet::new();
            for topic in &topics {
                let metadata = consumer
                    .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                    .map_err(|e| Error::kafka(format!("reading metadata of topic {topic}"), e))?;
                let entry = metadata.topics().iter().find(|t| t.name() == topic);
                let Some(entry) =
                    entry.filter(|t| t.error().is_none() && !t.partitions().is_empty())
                else {
                    return Err(Error::SourceVanished {
                        what: format!("topic {topic}"),
                    });
                };
                found.extend(
                    entry
                        .partitions()
                        .iter()
                        .map(|p| TopicPartition::new(topic.clone(), p.id())),
                );
            }
            Ok(found)
        })
        .await;
        self.or_refusal(result).await
    }

    /// The log start and last stable offset of each partition.
    ///
    /// Under `read_committed` the broker's answer is the last stable offset, so no plan ever
    /// reaches into an open transaction.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads offsets.
    pub async fn watermarks(
        &self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Watermarks>> {
        let consumer = Arc::clone(&self.consumer);
        let partitions = partitions.clone();
        let result = run_blocking("a Kafka request", move || {
            partitions
                .into_iter()
                .map(|tp| {
                    let (low, high) = consumer
                        .fetch_watermarks(&tp.topic, tp.partition, REQUEST_TIMEOUT)
                        .map_err(|e| Error::kafka(format!("reading the offsets of {tp}"), e))?;
                    Ok((
                        tp,
                        Watermarks {
                            log_start: low,
                            stable_end: high,
                        },
                    ))
                })
                .collect()
        })
        .await;
        self.or_refusal(result).await
    }

    /// Where each partition starts on a pipeline's first run, by `starting_offsets` and the
    /// explicit `start_offsets`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads offsets.
    pub async fn starting_positions(
        &self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let watermarks = self.watermarks(partitions).await?;
        let committed = match self.config.starting_offsets {
            StartingOffsets::Committed => self.committed(partitions).await?,
            _ => BTreeMap::new(),
        };
        let explicit = self.config.explicit_start_offsets();
        let positions = watermarks
            .into_iter()
            .map(|(tp, w)| {
                let position = match (explicit.get(&tp), self.config.starting_offsets) {
                    (Some(&offset), _) => offset,
                    (None, StartingOffsets::Earliest) => w.log_start,
                    (None, StartingOffsets::Latest) => w.stable_end,
                    (None, StartingOffsets::Committed) => {
                        committed.get(&tp).copied().unwrap_or(w.log_start)
                    }
                };
                (tp, position)
            })
            .collect();
        Ok(positions)
    }

    async fn committed(
        &self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let consumer = Arc::clone(&self.consumer);
        let list = partition_list(partitions.iter().map(|tp| (tp, Offset::Invalid)))?;
        let result = run_blocking("a Kafka request", move || {
            let committed = consumer
                .committed_offsets(list, REQUEST_TIMEOUT)
                .map_err(|e| Error::kafka("reading the consumer group's committed offsets", e))?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((TopicPartition::new(e.topic(), e.partition()), o)),
                    _ => None,
                })
                .collect())
        })
        .await;
        self.or_refusal(result).await
    }

    /// Assigns exactly these partitions at these offsets, replacing any earlier assignment, and
    /// pauses them all until a plan needs them.
    pub fn assign(&mut self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let list = partition_list(positions.iter().map(|(tp, &o)| (tp, Offset::Offset(o))))?;
        self.assign_paused(&list)?;
        self.partitions = positions
            .iter()
            .map(|(tp, &position)| {
                let state = PartitionState {
                    received: position,
                    ahead: Ahead::default(),
                    paused: true,
                    read_ahead: 0,
                };
                (tp.clone(), state)
            })
            .collect();
        debug!(partitions = positions.len(), "Assigned partitions.");
        Ok(())
    }

    /// The partitions assigned now.
    pub fn assigned(&self) -> BTreeSet<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Reads every record of every range of `plan`, one [`PartitionBatch`] per range, in the
    /// plan's order (see [`KafkaSource::fetch_into`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: records received before cancellation are lost from this source's
    /// buffers. After a cancellation, re-[`assign`](KafkaSource::assign) before fetching again.
    pub async fn fetch(&mut self, plan: &BatchPlan) -> Result<Vec<PartitionBatch>> {
        let (senders, readers) = range_channels(plan.batch_time, &plan.ranges, 2);
        let collect = futures::future::try_join_all(readers.into_iter().map(RangeReader::collect));
        // Both to the end: a failed fetch's own error is the one to report.
        let (read, batches) = tokio::join!(self.fetch_into(plan, senders), collect);
        read?;
        batches
    }

    /// Reads every record of every range of `plan`, sending each range's records to its
    /// output in chunks as they arrive; returns the records read. Partitions not in the plan,
    /// or whose range is empty, are not touched.
    ///
    /// A range whose output is full waits: its partition is paused until the output has room,
    /// while the others go on, so memory stays bounded by the chunks in flight whatever the
    /// size of the batch. Every planned partition must be assigned at a position at or before
    /// its `from`, and ranges must follow the previous fetch's (invariant 1); the source drops
    /// redelivered records and keeps records beyond `until` for the next range.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: records received before cancellation are lost from this source's
    /// buffers. After a cancellation, re-[`assign`](KafkaSource::assign) before fetching again.
    pub async fn fetch_into(&mut self, plan: &BatchPlan, outputs: Vec<RangeSender>) -> Result<u64> {
        self.skip_to_plan(plan)?;
        let taken = outputs.first().map(RangeSender::taken);
        let mut outputs: BTreeMap<TopicPartition, RangeSender> = outputs
            .into_iter()
            .map(|o| (o.range().tp.clone(), o))
            .collect();
        let limits = self.budget.chunk_limits(plan.ranges.len());
        self.max_ahead_bytes = self.budget.ahead_bytes(plan.ranges.len());
        let max_ahead = self.max_ahead_bytes;
        let mut open: BTreeMap<TopicPartition, OpenRange> = BTreeMap::new();
        let mut resume = Vec::new();
        let mut pause = Vec::new();
        for range in &plan.ranges {
            let state = self
                .partitions
                .get_mut(&range.tp)
                .ok_or_else(|| Error::Batch {
                    batch_time: plan.batch_time,
                    message: format!("{} is planned but not assigned", range.tp),
                })?;
            let mut output = OpenRange {
                range: range.clone(),
                sender: outputs.remove(&range.tp),
                limits,
                chunk: Vec::new(),
                chunk_bytes: 0,
                pending: VecDeque::new(),
                complete: false,
                throttled: false,
                read: 0,
            };
            // Records received ahead during earlier fetches come first.
            while let Some(record) = state.ahead.records.front() {
                if record.offset < range.from {
                    state.ahead.pop();
                } else if record.offset < range.until {
                    if let Some(record) = state.ahead.pop() {
                        output.push(record);
                    }
                } else {
                    break;
                }
            }
            let reached = !state.ahead.records.is_empty() || state.received >= range.until;
            state.read_ahead = usize::try_from(range.len()).unwrap_or(usize::MAX);
            if range.is_empty() || reached {
                output.complete();
                // Read the next range while this batch runs, or stop reading an idle partition.
                let wanted = state.wants_more(max_ahead);
                if wanted && state.paused {
                    resume.push(range.tp.clone());
                    state.paused = false;
                } else if !wanted && !state.paused {
                    pause.push(range.tp.clone());
                    state.paused = true;
                }
            }
            // A range still to read is resumed once its reader asks (see `deliver`).
            open.insert(range.tp.clone(), output);
        }
        self.pause_list(&pause)?;
        self.resume_list(&resume)?;

        let mut waited = Duration::ZERO;
        let mut read = 0;
        // A record borrows the consumer; a handle of our own leaves `self` free to update.
        let consumer = Arc::clone(&self.consumer);
        let taken = taken.unwrap_or_default();
        loop {
            read += self.deliver(&mut open).await?;
            if open.is_empty() {
                break;
            }
            if open.values().all(|o| o.complete) {
                // Everything is read: wait for the outputs to take what they hold.
                let _ = tokio::time::timeout(IDLE_CHECK, taken.notified()).await;
                continue;
            }
            tokio::select! {
                received = tokio::time::timeout(IDLE_CHECK, consumer.recv()) => match received {
                    Ok(Ok(message)) => self.dispatch(&message, &mut open)?,
                    Ok(Err(e)) => {
                        if matches!(
                            e.rdkafka_error_code(),
                            Some(
                                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
                            )
                        ) {
                            return Err(self.lost_while_reading(&open, e).await);
                        }
                        let error = call_error(&consumer, "reading records", e);
                        if !error.is_retryable() {
                            return Err(error);
                        }
                        warn!(message = "Kafka read failed; retrying.", %error);
                    }
                    Err(_elapsed) => {
                        if let Some(refusal) = consumer.context().refusal() {
                            return Err(refusal);
                        }
                        self.finish_by_position(&mut open)?;
                        waited += IDLE_CHECK;
                        if waited >= SLOW_WARNING {
                            waited = Duration::ZERO;
                            for output in open.values().filter(|o| !o.complete && !o.throttled) {
                                warn!(
                                    message = "Partition is slow to reach the end of its planned range; still waiting.",
                                    batch_time = %plan.batch_time,
                                    range = %output.range,
                                    received = output.read,
                                );
                            }
                        }
                    }
                },
                () = taken.notified() => {}
            }
        }
        Ok(read)
    }

    /// Hands every open range's chunks to its output. A ready reader (its writer asked for
    /// data) is waited for up to [`SEND_WAIT`]: the fetch goes at the pace of the writers. One
    /// that is not ready, or does not take a chunk in time (its writer waits for a lock another
    /// writer of the batch holds), is not waited for: its partition is paused until the reader
    /// has room again, so that the other partitions go on. A range is resumed once its reader
    /// is ready; ranges read and delivered to the end are dropped (returning their records).
    async fn deliver(&mut self, open: &mut BTreeMap<TopicPartition, OpenRange>) -> Result<u64> {
        let mut pause = Vec::new();
        let mut resume = Vec::new();
        let mut delivered = Vec::new();
        for (tp, output) in open.iter_mut() {
            let full = output.deliver().await;
            let wanted = output.sender.as_ref().is_some_and(RangeSender::is_wanted);
            let paused = self.partitions.get(tp).is_none_or(|s| s.paused);
            if output.is_delivered() {
                delivered.push(tp.clone());
            } else if output.complete {
                // Read to its end: nothing to pause or resume.
            } else if full && !paused {
                output.throttled = true;
                pause.push(tp.clone());
            } else if !full && paused && (wanted || output.sender.is_none()) {
                output.throttled = false;
                resume.push(tp.clone());
            }
        }
        let mut read = 0;
        for tp in delivered {
            if let Some(output) = open.remove(&tp) {
                read += output.read;
                if let Some(sender) = output.sender {
                    // Room was checked by `is_delivered`.
                    sender.try_finish();
                }
            }
        }
        for tp in pause.iter().chain(&resume) {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.paused = !state.paused;
            }
        }
        self.pause_list(&pause)?;
        self.resume_list(&resume)?;
        Ok(read)
    }

    fn pause_list(&self, pause: &[TopicPartition]) -> Result<()> {
        if !pause.is_empty() {
            let list = partition_list(pause.iter().map(|tp| (tp, Offset::Invalid)))?;
            self.consumer
                .pause(&list)
                .map_err(|e| Error::kafka("pausing partitions", e))?;
        }
        Ok(())
    }

    fn resume_list(&self, resume: &[TopicPartition]) -> Result<()> {
        if !resume.is_empty() {
            let list = partition_list(resume.iter().map(|tp| (tp, Offset::Invalid)))?;
            self.consumer
                .resume(&list)
                .map_err(|e| Error::kafka("resuming partitions", e))?;
            self.wake_fetchers(&list);
        }
        Ok(())
    }

    /// librdkafka does not wake a broker thread when one of its partitions is resumed: a thread
    /// with nothing to fetch sleeps up to a second (`rd_kafka_max_block_ms`) before it notices,
    /// which made every batch with records take a second. Any request to a partition's leader
    /// wakes its thread, so the resumed partitions' offsets for a timestamp are asked for in the
    /// background (one ListOffsets request per leader); the answer is not needed. One waker at a
    /// time: while one waits for its answer, that answer wakes the threads anyway.
    fn wake_fetchers(&self, resumed: &TopicPartitionList) {
        if self.waking.swap(true, Ordering::AcqRel) {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let waking = Arc::clone(&self.waking);
        let mut query = TopicPartitionList::new();
        for element in resumed.elements() {
            // The list holds valid partitions, so adding them again cannot fail.
            let _ =
                query.add_partition_offset(element.topic(), element.partition(), Offset::Offset(0));
        }
        // Detached: the batch does not wait for the answer.
        drop(tokio::task::spawn_blocking(move || {
            if let Err(error) = consumer.offsets_for_times(query, REQUEST_TIMEOUT) {
                debug!(message = "Waking the fetchers failed; they wake within a second anyway.", %error);
            }
            waking.store(false, Ordering::Release);
        }));
    }

    /// The error for a fetch that found its offsets gone: retention deleted records of a range
    /// after it was planned (or while a logged plan waited for its replay). librdkafka does not
    /// say which partition; the one whose log now starts beyond what was read is named. Left
    /// alone, librdkafka would stop fetching the partition and the batch would wait forever.
    async fn lost_while_reading(
        &self,
        open: &BTreeMap<TopicPartition, OpenRange>,
        cause: KafkaError,
    ) -> Error {
        let partitions: BTreeSet<TopicPartition> = open
            .iter()
            .filter(|(_, o)| !o.complete)
            .map(|(tp, _)| tp.clone())
            .collect();
        let watermarks = match self.watermarks(&partitions).await {
            Ok(watermarks) => watermarks,
            Err(error) => return error,
        };
        watermarks
            .into_iter()
            .find_map(|(tp, marks)| {
                let from = self.partitions.get(&tp)?.received;
                (from < marks.log_start).then_some(Error::DataLoss {
                    tp,
                    from,
                    log_start: marks.log_start,
                })
            })
            .unwrap_or_else(|| Error::kafka("reading records", cause))
    }

    /// Moves every partition whose non-empty range starts beyond what was read to the range's
    /// start. That happens only when the plan skipped offsets that retention deleted
    /// (`on_data_loss = "skip"`): fetching from the old position would fail with "offset out of
    /// range". A partition whose log was replaced (a recreated topic) moves back to its new
    /// log's start the same way. The consumer is assigned again, every partition at the offset
    /// it has read up to, so records held for later ranges stay valid.
    fn skip_to_plan(&mut self, plan: &BatchPlan) -> Result<()> {
        let mut skipped = false;
        for range in plan.ranges.iter().filter(|r| !r.is_empty()) {
            let rewound = plan.gap_before(range).is_some_and(OffsetRange::is_rewind);
            if let Some(state) = self.partitions.get_mut(&range.tp)
                && (state.received < range.from || rewound)
            {
                debug!(message = "Skipping to the planned range.", partition = %range.tp, from = state.received, to = range.from);
                state.received = range.from;
                state.ahead.clear();
                skipped = true;
            }
        }
        if !skipped {
            return Ok(());
        }
        let list = partition_list(
            self.partitions
                .iter()
                .map(|(tp, state)| (tp, Offset::Offset(state.received))),
        )?;
        self.assign_paused(&list)?;
        for state in self.partitions.values_mut() {
            state.paused = true;
        }
        Ok(())
    }

    /// Replaces the consumer's assignment with `list`, every partition paused.
    fn assign_paused(&self, list: &TopicPartitionList) -> Result<()> {
        self.consumer
            .assign(list)
            .map_err(|e| Error::kafka("assigning partitions", e))?;
        self.consumer
            .pause(list)
            .map_err(|e| Error::kafka("pausing partitions", e))
    }

    fn dispatch(
        &mut self,
        message: &BorrowedMessage<'_>,
        open: &mut BTreeMap<TopicPartition, OpenRange>,
    ) -> Result<()> {
        let tp = TopicPartition::new(message.topic(), message.partition());
        let offset = message.offset();
        let Some(state) = self.partitions.get_mut(&tp) else {
            debug!(message = "Dropped a record of an unassigned partition.", %tp, offset);
            return Ok(());
        };
        if offset < state.received {
            return Ok(());
        }
        state.received = offset + 1;
        let record = Record::from_message(message);
        match open.get_mut(&tp).filter(|o| !o.complete) {
            Some(output) if offset < output.range.until => {
                output.push(record);
                if state.received >= output.range.until {
                    output.complete();
                    self.pause_when_full(&tp)?;
                }
            }
            Some(output) => {
                state.ahead.push(record);
                output.complete();
                self.pause_when_full(&tp)?;
            }
            None => {
                state.ahead.push(record);
                self.pause_when_full(&tp)?;
            }
        }
        Ok(())
    }

    /// Completes ranges whose position passed `until` without a record to show it: the range
    /// ended in a gap (transaction marker, aborted records, compaction).
    ///
    /// A trailing transaction marker does move the position, confirmed on Kafka 4.1 with
    /// librdkafka 2.12 (`tests/it/engine_txn.rs`): librdkafka queues every commit or abort
    /// marker as a control message that the application never sees, and serving it from the
    /// queue sets the partition's application position to the marker's offset + 1
    /// (`rd_kafka_op_handle_std` → `rd_kafka_fetch_op_app_prepare`). Records of aborted
    /// transactions are dropped before they are queued, but their abort marker follows them,
    /// so a range ending in aborted records finishes too. The marker is served by the same
    /// `recv` that waits for records, so it is seen at the next idle check.
    fn finish_by_position(&mut self, open: &mut BTreeMap<TopicPartition, OpenRange>) -> Result<()> {
        let positions = self
            .consumer
            .position()
            .map_err(|e| Error::kafka("reading consumer positions", e))?;
        let mut reached = Vec::new();
        for element in positions.elements() {
            let tp = TopicPartition::new(element.topic(), element.partition());
            if let (Some(output), Offset::Offset(position)) = (open.get(&tp), element.offset())
                && !output.complete
                && position >= output.range.until
            {
                reached.push(tp);
            }
        }
        for tp in reached {
            if let Some(output) = open.get_mut(&tp) {
                if let Some(state) = self.partitions.get_mut(&tp) {
                    state.received = state.received.max(output.range.until);
                }
                output.complete();
            }
            self.pause_when_full(&tp)?;
        }
        Ok(())
    }

    /// Pauses a partition whose range is done once it holds its read-ahead.
    fn pause_when_full(&mut self, tp: &TopicPartition) -> Result<()> {
        let max_ahead = self.max_ahead_bytes;
        if let Some(state) = self.partitions.get_mut(tp)
            && !state.paused
            && !state.wants_more(max_ahead)
        {
            let list = partition_list([(tp, Offset::Invalid)])?;
            self.consumer
                .pause(&list)
                .map_err(|e| Error::kafka(format!("pausing {tp}"), e))?;
            state.paused = true;
        }
        Ok(())
    }

    /// Commits `positions` to the consumer group, for lag tools only; weir never reads them back
    /// as truth (except `starting_offsets = "committed"` on a first start).
    pub fn commit_offsets(&self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let list = partition_list(positions.iter().map(|(tp, &o)| (tp, Offset::Offset(o))))?;
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(|e| Error::kafka("committing offsets to the consumer group", e))
    }
}

fn partition_list<'a>(
    entries: impl IntoIterator<Item = (&'a TopicPartition, Offset)>,
) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (tp, offset) in entries {
        list.add_partition_offset(&tp.topic, tp.partition, offset)
            .map_err(|e| Error::kafka(format!("listing {tp}"), e))?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_or_handshake_is_kept_once_without_the_password() {
        let context = SourceContext::new(Some("s3cret".into()));
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(
            context.refusal().is_none(),
            "a lost broker is not a refusal"
        );

        context.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "sasl_ssl://b:9094/bootstrap: SASL authentication error: bad s3cret",
        );
        context.error(
            KafkaError::Global(RDKafkaErrorCode::SSL),
            "sasl_ssl://b:9094/bootstrap: SSL handshake failed",
        );
        let error = context.refusal().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("authentication failed"), "{error}");
        assert!(error.contains("source.properties.sasl.password"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        assert!(
            !Error::KafkaRefused {
                problem: String::new(),
                reason: String::new(),
                advice: String::new(),
            }
            .is_retryable()
        );

        let context = SourceContext::new(None);
        context.error(
            KafkaError::Global(RDKafkaErrorCode::SSL),
            "SSL handshake failed",
        );
        let error = context.refusal().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("TLS") && error.contains("ssl.ca.location"),
            "{error}"
        );
    }
}
