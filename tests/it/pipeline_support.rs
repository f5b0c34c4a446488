//! Shared helpers of the pipeline tests: `weir run`'s pipeline, in process, from a real topic into
//! a real database, and the exactly-once check of what landed.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir::config::PipelineConfig;
use weir::runtime::{RunSummary, run_pipeline};

use crate::common::{TestEnv, TestTopic};
use crate::sink_support::TestDb;

/// The table every pipeline test writes: the order id and the record's coordinates.
pub const TABLE: &str = "orders";

/// A pipeline file from `topic` into the database at `url`, checkpointing into
/// `checkpoint_dir`, 100 ms batches; `source_extra` is appended to `[source]` and `sink` (keys of
/// `[sink]` after `url`) says what the table is.
pub fn pipeline_file(
    env: &TestEnv,
    topic: &TestTopic,
    url: &str,
    checkpoint_dir: &Path,
    source_extra: &str,
    sink: &str,
) -> String {
    format!(
        r#"
[pipeline]
name = "{name}"
batch_interval = "100ms"
checkpoint_dir = {dir:?}

[source]
brokers = "{brokers}"
topics = ["{topic}"]
{source_extra}

[sink]
url = {url:?}
{sink}
"#,
        name = TestEnv::unique_name("pipeline"),
        dir = checkpoint_dir.display().to_string(),
        brokers = env.brokers,
        topic = topic.name,
    )
}

/// A pipeline file from `topic` into `TABLE` at `url`, appending (so that a duplicate shows as
/// a second row), checkpointing into `checkpoint_dir`; `extra` is appended to `[source]`.
pub fn pipeline_toml(
    env: &TestEnv,
    topic: &TestTopic,
    url: &str,
    checkpoint_dir: &Path,
    source_extra: &str,
) -> String {
    let sink = format!(
        r#"table = "{TABLE}"
create_table = true
pool_size = 4
[[sink.columns]]
name = "id"
type = "bigint"
nullable = false
[sink.metadata]
partition = "kafka_partition"
offset = "kafka_offset"
"#
    );
    pipeline_file(env, topic, url, checkpoint_dir, source_extra, &sink)
}

/// Sends `(partition, key, value)` records (`None` value: a tombstone) and waits for every
/// acknowledgement.
pub async fn send(
    producer: &FutureProducer,
    topic: &TestTopic,
    records: impl IntoIterator<Item = (i32, Option<String>, Option<String>)>,
) -> Result<()> {
    let mut pending = Vec::new();
    for (partition, key, value) in records {
        let mut record = FutureRecord::<String, String>::to(&topic.name).partition(partition);
        if let Some(key) = &key {
            record = record.key(key);
        }
        if let Some(value) = &value {
            record = record.payload(value);
        }
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Produces orders `{"id": i}` for `i` in `ids`, round-robin over `partitions`, and waits for
/// every acknowledgement.
pub async fn produce(
    producer: &FutureProducer,
    topic: &TestTopic,
    ids: std::ops::Range<i64>,
    partitions: i32,
) -> Result<()> {
    let mut records = Vec::new();
    for id in ids {
        let partition = i32::try_from(id.rem_euclid(i64::from(partitions)))?;
        records.push((partition, None, Some(format!("{{\"id\":{id}}}"))));
    }
    send(producer, topic, records).await
}

/// A pipeline running in the background.
pub struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<weir::Result<RunSummary>>,
}

impl Running {
    /// Starts `run_pipeline` on `config` (a pipeline file's text).
    pub fn start(config: &str) -> Result<Self> {
        let config = PipelineConfig::from_toml_str(config)?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { run_pipeline(&config, token, None).await });
        Ok(Self { shutdown, task })
    }

    /// Waits until `TABLE` in `db` holds at least `rows` rows, then stops the pipeline gracefully.
    /// Fails when the pipeline stops by itself or `timeout` passes first.
    pub async fn stop_at(self, db: &TestDb, rows: i64, timeout: Duration) -> Result<RunSummary> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.task.is_finished() {
                let ended = self.task.await?;
                bail!("the pipeline stopped before {rows} rows were in: {ended:?}");
            }
            // The table appears with the sink; until then there is nothing to count.
            if let Ok(count) = db.count(TABLE).await
                && count >= rows
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "fewer than {rows} rows after {timeout:?}: {:?}",
                db.count(TABLE).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop().await
    }

    /// Stops the pipeline gracefully and returns its summary.
    pub async fn stop(self) -> Result<RunSummary> {
        self.shutdown.cancel();
        Ok(self.task.await.context("the pipeline task panicked")??)
    }
}

/// Checks that `TABLE` holds each of the orders `0..count` exactly once, and one row per
/// `(partition, offset)`.
pub async fn assert_exactly_once(db: &TestDb, count: i64) -> Result<()> {
    let (rows, ids, coordinates, min, max): (i64, i64, i64, Option<i64>, Option<i64>) = db
        .fetch::<(i64, i64, i64, Option<i64>, Option<i64>)>(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT id), (SELECT COUNT(*) FROM (SELECT DISTINCT kafka_partition, kafka_offset FROM {TABLE}) AS c), MIN(id), MAX(id) FROM {TABLE}"
        ))
        .await?
        .pop()
        .context("no answer")?;
    ensure!(
        rows == count && ids == count && coordinates == count,
        "{}: expected {count} orders once each; the table holds {rows} rows, {ids} distinct ids, {coordinates} distinct coordinates",
        db.name()
    );
    ensure!(
        count == 0 || (min == Some(0) && max == Some(count - 1)),
        "{}: ids run from {min:?} to {max:?}, not 0 to {}",
        db.name(),
        count - 1
    );
    Ok(())
}

/// The log lines of the current thread's tracing events while the guard lives. Tests that use
/// it run on a current-thread runtime, so the pipeline's own events land here.
pub struct LogCapture {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    /// Starts capturing INFO and above.
    pub fn start() -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = SharedWriter(Arc::clone(&lines));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Self {
            lines,
            _guard: guard,
        }
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.lines.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[derive(Clone)]
struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
