//! Top3HotProduct (from Spark): every 10 s, the 3 most clicked products of each category over the
//! last 60 s. Each record is a click `<user> <product> <category>`.
//!
//! ```text
//! cargo run --example top3_hot_product -- [topic=product-clicks] [checkpoint=/tmp/weir-top3]
//! ```
//!
//! Guarantee: exactly-once windows (panes of per-batch counts in the checkpoint, logged plans
//! re-executed after a crash), ranked without Spark's HiveContext: ties are broken by product,
//! so the ranking never depends on hash-map order. Printing is at-least-once.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use weir::stream::{DStream, StreamConfig, StreamingContext};

/// `(category, product, clicks)` of the 3 most clicked products of each category in the last
/// `window`, every `slide`: by category, then by clicks descending, then by product.
pub fn top3_per_category(
    clicks: &DStream<String>,
    window: Duration,
    slide: Duration,
) -> DStream<(String, String, u64)> {
    clicks
        .flat_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [_, product, category] => Some(((category.to_owned(), product.to_owned()), 1_u64)),
                _ => None,
            }
        })
        .reduce_by_key_and_window(|a, b| a + b, window, slide)
        .with_state_id("product-clicks")
        .transform(|_, counts| {
            let mut by_category: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
            for ((category, product), count) in counts {
                by_category
                    .entry(category)
                    .or_default()
                    .push((product, count));
            }
            by_category
                .into_iter()
                .flat_map(|(category, mut products)| {
                    products.sort_by_key(|(product, count)| (Reverse(*count), product.clone()));
                    products
                        .into_iter()
                        .take(3)
                        .map(move |(product, count)| (category.clone(), product, count))
                })
                .collect()
        })
}

// The tests include several examples into one crate, each with this module.
#[allow(clippy::duplicate_mod)]
#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ([topic, checkpoint], brokers) = support::start(["product-clicks", "/tmp/weir-top3"]);

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("top3-hot-products", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        let clicks = ssc.kafka_direct_stream::<String>(&[&topic]);
        top3_per_category(&clicks, Duration::from_secs(60), Duration::from_secs(10)).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
