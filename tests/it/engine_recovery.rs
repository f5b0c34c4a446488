//! Damaged checkpoints of real runs: a corrupt newest snapshot and a plan log cut off in the
//! middle of its last record. Recovery uses what is valid, and the run goes on without a gap or
//! an overlap.

use std::fs::OpenOptions;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::common::engine::{
    Fixture, Recording, all_at, check_chain, check_offsets, checkpoint_files, plan_record_starts,
};

const PARTITIONS: i32 = 2;
const PER_PARTITION: i64 = 500;

/// A fixture reading 50 records per partition and batch, with its records produced.
async fn backlog(prefix: &str) -> Result<Fixture> {
    let mut fixture = Fixture::new(prefix, PARTITIONS).await?;
    fixture.setup.source.max_rate_per_partition = Some(500);
    let records = usize::try_from(PER_PARTITION)? * usize::try_from(PARTITIONS)?;
    fixture
        .topic
        .produce_keyed(&fixture.env.producer()?, records, PARTITIONS)
        .await?;
    Ok(fixture)
}

/// Every finished batch chains from offset 0 and every record arrived once.
fn check_all(recording: &Recording, topic: &str) -> Result<()> {
    check_chain(&recording.plans()?, &all_at(topic, PARTITIONS, 0))?;
    check_offsets(recording, topic, PARTITIONS, 0..PER_PARTITION)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_newest_snapshot_is_skipped() -> Result<()> {
    let mut f = backlog("engine-badsnap").await?;
    // A snapshot every third batch, besides the final one.
    f.setup.checkpoint_interval = Duration::from_millis(300);
    f.setup.run(f.job(), 8).await?;
    let snapshots = checkpoint_files(f.dir.path(), "snapshot-")?;
    ensure!(
        snapshots.len() >= 3,
        "expected periodic snapshots: {snapshots:?}"
    );
    let (&newest, path) = snapshots.last_key_value().context("no snapshot")?;
    // Flip a byte in the middle of the payload: the CRC no longer matches.
    let mut bytes = std::fs::read(path)?;
    let middle = 34 + (bytes.len() - 34) / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(path, &bytes)?;

    let summary = f.run_until_count(1_000).await?;
    ensure!(
        summary.replayed >= 1,
        "the plans after the previous snapshot must be replayed: {summary:?}"
    );
    let recording = f.recorder.snapshot();
    let replayed = &recording.batches[8..8 + usize::try_from(summary.replayed)?];
    ensure!(
        replayed.last().map(|b| b.plan.batch_time.as_millis()) <= Some(newest),
        "only plans up to the corrupt snapshot are replayed"
    );
    check_all(&recording, &f.topic.name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_log_torn_mid_record_loses_only_its_last_plan() -> Result<()> {
    let f = backlog("engine-torn").await?;
    // The fifth batch "crashes" after its plan was logged, before any output.
    let crashed = f.setup.run(f.job().failing_at(5), 10).await;
    ensure!(crashed.is_err(), "the run must fail: {crashed:?}");
    let failed = f.recorder.snapshot().attempts[4].clone();

    // Its plan record was only half written when the "crash" came.
    let logs = checkpoint_files(f.dir.path(), "plans-")?;
    let (_, log) = logs.last_key_value().context("no plan log")?;
    let (starts, len) = plan_record_starts(log)?;
    ensure!(
        starts.len() == 5,
        "the plan log holds {} records",
        starts.len()
    );
    let last = starts[4];
    OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(last + (len - last) / 2)?;

    let summary = f.run_until_count(1_000).await?;
    ensure!(
        summary.replayed == 4,
        "the four whole plans are replayed, the torn one is not: {summary:?}"
    );
    // The torn plan never took effect (invariant 2), so its batch time may be planned again.
    let recording = f.recorder.snapshot();
    let first_new = &recording.batches[8].plan;
    for (new, old) in first_new.ranges.iter().zip(&failed.ranges) {
        ensure!(
            new.tp == old.tp && new.from == old.from,
            "the first new plan starts where the torn one did: {new} vs {old}"
        );
    }
    check_all(&recording, &f.topic.name)
}
