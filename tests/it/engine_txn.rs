//! Transactional input on the real broker (`read_committed`): an upstream producer commits some
//! transactions and aborts others. No aborted record is ever delivered, every committed one is,
//! and batches whose range ends on a transaction marker (or on aborted records) finish.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common::TestEnv;
use crate::common::engine::{
    Fixture, all_at, check_chain, ends, partitions_of, produce_transaction, transactional_producer,
};

const PARTITIONS: i32 = 2;
const TRANSACTIONS: usize = 24;

/// Whether transaction `n` commits: a fixed mix of runs of commits and aborts.
fn commits(n: usize) -> bool {
    !matches!(n % 5, 1 | 3) || n.is_multiple_of(7)
}

#[tokio::test(flavor = "multi_thread")]
async fn aborted_records_never_arrive_and_ranges_ending_on_markers_finish() -> Result<()> {
    let mut f = Fixture::new("engine-txn", PARTITIONS).await?;
    // 13 offsets per partition and batch: caps cut ranges at every kind of offset.
    f.setup.source.max_rate_per_partition = Some(130);
    let producer = transactional_producer(f.env).await?;

    let mut committed = BTreeSet::new();
    let mut aborted = BTreeSet::new();
    let mut produce = async |n: usize| -> Result<()> {
        let partition = i32::try_from(n % 2)?;
        let size = 1 + (n * 7) % 11;
        let kind = if commits(n) { "commit" } else { "abort" };
        let values: Vec<String> = (0..size).map(|i| format!("{kind}-{n}-{i}")).collect();
        if commits(n) {
            committed.extend(values.iter().cloned());
        } else {
            aborted.extend(values.iter().cloned());
        }
        produce_transaction(&producer, &f.topic.name, partition, values, commits(n)).await
    };
    // Half of the transactions wait in the log before the start, half arrive while it runs.
    for n in 0..TRANSACTIONS / 2 {
        produce(n).await?;
    }
    let engine = f.setup.spawn(f.job());
    for n in TRANSACTIONS / 2..TRANSACTIONS {
        produce(n).await?;
    }

    // Every partition's plans must reach the end of its log, markers included.
    let log_ends = settled_log_ends(f.env, &f.topic.name).await?;
    engine
        .stop_when(
            &f.recorder,
            "plans reach the end of every partition",
            |recording| {
                let reached = ends(&recording.plans()?);
                Ok(log_ends
                    .iter()
                    .all(|(tp, end)| reached.get(tp).is_some_and(|r| r >= end)))
            },
        )
        .await?;

    let recording = f.recorder.snapshot();
    let delivered: Vec<String> = recording
        .records_once()?
        .into_values()
        .flatten()
        .map(|r| r.value)
        .collect();
    let leaked: Vec<&String> = delivered.iter().filter(|v| aborted.contains(*v)).collect();
    ensure!(leaked.is_empty(), "aborted records delivered: {leaked:?}");
    let delivered: BTreeSet<String> = delivered.into_iter().collect();
    let missing: Vec<&String> = committed.difference(&delivered).collect();
    ensure!(missing.is_empty(), "committed records missing: {missing:?}");
    ensure!(
        delivered == committed,
        "only committed records are delivered"
    );

    let plans = recording.plans()?;
    check_chain(&plans, &all_at(&f.topic.name, PARTITIONS, 0))?;
    // The test proves something only if ranges really ended where no record is.
    let offsets: BTreeSet<(String, i32, i64)> = recording
        .records_once()?
        .into_values()
        .flatten()
        .map(|r| (r.tp.topic, r.tp.partition, r.offset))
        .collect();
    let ending_in_gaps = plans
        .iter()
        .flat_map(|p| &p.ranges)
        .filter(|r| {
            !r.is_empty() && !offsets.contains(&(r.tp.topic.clone(), r.tp.partition, r.until - 1))
        })
        .count();
    ensure!(
        ending_in_gaps >= 4,
        "only {ending_in_gaps} ranges ended on a marker or aborted record"
    );
    Ok(())
}

/// The end of every partition of `topic` once every transaction marker is written: the
/// coordinator writes markers after `commit_transaction` returns, and until then the last stable
/// offset (`read_committed`) trails the high watermark.
async fn settled_log_ends(
    env: &TestEnv,
    topic: &str,
) -> Result<BTreeMap<weir::plan::TopicPartition, i64>> {
    let committed: BaseConsumer = env.kafka_config().create()?;
    let uncommitted: BaseConsumer = env
        .kafka_config()
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut ends = BTreeMap::new();
        for tp in partitions_of(&topic, PARTITIONS) {
            loop {
                let timeout = Duration::from_secs(5);
                let (_, stable) = committed.fetch_watermarks(&tp.topic, tp.partition, timeout)?;
                let (_, high) = uncommitted.fetch_watermarks(&tp.topic, tp.partition, timeout)?;
                if stable == high {
                    ends.insert(tp, high);
                    break;
                }
                ensure!(
                    std::time::Instant::now() < deadline,
                    "{tp}: the last stable offset {stable} stays below the high watermark {high}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(ends)
    })
    .await?
}
