//! Starting offsets on a first start: `latest` begins at the end of each partition, explicit
//! offsets are honoured, and a checkpoint overrides both on later starts.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use weir::plan::TopicPartition;
use weir::source::StartingOffsets;

use crate::common::engine::{Fixture, all_at, check_chain, check_offsets};

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn latest_starts_at_the_end() -> Result<()> {
    let mut f = Fixture::new("engine-latest", PARTITIONS).await?;
    let producer = f.env.producer()?;
    f.setup.source.starting_offsets = StartingOffsets::Latest;
    f.topic.produce_keyed(&producer, 30, PARTITIONS).await?;

    let engine = f.setup.spawn(f.job());
    // Dropping the engine on an early return stops it.
    engine
        .wait_for(&f.recorder, "a first batch", |r| Ok(!r.batches.is_empty()))
        .await?;
    f.topic.produce_keyed(&producer, 20, PARTITIONS).await?;
    engine
        .stop_when(&f.recorder, "the new records", |r| {
            Ok(r.record_count()? >= 20)
        })
        .await?;

    let recording = f.recorder.snapshot();
    check_chain(&recording.plans()?, &all_at(&f.topic.name, PARTITIONS, 15))?;
    check_offsets(&recording, &f.topic.name, PARTITIONS, 15..25)
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_offsets_are_honoured_on_the_first_start_only() -> Result<()> {
    let mut f = Fixture::new("engine-explicit", PARTITIONS).await?;
    let producer = f.env.producer()?;
    f.setup
        .source
        .start_offsets
        .insert(format!("{}/0", f.topic.name), 7);
    f.topic.produce_keyed(&producer, 20, PARTITIONS).await?;
    // Partition 0 from offset 7 (3 records), partition 1 from the earliest (10 records).
    f.run_until_count(13).await?;

    // A checkpoint overrides the starting offsets: a restart with other ones continues.
    f.setup.source.start_offsets.clear();
    f.setup.source.starting_offsets = StartingOffsets::Latest;
    f.topic.produce_keyed(&producer, 20, PARTITIONS).await?;
    f.run_until_count(33).await?;

    let recording = f.recorder.snapshot();
    let p0 = TopicPartition::new(&f.topic.name, 0);
    let p1 = TopicPartition::new(&f.topic.name, 1);
    check_chain(
        &recording.plans()?,
        &BTreeMap::from([(p0.clone(), 7), (p1.clone(), 0)]),
    )?;
    let records = recording.records_once()?;
    let offsets =
        |tp: &TopicPartition| -> Vec<i64> { records[tp].iter().map(|r| r.offset).collect() };
    ensure!(
        offsets(&p0) == (7..20).collect::<Vec<i64>>(),
        "{p0}: {:?}",
        offsets(&p0)
    );
    ensure!(
        offsets(&p1) == (0..20).collect::<Vec<i64>>(),
        "{p1}: {:?}",
        offsets(&p1)
    );
    Ok(())
}
