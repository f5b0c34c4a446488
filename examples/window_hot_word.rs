//! WindowHotWord (from Spark): every 10 s, the 3 most searched words of the last 60 s. Each record
//! is a search log line `<user> <word>`.
//!
//! ```text
//! cargo run --example window_hot_word -- [topic=searches] [checkpoint=/tmp/weir-hot-words]
//! ```
//!
//! Guarantee: exactly-once windows. The window keeps one pane of counts per batch in the
//! checkpoint; after a crash the logged plans are re-executed, so every window is computed from
//! exactly the batches it covers, the same as in a run without the crash. Ties are broken by the
//! word, so the top 3 never depend on hash-map order. Printing is at-least-once.

use std::cmp::Reverse;
use std::time::Duration;

use weir::stream::{DStream, StreamConfig, StreamingContext};

/// The 3 words searched most in the last `window`, every `slide`: `(word, count)` by count
/// descending, then by word.
pub fn hot_words(
    searches: &DStream<String>,
    window: Duration,
    slide: Duration,
) -> DStream<(String, u64)> {
    searches
        .flat_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .map(|word| (word, 1_u64))
        .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, window, slide)
        .with_state_id("search-counts")
        .transform(|_, mut counts| {
            counts.sort_by_key(|(word, count)| (Reverse(*count), word.clone()));
            counts.truncate(3);
            counts
        })
}

// The tests include several examples into one crate, each with this module.
#[allow(clippy::duplicate_mod)]
#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ([topic, checkpoint], brokers) = support::start(["searches", "/tmp/weir-hot-words"]);

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("hot-words", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        let searches = ssc.kafka_direct_stream::<String>(&[&topic]);
        hot_words(&searches, Duration::from_secs(60), Duration::from_secs(10)).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
