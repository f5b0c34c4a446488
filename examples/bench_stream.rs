//! Measures the stateful word count of `examples/update_state_by_key_word_count.rs` on the real
//! broker against a raw rdkafka read of the same topic, in the same run. Prints figures and
//! checks the final state: a wrong total, distinct count or checksum exits non-zero.
//!
//! ```text
//! scripts/services up kafka && eval "$(scripts/services env)"
//! cargo run --release --example bench_stream                       # 10^6 lines, 8 partitions
//! cargo run --release --example bench_stream -- --records 200000 --max-rate-per-partition 50000
//! ```
//!
//! 1. **Input**: `--records` lines of 1 to `--max-words` words drawn uniformly from a vocabulary
//!    of `--vocabulary` made-up words, all from a seeded generator (`--seed`), produced
//!    round-robin to a fresh topic of `--partitions` partitions (idempotent producer, so the
//!    topic holds each line once). The producer counts every word it sends: the expected state.
//! 2. **Raw read**, the baseline: a child process of this example reads the topic with one
//!    rdkafka `BaseConsumer` (assigned from the first offset of every partition, payloads touched,
//!    nothing decoded), timed from `assign` to the last record.
//! 3. **Stateful word count**: another child process runs `running_counts` (`flat_map` words,
//!    `map` to `(word, 1)`, `update_state_by_key` under the id `word-totals`) through a
//!    `StreamingContext` with a fresh checkpoint, `--interval-ms` batches and
//!    `--max-rate-per-partition` (unlimited unless given: the first batch then takes the whole
//!    topic). The scheduler's "Batch done." events count the records; the event that reaches
//!    `--records` cancels the shutdown token, and the run finishes that batch, writes its final
//!    snapshot and returns. Timed from the first "Planned batch." event to that last "Batch
//!    done." (the wait for the first tick of the batch grid is left out, and shown apart). The
//!    batches' processing times over that span say how busy the job was: below 100% the cap or
//!    the batch grid held it back, and the figure is not the job's throughput.
//!
//! Peak RSS is each child's own `VmHWM` (`/proc/self/status`), with its `VmRSS` before the
//! measured work for reference; the parent's memory (the producer) is in neither. The topic is
//! deleted at the end. `RUST_LOG` filters what the children log to stderr (default `warn`).
// A benchmark reads the clock; the ban on it (clippy.toml) guards weir's outputs.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer, Registry};
use weir::stream::{StreamConfig, StreamingContext};

#[allow(dead_code)]
#[path = "update_state_by_key_word_count.rs"]
mod update_state_by_key_word_count;

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Lines produced, read raw and counted.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Distinct words the lines are made of.
    #[arg(long, default_value_t = 10_000)]
    vocabulary: u64,
    /// Most words in a line (each line has 1 to this many).
    #[arg(long, default_value_t = 8)]
    max_words: u64,
    /// Seed of the vocabulary and the lines.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Batch interval of the word count, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    interval_ms: u64,
    /// The word count's cap per partition in records/s; unlimited when not given.
    #[arg(long)]
    max_rate_per_partition: Option<u64>,
    /// Each phase fails after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Internal: run one phase over `--topic` and report on stdout (the child process).
    #[arg(long, hide = true, value_enum)]
    phase: Option<Phase>,
    /// Internal: the topic the child reads.
    #[arg(long, hide = true)]
    topic: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// The raw rdkafka read.
    Raw,
    /// The stateful word count.
    Stream,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Stream => "stream",
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.records > 0 && args.partitions > 0 && args.vocabulary > 0 && args.max_words > 0,
        "--records, --partitions, --vocabulary and --max-words must be positive"
    );
    match (args.phase, args.topic.clone()) {
        (Some(Phase::Raw), Some(topic)) => {
            tokio::task::spawn_blocking(move || raw_read(&args, &topic)).await?
        }
        (Some(Phase::Stream), Some(topic)) => word_count(&args, &topic).await,
        (Some(_), None) => bail!("--phase needs --topic"),
        (None, _) => parent(&args).await,
    }
}

// --- the parent: input, the two phases, figures and checks --------------------------------

async fn parent(args: &Args) -> Result<()> {
    let load_before = load_average();
    let admin: AdminClient<DefaultClientContext> = kafka_config(&args.brokers).create()?;
    let topic = format!("weir-bench-stream-{}", std::process::id());
    let new = NewTopic::new(&topic, args.partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating topic {topic}: {code}"))?;
    }
    let result = measure(args, &topic, load_before).await;
    if let Err(error) = admin.delete_topics(&[&topic], &AdminOptions::new()).await {
        eprintln!("could not delete topic {topic}: {error}");
    }
    result
}

async fn measure(args: &Args, topic: &str, load_before: String) -> Result<()> {
    let expected = produce(args, topic).await?;
    let raw = child(args, Phase::Raw, topic).await?;
    let raw_records: u64 = raw.number("records")?;
    let raw_seconds: f64 = raw.number("seconds")?;
    let raw_rate = rate(raw_records, raw_seconds);
    println!(
        "raw read (one rdkafka BaseConsumer, assign to last record): {raw_records} records, {:.1} MiB of values in {raw_seconds:.2} s = {raw_rate:.0} records/s; peak RSS {} MiB ({} MiB before the read)",
        raw.number::<f64>("value_bytes")? / 1_048_576.0,
        raw.get("peak_rss_mib"),
        raw.get("rss_before_mib"),
    );

    let stream = child(args, Phase::Stream, topic).await?;
    let records: u64 = stream.number("records")?;
    let seconds: f64 = stream.number("seconds")?;
    let stream_rate = rate(records, seconds);
    // The job idles between batches only when the cap or the batch grid holds it back.
    let busy = stream.number::<f64>("processing_seconds")? / seconds.max(f64::EPSILON);
    let cap = args
        .max_rate_per_partition
        .map_or_else(|| "unlimited".to_owned(), |r| format!("{r}/s"));
    println!(
        "stateful word count (update_state_by_key, {} ms batches, max_rate_per_partition {cap}, {} output partitions): {records} records in {} batches, {seconds:.2} s from the first planned batch to the last batch done = {stream_rate:.0} records/s (busy {:.0}% of that time; {} s from run(), the wait for the first tick included); peak RSS {} MiB ({} MiB before run)",
        args.interval_ms,
        stream.get("output_partitions"),
        stream.get("batches"),
        busy * 100.0,
        stream.get("seconds_from_run"),
        stream.get("peak_rss_mib"),
        stream.get("rss_before_mib"),
    );
    if busy < 0.9 {
        println!(
            "note: the word count waited for the batch grid {:.0}% of the time: the cap throttles it; raise --max-rate-per-partition",
            (1.0 - busy) * 100.0
        );
    }
    let distinct: u64 = stream.number("distinct")?;
    let total: u64 = stream.number("total")?;
    let checksum = stream.get("checksum");
    println!(
        "final state: {distinct} distinct words (expected {}), total count {total} (words produced {}), checksum {checksum} (expected {:016x})",
        expected.distinct, expected.total, expected.checksum
    );
    println!(
        "load average (1, 5, 15 min) before: {load_before}; after: {}; {} cores",
        load_average(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "bench_stream: records={} stateful_wordcount={stream_rate:.0} rec/s raw_read={raw_rate:.0} rec/s ratio={:.2} peak_rss={} MiB",
        args.records,
        stream_rate / raw_rate,
        stream.get("peak_rss_mib"),
    );

    let mut wrong = Vec::new();
    if raw_records != args.records {
        wrong.push(format!("the raw read got {raw_records} records"));
    }
    if records != args.records || stream.number::<u64>("summary_records")? != args.records {
        wrong.push(format!(
            "the word count read {records} records (run summary: {})",
            stream.get("summary_records")
        ));
    }
    if total != expected.total {
        wrong.push(format!(
            "the counts add up to {total}, not the {} words produced",
            expected.total
        ));
    }
    if distinct != expected.distinct || checksum != format!("{:016x}", expected.checksum) {
        wrong.push("the final state differs from the words produced".to_owned());
    }
    ensure!(
        wrong.is_empty(),
        "bench_stream: WRONG RESULT: {}",
        wrong.join("; ")
    );
    Ok(())
}

/// What the word count's final state must be.
struct Expected {
    total: u64,
    distinct: u64,
    checksum: u64,
}

/// Produces the lines and counts their words.
async fn produce(args: &Args, topic: &str) -> Result<Expected> {
    let producer: FutureProducer = kafka_config(&args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    let vocabulary = vocabulary(args.seed, args.vocabulary)?;
    let mut lines = Lines::new(args, &vocabulary);
    let mut counts = vec![0_u64; vocabulary.len()];
    eprint!(
        "producing {} lines ({} words, 1 to {} a line, seed {}) to {topic} over {} partitions …",
        args.records, args.vocabulary, args.max_words, args.seed, args.partitions
    );
    let started = Instant::now();
    let partitions = u64::try_from(args.partitions)?;
    let mut produced = 0;
    while produced < args.records {
        // In chunks, so that the producer's queue never overflows.
        let chunk = (args.records - produced).min(10_000);
        let mut pending = Vec::new();
        for number in produced..produced + chunk {
            let line = lines.next_line(|word| counts[word] += 1)?;
            let record = FutureRecord::<(), _>::to(topic)
                .partition(i32::try_from(number % partitions)?)
                .payload(&line);
            pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for delivery in pending {
            delivery.await?.map_err(|(e, _)| e)?;
        }
        produced += chunk;
    }
    producer.flush(Duration::from_secs(60))?;
    let spent = started.elapsed().as_secs_f64();
    let total = counts.iter().sum();
    eprintln!(" {total} words in {spent:.1} s");
    let state: BTreeMap<&str, u64> = vocabulary
        .iter()
        .zip(counts)
        .filter(|(_, count)| *count > 0)
        .map(|(word, count)| (word.as_str(), count))
        .collect();
    Ok(Expected {
        total,
        distinct: u64::try_from(state.len())?,
        checksum: checksum(state),
    })
}

/// Runs `phase` in a child process of this example and returns its report.
async fn child(args: &Args, phase: Phase, topic: &str) -> Result<Report> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(["--phase", phase.name(), "--topic", topic])
        .args(["--brokers", &args.brokers])
        .args(["--records", &args.records.to_string()])
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--interval-ms", &args.interval_ms.to_string()])
        .args(["--timeout-secs", &args.timeout_secs.to_string()])
        .stderr(std::process::Stdio::inherit());
    if let Some(rate) = args.max_rate_per_partition {
        command.args(["--max-rate-per-partition", &rate.to_string()]);
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "the {} phase failed ({}):\n{stdout}",
            phase.name(),
            output.status
        );
    }
    Ok(Report(
        stdout
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

/// A child's `key=value` lines.
struct Report(BTreeMap<String, String>);

impl Report {
    fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("?", String::as_str)
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        self.get(key)
            .parse()
            .map_err(|_| anyhow::anyhow!("the child reported {key}={:?}", self.get(key)))
    }
}

// --- the children ---------------------------------------------------------------------------

/// The raw read: one consumer, every partition from its first offset to its end.
fn raw_read(args: &Args, topic: &str) -> Result<()> {
    let consumer: BaseConsumer = kafka_config(&args.brokers)
        .set(
            "group.id",
            format!("weir-bench-stream-raw-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in 0..args.partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        if high > low {
            ends.insert(partition, high);
        }
    }
    let rss_before = rss_mib("VmRSS");
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let (mut records, mut value_bytes) = (0_u64, 0_u64);
    let deadline = started + Duration::from_secs(args.timeout_secs);
    while !ends.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let message = consumer
            .poll(wait)
            .with_context(|| format!("the raw read stalled at {records} records"))??;
        records += 1;
        value_bytes += u64::try_from(message.payload_len())?;
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("records={records}");
    println!("value_bytes={value_bytes}");
    println!("seconds={seconds:.4}");
    println!("rss_before_mib={}", rss_before.unwrap_or(0));
    println!("peak_rss_mib={}", rss_mib("VmHWM").unwrap_or(0));
    Ok(())
}

/// The stateful word count, from a fresh checkpoint until every record was processed.
async fn word_count(args: &Args, topic: &str) -> Result<()> {
    let shutdown = CancellationToken::new();
    let progress = Progress::install(args.records, shutdown.clone());
    let dir = tempfile::tempdir()?;
    let mut config = StreamConfig::new(
        format!("bench-stream-{}", std::process::id()),
        &args.brokers,
    );
    config.source.max_rate_per_partition = args.max_rate_per_partition;
    let output_partitions = config.output_partitions;
    let last_state: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let keep = Arc::clone(&last_state);
    let ssc = StreamingContext::get_or_create(dir.path(), || {
        let ssc = StreamingContext::new(config, Duration::from_millis(args.interval_ms));
        let lines = ssc.kafka_direct_stream::<String>(&[topic]);
        update_state_by_key_word_count::running_counts(&lines).foreach_batch(move |_, state| {
            *keep.lock().unwrap_or_else(PoisonError::into_inner) = state;
            Ok(())
        });
        Ok(ssc)
    })?;

    let rss_before = rss_mib("VmRSS");
    let started = Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(args.timeout_secs),
        ssc.run(shutdown, None),
    )
    .await
    .with_context(|| {
        format!(
            "the word count did not process {} records in {} s",
            args.records, args.timeout_secs
        )
    })??;
    let peak = rss_mib("VmHWM");
    let seen = progress.seen();
    let (Some(first), Some(done)) = (seen.first_planned, seen.done) else {
        bail!(
            "the run ended after {} of {} records",
            seen.records,
            args.records
        );
    };
    let mut state = std::mem::take(&mut *last_state.lock().unwrap_or_else(PoisonError::into_inner));
    state.sort_unstable();
    let total: u64 = state.iter().map(|(_, count)| count).sum();
    println!("records={}", seen.records);
    println!("summary_records={}", summary.records);
    println!("batches={}", summary.batches);
    println!("output_partitions={output_partitions}");
    println!("seconds={:.4}", (done - first).as_secs_f64());
    println!("processing_seconds={:.4}", seen.processing.as_secs_f64());
    println!("seconds_from_run={:.2}", (done - started).as_secs_f64());
    println!("distinct={}", state.len());
    println!("total={total}");
    println!(
        "checksum={:016x}",
        checksum(state.iter().map(|(word, count)| (word.as_str(), *count)))
    );
    println!("rss_before_mib={}", rss_before.unwrap_or(0));
    println!("peak_rss_mib={}", peak.unwrap_or(0));
    Ok(())
}

/// What the scheduler's events said so far.
#[derive(Debug, Clone, Default)]
struct Seen {
    first_planned: Option<Instant>,
    records: u64,
    /// The processing time of the batches done, summed.
    processing: Duration,
    done: Option<Instant>,
}

/// Follows the scheduler's "Planned batch." and "Batch done." events; the batch that brings the
/// records done to the target cancels the shutdown token.
#[derive(Clone)]
struct Progress {
    target: u64,
    shutdown: CancellationToken,
    seen: Arc<Mutex<Seen>>,
}

impl Progress {
    fn install(target: u64, shutdown: CancellationToken) -> Self {
        let progress = Self {
            target,
            shutdown,
            seen: Arc::default(),
        };
        let subscriber = Registry::default()
            .with(
                progress
                    .clone()
                    .with_filter(EnvFilter::new("weir::runtime=info")),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(
                        EnvFilter::try_from_default_env()
                            .unwrap_or_else(|_| EnvFilter::new("warn")),
                    ),
            );
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            eprintln!("another tracing subscriber is installed; the run will not stop by itself");
        }
        progress
    }

    fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S: tracing::Subscriber> Layer<S> for Progress {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match fields.message.as_deref() {
            Some("Planned batch.") => {
                seen.first_planned.get_or_insert_with(Instant::now);
            }
            Some("Batch done.") => {
                seen.records += fields.records.unwrap_or(0);
                seen.processing += Duration::from_millis(fields.processing_ms.unwrap_or(0));
                if seen.records >= self.target && seen.done.is_none() {
                    seen.done = Some(Instant::now());
                    self.shutdown.cancel();
                }
            }
            _ => {}
        }
    }
}

/// The fields of an event that [`Progress`] reads.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    records: Option<u64>,
    processing_ms: Option<u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "records" => self.records = Some(value),
            "processing_ms" => self.processing_ms = Some(value),
            _ => {}
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.record_u64(field, u64::try_from(value).unwrap_or(u64::MAX));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

// --- input ----------------------------------------------------------------------------------

/// SplitMix64: a small seeded generator, so that every run produces the same input.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `size` distinct made-up lowercase words of 3 to 10 letters.
fn vocabulary(seed: u64, size: u64) -> Result<Vec<String>> {
    let mut random = SplitMix(seed);
    let mut seen = HashSet::new();
    let mut words = Vec::new();
    while u64::try_from(words.len())? < size {
        let length = 3 + random.below(8);
        let word: String = (0..length)
            .map(|_| char::from(b'a' + u8::try_from(random.below(26)).unwrap_or(0)))
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    Ok(words)
}

/// The lines of the topic, one after another.
struct Lines<'a> {
    random: SplitMix,
    vocabulary: &'a [String],
    max_words: u64,
}

impl<'a> Lines<'a> {
    fn new(args: &Args, vocabulary: &'a [String]) -> Self {
        Self {
            random: SplitMix(args.seed.rotate_left(32) ^ 0x5eed),
            vocabulary,
            max_words: args.max_words,
        }
    }

    /// The next line; `count` is told the index of each of its words.
    fn next_line(&mut self, mut count: impl FnMut(usize)) -> Result<String> {
        let words = 1 + self.random.below(self.max_words);
        let size = u64::try_from(self.vocabulary.len())?;
        let mut line = String::new();
        for i in 0..words {
            let index = usize::try_from(self.random.below(size))?;
            count(index);
            if i > 0 {
                line.push(' ');
            }
            line.push_str(&self.vocabulary[index]);
        }
        Ok(line)
    }
}

/// FNV-1a over `word count\n` of every `(word, count)`, in word order.
fn checksum<'a>(state: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (word, count) in state {
        for byte in format!("{word} {count}\n").bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

// --- small helpers --------------------------------------------------------------------------

fn kafka_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// A `/proc/self/status` figure (`VmRSS`, `VmHWM`) in MiB.
fn rss_mib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".to_owned())
}

#[allow(clippy::cast_precision_loss)] // A rate for people to read.
fn rate(records: u64, seconds: f64) -> f64 {
    records as f64 / seconds.max(f64::EPSILON)
}
