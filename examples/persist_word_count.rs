//! PersistWordCount (from Spark): the running count of every word, kept in MariaDB (or any SQL
//! database weir's sink speaks) through the transactional sink.
//!
//! ```text
//! cargo run --example persist_word_count -- [topic=lines] [checkpoint=/tmp/weir-persist] [url=$WEIR_MYSQL_URL]
//! ```
//!
//! Guarantee: exactly-once into the database. Each key partition of each batch is upserted in one
//! transaction together with its commit row `(pipeline, batch time, partition)`; a batch replayed
//! after a crash finds the row and writes nothing. The Spark original builds SQL by pasting words
//! into strings (`"values('" + word + "'"`) through a hand-rolled connection pool and writes
//! again on every replay; here every value is a bound parameter and sqlx pools the connections.

use std::time::Duration;

use serde::Serialize;
use weir::sink::SqlSinkConfig;
use weir::stream::{DStream, StreamConfig, StreamingContext};

/// One row of the `word_count` table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct WordCount {
    /// The word, the primary key.
    pub word: String,
    /// How often it occurred since the pipeline started.
    pub count: u64,
}

/// The running counts as rows.
pub fn running_counts(lines: &DStream<String>) -> DStream<WordCount> {
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
        .with_state_id("word-counts")
        .map(|(word, count)| WordCount { word, count })
}

/// The sink: upsert by word into `word_count`, created if missing.
pub fn word_count_table(url: &str) -> SqlSinkConfig {
    let mut config: SqlSinkConfig = toml::from_str(
        r#"
        table = "word_count"
        mode = "upsert"
        key = ["word"]
        create_table = true
        columns = [
            { name = "word", type = "text", nullable = false },
            { name = "count", type = "bigint", nullable = false },
        ]
        "#,
    )
    .unwrap_or_else(|e| unreachable!("the table's TOML is fixed: {e}"));
    config.url = url.to_owned();
    config
}

// The tests include several examples into one crate, each with this module.
#[allow(clippy::duplicate_mod)]
#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mysql = std::env::var("WEIR_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://weir:weir@127.0.0.1:13306/weir".to_owned());
    let ([topic, checkpoint, url], brokers) =
        support::start(["lines", "/tmp/weir-persist", &mysql]);

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("persist-word-count", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        running_counts(&ssc.kafka_direct_stream::<String>(&[&topic])).sink(word_count_table(&url));
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
