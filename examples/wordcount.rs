//! WordCount and KafkaDirectWordCount (from Spark): the words of every batch of a Kafka topic,
//! counted per batch and printed.
//!
//! ```text
//! cargo run --example wordcount -- [topic=lines] [checkpoint=/tmp/weir-wordcount]
//! ```
//!
//! Guarantee: exactly-once computation. Each batch reads one logged offset range per Kafka
//! partition (direct mode, no receiver, no write-ahead log), so a batch re-run after a crash
//! counts exactly the same records. What it prints is at-least-once: a batch replayed after a
//! crash is printed again, with the same counts. Spark's socket WordCount, by contrast, loses
//! what its receiver held when it dies.

use std::time::Duration;

use weir::stream::{DStream, StreamConfig, StreamingContext};

/// The count of every word of each batch, in word order.
pub fn word_counts(lines: &DStream<String>) -> DStream<(String, u64)> {
    lines
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|word| (word, 1_u64))
        .reduce_by_key(|a, b| a + b)
}

// The tests include several examples into one crate, each with this module.
#[allow(clippy::duplicate_mod)]
#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ([topic, checkpoint], brokers) = support::start(["lines", "/tmp/weir-wordcount"]);

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("wordcount", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        word_counts(&ssc.kafka_direct_stream::<String>(&[&topic])).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
