//! A partition added to a topic while the pipeline runs is found by the metadata refresh and read
//! from its first record, records written before it was found included.

use std::time::Duration;

use anyhow::{Result, ensure};
use rdkafka::producer::FutureRecord;
use weir::plan::TopicPartition;

use crate::common::TestEnv;
use crate::common::engine::{
    EngineSetup, Recorder, RecordingJob, add_partitions, check_chain, partitions_of,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_added_mid_run_is_read_from_its_first_record() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("engine-grow", 1).await?;
    let dir = tempfile::tempdir()?;
    let mut setup = EngineSetup::new(env, &[&topic.name], dir.path());
    setup.metadata_refresh_interval = Duration::from_millis(300);
    let recorder = Recorder::default();

    topic.produce_keyed(&env.producer()?, 50, 1).await?;
    let engine = setup.spawn(RecordingJob::new(&recorder));
    recorder
        .wait_until(
            "the first records",
            Duration::from_secs(15),
            Some(&engine),
            |r| Ok(r.record_count()? == 50),
        )
        .await?;

    add_partitions(env, &topic.name, 2).await?;
    // A producer of its own, so that its first metadata already holds the new partition.
    let producer = env.producer()?;
    for i in 0..60 {
        let value = format!("grown-{i}");
        let record = FutureRecord::<(), _>::to(&topic.name)
            .partition(i % 2)
            .payload(&value);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    let waited = recorder
        .wait_until(
            "every record of both partitions",
            Duration::from_secs(15),
            Some(&engine),
            |r| Ok(r.record_count()? == 110),
        )
        .await;
    let summary = engine.stop().await?;
    waited?;
    summary?;

    let recording = recorder.snapshot();
    let records = recording.records_once()?;
    let new = TopicPartition::new(&topic.name, 1);
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
    let starts = partitions_of(&topic.name, 2)
        .into_iter()
        .map(|tp| (tp, 0))
        .collect();
    check_chain(&plans, &starts)
}
