//! The engine rig: a real [`Scheduler`] over a real topic and a checkpoint directory, with a
//! [`RecordingJob`] that remembers every plan and record it was given, and the checks that the
//! engine tests share (chaining, exactly once over distinct batches, plan logs read back from
//! disk).
//!
//! The job can be told to fail at its `k`-th call, which is what a crash after "plan logged" and
//! before "output written" looks like from the outside: the plan is in the plan log, nothing of
//! the batch counts as done, and the scheduler's run ends in an error.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir::checkpoint::{CheckpointStore, PipelineIdentity};
use weir::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
use weir::rate::RateController;
use weir::runtime::{BatchJob, BatchOutcome, RunSummary, Schedule, Scheduler};
use weir::source::{KafkaSource, KafkaSourceConfig, PartitionBatch, Planner};

use super::{TestEnv, TestTopic};

/// What most engine tests start from: a fresh topic, a checkpoint directory, a pipeline over the
/// topic with every default, and a recorder for its jobs.
#[derive(Debug)]
pub struct Fixture {
    /// The services.
    pub env: &'static TestEnv,
    /// The pipeline's one topic.
    pub topic: TestTopic,
    /// The checkpoint directory.
    pub dir: tempfile::TempDir,
    /// The pipeline.
    pub setup: EngineSetup,
    /// Where its jobs record.
    pub recorder: Recorder,
}

impl Fixture {
    /// A fixture over a new topic `weir-test-<prefix>…` of `partitions` partitions.
    pub async fn new(prefix: &str, partitions: i32) -> Result<Self> {
        let env = TestEnv::get().await;
        let topic = env.topic(prefix, partitions).await?;
        let dir = tempfile::tempdir()?;
        let setup = EngineSetup::new(env, &[&topic.name], dir.path());
        Ok(Self {
            env,
            topic,
            dir,
            setup,
            recorder: Recorder::default(),
        })
    }
}

impl Fixture {
    /// A job recording into the fixture's recorder.
    pub fn job(&self) -> RecordingJob {
        RecordingJob::new(&self.recorder)
    }

    /// Runs the pipeline until `count` distinct records arrived, then stops gracefully.
    pub async fn run_until_count(&self, count: usize) -> Result<RunSummary> {
        self.setup
            .run_until_count(self.job(), &self.recorder, count)
            .await
    }
}

/// The sink identity every engine test pipeline claims; no sink exists.
const SINK: &str = "recording-job";

/// How a test pipeline is built; every run of the same setup uses the same checkpoint.
#[derive(Debug, Clone)]
pub struct EngineSetup {
    /// The pipeline's name (and, with a suffix, its consumer group).
    pub pipeline: String,
    /// The source; tests change rates, starting offsets, `on_data_loss`, ….
    pub source: KafkaSourceConfig,
    /// The batch interval (100 ms unless changed).
    pub batch_interval: Duration,
    /// The snapshot interval (an hour unless changed: only the final snapshot of a run).
    pub checkpoint_interval: Duration,
    /// How often new partitions are looked for.
    pub metadata_refresh_interval: Duration,
    /// The checkpoint directory.
    pub dir: PathBuf,
}

impl EngineSetup {
    /// A pipeline reading `topics` with every default, checkpointing into `dir`.
    ///
    /// Set `WEIR_TEST_LOG` (an `EnvFilter`, e.g. `weir=debug`) to see the engine's log.
    pub fn new(env: &TestEnv, topics: &[&str], dir: &Path) -> Self {
        install_log_router();
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let mut source = KafkaSourceConfig::new(&env.brokers, topics);
        if let Ok(debug) = std::env::var("WEIR_TEST_RDKAFKA_DEBUG") {
            source.properties.insert("debug".into(), debug);
        }
        Self {
            pipeline: TestEnv::unique_name("engine"),
            source,
            batch_interval: Duration::from_millis(100),
            checkpoint_interval: Duration::from_secs(3_600),
            metadata_refresh_interval: Duration::from_secs(3_600),
            dir: dir.to_path_buf(),
        }
    }

    /// The identity the checkpoint must belong to.
    pub fn identity(&self) -> PipelineIdentity {
        PipelineIdentity::new(&self.pipeline, self.source.topics.iter().cloned(), SINK)
    }

    /// A scheduler over this setup's checkpoint, which keeps every snapshot and plan log so
    /// that tests can read the whole history back.
    pub async fn scheduler(
        &self,
        job: RecordingJob,
        shutdown: CancellationToken,
        max_batches: Option<u64>,
    ) -> weir::Result<Scheduler<KafkaSource, RecordingJob>> {
        let dir = self.dir.clone();
        let keep = NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN);
        let store = tokio::task::spawn_blocking(move || {
            CheckpointStore::open(&dir).map(|store| store.with_keep_snapshots(keep))
        })
        .await
        .map_err(|e| weir::Error::TaskFailed {
            what: "opening the checkpoint".into(),
            message: e.to_string(),
        })??;
        let source = KafkaSource::connect(&self.source, &format!("{}-group", self.pipeline))?;
        let planner =
            Planner::new(self.source.on_data_loss).with_batch_interval(self.batch_interval);
        let rate = RateController::new(self.source.rate_config(), self.batch_interval)?;
        let schedule = Schedule {
            pipeline: self.pipeline.clone(),
            batch_interval: self.batch_interval,
            checkpoint_interval: self.checkpoint_interval,
            metadata_refresh_interval: self.metadata_refresh_interval,
            commit_offsets: false,
            identity: self.identity(),
            max_batches,
        };
        Ok(Scheduler::new(
            schedule, source, planner, rate, store, job, shutdown,
        ))
    }

    /// Recovers and runs `max_batches` new batches, then stops as after a shutdown.
    pub async fn run(&self, job: RecordingJob, max_batches: u64) -> weir::Result<RunSummary> {
        self.scheduler(job, CancellationToken::new(), Some(max_batches))
            .await?
            .run()
            .await
    }

    /// Runs in the background until [`RunningEngine::stop`] (or until dropped).
    pub fn spawn(&self, job: RecordingJob) -> RunningEngine {
        let shutdown = CancellationToken::new();
        let setup = self.clone();
        let token = shutdown.clone();
        let handle =
            tokio::spawn(async move { setup.scheduler(job, token, None).await?.run().await });
        RunningEngine {
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            handle,
        }
    }

    /// Runs until `recorder` holds `count` distinct records (at most 15 s), then stops gracefully.
    pub async fn run_until_count(
        &self,
        job: RecordingJob,
        recorder: &Recorder,
        count: usize,
    ) -> Result<RunSummary> {
        self.spawn(job)
            .stop_when(recorder, &format!("{count} records delivered"), |r| {
                Ok(r.record_count()? >= count)
            })
            .await
    }
}

/// A scheduler running in a task of its own; dropping it asks the scheduler to stop.
#[derive(Debug)]
pub struct RunningEngine {
    /// Cancelling it asks for a graceful stop.
    pub shutdown: CancellationToken,
    handle: JoinHandle<weir::Result<RunSummary>>,
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl RunningEngine {
    /// Asks for a graceful stop and waits (at most 20 s) for the run's result.
    pub async fn stop(self) -> Result<weir::Result<RunSummary>> {
        self.shutdown.cancel();
        self.join().await
    }

    /// Waits (at most 15 s) until `done` holds for what `recorder` holds; fails at once when the
    /// run ends first.
    pub async fn wait_for(
        &self,
        recorder: &Recorder,
        what: &str,
        done: impl FnMut(&Recording) -> Result<bool>,
    ) -> Result<()> {
        recorder
            .wait_until(what, Duration::from_secs(15), Some(self), done)
            .await
    }

    /// Waits (at most 15 s) until `done` holds for what `recorder` holds, then stops gracefully.
    /// Fails when either fails, with both results in the message.
    pub async fn stop_when(
        self,
        recorder: &Recorder,
        what: &str,
        done: impl FnMut(&Recording) -> Result<bool>,
    ) -> Result<RunSummary> {
        let waited = self.wait_for(recorder, what, done).await;
        let result = self.stop().await;
        match (waited, result) {
            (Ok(()), result) => Ok(result??),
            (Err(e), result) => bail!("{e:#}; the run ended with {result:?}"),
        }
    }

    /// Waits (at most 20 s) for the run to end on its own.
    pub async fn join(self) -> Result<weir::Result<RunSummary>> {
        let joined = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .context("the scheduler did not stop within 20 s")?;
        Ok(joined?)
    }

    /// True once the run ended (with a result or an error).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// One record as the job saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRecord {
    /// Its partition.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Its value, as text.
    pub value: String,
}

/// One batch the job finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBatch {
    /// Its plan.
    pub plan: BatchPlan,
    /// Its records, in the order of the plan's ranges.
    pub records: Vec<SeenRecord>,
}

/// Everything the jobs sharing one [`Recorder`] were given, over every run.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Every plan handed to `run_batch`, failed calls included, in call order.
    pub attempts: Vec<BatchPlan>,
    /// Every batch that finished, replays included, in call order.
    pub batches: Vec<RecordedBatch>,
}

impl Recording {
    /// The finished batches, one per batch time, after checking that every execution of a batch
    /// time had the same plan and the same records (a replay is verbatim).
    pub fn distinct_batches(&self) -> Result<Vec<RecordedBatch>> {
        let mut by_time: BTreeMap<BatchTime, &RecordedBatch> = BTreeMap::new();
        for batch in &self.batches {
            let t = batch.plan.batch_time;
            match by_time.get(&t) {
                Some(first) => ensure!(
                    *first == batch,
                    "batch {t} ran twice with different plans or records:\n{first:?}\n{batch:?}"
                ),
                None => {
                    by_time.insert(t, batch);
                }
            }
        }
        Ok(by_time.into_values().cloned().collect())
    }

    /// Every record of the distinct finished batches, checked to lie in its batch's range and
    /// to appear once; by partition, in offset order.
    pub fn records_once(&self) -> Result<BTreeMap<TopicPartition, Vec<SeenRecord>>> {
        let mut seen: BTreeMap<TopicPartition, BTreeMap<i64, SeenRecord>> = BTreeMap::new();
        for batch in self.distinct_batches()? {
            for record in batch.records {
                let range = batch
                    .plan
                    .ranges
                    .iter()
                    .find(|r| r.tp == record.tp)
                    .with_context(|| format!("{record:?} has no range in {:?}", batch.plan))?;
                ensure!(
                    range.from <= record.offset && record.offset < range.until,
                    "record {}@{} delivered in batch {} outside its range {range}",
                    record.tp,
                    record.offset,
                    batch.plan.batch_time
                );
                let tp = record.tp.clone();
                let offset = record.offset;
                let previous = seen.entry(tp.clone()).or_default().insert(offset, record);
                ensure!(previous.is_none(), "record {tp}@{offset} delivered twice");
            }
        }
        Ok(seen
            .into_iter()
            .map(|(tp, records)| (tp, records.into_values().collect()))
            .collect())
    }

    /// The number of distinct records delivered (see [`Recording::records_once`]).
    pub fn record_count(&self) -> Result<usize> {
        Ok(self.records_once()?.values().map(Vec::len).sum())
    }

    /// The plans of the distinct finished batches, in batch order.
    pub fn plans(&self) -> Result<Vec<BatchPlan>> {
        Ok(self
            .distinct_batches()?
            .into_iter()
            .map(|b| b.plan)
            .collect())
    }
}

/// A shared handle on what jobs recorded, with a signal on every finished batch.
#[derive(Debug, Clone)]
pub struct Recorder {
    recording: Arc<Mutex<Recording>>,
    finished: Arc<watch::Sender<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            recording: Arc::default(),
            finished: Arc::new(watch::channel(0).0),
        }
    }
}

impl Recorder {
    /// A copy of what was recorded so far.
    pub fn snapshot(&self) -> Recording {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `done` holds for the recording, checking after every finished batch; fails
    /// after `timeout`, or at once when `engine` ended.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        engine: Option<&RunningEngine>,
        mut done: impl FnMut(&Recording) -> Result<bool>,
    ) -> Result<()> {
        let mut changes = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.snapshot())? {
                return Ok(());
            }
            if engine.is_some_and(RunningEngine::is_finished) {
                bail!("the scheduler stopped before {what}");
            }
            // Woken by every batch, and every 200 ms to notice a scheduler that ended.
            let tick = tokio::time::Instant::now() + Duration::from_millis(200);
            let wake = tick.min(deadline);
            if tokio::time::timeout_at(wake, changes.changed())
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                let recording = self.snapshot();
                bail!(
                    "{what}: not reached within {timeout:?} ({} batches, {} attempts)",
                    recording.batches.len(),
                    recording.attempts.len()
                );
            }
        }
    }
}

/// Where a [`RecordingJob`] waits for the test.
#[derive(Debug, Default, Clone)]
pub struct Hold {
    /// Notified when the job reached the held call.
    pub entered: Arc<Notify>,
    /// Notify it to let the held call go on.
    pub release: Arc<Notify>,
}

/// A [`BatchJob`] that records each plan and each record, and can fail or wait at one call.
#[derive(Debug)]
pub struct RecordingJob {
    recorder: Recorder,
    calls: u64,
    fail_at: Option<u64>,
    hold_at: Option<(u64, Hold)>,
}

impl RecordingJob {
    /// A job recording into `recorder`.
    pub fn new(recorder: &Recorder) -> Self {
        Self {
            recorder: recorder.clone(),
            calls: 0,
            fail_at: None,
            hold_at: None,
        }
    }

    /// Fails the `call`-th `run_batch` (1-based, replays included) after recording its plan as
    /// an attempt and before recording any output.
    #[must_use]
    pub fn failing_at(mut self, call: u64) -> Self {
        self.fail_at = Some(call);
        self
    }

    /// Makes the `call`-th `run_batch` wait, once its records are read, until `hold.release`.
    #[must_use]
    pub fn holding_at(mut self, call: u64, hold: &Hold) -> Self {
        self.hold_at = Some((call, hold.clone()));
        self
    }
}

impl BatchJob for RecordingJob {
    async fn run_batch(
        &mut self,
        plan: &BatchPlan,
        input: Vec<PartitionBatch>,
    ) -> weir::Result<BatchOutcome> {
        self.calls += 1;
        self.recorder.lock().attempts.push(plan.clone());
        if self.fail_at == Some(self.calls) {
            return Err(weir::Error::Batch {
                batch_time: plan.batch_time,
                message: format!("the recording job fails at call {} as told", self.calls),
            });
        }
        if let Some((call, hold)) = &self.hold_at
            && *call == self.calls
        {
            hold.entered.notify_one();
            hold.release.notified().await;
        }
        let records: Vec<SeenRecord> = input
            .iter()
            .flat_map(|batch| {
                batch.records.iter().map(|record| SeenRecord {
                    tp: batch.range.tp.clone(),
                    offset: record.offset,
                    value: String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                        .into_owned(),
                })
            })
            .collect();
        let outcome = BatchOutcome {
            records: u64::try_from(records.len()).unwrap_or(u64::MAX),
            ..BatchOutcome::default()
        };
        self.recorder.lock().batches.push(RecordedBatch {
            plan: plan.clone(),
            records,
        });
        self.recorder.finished.send_modify(|n| *n += 1);
        Ok(outcome)
    }
}

/// Checks invariant 1 over `plans` (one per batch time, in order): every partition's ranges
/// chain without gap or overlap, a lost range included. `starts` gives where each partition must
/// begin (a partition not in it may begin anywhere, e.g. one discovered mid-run).
pub fn check_chain(plans: &[BatchPlan], starts: &BTreeMap<TopicPartition, i64>) -> Result<()> {
    let mut ends: BTreeMap<TopicPartition, i64> = starts.clone();
    let mut last: Option<BatchTime> = None;
    for plan in plans {
        if let Some(last) = last {
            ensure!(
                plan.batch_time > last,
                "batch {} follows batch {last}",
                plan.batch_time
            );
        }
        last = Some(plan.batch_time);
        for range in &plan.ranges {
            ensure!(
                range.until >= range.from,
                "batch {}: range {range} ends before it starts",
                plan.batch_time
            );
            let start = match plan.lost.iter().find(|lost| lost.tp == range.tp) {
                Some(lost) => {
                    ensure!(
                        lost.until == range.from,
                        "batch {}: lost {lost} does not end where {range} starts",
                        plan.batch_time
                    );
                    lost.from
                }
                None => range.from,
            };
            if let Some(&end) = ends.get(&range.tp) {
                ensure!(
                    end == start,
                    "batch {}: {} starts at {start}, the previous batch ended at {end} ({})",
                    plan.batch_time,
                    range.tp,
                    if start > end { "a hole" } else { "an overlap" }
                );
            }
            ends.insert(range.tp.clone(), range.until);
        }
    }
    Ok(())
}

/// Where each partition's ranges end after `plans`.
pub fn ends(plans: &[BatchPlan]) -> BTreeMap<TopicPartition, i64> {
    let mut ends = BTreeMap::new();
    for plan in plans {
        ends.extend(plan.end_positions());
    }
    ends
}

/// Every whole plan record of every plan log in `dir`, one per batch time in batch order; a plan
/// carried into several logs must be the same in each. A torn last record is left out, as
/// recovery leaves it out. An independent reader of the format in `src/checkpoint/plan_log.rs`.
pub fn read_plan_logs(dir: &Path) -> Result<Vec<BatchPlan>> {
    let mut plans: BTreeMap<BatchTime, BatchPlan> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("plans-") && name.ends_with(".log")) {
            continue;
        }
        for plan in read_plan_log(&path)? {
            if let Some(other) = plans.get(&plan.batch_time) {
                ensure!(
                    *other == plan,
                    "batch {} is logged twice, differently",
                    plan.batch_time
                );
            }
            plans.insert(plan.batch_time, plan);
        }
    }
    Ok(plans.into_values().collect())
}

fn read_plan_log(path: &Path) -> Result<Vec<BatchPlan>> {
    const HEADER: usize = 10;
    let bytes = std::fs::read(path)?;
    ensure!(
        bytes.len() >= HEADER && &bytes[..8] == b"WEIRPLAN",
        "{} is not a plan log",
        path.display()
    );
    let mut plans = Vec::new();
    let mut offset = HEADER;
    while offset + 8 <= bytes.len() {
        let len = usize::try_from(u32::from_le_bytes(bytes[offset..offset + 4].try_into()?))?;
        let crc = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into()?);
        let end = offset + 8 + len;
        if end > bytes.len() {
            break;
        }
        let payload = &bytes[offset + 8..end];
        if crc32c::crc32c_append(crc32c::crc32c(&bytes[offset..offset + 4]), payload) != crc {
            break;
        }
        let (plan, _): (BatchPlan, usize) =
            bincode::serde::decode_from_slice(payload, bincode::config::standard())?;
        plans.push(plan);
        offset = end;
    }
    Ok(plans)
}

/// The byte offsets at which each whole record of a plan log starts, and the file's length.
pub fn plan_record_starts(path: &Path) -> Result<(Vec<u64>, u64)> {
    let bytes = std::fs::read(path)?;
    let mut starts = Vec::new();
    let mut offset = 10;
    while offset + 8 <= bytes.len() {
        let len = usize::try_from(u32::from_le_bytes(bytes[offset..offset + 4].try_into()?))?;
        starts.push(u64::try_from(offset)?);
        offset += 8 + len;
    }
    Ok((starts, u64::try_from(bytes.len())?))
}

/// The checkpoint's files named `<prefix><t>.<ext>`, by batch time.
pub fn checkpoint_files(dir: &Path, prefix: &str) -> Result<BTreeMap<i64, PathBuf>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some((t, _ext)) = rest.split_once('.') else {
            continue;
        };
        if let Ok(t) = t.parse::<i64>() {
            found.insert(t, path);
        }
    }
    Ok(found)
}

/// The ranges of `plan` as `(partition, from, until)`, for messages.
pub fn describe(ranges: &[OffsetRange]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A transactional producer; every call blocks, so use it from `spawn_blocking`
/// ([`produce_transaction`] does).
pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// A producer with `transactional.id` set, its transactions initialised.
pub async fn transactional_producer(env: &TestEnv) -> Result<Arc<TxnProducer>> {
    let producer: TxnProducer = env
        .kafka_config()
        .set("transactional.id", TestEnv::unique_name("weir-test-txn"))
        .set("transaction.timeout.ms", "10000")
        .set("linger.ms", "5")
        .create()?;
    let producer = Arc::new(producer);
    let init = Arc::clone(&producer);
    tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30))).await??;
    Ok(producer)
}

/// Writes `values` to `topic`/`partition` in one transaction, then commits or aborts it.
pub async fn produce_transaction(
    producer: &Arc<TxnProducer>,
    topic: &str,
    partition: i32,
    values: Vec<String>,
    commit: bool,
) -> Result<()> {
    let producer = Arc::clone(producer);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> Result<()> {
        producer.begin_transaction()?;
        for value in &values {
            let mut record = BaseRecord::<(), str>::to(&topic)
                .partition(partition)
                .payload(value.as_str());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        if commit {
            producer.commit_transaction(Duration::from_secs(30))?;
        } else {
            // Flush first, so that the aborted records really are in the log.
            producer.flush(Duration::from_secs(30))?;
            producer.abort_transaction(Duration::from_secs(30))?;
        }
        Ok(())
    })
    .await?
}

/// Every partition of `topic` (`0..partitions`) at `offset`, e.g. where the chain must start.
pub fn all_at(topic: &str, partitions: i32, offset: i64) -> BTreeMap<TopicPartition, i64> {
    partitions_of(topic, partitions)
        .into_iter()
        .map(|tp| (tp, offset))
        .collect()
}

/// Checks that every partition of `topic` (`0..partitions`) delivered exactly the offsets
/// `expected`, once each.
pub fn check_offsets(
    recording: &Recording,
    topic: &str,
    partitions: i32,
    expected: std::ops::Range<i64>,
) -> Result<()> {
    let records = recording.records_once()?;
    for tp in partitions_of(topic, partitions) {
        let offsets: Vec<i64> = records
            .get(&tp)
            .map(|r| r.iter().map(|r| r.offset).collect())
            .unwrap_or_default();
        ensure!(
            offsets == expected.clone().collect::<Vec<i64>>(),
            "{tp} delivered {} records, not offsets {expected:?}: {:?}…",
            offsets.len(),
            &offsets[..offsets.len().min(10)]
        );
    }
    Ok(())
}

/// The partitions of `topic`, `0..partitions`.
pub fn partitions_of(topic: &str, partitions: i32) -> BTreeSet<TopicPartition> {
    (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect()
}

fn admin(env: &TestEnv) -> Result<AdminClient<DefaultClientContext>> {
    Ok(env.kafka_config().create()?)
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Deletes the records of `tp` below `offset`, as retention would: the log start moves there.
pub async fn delete_records_before(env: &TestEnv, tp: &TopicPartition, offset: i64) -> Result<()> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))?;
    let result = admin(env)?.delete_records(&list, &admin_options()).await?;
    for element in result.elements() {
        element
            .error()
            .with_context(|| format!("deleting the records of {tp} below {offset}"))?;
        ensure!(
            element.offset() == Offset::Offset(offset),
            "{tp}: the log start is {:?} after deleting below {offset}",
            element.offset()
        );
    }
    Ok(())
}

/// Grows `topic` to `total` partitions.
pub async fn add_partitions(env: &TestEnv, topic: &str, total: usize) -> Result<()> {
    let partitions = NewPartitions::new(topic, total);
    for result in admin(env)?
        .create_partitions([&partitions], &admin_options())
        .await?
    {
        result.map_err(|(topic, code)| anyhow::anyhow!("adding partitions to {topic}: {code}"))?;
    }
    Ok(())
}

/// What the `tracing` events of this thread said, while the guard lives. Use it in a
/// current-thread test, where every task of the test runs on the test's thread.
///
/// Events go through one global subscriber that hands each line to the capture of the thread
/// that emitted it. Thread-local subscribers (`set_default`) are not enough in a binary whose
/// tests run in parallel: a callsite first hit on a thread without a subscriber is cached as
/// uninteresting for every thread (tracing-core's interest cache), and the capture misses it.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

/// Stops a [`CapturedLogs`] capture when dropped.
#[derive(Debug)]
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<(tracing::Level, CapturedLogs)>> =
        const { std::cell::RefCell::new(None) };
}

impl CapturedLogs {
    /// Captures this thread's events at `level` and above until the guard drops.
    pub fn start(level: tracing::Level) -> (Self, CaptureGuard) {
        install_log_router();
        let logs = Self::default();
        CAPTURE.with(|capture| *capture.borrow_mut() = Some((level, logs.clone())));
        (logs, CaptureGuard(()))
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once per test binary, the global subscriber behind [`CapturedLogs`]: INFO and above
/// (or the `EnvFilter` in `WEIR_TEST_LOG`), each line to the emitting thread's capture, else to
/// stderr when `WEIR_TEST_LOG` is set, else nowhere.
fn install_log_router() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let filter = std::env::var("WEIR_TEST_LOG").ok();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                filter.as_deref().unwrap_or("info"),
            ))
            .with_ansi(false)
            .with_writer(LogRouter {
                stderr: filter.is_some(),
            })
            .finish();
        // Another global subscriber may be installed already; captures then see nothing.
        let _already = tracing::subscriber::set_global_default(subscriber);
    });
}

struct LogRouter {
    stderr: bool,
}

enum RoutedWriter {
    Capture(CapturedLogs),
    Stderr(std::io::Stderr),
    Nowhere,
}

impl std::io::Write for RoutedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Capture(logs) => logs.write(buf),
            Self::Stderr(stderr) => stderr.write(buf),
            Self::Nowhere => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Capture(logs) => logs.flush(),
            Self::Stderr(stderr) => stderr.flush(),
            Self::Nowhere => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogRouter {
    type Writer = RoutedWriter;

    fn make_writer(&'a self) -> RoutedWriter {
        if self.stderr {
            RoutedWriter::Stderr(std::io::stderr())
        } else {
            RoutedWriter::Nowhere
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> RoutedWriter {
        let captured = CAPTURE.with(|capture| {
            capture
                .borrow()
                .as_ref()
                .filter(|(level, _)| meta.level() <= level)
                .map(|(_, logs)| logs.clone())
        });
        captured.map_or_else(|| self.make_writer(), RoutedWriter::Capture)
    }
}
