//! The memory budget of a pipeline: how many bytes of records may be in flight at once, split
//! between librdkafka's prefetch, records read ahead for the next batch, and the chunks on
//! their way from the fetch to the sink (each writer maps one chunk at a time). A batch larger
//! than the budget streams through it; rate caps shape throughput, never memory.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// A number of bytes, written as `"64MiB"`, `"1 GiB"`, `"512KB"` or a plain integer.
///
/// ```
/// use weir::source::ByteSize;
///
/// assert_eq!("64MiB".parse::<ByteSize>().unwrap().bytes(), 64 << 20);
/// assert_eq!("1.5 GB".parse::<ByteSize>().unwrap().bytes(), 1_500_000_000);
/// assert_eq!("4096".parse::<ByteSize>().unwrap().bytes(), 4096);
/// assert!("64 parsecs".parse::<ByteSize>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    /// `bytes` bytes.
    pub const fn new(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size, e.g. \"64MiB\""))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use B, KB, KiB, MB, MiB, GB or GiB"
                ));
            }
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        // A configured size far below 2^53 bytes; the product is rounded to whole bytes.
        let bytes = (number * factor as f64).round() as u64;
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 20 && self.0.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", self.0 >> 20)
        } else if self.0 >= 1 << 10 && self.0.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", self.0 >> 10)
        } else {
            write!(f, "{}B", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// How many bytes of records a pipeline holds at most (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget(ByteSize);

/// The smallest budget: below it librdkafka's fetches would not hold a large record.
const MIN_BUDGET: u64 = 4 << 20;
/// librdkafka's per-partition fetch size stops helping beyond this.
const MAX_PARTITION_FETCH: u64 = 10 << 20;

/// How large the chunks of one fetch are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkLimits {
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

impl Default for MemoryBudget {
    /// 64 MiB.
    fn default() -> Self {
        Self(ByteSize(64 << 20))
    }
}

impl MemoryBudget {
    /// A budget of `size`; `key` names the configuration key in the error for a budget below
    /// 4 MiB.
    pub fn new(size: ByteSize, key: &str) -> Result<Self> {
        if size.bytes() < MIN_BUDGET {
            return Err(Error::config(
                key,
                format!(
                    "{size} is too small a memory budget; give at least {}",
                    ByteSize(MIN_BUDGET)
                ),
            ));
        }
        Ok(Self(size))
    }

    /// The budget in bytes.
    pub fn bytes(self) -> u64 {
        self.0.bytes()
    }

    /// librdkafka's share: a quarter for its queue of prefetched records, a quarter for one
    /// fetch response, each partition's part of it up to 10 MiB (its 1 MiB default made a
    /// backlog fetch-bound).
    pub(crate) fn kafka_properties(self) -> [(&'static str, String); 3] {
        let quarter = self.bytes() / 4;
        [
            ("queued.max.messages.kbytes", (quarter >> 10).to_string()),
            ("fetch.max.bytes", quarter.to_string()),
            (
                "max.partition.fetch.bytes",
                (self.bytes() / 8).min(MAX_PARTITION_FETCH).to_string(),
            ),
        ]
    }

    /// Chunks for a fetch of `ranges` ranges: a quarter of the budget over every range's
    /// chunks in flight (two in its channel, one pending, one filling).
    pub(crate) fn chunk_limits(self, ranges: usize) -> ChunkLimits {
        let share = self.bytes() / 4 / (4 * ranges.max(1) as u64);
        ChunkLimits {
            records: 50_000,
            bytes: usize::try_from(share.clamp(64 << 10, 4 << 20)).unwrap_or(4 << 20),
        }
    }

    /// What each of `partitions` may read ahead for its next range: an eighth of the budget
    /// over them.
    pub(crate) fn ahead_bytes(self, partitions: usize) -> usize {
        let share = self.bytes() / 8 / partitions.max(1) as u64;
        usize::try_from(share.max(64 << 10)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        let parse = |s: &str| s.parse::<ByteSize>().map(ByteSize::bytes);
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse(" 2 KiB "), Ok(2048));
        assert_eq!(parse("1gb"), Ok(1_000_000_000));
        assert!(parse("MiB").is_err());
        assert!(parse("-1MiB").is_err());
        assert!(parse("3 furlongs").unwrap_err().contains("furlongs"));
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }

    #[test]
    fn the_budget_is_shared_out() {
        let budget = MemoryBudget::default();
        let properties = budget.kafka_properties();
        assert_eq!(properties[0].1, "16384");
        assert_eq!(properties[1].1, (16u64 << 20).to_string());
        assert_eq!(properties[2].1, (8u64 << 20).to_string());
        assert_eq!(budget.chunk_limits(8).bytes, 512 << 10);
        assert!(MemoryBudget::new(ByteSize(1 << 20), "pipeline.memory_budget").is_err());
    }
}
