//! Damaged checkpoints of real runs: a corrupt newest snapshot and a plan log cut off in the
//! middle of its last record. Recovery uses what is valid, and the run goes on without a gap or
//! an overlap.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::common::TestEnv;
use crate::common::engine::{
    EngineSetup, Recorder, RecordingJob, check_chain, checkpoint_files, partitions_of,
    plan_record_starts,
};

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_newest_snapshot_is_skipped() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("engine-badsnap", PARTITIONS).await?;
    let dir = tempfile::tempdir()?;
    let mut setup = EngineSetup::new(env, &[&topic.name], dir.path());
    setup.source.max_rate_per_partition = Some(500);
    // A snapshot every third batch, besides the final one.
    setup.checkpoint_interval = Duration::from_millis(300);
    let recorder = Recorder::default();

    topic
        .produce_keyed(&env.producer()?, 1_000, PARTITIONS)
        .await?;
    setup.run(RecordingJob::new(&recorder), 8).await?;
    let snapshots = checkpoint_files(dir.path(), "snapshot-")?;
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

    let summary = setup
        .run_until_count(RecordingJob::new(&recorder), &recorder, 1_000)
        .await?;
    ensure!(
        summary.replayed >= 1,
        "the plans after the previous snapshot must be replayed: {summary:?}"
    );
    let recording = recorder.snapshot();
    let replayed = &recording.batches[8..8 + usize::try_from(summary.replayed)?];
    ensure!(
        replayed.last().map(|b| b.plan.batch_time.as_millis()) <= Some(newest),
        "only plans up to the corrupt snapshot are replayed"
    );
    check_all(&recording, &topic.name, 500)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_log_torn_mid_record_loses_only_its_last_plan() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("engine-torn", PARTITIONS).await?;
    let dir = tempfile::tempdir()?;
    let mut setup = EngineSetup::new(env, &[&topic.name], dir.path());
    setup.source.max_rate_per_partition = Some(500);
    let recorder = Recorder::default();

    topic
        .produce_keyed(&env.producer()?, 1_000, PARTITIONS)
        .await?;
    // The fifth batch "crashes" after its plan was logged, before any output.
    let crashed = setup
        .run(RecordingJob::new(&recorder).failing_at(5), 10)
        .await;
    ensure!(crashed.is_err(), "the run must fail: {crashed:?}");
    let failed = recorder.snapshot().attempts[4].clone();

    // Its plan record was only half written when the "crash" came.
    let logs = checkpoint_files(dir.path(), "plans-")?;
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

    let summary = setup
        .run_until_count(RecordingJob::new(&recorder), &recorder, 1_000)
        .await?;
    ensure!(
        summary.replayed == 4,
        "the four whole plans are replayed, the torn one is not: {summary:?}"
    );
    // The torn plan never took effect (invariant 2), so its batch time may be planned again.
    let recording = recorder.snapshot();
    let first_new = &recording.batches[8].plan;
    for (new, old) in first_new.ranges.iter().zip(&failed.ranges) {
        ensure!(
            new.tp == old.tp && new.from == old.from,
            "the first new plan starts where the torn one did: {new} vs {old}"
        );
    }
    check_all(&recording, &topic.name, 500)
}

/// Every finished batch chains from offset 0 and every record arrived once.
fn check_all(
    recording: &crate::common::engine::Recording,
    topic: &str,
    per_partition: i64,
) -> Result<()> {
    let starts: BTreeMap<_, _> = partitions_of(topic, PARTITIONS)
        .into_iter()
        .map(|tp| (tp, 0))
        .collect();
    check_chain(&recording.plans()?, &starts)?;
    for (tp, records) in recording.records_once()? {
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        ensure!(
            offsets == (0..per_partition).collect::<Vec<i64>>(),
            "{tp}: {} records delivered",
            offsets.len()
        );
    }
    Ok(())
}
