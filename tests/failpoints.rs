//! The sink's failpoints, at each step of the commit protocol, on real PostgreSQL, MariaDB and
//! SQLite: a failure before COMMIT leaves nothing behind (not even the commit row) and the replay
//! writes the batch once; a failure after COMMIT (the reply lost) is resolved from the commit
//! table as committed, and the replay writes nothing. Either way each record lands exactly once.
//!
//! The checkpoint's failpoints fail its writes as a full disk would (`return(enospc:<dir>)`): the
//! store is left as it was, and the same write succeeds once space is free, in the same process.
//!
//! `fail` is global to the process, so this binary is apart from `tests/it` and every test holds
//! a [`fail::FailScenario`], which also runs them one at a time. Run it with
//! `cargo test --features failpoints --test failpoints` (services as for `tests/it`).
// Tests wait on deadlines; the ban on the clock (clippy.toml) guards the product's outputs.
#![allow(clippy::disallowed_methods)]

#[path = "common/mod.rs"]
mod common;
#[path = "it/ops_support.rs"]
mod ops_support;
#[path = "it/pipeline_support.rs"]
mod pipeline_support;
#[path = "it/sink_support.rs"]
mod sink_support;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use weir::checkpoint::{
    CheckpointStore, PipelineIdentity, Recovery, RecoveryPreview, Snapshot, SnapshotStatus, inspect,
};
use weir::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
use weir::sink::{CommitKey, RetryPolicy, Sink, SqlSink, SqlSinkConfig, WriteOutcome};
use weir::source::{PartitionBatch, RangeReader, Record};

use crate::sink_support::{TestDb, batch, committed, every_db};

/// Records per write; with `batch_size = 10` the data goes in several chunks (statements), so
/// that `sink::mid_data_write` fires between two of them.
const RECORDS: i64 = 25;

/// Whether a failure at a step comes before or after the COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    BeforeCommit,
    AfterCommit,
}

const FAILPOINTS: [(&str, Step); 6] = [
    ("sink::before_begin", Step::BeforeCommit),
    ("sink::after_commit_row_before_data", Step::BeforeCommit),
    ("sink::mid_data_write", Step::BeforeCommit),
    ("sink::after_data_before_commit", Step::BeforeCommit),
    ("sink::commit_sent_reply_unread", Step::AfterCommit),
    ("sink::after_commit", Step::AfterCommit),
];

/// A sink into table `table` of `db` that tries each write `attempts` times.
async fn sink(db: &TestDb, table: &str, attempts: u32) -> Result<SqlSink> {
    let text = format!(
        "url = {:?}\ntable = {table:?}\ncreate_table = true\nbatch_size = 10\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\nnullable = false\n",
        db.url()
    );
    let config: SqlSinkConfig = toml::from_str(&text)?;
    let retry = RetryPolicy {
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let mut sink = SqlSink::new(config)?.with_retry_policy(retry);
    sink.open().await?;
    Ok(sink)
}

/// Orders `{"id": 0}` … `{"id": 24}` at offsets 0 to 24.
fn orders() -> Vec<PartitionBatch> {
    let values: Vec<String> = (0..RECORDS).map(|id| format!("{{\"id\":{id}}}")).collect();
    let values: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
    batch(0, &values)
}

/// Writes `orders()` as batch 1000, partition 0, of `pipeline`.
async fn write(sink: &SqlSink, pipeline: &str) -> weir::Result<WriteOutcome> {
    let input = orders();
    let ranges: Vec<OffsetRange> = input.iter().map(|b| b.range.clone()).collect();
    let key = CommitKey::new(pipeline, BatchTime::from_millis(1_000), 0);
    sink.write(&key, &ranges, &input).await
}

/// Writes `orders()` as [`write`] does, streamed in chunks of 10 records.
async fn write_streamed(sink: &SqlSink, pipeline: &str) -> weir::Result<WriteOutcome> {
    let batch = orders().remove(0);
    let at = BatchTime::from_millis(1_000);
    let key = CommitKey::new(pipeline, at, 0);
    let ranges = [batch.range.clone()];
    let chunks = batch.records.chunks(10).map(<[Record]>::to_vec).collect();
    let input = RangeReader::from_chunks(at, batch.range, chunks);
    sink.write_stream(&key, &ranges, input).await
}

/// Rows of `table`, distinct ids in it, and commit rows of `pipeline`.
async fn landed(db: &TestDb, table: &str, pipeline: &str) -> Result<(i64, i64, i64)> {
    let (rows, ids): (i64, i64) = db
        .fetch(&format!("SELECT COUNT(*), COUNT(DISTINCT id) FROM {table}"))
        .await?
        .pop()
        .context("no answer")?;
    let commits: Vec<(i64,)> = db
        .fetch(&format!(
            "SELECT COUNT(*) FROM weir_commits WHERE pipeline = '{pipeline}'"
        ))
        .await?;
    Ok((rows, ids, commits[0].0))
}

#[tokio::test]
async fn failpoints_a_failed_attempt_is_all_or_nothing_and_the_replay_lands_once() -> Result<()> {
    let scenario = fail::FailScenario::setup();
    for db in every_db().await? {
        for (i, (failpoint, step)) in FAILPOINTS.into_iter().enumerate() {
            let what = format!("{} at {failpoint}", db.name());
            let (table, pipeline) = (format!("single_{i}"), format!("single-{i}"));
            // One attempt: the failure is the write's outcome, not hidden by a retry.
            let sink = sink(&db, &table, 1).await?;
            fail::cfg(failpoint, "1*return").map_err(anyhow::Error::msg)?;
            let first = write(&sink, &pipeline).await;
            fail::remove(failpoint);
            match step {
                Step::BeforeCommit => {
                    let error = first.err().with_context(|| format!("{what}: no error"))?;
                    ensure!(error.is_retryable(), "{what}: {error}");
                    ensure!(error.to_string().contains(failpoint), "{what}: {error}");
                    ensure!(
                        landed(&db, &table, &pipeline).await? == (0, 0, 0),
                        "{what}: something of the failed attempt landed"
                    );
                }
                Step::AfterCommit => {
                    // The reply was lost, and the commit table says the write happened.
                    ensure!(
                        first? == committed(25, 0, 0),
                        "{what}: not resolved as committed"
                    );
                }
            }
            // The replay (a retry, or the same plan after a restart) completes the write once.
            let replay = write(&sink, &pipeline).await?;
            let expected = match step {
                Step::BeforeCommit => committed(25, 0, 0),
                Step::AfterCommit => WriteOutcome::AlreadyCommitted,
            };
            ensure!(replay == expected, "{what}: replay gave {replay:?}");
            ensure!(
                write(&sink, &pipeline).await? == WriteOutcome::AlreadyCommitted,
                "{what}"
            );
            ensure!(
                landed(&db, &table, &pipeline).await? == (RECORDS, RECORDS, 1),
                "{what}: not exactly once: {:?}",
                landed(&db, &table, &pipeline).await?
            );
            sink.close().await;
        }
    }
    scenario.teardown();
    Ok(())
}

#[tokio::test]
async fn failpoints_a_streamed_write_that_fails_between_or_within_chunks_commits_nothing()
-> Result<()> {
    let scenario = fail::FailScenario::setup();
    for db in every_db().await? {
        for (i, failpoint) in [
            "sink::stream_chunk_received",
            "sink::mid_data_write",
            "sink::between_chunks",
        ]
        .into_iter()
        .enumerate()
        {
            let what = format!("{} at {failpoint}", db.name());
            let (table, pipeline) = (format!("streamed_{i}"), format!("streamed-{i}"));
            // Retries allowed, but the chunks taken are gone: the write must fail whole.
            let sink = sink(&db, &table, 3).await?;
            // At the second chunk: the first one is in the open transaction.
            fail::cfg(failpoint, "1*off->1*return").map_err(anyhow::Error::msg)?;
            let first = write_streamed(&sink, &pipeline).await;
            fail::remove(failpoint);
            let error = first.err().with_context(|| format!("{what}: no error"))?;
            ensure!(error.is_retryable(), "{what}: {error}");
            ensure!(error.to_string().contains(failpoint), "{what}: {error}");
            ensure!(
                landed(&db, &table, &pipeline).await? == (0, 0, 0),
                "{what}: something of the failed stream landed"
            );
            // The batch runs again from its plan: the range streams again, once.
            ensure!(
                write_streamed(&sink, &pipeline).await? == committed(25, 0, 0),
                "{what}"
            );
            ensure!(
                write_streamed(&sink, &pipeline).await? == WriteOutcome::AlreadyCommitted,
                "{what}"
            );
            ensure!(
                landed(&db, &table, &pipeline).await? == (RECORDS, RECORDS, 1),
                "{what}: not exactly once: {:?}",
                landed(&db, &table, &pipeline).await?
            );
            sink.close().await;
        }
    }
    scenario.teardown();
    Ok(())
}

#[tokio::test]
async fn failpoints_retries_hide_every_transient_failure() -> Result<()> {
    let scenario = fail::FailScenario::setup();
    for db in every_db().await? {
        for (i, (failpoint, _)) in FAILPOINTS.into_iter().enumerate() {
            let what = format!("{} at {failpoint}", db.name());
            let (table, pipeline) = (format!("retried_{i}"), format!("retried-{i}"));
            let sink = sink(&db, &table, 3).await?;
            // Twice: the first retry fails too.
            fail::cfg(failpoint, "2*return").map_err(anyhow::Error::msg)?;
            let outcome = write(&sink, &pipeline).await;
            fail::remove(failpoint);
            ensure!(
                outcome? == committed(25, 0, 0),
                "{what}: the retried write did not commit"
            );
            ensure!(
                write(&sink, &pipeline).await? == WriteOutcome::AlreadyCommitted,
                "{what}"
            );
            ensure!(
                landed(&db, &table, &pipeline).await? == (RECORDS, RECORDS, 1),
                "{what}: not exactly once"
            );
            sink.close().await;
        }
    }
    scenario.teardown();
    Ok(())
}

#[tokio::test]
async fn failpoints_a_crash_mid_transaction_commits_nothing() -> Result<()> {
    let scenario = fail::FailScenario::setup();
    for db in every_db().await? {
        for (i, failpoint) in [
            "sink::after_commit_row_before_data",
            "sink::mid_data_write",
            "sink::after_data_before_commit",
        ]
        .into_iter()
        .enumerate()
        {
            let what = format!("{} at {failpoint}", db.name());
            let (table, pipeline) = (format!("crash_{i}"), format!("crash-{i}"));
            // The writer dies with its transaction open, as a killed process would.
            let crashed = sink(&db, &table, 1).await?;
            fail::cfg(failpoint, "1*panic").map_err(anyhow::Error::msg)?;
            let task = {
                let pipeline = pipeline.clone();
                tokio::spawn(async move { write(&crashed, &pipeline).await })
            };
            let died = task.await;
            fail::remove(failpoint);
            ensure!(
                died.as_ref().is_err_and(tokio::task::JoinError::is_panic),
                "{what}: the write did not crash: {died:?}"
            );

            // A new process: the uncommitted commit row holds nothing up, and the write lands once.
            let restarted = sink(&db, &table, 3).await?;
            let replay =
                tokio::time::timeout(Duration::from_secs(60), write(&restarted, &pipeline))
                    .await
                    .with_context(|| {
                        format!("{what}: the replay waited on the crashed transaction")
                    })??;
            ensure!(replay == committed(25, 0, 0), "{what}: {replay:?}");
            ensure!(
                landed(&db, &table, &pipeline).await? == (RECORDS, RECORDS, 1),
                "{what}: not exactly once"
            );
            restarted.close().await;
        }
    }
    scenario.teardown();
    Ok(())
}

// --- the checkpoint on a full disk ---------------------------------------------------------------

fn checkpoint_identity() -> PipelineIdentity {
    PipelineIdentity::new("disk-full", ["orders"], "sqlite://orders.db table=orders")
}

fn t(i: i64) -> BatchTime {
    BatchTime::from_millis(i * 100)
}

/// Batch `i` reads offsets `[10(i-1), 10i)` of orders/0.
fn plan(i: i64) -> BatchPlan {
    let tp = TopicPartition::new("orders", 0);
    BatchPlan::new(t(i), vec![OffsetRange::new(tp, (i - 1) * 10, i * 10)])
}

/// The snapshot after batch `i`.
fn snapshot(i: i64) -> Snapshot {
    let positions = BTreeMap::from([(TopicPartition::new("orders", 0), i * 10)]);
    Snapshot::initial(
        checkpoint_identity(),
        Duration::from_millis(100),
        t(i),
        positions,
    )
}

/// A fresh checkpoint in `dir` with its initial snapshot and plans `1..=plans` logged.
fn checkpoint(dir: &Path, plans: i64) -> Result<CheckpointStore> {
    let mut store = CheckpointStore::open(dir)?;
    ensure!(store.recover(&checkpoint_identity())? == Recovery::Fresh);
    store.write_snapshot(&snapshot(0))?;
    for i in 1..=plans {
        store.append_plan(&plan(i))?;
    }
    Ok(store)
}

/// Makes `failpoint` fail writes under `dir` as a full disk does.
fn disk_full_at(failpoint: &str, dir: &Path) -> Result<()> {
    fail::cfg(failpoint, &format!("return(enospc:{})", dir.display())).map_err(anyhow::Error::msg)
}

fn ensure_disk_full(result: weir::Result<()>, what: &str) -> Result<()> {
    let Err(error) = result else {
        bail!("{what}: no error");
    };
    ensure!(error.is_retryable(), "{what}: not retryable: {error}");
    ensure!(
        error.to_string().contains("free space"),
        "{what}: says not what to do: {error}"
    );
    Ok(())
}

/// What `weir checkpoint inspect` would see: no temporary file, every snapshot valid, every
/// plan log whole, and a recovery from the snapshot after batch `snapshot_at` replaying `replay`.
fn ensure_clean(
    dir: &Path,
    snapshot_at: i64,
    replay: RangeInclusive<i64>,
    what: &str,
) -> Result<()> {
    let inspection = inspect(dir)?;
    ensure!(
        inspection.temp_files.is_empty()
            && inspection.plan_logs.iter().all(|log| log.problem.is_none())
            && inspection
                .snapshots
                .iter()
                .all(|s| matches!(s.status, SnapshotStatus::Valid(_))),
        "{what}: not clean:\n{inspection}"
    );
    let expected = (!replay.is_empty())
        .then(|| (t(*replay.start()), t(*replay.end()), replay.clone().count()));
    match &inspection.recovery {
        RecoveryPreview::Resume {
            snapshot, replay, ..
        } if *snapshot == t(snapshot_at) && *replay == expected => Ok(()),
        other => bail!("{what}: recovery would be {other:?}"),
    }
}

/// Recovers `dir` in a new store (as a restart would) and checks that it logged `plans` exactly.
fn ensure_recovers(
    dir: &Path,
    snapshot_at: i64,
    plans: RangeInclusive<i64>,
    what: &str,
) -> Result<()> {
    let recovered = CheckpointStore::open(dir)?.recover(&checkpoint_identity())?;
    let expected = Recovery::Resume {
        snapshot: snapshot(snapshot_at),
        plans: plans.map(plan).collect(),
    };
    ensure!(recovered == expected, "{what}: recovered {recovered:?}");
    Ok(())
}

#[test]
fn failpoints_a_plan_append_on_a_full_disk_leaves_no_trace_and_succeeds_later() -> Result<()> {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let mut store = checkpoint(dir.path(), 1)?;
    disk_full_at(
        "checkpoint::plan_log::after_append_before_fsync",
        dir.path(),
    )?;
    for attempt in 1..=3 {
        let what = format!("append, attempt {attempt}");
        ensure_disk_full(store.append_plan(&plan(2)), &what)?;
        ensure_clean(dir.path(), 0, 1..=1, &what)?;
    }
    fail::remove("checkpoint::plan_log::after_append_before_fsync");
    store.append_plan(&plan(2))?;
    store.append_plan(&plan(3))?;
    drop(store);
    ensure_recovers(dir.path(), 0, 1..=3, "after the disk was freed")?;
    scenario.teardown();
    Ok(())
}

#[test]
fn failpoints_a_snapshot_on_a_full_disk_keeps_the_previous_one_and_succeeds_later() -> Result<()> {
    let scenario = fail::FailScenario::setup();
    for failpoint in [
        "checkpoint::snapshot::after_temp_write",
        "checkpoint::snapshot::before_fsync",
        "checkpoint::snapshot::after_fsync_before_rename",
        "checkpoint::snapshot::after_rename_before_dir_fsync",
    ] {
        let dir = tempfile::tempdir()?;
        let mut store = checkpoint(dir.path(), 3)?;
        disk_full_at(failpoint, dir.path())?;
        ensure_disk_full(store.write_snapshot(&snapshot(2)), failpoint)?;
        // Only a renamed snapshot is in use; a failure before leaves everything as it was.
        let in_use = if failpoint.ends_with("after_rename_before_dir_fsync") {
            2
        } else {
            0
        };
        ensure_clean(dir.path(), in_use, in_use + 1..=3, failpoint)?;
        // Plans logged meanwhile go where a recovery finds them.
        store.append_plan(&plan(4))?;
        ensure_disk_full(store.write_snapshot(&snapshot(2)), failpoint)?;
        ensure_clean(dir.path(), in_use, in_use + 1..=4, failpoint)?;

        fail::remove(failpoint);
        store.write_snapshot(&snapshot(2))?;
        store.append_plan(&plan(5))?;
        ensure_clean(dir.path(), 2, 3..=5, failpoint)?;
        drop(store);
        ensure_recovers(dir.path(), 2, 3..=5, failpoint)?;
    }
    scenario.teardown();
    Ok(())
}

// --- readiness while the checkpoint disk is full ---------------------------------------------------

/// A pipeline whose plan log cannot be written (a full disk) pauses: `/health/ready` answers 503
/// naming the pause and `weir_paused{reason="disk_full"}` is 1; once the disk has room again it
/// resumes, is ready, and every record lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failpoints_a_full_checkpoint_disk_makes_the_pipeline_not_ready_until_space_returns()
-> Result<()> {
    use crate::ops_support::{free_port, get, pipeline_name, sample_sum, wait_for};
    use crate::pipeline_support::{Running, assert_exactly_once, pipeline_toml, produce};

    let _scenario = fail::FailScenario::setup();
    let env = common::TestEnv::get().await;
    let topic = env.topic("ops-disk-full", 2).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let toml = pipeline_toml(env, &topic, db.url(), dir.path(), "").replacen(
        "[source]",
        &format!("http = \"127.0.0.1:{port}\"\n\n[source]"),
        1,
    );
    let name = pipeline_name(&toml)?;
    let running = Running::start(&toml)?;
    wait_for(port, "/health/ready", Duration::from_secs(60), |code, _| {
        code == 200
    })
    .await?;

    disk_full_at(
        "checkpoint::plan_log::after_append_before_fsync",
        dir.path(),
    )?;
    let (_, reason) = wait_for(port, "/health/ready", Duration::from_secs(30), |code, _| {
        code == 503
    })
    .await?;
    ensure!(
        reason.contains("paused"),
        "503 without the reason: {reason}"
    );
    let (_, metrics) = get(port, "/metrics").await?;
    let paused = sample_sum(&metrics, "weir_paused", &name, &["reason=\"disk_full\""]);
    ensure!(paused == 1.0, "weir_paused is {paused}");
    produce(&env.producer()?, &topic, 0..50, 2).await?;

    fail::remove("checkpoint::plan_log::after_append_before_fsync");
    wait_for(port, "/health/ready", Duration::from_secs(30), |code, _| {
        code == 200
    })
    .await?;
    let (_, metrics) = get(port, "/metrics").await?;
    let paused = sample_sum(&metrics, "weir_paused", &name, &["reason=\"disk_full\""]);
    ensure!(paused == 0.0, "weir_paused is {paused} after the pause");
    running.stop_at(&db, 50, Duration::from_secs(60)).await?;
    assert_exactly_once(&db, 50).await
}
