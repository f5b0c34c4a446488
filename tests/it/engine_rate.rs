//! `max_rate_per_partition` on the real broker: every batch holds to the cap, the first one of a
//! start with a backlog included.

use std::time::Duration;

use anyhow::{Result, ensure};

use crate::common::engine::{CapturedLogs, Fixture, describe};

const PARTITIONS: i32 = 2;
/// 500 records/s at 100 ms: 50 records per partition and batch.
const CAP: u64 = 50;

// Current thread: the log capture sees the events of this thread, where the scheduler runs.
#[tokio::test]
async fn max_rate_holds_in_every_batch_even_after_a_restart_with_a_backlog() -> Result<()> {
    let mut f = Fixture::new("engine-rate", PARTITIONS).await?;
    let producer = f.env.producer()?;
    f.setup.source.max_rate_per_partition = Some(500);

    f.topic.produce_keyed(&producer, 400, PARTITIONS).await?;
    f.run_until_count(400).await?;

    // A backlog of 500 records per partition piles up while the pipeline is stopped.
    f.topic.produce_keyed(&producer, 1_000, PARTITIONS).await?;
    let restart = f.recorder.snapshot().attempts.len();
    let (logs, capture) = CapturedLogs::start(tracing::Level::INFO);
    let started = std::time::Instant::now();
    let summary = f.run_until_count(1_400).await?;
    ensure!(summary.replayed == 0, "nothing to replay: {summary:?}");
    // Ten batches at 100 ms. A fetcher that wakes late (librdkafka sleeps up to a second after a
    // resume) made each one take over a second.
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(8),
        "ten batches of the backlog took {took:?}"
    );
    drop(capture);

    // The batch log carries the lag left after each batch: 450 per partition after the first.
    let log = logs.text();
    let done: Vec<&str> = log.lines().filter(|l| l.contains("Batch done.")).collect();
    ensure!(
        done.first()
            .is_some_and(|l| l.contains("lag_total=900") && l.contains("lag_max=450")),
        "the first batch after the restart logs its lag: {:?}\n{log}",
        done.first()
    );
    // Idle batches (after the backlog) stay below info level.
    ensure!(
        done.len() == 10,
        "{} batches logged at info level, not the ten with records:\n{log}",
        done.len()
    );

    let recording = f.recorder.snapshot();
    let first_after_restart = &recording.attempts[restart];
    for range in &first_after_restart.ranges {
        ensure!(
            range.len() == CAP,
            "the first batch after the restart, with 500 records waiting, must read exactly the cap \
             of {CAP} of each partition: {}",
            describe(&first_after_restart.ranges)
        );
    }
    let plans = recording.plans()?;
    for plan in &plans {
        for range in &plan.ranges {
            ensure!(
                range.len() <= CAP,
                "batch {} reads more than {CAP} records of a partition: {range}",
                plan.batch_time
            );
        }
    }
    // Each partition moved 700 offsets at 50 per batch: at least 14 batches read it.
    let busy = plans
        .iter()
        .filter(|p| p.ranges.iter().all(|r| r.len() == CAP))
        .count();
    ensure!(
        busy >= 14,
        "only {busy} batches read the full cap of every partition"
    );
    ensure!(recording.record_count()? == 1_400, "every record once");
    Ok(())
}
