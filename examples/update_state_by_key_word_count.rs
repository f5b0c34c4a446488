//! UpdateStateByKeyWordCount (seed 004): the running count of every word since the pipeline
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "lines".to_owned());
    let checkpoint = args.next().unwrap_or_else(|| "/tmp/weir-totals".to_owned());
    let brokers =
        std::env::var("WEIR_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".to_owned());

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("word-totals", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        running_counts(&ssc.kafka_direct_stream::<String>(&[&topic])).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
