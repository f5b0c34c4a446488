//! [`StreamingContext`]: where a streaming program is built and run.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::blocking::run_blocking;
use crate::checkpoint::{CheckpointStore, PipelineIdentity, default_checkpoint_interval};
use crate::config::MIN_BATCH_INTERVAL;
use crate::duration;
use crate::error::{Error, Result};
use crate::plan::interval_millis;
use crate::rate::RateController;
use crate::runtime::refuse_when_sink_ahead;
use crate::runtime::{RunSummary, Schedule, Scheduler};
use crate::sink::Sink;
use crate::source::{
    FileSource, KafkaSource, KafkaSourceConfig, Planner, SocketSource, SourceKind, SourceSet,
};

use super::dstream::{DStream, lock};
use super::graph::{Graph, Layout};
use super::job::StreamJob;
use super::source::{FromKafka, Json, KafkaInput, TextFileInput};

/// The number of output partitions of keyed streams when the configuration does not say.
pub const DEFAULT_OUTPUT_PARTITIONS: u32 = 4;

/// What a streaming program needs besides its operators.
///
/// ```
/// let config: weir::stream::StreamConfig = toml::from_str(r#"
///     name = "wordcount"
///     output_partitions = 8
///     [source]
///     brokers = "127.0.0.1:19092"
///     topics = []
///     max_rate_per_partition = 10000
/// "#).unwrap();
/// assert_eq!(config.output_partitions, 8);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The pipeline's stable name: part of every commit key and of the checkpoint's identity.
    pub name: String,
    /// The Kafka source. `topics` may stay empty: `kafka_direct_stream` adds the topics it reads.
    pub source: KafkaSourceConfig,
    /// `N`, the number of output partitions of keyed streams (`hash(key) mod N`); fixed for the
    /// life of a checkpoint, which records it.
    #[serde(default = "default_output_partitions")]
    pub output_partitions: u32,
    /// Time between snapshots; by default the smallest multiple of the batch interval and of
    /// every window slide that is at least 10 s, and the smallest such multiple when the program
    /// reads a socket: a socket's lines cannot be read again, so a batch replayed after a crash
    /// finds none, and state would fall back to the last snapshot.
    #[serde(default, with = "duration::option")]
    pub checkpoint_interval: Option<Duration>,
}

fn default_output_partitions() -> u32 {
    DEFAULT_OUTPUT_PARTITIONS
}

impl StreamConfig {
    /// A configuration for pipeline `name` that reads no Kafka topic (only directories or
    /// sockets), with every default; no broker is ever contacted.
    pub fn named(name: impl Into<String>) -> Self {
        Self::new(name, "")
    }

    /// A configuration for pipeline `name` reading from `brokers`, with every default.
    pub fn new(name: impl Into<String>, brokers: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: KafkaSourceConfig::new(brokers, Vec::new()),
            output_partitions: DEFAULT_OUTPUT_PARTITIONS,
            checkpoint_interval: None,
        }
    }
}

/// The entry point of a streaming program (Spark's `StreamingContext`): build streams from Kafka,
/// apply operators, declare outputs, then [`run_until_shutdown`](Self::run_until_shutdown).
///
/// Checkpoints hold data, never code: the program is built anew at every start and the
/// checkpoint (offsets, operator state, logged plans) is restored into it, so a recompiled
/// program resumes where the old one stopped. A change that would make the checkpoint mean
/// something else (topics, stateful operator ids or schema versions, output partitions, sinks)
/// is refused at start with what changed.
///
/// ```no_run
/// use std::time::Duration;
/// use weir::stream::{StreamConfig, StreamingContext};
///
/// # async fn example() -> weir::Result<()> {
/// let config = StreamConfig::new("wordcount", "127.0.0.1:19092");
/// let ssc = StreamingContext::get_or_create("/var/lib/weir/wordcount", || {
///     let ssc = StreamingContext::new(config, Duration::from_secs(1));
///     let lines = ssc.kafka_direct_stream::<String>(&["lines"]);
///     lines
///         .flat_map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
///         .map(|word| (word, 1_u64))
///         .reduce_by_key(|a, b| a + b)
///         .print();
///     Ok(ssc)
/// })?;
/// ssc.run_until_shutdown().await?;
/// # Ok(()) }
/// ```
pub struct StreamingContext {
    config: StreamConfig,
    batch_interval: Duration,
    checkpoint_dir: Option<PathBuf>,
    graph: Arc<Mutex<Graph>>,
}

impl std::fmt::Debug for StreamingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContext")
            .field("name", &self.config.name)
            .field("batch_interval", &self.batch_interval)
            .field("checkpoint_dir", &self.checkpoint_dir)
            .finish_non_exhaustive()
    }
}

impl StreamingContext {
    /// A context producing a batch every `batch_interval` (at least 50 ms, whole milliseconds).
    /// Mistakes in the configuration or the program are reported when it runs.
    pub fn new(config: StreamConfig, batch_interval: Duration) -> Self {
        let graph = Graph::new(
            config.name.clone(),
            batch_interval,
            config.output_partitions.max(1),
        );
        Self {
            config,
            batch_interval,
            checkpoint_dir: None,
            graph: Arc::new(Mutex::new(graph)),
        }
    }

    /// Sets the checkpoint directory (snapshots and the plan log; one process at a time).
    pub fn checkpoint(&mut self, dir: impl Into<PathBuf>) {
        self.checkpoint_dir = Some(dir.into());
    }

    /// Spark's `getOrCreate`, without its trap: `build` always runs (code is never restored
    /// from a checkpoint), and the checkpoint in `dir`, when there is one, is restored into the
    /// program it builds when the context runs. `dir` becomes the context's checkpoint.
    pub fn get_or_create(
        dir: impl AsRef<Path>,
        build: impl FnOnce() -> Result<StreamingContext>,
    ) -> Result<StreamingContext> {
        let mut ssc = build()?;
        let dir = dir.as_ref();
        if let Some(other) = &ssc.checkpoint_dir
            && other != dir
        {
            return Err(Error::config(
                "checkpoint",
                format!(
                    "get_or_create was given {} but the program set {}; set it in one place",
                    dir.display(),
                    other.display()
                ),
            ));
        }
        ssc.checkpoint(dir);
        Ok(ssc)
    }

    /// The program built so far, taken out of the context (tests run it batch by batch).
    #[cfg(test)]
    pub(crate) fn take_graph(&self) -> Graph {
        std::mem::replace(
            &mut *lock(&self.graph),
            Graph::new(String::new(), self.batch_interval, 1),
        )
    }

    /// The batch interval.
    pub fn batch_interval(&self) -> Duration {
        self.batch_interval
    }

    /// A stream of the records of `topics`, read in direct mode: each batch covers one logged
    /// offset range per Kafka partition, and each Kafka partition is one partition of the
    /// stream. `V` says how records become items: `Vec<u8>` (the value), `String` (the value
    /// as UTF-8), [`Json<T>`] (the value as the JSON of a serde type) or
    /// [`KafkaRecord`](super::KafkaRecord) (everything). Tombstones are left out except for
    /// `KafkaRecord`; a value that cannot be decoded stops the pipeline with an error that
    /// names its topic, partition and offset.
    pub fn kafka_direct_stream<V: FromKafka>(&self, topics: &[&str]) -> DStream<V> {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let mut graph = lock(&self.graph);
        graph.subscribe(&topics);
        let set: BTreeSet<String> = topics.into_iter().collect();
        let node = KafkaInput::<V> {
            topics: set.clone(),
            _items: PhantomData,
        };
        let id = graph.add(Box::new(node), Layout::Source(set), &[]);
        drop(graph);
        DStream::new(Arc::clone(&self.graph), id)
    }

    /// A stream of the lines of the text files that appear in `dir` (Spark's `textFileStream`,
    /// HDFSWordCount's source), **exactly once**: each file is read in one batch, and a batch
    /// replayed after a crash reads the same files again. A file must be complete when it
    /// appears (write it elsewhere, or under a name starting with `.` or `_`, and rename it in)
    /// and must stay unchanged until the checkpoint is reset; files already in `dir` at the
    /// first start are read too. Each file is one partition of a batch's single source
    /// partition; a file that is not UTF-8 stops the pipeline with an error that names it.
    pub fn text_file_stream(&self, dir: impl AsRef<Path>) -> DStream<String> {
        let mut graph = lock(&self.graph);
        let dir = match std::path::absolute(dir.as_ref()) {
            Ok(dir) => dir,
            Err(e) => {
                graph.error(Error::io(dir.as_ref(), e));
                dir.as_ref().to_path_buf()
            }
        };
        let topic = SourceKind::file_topic(&dir);
        graph.subscribe(std::slice::from_ref(&topic));
        let set = BTreeSet::from([topic.clone()]);
        let id = graph.add(Box::new(TextFileInput { topic }), Layout::Source(set), &[]);
        drop(graph);
        DStream::new(Arc::clone(&self.graph), id)
    }

    /// A stream of the lines a TCP server at `host:port` sends (Spark's `socketTextStream`),
    /// **at most once**: a socket cannot be read twice, so lines in flight when the process
    /// dies, and lines sent while it is down, are lost (never duplicated). For demos such as
    /// `nc -lk 9999`; put input that matters in Kafka. The source connects when the program
    /// runs and reconnects every second when the server goes away.
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DStream<String> {
        let topic = SourceKind::socket_topic(host, port);
        let mut graph = lock(&self.graph);
        graph.subscribe(std::slice::from_ref(&topic));
        let set = BTreeSet::from([topic]);
        let node = KafkaInput::<String> {
            topics: set.clone(),
            _items: PhantomData,
        };
        let id = graph.add(Box::new(node), Layout::Source(set), &[]);
        drop(graph);
        DStream::new(Arc::clone(&self.graph), id)
    }

    /// A stream of the values of `topics` decoded from JSON into `T`.
    pub fn kafka_json_stream<T: serde::de::DeserializeOwned + super::Data>(
        &self,
        topics: &[&str],
    ) -> DStream<T> {
        self.kafka_direct_stream::<Json<T>>(topics).map(|Json(t)| t)
    }

    /// Runs until SIGINT or SIGTERM: the first signal finishes the running batch, writes a
    /// snapshot and returns; a second one exits at once (the next start recovers).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future is safe for exactly-once but skips the final snapshot.
    pub async fn run_until_shutdown(self) -> Result<RunSummary> {
        let shutdown = crate::runtime::shutdown::on_signals()
            .map_err(|e| Error::io("signal handlers (SIGINT, SIGTERM)", e))?;
        self.run(shutdown, None).await
    }

    /// Recovers from the checkpoint, then runs until `shutdown` is cancelled or `max_batches`
    /// new batches ran, and writes a final snapshot.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future is safe for exactly-once but skips the final snapshot; cancel
    /// `shutdown` to stop gracefully.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        max_batches: Option<u64>,
    ) -> Result<RunSummary> {
        let Self {
            mut config,
            batch_interval,
            checkpoint_dir,
            graph,
        } = self;
        // DStreams still held by the program keep an empty graph: the context runs only once.
        let mut graph = std::mem::replace(
            &mut *lock(&graph),
            Graph::new(String::new(), batch_interval, 1),
        );
        let dir = checkpoint_dir.ok_or_else(|| {
            Error::config(
                "checkpoint",
                "a streaming context needs a checkpoint directory: call checkpoint(dir) or build it with get_or_create(dir, …)",
            )
        })?;
        let mut others = Vec::new();
        for topic in &graph.topics {
            match SourceKind::of(topic)? {
                SourceKind::Kafka if !config.source.topics.contains(topic) => {
                    config.source.topics.push(topic.clone());
                }
                SourceKind::Kafka => {}
                kind => others.push((topic.clone(), kind)),
            }
        }
        let checkpoint_interval = validate(&config, batch_interval, &mut graph)?;
        let identity = identity(&config, &graph);

        let store_dir = dir.clone();
        let store = run_blocking("opening the checkpoint", move || {
            CheckpointStore::open(&store_dir)
        })
        .await?;
        let mut sinks = Vec::new();
        let mut committed = Vec::new();
        for stream_sink in std::mem::take(&mut graph.sinks) {
            let mut sink = stream_sink.sink;
            sink.open().await?;
            committed.push(
                sink.committed_positions(&stream_sink.commit_pipeline)
                    .await?,
            );
            let parallelism = usize::try_from(sink.config().pool_size).unwrap_or(1);
            sinks.push((Arc::new(sink), parallelism));
        }
        let store = refuse_when_sink_ahead(store, &identity, committed).await?;
        let group = config
            .source
            .group_id
            .clone()
            .unwrap_or_else(|| format!("weir-{}", config.name));
        let mut source = SourceSet::new();
        if !config.source.topics.is_empty() {
            let topics = config.source.topics.iter().cloned().collect();
            source = source.with_kafka(topics, KafkaSource::connect(&config.source, &group)?);
        }
        for (_, kind) in others {
            match kind {
                SourceKind::Files(input) => {
                    let checkpoint = dir.clone();
                    let files = run_blocking("reading a file source's list", move || {
                        FileSource::open(&input, &checkpoint)
                    })
                    .await?;
                    source = source.with_files(files);
                }
                SourceKind::Socket { host, port } => {
                    source = source.with_socket(SocketSource::new(host, port));
                }
                SourceKind::Kafka => {}
            }
        }
        let planner = Planner::new(config.source.on_data_loss).with_batch_interval(batch_interval);
        let rate = RateController::new(config.source.rate_config(), batch_interval)?;
        info!(message = "Streaming program built.", pipeline = %config.name, %identity);
        let schedule = Schedule {
            pipeline: config.name.clone(),
            batch_interval,
            checkpoint_interval,
            metadata_refresh_interval: config.source.metadata_refresh_interval,
            commit_offsets: config.source.commit_offsets,
            identity,
            max_batches,
        };
        let job = StreamJob::new(graph, sinks, dir);
        Scheduler::new(schedule, source, planner, rate, store, job, shutdown)
            .run()
            .await
    }
}

/// Checks the configuration and the program; returns the checkpoint interval.
fn validate(config: &StreamConfig, interval: Duration, graph: &mut Graph) -> Result<Duration> {
    if let Some(error) = graph.errors.drain(..).next() {
        return Err(error);
    }
    let plain = !config.name.is_empty()
        && config.name.len() <= 100
        && config
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        return Err(Error::config(
            "name",
            format!("{:?} must be 1 to 100 of a-z A-Z 0-9 . _ -", config.name),
        ));
    }
    if interval < MIN_BATCH_INTERVAL || !interval.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(Error::config(
            "batch_interval",
            format!(
                "{} must be at least 50ms and a whole number of milliseconds",
                humantime::format_duration(interval)
            ),
        ));
    }
    if config.output_partitions == 0 {
        return Err(Error::config("output_partitions", "must be at least 1"));
    }
    let mut seen = BTreeSet::new();
    for operator in graph.operators() {
        if !seen.insert(operator.id.clone()) {
            return Err(Error::config(
                "with_state_id",
                format!(
                    "two stateful operators have the id {:?}; ids must be unique",
                    operator.id
                ),
            ));
        }
    }
    if graph.topics.is_empty() && config.source.topics.is_empty() {
        return Err(Error::config(
            "source",
            "the program reads no stream; create one with kafka_direct_stream, text_file_stream or socket_text_stream",
        ));
    }
    if !config.source.topics.is_empty() {
        config.source.validate()?;
    }
    // Snapshots fall on slide boundaries: a multiple of the interval and of every slide.
    let step = graph
        .slides
        .iter()
        .fold(interval_millis(interval), |acc, s| {
            lcm(acc, interval_millis(*s))
        });
    let step = Duration::from_millis(u64::try_from(step).unwrap_or(1));
    let at_most_once = graph
        .topics
        .iter()
        .any(|t| matches!(SourceKind::of(t), Ok(SourceKind::Socket { .. })));
    let default = if at_most_once {
        step
    } else {
        default_checkpoint_interval(step)
    };
    let every = config.checkpoint_interval.unwrap_or(default);
    if every.is_zero() || !every.as_nanos().is_multiple_of(interval.as_nanos()) {
        return Err(Error::config(
            "checkpoint_interval",
            format!(
                "{} is not a multiple of the batch interval {}",
                humantime::format_duration(every),
                humantime::format_duration(interval)
            ),
        ));
    }
    Ok(every)
}

fn lcm(a: i64, b: i64) -> i64 {
    fn gcd(a: i64, b: i64) -> i64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    if a <= 0 || b <= 0 {
        return a.max(b).max(1);
    }
    a / gcd(a, b) * b
}

/// What the checkpoint must belong to: topics, stateful operators, output partitions, sinks.
pub(super) fn identity(config: &StreamConfig, graph: &Graph) -> PipelineIdentity {
    let sinks: Vec<String> = graph
        .sinks
        .iter()
        .map(|s| format!("{} {}", s.commit_pipeline, s.sink.config().identity()))
        .collect();
    let sink = if sinks.is_empty() {
        "stream outputs without a SQL sink".to_owned()
    } else {
        sinks.join("; ")
    };
    let mut topics: BTreeSet<String> = config.source.topics.iter().cloned().collect();
    topics.extend(graph.topics.iter().cloned());
    let mut identity = PipelineIdentity::new(config.name.clone(), topics, sink);
    for operator in graph.operators() {
        identity = identity.with_operator(operator.id, operator.schema_version);
    }
    if graph.keyed {
        identity = identity.with_output_partitions(config.output_partitions);
    }
    identity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_fall_on_slides() {
        assert_eq!(lcm(1_000, 10_000), 10_000);
        assert_eq!(lcm(300, 200), 600);
        let config = StreamConfig::new("w", "127.0.0.1:1");
        let ssc = StreamingContext::new(config.clone(), Duration::from_millis(300));
        let s = ssc.kafka_direct_stream::<String>(&["t"]);
        let _ = s.map(|w| (w, 1_u64)).reduce_by_key_and_window(
            |a, b| a + b,
            Duration::from_millis(900),
            Duration::from_millis(600),
        );
        let mut graph = ssc.take_graph();
        let mut config = config;
        config.source.topics = graph.topics.clone();
        let every = validate(&config, Duration::from_millis(300), &mut graph).unwrap();
        assert_eq!(every, Duration::from_millis(10_200));
        let id = identity(&config, &graph);
        assert_eq!(id.operators.get("reduce_by_key_and_window-0"), Some(&1));
        assert_eq!(id.output_partitions, Some(DEFAULT_OUTPUT_PARTITIONS));
    }

    #[test]
    fn a_bad_window_is_reported_when_run() {
        let ssc = StreamingContext::new(
            StreamConfig::new("w", "127.0.0.1:1"),
            Duration::from_millis(300),
        );
        let _ = ssc
            .kafka_direct_stream::<String>(&["t"])
            .window(Duration::from_millis(500), Duration::from_millis(300));
        let mut graph = ssc.take_graph();
        let e = validate(
            &StreamConfig::new("w", "b:1"),
            Duration::from_millis(300),
            &mut graph,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("window 500ms is not a positive multiple"), "{e}");
    }
}
