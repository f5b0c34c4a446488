//! A partition added to a topic while the pipeline runs is found by the metadata refresh and read
//! from its first record, records written before it was found included.

use std::time::Duration;

use anyhow::{Result, ensure};
use rdkafka::producer::FutureRecord;
use weir::plan::TopicPartition;

use crate::common::engine::{Fixture, add_partitions, all_at, check_chain};

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_added_mid_run_is_read_from_its_first_record() -> Result<()> {
    let mut f = Fixture::new("engine-grow", 1).await?;
    f.setup.metadata_refresh_interval = Duration::from_millis(300);

    f.topic.produce_keyed(&f.env.producer()?, 50, 1).await?;
    let engine = f.setup.spawn(f.job());
    engine
        .wait_for(&f.recorder, "the first records", |r| {
            Ok(r.record_count()? == 50)
        })
        .await?;

    add_partitions(f.env, &f.topic.name, 2).await?;
    // A producer of its own, so that its first metadata already holds the new partition.
    let producer = f.env.producer()?;
    for i in 0..60 {
        let value = format!("grown-{i}");
        let record = FutureRecord::<(), _>::to(&f.topic.name)
            .partition(i % 2)
            .payload(&value);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    engine
        .stop_when(&f.recorder, "every record of both partitions", |r| {
            Ok(r.record_count()? == 110)
        })
        .await?;

    let recording = f.recorder.snapshot();
    let records = recording.records_once()?;
    let new = TopicPartition::new(&f.topic.name, 1);
    let offsets: Vec<i64> = records[&new].iter().map(|r| r.offset).collect();
    ensure!(
        offsets == (0..30).collect::<Vec<i64>>(),
        "the new partition delivered offsets {offsets:?}"
    );
    let plans = recording.plans()?;
    let first_with_new = plans
        .iter()
        .find_map(|p| p.ranges.iter().find(|r| r.tp == new))
        .cloned();
    ensure!(
        first_with_new.as_ref().is_some_and(|r| r.from == 0),
        "the new partition's first range is {first_with_new:?}"
    );
    check_chain(&plans, &all_at(&f.topic.name, 2, 0))
}
