//! TransformBlacklist (from Spark): ad clicks `<date> <user>` from users on a blacklist are dropped
//! before they are billed. Each batch is joined with the blacklist (a left outer join, as in
//! Spark's), which is read from a file and reloaded every 10 seconds, so entries can be added
//! while the program runs.
//!
//! ```text
//! cargo run --example transform_blacklist -- [topic=ad-clicks] [checkpoint=/tmp/weir-blacklist] [blacklist=/tmp/weir-blacklist.txt]
//! ```
//!
//! The blacklist file holds `<user> <true|false>` per line, `#` starting a comment; when it is
//! missing it is created with the Spark original's entry, `tom true`.
//!
//! Guarantee: exactly-once computation. The blacklist is reloaded at batch times on a 10 s grid,
//! never by the clock, and each version is saved in the checkpoint before a batch uses it, so a
//! batch re-run after a crash drops exactly the clicks it dropped the first time, whatever the
//! file says by then. Printing is at-least-once.

use std::path::PathBuf;
use std::time::Duration;

use weir::stream::{BoxError, DStream, ReferenceTable, StreamConfig, StreamingContext};

/// The Spark original's blacklist, written to the file when it is missing.
pub const SEED_BLACKLIST: &str = "# <user> <true|false>\ntom true\n";

/// The clicks of users that are not blacklisted, in arrival order: a left outer join of each
/// batch with the blacklist, keeping the clicks without an entry in force.
pub fn valid_clicks(
    clicks: &DStream<String>,
    blacklist: &ReferenceTable<String, bool>,
) -> DStream<String> {
    clicks
        .key_by(|line| {
            line.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .left_outer_join_reference(blacklist)
        .filter(|(_, (_, blocked))| *blocked != Some(true))
        .map(|(_, (line, _))| line)
}

/// The blacklist in the file at `path`, reloaded every `refresh`.
pub fn blacklist(path: impl Into<PathBuf>, refresh: Duration) -> ReferenceTable<String, bool> {
    ReferenceTable::from_file("blacklist", path, parse_entry).refresh_every(refresh)
}

/// One line of the blacklist file: `<user> <true|false>`; `None` for a comment.
pub fn parse_entry(line: &str) -> Result<Option<(String, bool)>, BoxError> {
    if line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(user), Some(blocked), None) => Ok(Some((user.to_owned(), blocked.parse()?))),
        _ => Err(format!("expected `<user> <true|false>`, found {line:?}").into()),
    }
}

// The tests include several examples into one crate, each with this module.
#[allow(clippy::duplicate_mod)]
#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ([topic, checkpoint, file], brokers) = support::start([
        "ad-clicks",
        "/tmp/weir-blacklist",
        "/tmp/weir-blacklist.txt",
    ]);
    let file = PathBuf::from(file);
    if !tokio::fs::try_exists(&file).await? {
        tokio::fs::write(&file, SEED_BLACKLIST).await?;
    }

    let ssc = StreamingContext::get_or_create(&checkpoint, || {
        let config = StreamConfig::new("blacklist", brokers);
        let ssc = StreamingContext::new(config, Duration::from_secs(1));
        let blacklist = blacklist(&file, Duration::from_secs(10));
        valid_clicks(&ssc.kafka_direct_stream::<String>(&[&topic]), &blacklist).print();
        Ok(ssc)
    })?;
    ssc.run_until_shutdown().await?;
    Ok(())
}
