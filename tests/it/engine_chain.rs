//! Invariants 1 and 2 on the real broker: the ranges of successive batches chain without gap or
//! overlap per partition, across graceful restarts and across a crash between "plan logged" and
//! "output written", after which the logged plan is executed again verbatim.

use anyhow::{Context, Result, ensure};

use crate::common::engine::{Fixture, all_at, check_chain, check_offsets, read_plan_logs};

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn ranges_chain_across_restarts_and_a_crash() -> Result<()> {
    let mut f = Fixture::new("engine-chain", PARTITIONS).await?;
    let producer = f.env.producer()?;
    // 40 records per partition and batch: the backlog takes several batches and restarts.
    f.setup.source.max_rate_per_partition = Some(400);

    f.topic.produce_keyed(&producer, 600, PARTITIONS).await?;
    let first = f.setup.run(f.job(), 3).await?;
    ensure!(
        first.batches == 3 && first.replayed == 0,
        "first run: {first:?}"
    );
    let second = f.setup.run(f.job(), 2).await?;
    ensure!(
        second.batches == 2 && second.replayed == 0,
        "a graceful stop leaves nothing to replay: {second:?}"
    );

    // A crash at the second batch of the third run, after its plan was logged: the plans logged
    // since the last snapshot are the first batch's and the failed one.
    f.topic.produce_keyed(&producer, 600, PARTITIONS).await?;
    let crash = f.recorder.snapshot().attempts.len();
    let crashed = f.setup.run(f.job().failing_at(2), 10).await;
    ensure!(
        crashed.is_err(),
        "the failing job must end the run: {crashed:?}"
    );
    let logged_since_snapshot = f.recorder.snapshot().attempts[crash..].to_vec();
    ensure!(
        logged_since_snapshot.len() == 2,
        "the crash came at the second call"
    );
    ensure!(
        logged_since_snapshot[1].record_upper_bound() > 0,
        "the failed batch should carry records, to make its replay visible: {:?}",
        logged_since_snapshot[1]
    );

    // A second crash, in the middle of the replay: the same plans come back again.
    let replay = f.recorder.snapshot().attempts.len();
    let crashed = f.setup.run(f.job().failing_at(2), 10).await;
    ensure!(crashed.is_err(), "the replay must fail: {crashed:?}");
    ensure!(
        f.recorder.snapshot().attempts[replay..] == logged_since_snapshot[..],
        "the replay runs the logged plans verbatim, the failed one last"
    );

    let resumed = f.recorder.snapshot().attempts.len();
    let summary = f.run_until_count(1_200).await?;
    ensure!(
        summary.replayed == 2,
        "exactly the two plans logged since the snapshot are replayed: {summary:?}"
    );
    let recording = f.recorder.snapshot();
    ensure!(
        recording.attempts[resumed..resumed + 2] == logged_since_snapshot[..],
        "after the crashes, the failed plan runs again verbatim:\nfailed   {:?}\nreplayed {:?}",
        logged_since_snapshot[1],
        recording.attempts[resumed + 1]
    );

    // Every record exactly once, counting only finished batches; each replay identical.
    check_offsets(&recording, &f.topic.name, PARTITIONS, 0..400)?;
    let starts = all_at(&f.topic.name, PARTITIONS, 0);
    let plans = recording.plans()?;
    check_chain(&plans, &starts).context("the plans the job ran")?;
    for plan in &plans {
        for range in &plan.ranges {
            ensure!(
                range.len() <= 40,
                "batch {} exceeds the cap: {range}",
                plan.batch_time
            );
        }
    }

    // The plan logs on disk tell the same story: every logged plan chains, and they are exactly
    // the plans that ran (the failed one was logged and ran again).
    let logged = read_plan_logs(f.dir.path())?;
    check_chain(&logged, &starts).context("the plan logs")?;
    ensure!(
        logged == plans,
        "the plan logs hold {} plans, the job finished {}",
        logged.len(),
        plans.len()
    );
    Ok(())
}
