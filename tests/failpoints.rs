//! The sink's failpoints, at each step of the commit protocol, on real PostgreSQL, MariaDB and
//! SQLite: a failure before COMMIT leaves nothing behind (not even the commit row) and the replay
//! writes the batch once; a failure after COMMIT (the reply lost) is resolved from the commit
//! table as committed, and the replay writes nothing. Either way each record lands exactly once.
//!
//! `fail` is global to the process, so this binary is apart from `tests/it` and every test holds
//! a [`fail::FailScenario`], which also runs them one at a time. Run it with
//! `cargo test --features failpoints --test failpoints` (services as for `tests/it`).
// Tests wait on deadlines; the ban on the clock (clippy.toml) guards the product's outputs.
#![allow(clippy::disallowed_methods)]

#[path = "common/mod.rs"]
mod common;
#[path = "it/sink_support.rs"]
mod sink_support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weir::plan::{BatchTime, OffsetRange};
use weir::sink::{CommitKey, RetryPolicy, Sink, SqlSink, SqlSinkConfig, WriteOutcome};
use weir::source::PartitionBatch;

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
