//! HDFSWordCount (from Spark): the words of the new files in a directory, counted per batch and
//! printed.
//!
//! ```text
//! cargo run --example hdfs_word_count -- <directory> [checkpoint=/tmp/weir-hdfs-word-count]
//! ```
//!
//! Put a file in complete, with a rename: `cp words.txt dir/_words.txt && mv dir/_words.txt
//! dir/words.txt` (names starting with `_` or `.` are ignored). A file must not change once it
//! is in. No Kafka: `WEIR_KAFKA_BROKERS` is not read.
//!
//! Guarantee: exactly-once computation. Every file that appears is read in exactly one batch:
//! the file list is made durable in the checkpoint before a plan that reads a file is logged,
//! so a batch re-run after a crash reads the same files and counts the same words. Printing is
//! at-least-once: a replayed batch is printed again, with the same counts. Spark's
//! `textFileStream` skips the files already in the directory at the first start, and files
//! whose modification time is older than its remember window (a `mv` keeps the old time);
//! weir reads every file once.

use std::time::Duration;

use weir::stream::{DStream, StreamConfig, StreamingContext};

/// The count of every word of each batch's new files (in word order within each key partition).
pub fn word_counts(lines: &DStream<String>) -> DStream<(String, u64)> {
    lines
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count_by_value()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let Some(directory) = args.next() else {
        anyhow::bail!("usage: hdfs_word_count <directory> [checkpoint=/tmp/weir-hdfs-word-count]");
    };
    let checkpoint = args
        .next()
        .unwrap_or_else(|| "/tmp/weir-hdfs-word-count".to_owned());

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        // No Kafka topic is read, so no broker is ever contacted.
        let config = StreamConfig::named("hdfs-word-count");
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        word_counts(&ssc.text_file_stream(&directory)).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
