//! Graceful stop: cancelling the shutdown token while a batch runs lets that batch finish, plans
//! nothing more, and writes a snapshot at the finished batch, so the next run replays nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weir::checkpoint::{RecoveryPreview, SnapshotStatus, inspect};

use crate::common::TestEnv;
use crate::common::engine::{
    EngineSetup, Hold, Recorder, RecordingJob, check_chain, ends, partitions_of, read_plan_logs,
};

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_finishes_the_batch_and_snapshots_it() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("engine-stop", PARTITIONS).await?;
    let dir = tempfile::tempdir()?;
    let mut setup = EngineSetup::new(env, &[&topic.name], dir.path());
    setup.source.max_rate_per_partition = Some(500);
    let recorder = Recorder::default();
    topic
        .produce_keyed(&env.producer()?, 600, PARTITIONS)
        .await?;

    // Stop while the third batch is running.
    let hold = Hold::default();
    let engine = setup.spawn(RecordingJob::new(&recorder).holding_at(3, &hold));
    tokio::time::timeout(Duration::from_secs(15), hold.entered.notified())
        .await
        .context("the third batch never started")?;
    engine.shutdown.cancel();
    hold.release.notify_one();
    let summary = engine.join().await??;
    ensure!(
        summary.batches == 3,
        "the running batch finishes: {summary:?}"
    );
    let last = summary.last_batch.context("no batch")?;

    let recording = recorder.snapshot();
    let plans = recording.plans()?;
    ensure!(
        plans.len() == 3 && plans[2].batch_time == last,
        "three batches ran"
    );
    ensure!(
        read_plan_logs(dir.path())? == plans,
        "nothing is planned after the stop was asked for"
    );
    let inspection = inspect(dir.path())?;
    let newest = inspection.snapshots.first().context("no snapshot")?;
    ensure!(
        newest.batch_time == last,
        "the final snapshot is at the last batch {last}, not {}",
        newest.batch_time
    );
    let SnapshotStatus::Valid(snapshot) = &newest.status else {
        anyhow::bail!("the final snapshot is not valid: {:?}", newest.status);
    };
    ensure!(
        snapshot.positions == ends(&plans),
        "the snapshot holds the ends of the finished batches"
    );
    ensure!(
        matches!(
            inspection.recovery,
            RecoveryPreview::Resume { replay: None, .. }
        ),
        "a recovery would replay nothing: {:?}",
        inspection.recovery
    );

    let next = setup.run(RecordingJob::new(&recorder), 2).await?;
    ensure!(
        next.replayed == 0 && next.batches == 2,
        "the next run replays nothing: {next:?}"
    );
    let starts: BTreeMap<_, _> = partitions_of(&topic.name, PARTITIONS)
        .into_iter()
        .map(|tp| (tp, 0))
        .collect();
    let recording = recorder.snapshot();
    check_chain(&recording.plans()?, &starts)?;
    ensure!(recording.batches.len() == 5, "each batch ran once");
    ensure!(
        recording.record_count()? == 500,
        "five batches of 50 records per partition"
    );
    Ok(())
}
