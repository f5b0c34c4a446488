//! Measures the engine (scheduler, checkpoint, direct Kafka source) on the real broker. Prints
//! figures; asserts nothing.
//!
//! ```text
//! scripts/services up && eval "$(scripts/services env)"
//! cargo run --release --example bench_engine
//! cargo run --release --example bench_engine -- --seconds 30 --plans 1000 --partitions 8
//! ```
//!
//! 1. **Idle throughput**: a pipeline over an empty topic at a 100 ms batch interval for
//!    `--seconds`: batches per second sustained, and the processing time of an empty batch
//!    (watermarks, planning, the fsynced plan-log append, fetch and job), mean and maximum, from
//!    the scheduler's own "Batch done." events.
//! 2. **Recovery**: a checkpoint holding a snapshot and `--plans` logged plans after it (each
//!    range `--records-per-plan` records of every partition, and once more with empty ranges) is
//!    recovered by a fresh process of this example. It reports the time from its `main` to the
//!    first newly planned batch, from `Scheduler::run` to that batch, and from the parent's spawn
//!    of the process (exec and runtime start included).
//!
//! The topics it creates are deleted at the end. `RUST_LOG` filters what is logged to stderr
//! (default `warn`); `WEIR_RDKAFKA_DEBUG` sets librdkafka's `debug` contexts, e.g. `fetch`.
#![allow(clippy::disallowed_methods)] // A benchmark reads the clock; weir's outputs never do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer, Registry};
use weir::checkpoint::{CheckpointStore, PipelineIdentity, Recovery, Snapshot};
use weir::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
use weir::rate::{RateConfig, RateController};
use weir::runtime::{BatchJob, BatchOutcome, RunSummary, Schedule, Scheduler};
use weir::source::{KafkaSource, KafkaSourceConfig, OnDataLoss, PartitionBatch};

const INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// How long the idle pipeline runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Logged plans in the recovered checkpoint.
    #[arg(long, default_value_t = 1_000)]
    plans: i64,
    /// Records of every partition in each logged plan.
    #[arg(long, default_value_t = 10)]
    records_per_plan: i64,
    /// Internal: recover the checkpoint in this directory and report (the child process).
    #[arg(long, hide = true)]
    recover: Option<PathBuf>,
    /// Internal: the topic of the checkpoint to recover.
    #[arg(long, hide = true)]
    topic: Option<String>,
}

fn main() -> Result<()> {
    let process_start = Instant::now();
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match (&args.recover, &args.topic) {
        (Some(dir), Some(topic)) => {
            runtime.block_on(recover_child(&args, dir, topic, process_start))
        }
        _ => runtime.block_on(parent(&args)),
    }
}

async fn parent(args: &Args) -> Result<()> {
    let events = install_event_recorder();
    let admin: AdminClient<DefaultClientContext> = kafka_config(&args.brokers).create()?;

    let idle = create_topic(&admin, "weir-bench-engine-idle", args.partitions).await?;
    let result = idle_throughput(args, &idle, &events).await;
    delete_topic(&admin, &idle).await;
    result?;

    let busy = create_topic(&admin, "weir-bench-engine-recovery", args.partitions).await?;
    let result = recovery(args, &busy).await;
    delete_topic(&admin, &busy).await;
    result
}

async fn idle_throughput(args: &Args, topic: &str, events: &Events) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let seconds = args.seconds.max(1);
    let batches = seconds * 10;
    let started = Instant::now();
    let summary = scheduler(&args.brokers, topic, dir.path(), Some(batches))
        .await?
        .run()
        .await?;
    let elapsed = started.elapsed();
    let processing = events.take_processing();
    let rate = ratio(summary.batches, elapsed.as_secs_f64());
    println!(
        "idle pipeline, {} partitions, 100 ms interval: {} batches in {:.2} s = {rate:.2} batches/s (the grid allows 10.00)",
        args.partitions,
        summary.batches,
        elapsed.as_secs_f64(),
    );
    let count = u64::try_from(processing.len())?;
    let total: Duration = processing.iter().sum();
    let mean = total
        .checked_div(u32::try_from(count.max(1))?)
        .unwrap_or_default();
    let max = processing.iter().max().copied().unwrap_or_default();
    println!(
        "empty batch processing time over {count} batches: mean {:.2} ms, max {:.2} ms",
        millis(mean),
        millis(max)
    );
    Ok(())
}

async fn recovery(args: &Args, topic: &str) -> Result<()> {
    let per_partition = args.plans * args.records_per_plan;
    produce(&args.brokers, topic, args.partitions, per_partition).await?;
    for records_per_plan in [args.records_per_plan, 0] {
        let dir = tempfile::tempdir()?;
        write_checkpoint(args, topic, dir.path(), records_per_plan)?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .arg("--brokers")
            .arg(&args.brokers)
            .arg("--recover")
            .arg(dir.path())
            .arg("--topic")
            .arg(topic)
            .stderr(std::process::Stdio::inherit());
        let (output, spawn_to_exit) = tokio::task::spawn_blocking(move || {
            let spawned = Instant::now();
            command.output().map(|output| (output, spawned.elapsed()))
        })
        .await??;
        let report = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "the recovering process failed ({}):\n{report}",
                output.status
            );
        }
        let child: BTreeMap<&str, &str> = report
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let field = |key: &str| child.get(key).copied().unwrap_or("?");
        // The child's main ran from `total_ms` before its exit; the spawn came before that.
        let from_spawn = match (
            field("first_new_plan_since_main_ms").parse::<f64>(),
            field("total_ms").parse::<f64>(),
        ) {
            (Ok(planned), Ok(total)) => format!("{:.1}", millis(spawn_to_exit) - total + planned),
            _ => "?".to_owned(),
        };
        println!(
            "recovery of {} logged plans ({} records each over {} partitions): first new plan {} ms after main, {} ms after Scheduler::run, {} ms after the spawn; replayed {}",
            args.plans,
            records_per_plan * i64::from(args.partitions),
            args.partitions,
            field("first_new_plan_since_main_ms"),
            field("first_new_plan_since_run_ms"),
            from_spawn,
            field("replayed"),
        );
    }
    Ok(())
}

/// The child process: recovers `dir` and reports when the first new batch was planned.
async fn recover_child(args: &Args, dir: &Path, topic: &str, process_start: Instant) -> Result<()> {
    let events = install_event_recorder();
    let scheduler = scheduler(&args.brokers, topic, dir, Some(1)).await?;
    let run_start = Instant::now();
    let summary: RunSummary = scheduler.run().await?;
    let planned = events.first_planned().context("no new batch was planned")?;
    println!("replayed={}", summary.replayed);
    println!(
        "first_new_plan_since_main_ms={:.1}",
        millis(planned.duration_since(process_start))
    );
    println!(
        "first_new_plan_since_run_ms={:.1}",
        millis(planned.duration_since(run_start))
    );
    println!("total_ms={:.1}", millis(process_start.elapsed()));
    Ok(())
}

/// A snapshot at `t0` with every partition at 0, then `args.plans` plans of `records_per_plan`
/// records of every partition, one interval apart, ending one interval before now.
fn write_checkpoint(args: &Args, topic: &str, dir: &Path, records_per_plan: i64) -> Result<()> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let step = i64::try_from(INTERVAL.as_millis())?;
    let t0 = BatchTime::floor(now - (args.plans + 1) * step, INTERVAL);
    let partitions: Vec<TopicPartition> = (0..args.partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let mut store = CheckpointStore::open(dir)?;
    if !matches!(store.recover(&identity(topic))?, Recovery::Fresh) {
        bail!("{} is not empty", dir.display());
    }
    let start = partitions.iter().map(|tp| (tp.clone(), 0)).collect();
    store.write_snapshot(&Snapshot::initial(identity(topic), INTERVAL, t0, start))?;
    for i in 0..args.plans {
        let ranges = partitions
            .iter()
            .map(|tp| {
                OffsetRange::new(tp.clone(), i * records_per_plan, (i + 1) * records_per_plan)
            })
            .collect();
        let t = BatchTime::from_millis(t0.as_millis() + (i + 1) * step);
        store.append_plan(&BatchPlan::new(t, ranges))?;
    }
    Ok(())
}

async fn scheduler(
    brokers: &str,
    topic: &str,
    dir: &Path,
    max_batches: Option<u64>,
) -> Result<Scheduler<KafkaSource, CountingJob>> {
    let dir = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || CheckpointStore::open(dir)).await??;
    let mut source_config = KafkaSourceConfig::new(brokers, vec![topic.to_owned()]);
    if let Ok(contexts) = std::env::var("WEIR_RDKAFKA_DEBUG") {
        source_config
            .properties
            .insert("debug".to_owned(), contexts);
    }
    let source = KafkaSource::connect(&source_config, "weir-bench-engine")?;
    let schedule = Schedule {
        pipeline: "bench-engine".to_owned(),
        batch_interval: INTERVAL,
        checkpoint_interval: weir::checkpoint::default_checkpoint_interval(INTERVAL),
        metadata_refresh_interval: Duration::from_secs(5),
        commit_offsets: false,
        identity: identity(topic),
        max_batches,
    };
    Ok(Scheduler::new(
        schedule,
        source,
        weir::source::Planner::new(OnDataLoss::Fail),
        RateController::new(RateConfig::default(), INTERVAL)?,
        store,
        CountingJob,
        CancellationToken::new(),
    ))
}

fn identity(topic: &str) -> PipelineIdentity {
    PipelineIdentity::new("bench-engine", [topic], "counting-job")
}

/// Counts records; writes nothing.
struct CountingJob;

impl BatchJob for CountingJob {
    async fn run_batch(
        &mut self,
        _plan: &BatchPlan,
        input: Vec<PartitionBatch>,
    ) -> weir::Result<BatchOutcome> {
        let records = input.iter().map(|b| b.records.len()).sum::<usize>();
        Ok(BatchOutcome {
            records: u64::try_from(records).unwrap_or(u64::MAX),
            ..BatchOutcome::default()
        })
    }
}

/// What the scheduler's events said: the processing time of every finished batch, and when the
/// first batch was planned.
#[derive(Default)]
struct EventLog {
    processing: Vec<Duration>,
    first_planned: Option<Instant>,
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<EventLog>>);

impl Events {
    fn take_processing(&self) -> Vec<Duration> {
        self.0
            .lock()
            .map(|mut log| std::mem::take(&mut log.processing))
            .unwrap_or_default()
    }

    fn first_planned(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|log| log.first_planned)
    }
}

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Ok(mut log) = self.0.lock() else { return };
        match fields.message.as_deref() {
            Some("Planned batch.") => {
                log.first_planned.get_or_insert_with(Instant::now);
            }
            Some("Batch done.") => {
                if let Some(ms) = fields.processing_ms {
                    log.processing.push(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    processing_ms: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "processing_ms" {
            self.processing_ms = Some(value);
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.record_u64(field, u64::try_from(value).unwrap_or(u64::MAX));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

/// Records the scheduler's events (idle batches are logged at debug level), and prints warnings.
fn install_event_recorder() -> Events {
    static EVENTS: OnceLock<Events> = OnceLock::new();
    EVENTS
        .get_or_init(|| {
            let events = Events::default();
            let filter = EnvFilter::new("warn,weir::runtime=debug");
            let subscriber = Registry::default()
                .with(events.clone().with_filter(filter))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_filter(
                            EnvFilter::try_from_default_env()
                                .unwrap_or_else(|_| EnvFilter::new("warn")),
                        ),
                );
            if tracing::subscriber::set_global_default(subscriber).is_err() {
                eprintln!("another tracing subscriber is installed; figures will be missing");
            }
            events
        })
        .clone()
}

fn kafka_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    prefix: &str,
    partitions: i32,
) -> Result<String> {
    let name = format!("{prefix}-{}", std::process::id());
    let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating topic {topic}: {code}"))?;
    }
    // The topic's partitions need leaders before the pipeline's first watermarks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&name), Duration::from_secs(5))?;
        let ready = metadata.topics().iter().any(|t| {
            t.error().is_none()
                && t.partitions().len() == usize::try_from(partitions).unwrap_or(0)
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(name);
        }
        if Instant::now() > deadline {
            bail!("topic {name} has no leaders after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_topic(admin: &AdminClient<DefaultClientContext>, topic: &str) {
    if let Err(error) = admin.delete_topics(&[topic], &AdminOptions::new()).await {
        eprintln!("could not delete topic {topic}: {error}");
    }
}

/// Produces `per_partition` small records to every partition.
async fn produce(brokers: &str, topic: &str, partitions: i32, per_partition: i64) -> Result<()> {
    let producer: FutureProducer = kafka_config(brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .create()?;
    let records: Vec<(i32, String)> = (0..per_partition)
        .flat_map(|i| (0..partitions).map(move |p| (p, format!("{{\"i\":{i}}}"))))
        .collect();
    // In chunks, so that the producer's queue never overflows.
    for chunk in records.chunks(10_000) {
        let deliveries = chunk.iter().map(|(partition, value)| {
            let record = FutureRecord::<(), _>::to(topic)
                .partition(*partition)
                .payload(value);
            producer.send(record, Duration::from_secs(30))
        });
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

#[allow(clippy::cast_precision_loss)] // A rate for people to read.
fn ratio(count: u64, seconds: f64) -> f64 {
    count as f64 / seconds
}
