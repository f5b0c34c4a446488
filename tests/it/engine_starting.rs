//! Starting offsets on a first start: `latest` begins at the end of each partition, explicit
//! offsets are honoured, and a checkpoint overrides both on later starts.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use weir::plan::TopicPartition;
use weir::source::StartingOffsets;

use crate::common::TestEnv;
use crate::common::engine::{EngineSetup, Recorder, RecordingJob, check_chain};

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn latest_starts_at_the_end() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("engine-latest", PARTITIONS).await?;
    let producer = env.producer()?;
    let dir = tempfile::tempdir()?;
    let mut setup = EngineSetup::new(env, &[&topic.name], dir.path());
    setup.source.starting_offsets = StartingOffsets::Latest;
    let recorder = Recorder::default();
    topic.produce_keyed(&producer, 30, PARTITIONS).await?;

    let engine = setup.spawn(RecordingJob::new(&recorder));
    let started = recorder
        .wait_until(
            "a first batch",
            Duration::from_secs(15),
            Some(&engine),
            |r| Ok(!r.batches.is_empty()),
        )
        .await;
    let produced = match started {
        Ok(()) => topic.produce_keyed(&producer, 20, PARTITIONS).await,
        Err(e) => Err(e),
    };
    let waited = match produced {
        Ok(()) => {
            recorder
                .wait_until(
                    "the new records",
                    Duration::from_secs(15),
                    Some(&engine),
                    |r| Ok(r.record_count()? >= 20),
                )
                .await
        }
        Err(e) => Err(e),
    };
    let summary = engine.stop().await?;
    waited?;
    summary?;

    let recording = recorder.snapshot();
    let starts: BTreeMap<TopicPartition, i64> = (0..PARTITIONS)
        .map(|p| (TopicPartition::new(&topic.name, p), 15))
        .collect();
    check_chain(&recording.plans()?, &starts)?;
    for (tp, records) in recording.records_once()? {
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        ensure!(
            offsets == (15..25).collect::<Vec<i64>>(),
            "{tp} delivered {offsets:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_offsets_are_honoured_on_the_first_start_only() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("engine-explicit", PARTITIONS).await?;
    let producer = env.producer()?;
    let dir = tempfile::tempdir()?;
    let mut setup = EngineSetup::new(env, &[&topic.name], dir.path());
    setup
        .source
        .start_offsets
        .insert(format!("{}/0", topic.name), 7);
    let recorder = Recorder::default();
    topic.produce_keyed(&producer, 20, PARTITIONS).await?;
    // Partition 0 from offset 7 (3 records), partition 1 from the earliest (10 records).
    setup
        .run_until_count(RecordingJob::new(&recorder), &recorder, 13)
        .await?;

    // A checkpoint overrides the starting offsets: a restart with other ones continues.
    setup.source.start_offsets.clear();
    setup.source.starting_offsets = StartingOffsets::Latest;
    topic.produce_keyed(&producer, 20, PARTITIONS).await?;
    setup
        .run_until_count(RecordingJob::new(&recorder), &recorder, 33)
        .await?;

    let recording = recorder.snapshot();
    let p0 = TopicPartition::new(&topic.name, 0);
    let p1 = TopicPartition::new(&topic.name, 1);
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
