//! Graceful stop: cancelling the shutdown token while a batch runs lets that batch finish, plans
//! nothing more, and writes a snapshot at the finished batch, so the next run replays nothing.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weir::checkpoint::{RecoveryPreview, SnapshotStatus, inspect};

use crate::common::engine::{Fixture, Hold, all_at, check_chain, ends, read_plan_logs};

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_finishes_the_batch_and_snapshots_it() -> Result<()> {
    let mut f = Fixture::new("engine-stop", PARTITIONS).await?;
    f.setup.source.max_rate_per_partition = Some(500);
    f.topic
        .produce_keyed(&f.env.producer()?, 600, PARTITIONS)
        .await?;

    // Stop while the third batch is running.
    let hold = Hold::default();
    let engine = f.setup.spawn(f.job().holding_at(3, &hold));
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

    let recording = f.recorder.snapshot();
    let plans = recording.plans()?;
    ensure!(
        plans.len() == 3 && plans[2].batch_time == last,
        "three batches ran"
    );
    ensure!(
        read_plan_logs(f.dir.path())? == plans,
        "nothing is planned after the stop was asked for"
    );
    let inspection = inspect(f.dir.path())?;
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

    let next = f.setup.run(f.job(), 2).await?;
    ensure!(
        next.replayed == 0 && next.batches == 2,
        "the next run replays nothing: {next:?}"
    );
    let recording = f.recorder.snapshot();
    check_chain(&recording.plans()?, &all_at(&f.topic.name, PARTITIONS, 0))?;
    ensure!(recording.batches.len() == 5, "each batch ran once");
    ensure!(
        recording.record_count()? == 500,
        "five batches of 50 records per partition"
    );
    Ok(())
}
