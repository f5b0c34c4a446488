//! UpdateStateByKeyWordCount (from Spark): the running count of every word since the pipeline
//! started, printed after every batch.
//!
//! ```text
//! cargo run --example update_state_by_key_word_count -- [topic=lines] [checkpoint=/tmp/weir-totals]
//! ```
//!
//! Guarantee: exactly-once state. The totals live in the checkpoint under the operator id
//! `word-totals`; after a crash the plans logged since the last snapshot are re-executed, so the
//! totals come out as if nothing had happened, and a recompiled program resumes from them
//! (Spark cannot read its checkpoint after a rebuild). Printing is at-least-once.

use std::time::Duration;

use weir::stream::{DStream, StreamConfig, StreamingContext};

/// Every word's count over every batch so far, after each batch, in word order per partition.
pub fn running_counts(lines: &DStream<String>) -> DStream<(String, u64)> {
    lines
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|word| (word, 1_u64))
        .update_state_by_key(|new: &[u64], total: Option<u64>| {
            Some(total.unwrap_or(0) + new.iter().sum::<u64>())
        })
        .with_state_id("word-totals")
}

// The tests include several examples into one crate, each with this module.
#[allow(clippy::duplicate_mod)]
#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ([topic, checkpoint], brokers) = support::start(["lines", "/tmp/weir-totals"]);

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("word-totals", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        running_counts(&ssc.kafka_direct_stream::<String>(&[&topic])).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
