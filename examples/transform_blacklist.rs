//! TransformBlacklist (seed 004): ad clicks `<date> <user>` from users on a blacklist are dropped
//! before they are billed; `transform` joins each batch with the blacklist.
//!
//! ```text
//! cargo run --example transform_blacklist -- [topic=ad-clicks] [checkpoint=/tmp/weir-blacklist]
//! ```
//!
//! Guarantee: exactly-once computation. The blacklist is static input (invariant 3), so a batch
//! re-run after a crash drops exactly the same clicks; a blacklist that changes would have to be
//! versioned by batch time. Printing is at-least-once.

use std::collections::BTreeMap;
use std::time::Duration;

use weir::stream::{DStream, StreamConfig, StreamingContext};

/// The clicks of users that are not blacklisted (`blacklist` maps a user to whether the entry is
/// in force), in arrival order: a left outer join of the batch with the blacklist, keeping the
/// clicks without an entry in force.
pub fn valid_clicks(
    clicks: &DStream<String>,
    blacklist: BTreeMap<String, bool>,
) -> DStream<String> {
    clicks
        .key_by(|line| {
            line.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .transform(move |_, clicks| {
            clicks
                .into_iter()
                .map(|(user, line)| (line, blacklist.get(&user).copied()))
                .filter(|(_, blocked)| *blocked != Some(true))
                .map(|(line, _)| line)
                .collect()
        })
}

/// The seed's blacklist.
pub fn blacklist() -> BTreeMap<String, bool> {
    BTreeMap::from([("tom".to_owned(), true)])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "ad-clicks".to_owned());
    let checkpoint = args
        .next()
        .unwrap_or_else(|| "/tmp/weir-blacklist".to_owned());
    let brokers =
        std::env::var("WEIR_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".to_owned());

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("blacklist", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        valid_clicks(&ssc.kafka_direct_stream::<String>(&[&topic]), blacklist()).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
