//! RecoverableNetworkWordCount (from Spark): the words of the lines a TCP server sends, counted
//! every second; words on a blacklist are dropped and counted in a running total; each batch's
//! counts are appended to a file. Built with `get_or_create`, so a restart resumes from the
//! checkpoint.
//!
//! ```text
//! nc -lk 9999          # in another terminal; type lines into it
//! cargo run --example recoverable_network_word_count -- localhost 9999 /tmp/weir-network /tmp/weir-network.txt
//! ```
//!
//! Arguments: `<host> <port> <checkpoint-directory> <output-file>`. Each batch appends one line,
//! `Counts at time 1754000001000 ms [(hello,2), (world,1)], dropped 3 word(s) in total`, and
//! prints it. No Kafka: `WEIR_KAFKA_BROKERS` is not read.
//!
//! Guarantees, plainly:
//! - **Input is at-most-once.** A socket cannot be read twice: lines received but not yet in a
//!   finished batch when the process dies, and lines sent while it is down, are lost. No line is
//!   ever counted twice.
//! - **The output file gets exactly one line per batch time.** A batch replayed after a crash
//!   finds its line already there and appends nothing; a line torn by a kill is cut and written
//!   whole ([`AppendFile`]). Spark's version appends again on every replay, and deletes the file
//!   whenever it builds a new context.
//! - **The dropped-words counter survives SIGKILL and a rebuild of the binary.** It is state in
//!   the checkpoint (`update_state_by_key` under the id `dropped-words`), snapshotted after every
//!   batch because a replayed socket batch finds its lines gone. Spark keeps it in an accumulator,
//!   which restarts from zero, and cannot read its checkpoint at all after a rebuild. Only the
//!   batch in flight at a kill is lost, with its lines: its dropped words are not counted, even
//!   if its line had reached the file.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use weir::plan::BatchTime;
use weir::stream::{AppendFile, DStream, StreamConfig, StreamingContext};

/// The Spark original's batch interval, and the interval of the snapshots.
const INTERVAL: Duration = Duration::from_secs(1);

/// The words that are dropped and counted instead.
pub const BLACKLIST: [&str; 3] = ["a", "b", "c"];

/// What a batch reports: a kept word's count in the batch, or the running total of dropped words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// A word not on the blacklist and how often the batch had it.
    Count(String, u64),
    /// How many blacklisted words were dropped since the first start.
    Dropped(u64),
}

/// Each batch's counts of the words not on `blacklist`, and the running total of the words
/// dropped for being on it.
pub fn tallies(lines: &DStream<String>, blacklist: &[&str]) -> DStream<Tally> {
    let blacklist: Arc<BTreeSet<String>> =
        Arc::new(blacklist.iter().map(|w| (*w).to_owned()).collect());
    let words = lines.flat_map(|line| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let listed = Arc::clone(&blacklist);
    let counts = words
        .filter(move |word| !listed.contains(word))
        .count_by_value()
        .map(|(word, n)| Tally::Count(word, n));
    let dropped = words
        .filter(move |word| blacklist.contains(word))
        .map(|_| ((), 1_u64))
        .update_state_by_key(|new: &[u64], total: Option<u64>| {
            Some(total.unwrap_or(0) + new.iter().sum::<u64>())
        })
        .with_state_id("dropped-words")
        .map(|((), total)| Tally::Dropped(total));
    counts.union(&dropped)
}

/// The line of batch `t`: Spark's `Counts at time <t> ms [(word,count), ...]`, words in order,
/// then the running total of dropped words.
pub fn report(t: BatchTime, tallies: &[Tally]) -> String {
    let mut counts: Vec<(&str, u64)> = Vec::new();
    let mut dropped = 0;
    for tally in tallies {
        match tally {
            Tally::Count(word, n) => counts.push((word, *n)),
            Tally::Dropped(total) => dropped = *total,
        }
    }
    counts.sort_unstable();
    let mut line = format!("Counts at time {t} ms [");
    for (i, (word, n)) in counts.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        let _ = write!(line, "{separator}({word},{n})");
    }
    let _ = write!(line, "], dropped {dropped} word(s) in total");
    line
}

/// The batch time of a line [`report`] wrote.
pub fn batch_time_of(line: &str) -> Option<BatchTime> {
    let (millis, _) = line.strip_prefix("Counts at time ")?.split_once(" ms")?;
    Some(BatchTime::from_millis(millis.parse().ok()?))
}

/// A tag fixed at build time (`WEIR_EXAMPLE_BUILD=…`): the crash test rebuilds the binary with
/// another one, an unrelated code change, and the checkpoint must not care.
const BUILD: &str = match option_env!("WEIR_EXAMPLE_BUILD") {
    Some(tag) => tag,
    None => "default",
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(message = "Starting.", build = BUILD);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, checkpoint, output] = args.as_slice() else {
        bail!(
            "usage: recoverable_network_word_count <host> <port> <checkpoint-directory> <output-file>"
        );
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("port {port:?} is not a number from 0 to 65535"))?;

    let ssc = StreamingContext::get_or_create(checkpoint, || {
        // No Kafka topic is read, so no broker is ever contacted. A socket cannot be read again,
        // so the context snapshots after every batch by default.
        let config = StreamConfig::named("recoverable-network-word-count");
        let ssc = StreamingContext::new(config, INTERVAL);
        let mut file = AppendFile::new(output, batch_time_of);
        tallies(&ssc.socket_text_stream(host, port), &BLACKLIST).foreach_batch(
            move |t, tallies| {
                let line = report(t, &tallies);
                if file.append(t, &line)? {
                    println!("{line}");
                }
                Ok(())
            },
        );
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
