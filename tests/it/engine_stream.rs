//! A batch streams: the direct Kafka source hands a range to its reader in chunks while the
//! rest of the range is still being read, and a reader that does not take them holds the fetch
//! back, so the records in flight stay within the memory budget whatever the size of the range.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rdkafka::producer::{FutureRecord, Producer};
use weir::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
use weir::source::{ByteSize, KafkaSource, KafkaSourceConfig, MemoryBudget, range_channels};

use crate::common::TestEnv;

/// Records of about 1 KiB: some 20 MiB in all, five times the budget.
const RECORDS: i64 = 20_000;
const BUDGET: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn engine_a_range_streams_in_chunks_held_back_by_its_reader() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("engine-stream", 1).await?;
    let producer = env.producer()?;
    let padding = "x".repeat(1_000);
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        let value = format!("{{\"id\":{i},\"pad\":\"{padding}\"}}");
        let record = FutureRecord::<(), _>::to(&topic.name)
            .partition(0)
            .payload(&value);
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let config = KafkaSourceConfig::new(env.brokers.clone(), vec![topic.name.clone()]);
    let budget = MemoryBudget::new(ByteSize::new(BUDGET), "test")?;
    let mut source = KafkaSource::connect_with_budget(&config, "weir-test-stream", budget)?;
    let tp = TopicPartition::new(topic.name.clone(), 0);
    source.assign(&BTreeMap::from([(tp.clone(), 0)]))?;
    let plan = BatchPlan::new(
        BatchTime::from_millis(1_000),
        vec![OffsetRange::new(tp, 0, RECORDS)],
    );
    let (senders, mut readers) = range_channels(plan.batch_time, &plan.ranges, 2);
    let mut reader = readers.pop().context("no reader")?;

    let fetched = AtomicBool::new(false);
    let fetch = async {
        let read = source.fetch_into(&plan, senders).await;
        fetched.store(true, Ordering::SeqCst);
        read
    };
    let read = async {
        let first = reader.next_chunk().await?.context("no first chunk")?;
        // The channel holds two chunks: a fetch that read the range whole before handing it
        // on would be done by now.
        ensure!(
            !fetched.load(Ordering::SeqCst),
            "the fetch finished before its reader took the first chunk"
        );
        let mut offsets: Vec<i64> = first.iter().map(|r| r.offset).collect();
        let mut chunks = 1;
        let mut largest = bytes(&first);
        while let Some(chunk) = reader.next_chunk().await? {
            chunks += 1;
            largest = largest.max(bytes(&chunk));
            offsets.extend(chunk.iter().map(|r| r.offset));
        }
        anyhow::Ok((offsets, chunks, largest))
    };
    let (read_count, taken) = tokio::join!(fetch, read);
    let (offsets, chunks, largest) = taken?;
    ensure!(
        read_count? == u64::try_from(RECORDS)?,
        "the fetch miscounted"
    );
    ensure!(
        offsets == (0..RECORDS).collect::<Vec<_>>(),
        "not every record once and in order ({} records)",
        offsets.len()
    );
    // A quarter of the budget for chunks in flight, four per range.
    ensure!(
        largest <= BUDGET / 16 + 2_048,
        "a chunk of {largest} bytes is beyond the budget's share"
    );
    ensure!(chunks >= 40, "only {chunks} chunks");
    Ok(())
}

fn bytes(chunk: &[weir::source::Record]) -> u64 {
    chunk
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len) as u64)
        .sum()
}
