//! The operations server during a real run: `/metrics` counts what the table holds,
//! `/health/ready` turns 503 with the reason while the sink refuses connections and 200 again
//! after, `/api/status` and the status page have the batches, and no secret shows anywhere.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sqlx::AssertSqlSafe;

use crate::common::TestEnv;
use crate::ops_support::{SECRET, free_port, get, pipeline_name, sample_sum, wait_for};
use crate::pipeline_support::{Running, TABLE, assert_exactly_once, pipeline_toml, produce};
use crate::sink_support::TestDb;

const PARTITIONS: i32 = 3;
const ORDERS: i64 = 300;
const MORE: i64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_metrics_health_and_status_follow_a_real_run() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("ops", PARTITIONS).await?;
    let pg = env.postgres_schema().await?;
    let admin = pg.pool.clone();
    let schema = pg.schema.clone();
    let application = TestEnv::unique_name("weir_ops");
    let url = format!("{}&application_name={application}", pg.url);
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    // A Kafka password, ignored by a plaintext connection: it must show nowhere.
    let properties = format!("[source.properties]\n\"sasl.password\" = \"{SECRET}\"\n");
    let toml = pipeline_toml(env, &topic, &url, dir.path(), &properties).replacen(
        "[source]",
        &format!("http = \"127.0.0.1:{port}\"\n\n[source]"),
        1,
    );
    let name = pipeline_name(&toml)?;
    let db = TestDb::Postgres(pg);
    let running = Running::start(&toml)?;

    wait_for(port, "/health/live", Duration::from_secs(30), |code, _| {
        code == 200
    })
    .await?;
    wait_for(port, "/health/ready", Duration::from_secs(60), |code, _| {
        code == 200
    })
    .await?;

    let producer = env.producer()?;
    produce(&producer, &topic, 0..ORDERS, PARTITIONS).await?;
    wait_until_rows(&db, ORDERS).await?;

    let (code, metrics) = get(port, "/metrics").await?;
    ensure!(code == 200, "GET /metrics: {code}");
    let read = sample_sum(&metrics, "weir_records_read_total", &name, &[]);
    ensure!(
        read == 300.0,
        "weir_records_read_total sums to {read}, not {ORDERS}:\n{metrics}"
    );
    for p in 0..PARTITIONS {
        let label = format!("partition=\"{p}\"");
        let per = sample_sum(&metrics, "weir_records_read_total", &name, &[&label]);
        ensure!(per == 100.0, "partition {p} read {per} records, not 100");
        ensure!(
            metrics.contains(&format!(
                "weir_partition_lag{{pipeline=\"{name}\",topic=\"{}\",{label}}} 0",
                topic.name
            )),
            "no zero lag for partition {p}"
        );
    }
    let bytes = sample_sum(&metrics, "weir_bytes_read_total", &name, &[]);
    ensure!(bytes >= 300.0 * 8.0, "weir_bytes_read_total is {bytes}");
    let rows = sample_sum(
        &metrics,
        "weir_rows_written_total",
        &name,
        &["op=\"insert\""],
    );
    let in_table = db.count(TABLE).await?;
    ensure!(
        rows == 300.0 && in_table == ORDERS,
        "weir_rows_written_total{{op=\"insert\"}} is {rows}, the table holds {in_table}"
    );
    let batches = sample_sum(&metrics, "weir_batches_total", &name, &[]);
    ensure!(batches > 0.0, "weir_batches_total is {batches}");
    for histogram in [
        "weir_batch_processing_seconds_count",
        "weir_batch_scheduling_delay_seconds_count",
        "weir_checkpoint_write_seconds_count",
    ] {
        let count = sample_sum(&metrics, histogram, &name, &[]);
        ensure!(count > 0.0, "{histogram} is {count}");
    }
    ensure!(
        metrics.contains("weir_batch_processing_seconds_bucket{"),
        "the processing time is not a histogram"
    );
    ensure!(
        sample_sum(&metrics, "weir_checkpoint_bytes", &name, &[]) > 0.0,
        "no checkpoint size"
    );
    let memory: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_process_resident_memory_bytes "))
        .context("no weir_process_resident_memory_bytes")?
        .parse()?;
    ensure!(memory > 1e6, "resident memory {memory}");

    let (code, status) = get(port, "/api/status").await?;
    ensure!(code == 200, "GET /api/status: {code}");
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let charted: u64 = status["batches"]
        .as_array()
        .context("no batches")?
        .iter()
        .filter_map(|b| b["records"].as_u64())
        .sum();
    ensure!(charted == 300, "the charted batches hold {charted} records");
    ensure!(
        status["lag"].as_array().map(Vec::len) == Some(3),
        "lag: {}",
        status["lag"]
    );
    ensure!(status["ready"] == true, "not ready: {status}");
    let (code, page) = get(port, "/").await?;
    ensure!(code == 200 && page.contains("<canvas"), "GET /: {code}");

    // The sink's transactions wait on a lock and lose their sessions (killed from another
    // session: pg_stat_activity is a snapshot taken once per transaction): writes fail and wait to
    // retry, and the pipeline is not ready until one gets through.
    let mut lock = admin.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "SELECT 1 FROM \"{schema}\".weir_offsets FOR UPDATE"
    )))
    .execute(&mut *lock)
    .await?;
    produce(&producer, &topic, ORDERS..ORDERS + MORE, PARTITIONS).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&application)
        .execute(&admin)
        .await?;
        let (code, body) = get(port, "/health/ready").await?;
        if code == 503 {
            break body;
        }
        if Instant::now() > deadline {
            let sessions: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as("SELECT application_name, state, wait_event_type FROM pg_stat_activity WHERE application_name = $1").bind(&application).fetch_all(&mut *lock).await?;
            bail!(
                "still ready a minute after the sink began failing: {sessions:?} {}",
                get(port, "/api/status").await?.1
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        reason.contains("sink failing"),
        "503 without the reason: {reason}"
    );
    let (_, metrics) = get(port, "/metrics").await?;
    let retries = sample_sum(&metrics, "weir_sink_retries_total", &name, &[]);
    ensure!(retries > 0.0, "weir_sink_retries_total is {retries}");
    lock.rollback().await?;
    wait_for(port, "/health/ready", Duration::from_secs(60), |code, _| {
        code == 200
    })
    .await?;
    wait_until_rows(&db, ORDERS + MORE).await?;

    // No secret in what the server shows.
    for path in ["/metrics", "/api/status", "/"] {
        let (_, body) = get(port, path).await?;
        ensure!(!body.contains(SECRET), "GET {path} shows the password");
    }
    running.stop().await?;
    assert_exactly_once(&db, ORDERS + MORE).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port, "/health/live").await.is_ok() {
        ensure!(
            Instant::now() < deadline,
            "the server outlived the pipeline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn wait_until_rows(db: &TestDb, rows: i64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(count) = db.count(TABLE).await
            && count >= rows
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "fewer than {rows} rows after a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
