//! The vocabulary of the exactly-once protocol: batch times, offset ranges and batch plans.
//!
//! A [`BatchPlan`] says, for one batch time, exactly which records of every assigned Kafka
//! partition the batch covers. Plans are written to the plan log before any effect of the batch
//! (invariant 2), so everything here is plain data that serializes stably.
//!
//! ```
//! use weir::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
//!
//! let tp = TopicPartition::new("orders", 0);
//! let first = BatchPlan::new(BatchTime::from_millis(1_000), vec![OffsetRange::new(tp.clone(), 0, 500)]);
//! let second = BatchPlan::new(BatchTime::from_millis(1_200), vec![OffsetRange::new(tp, 500, 800)]);
//! // Contiguity (invariant 1): the next batch starts where the previous one ended.
//! assert!(first.check_followed_by(&second).is_ok());
//! assert_eq!(second.record_upper_bound(), 300);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The identity of a batch: the time it was generated, in epoch milliseconds, always a multiple of
/// the batch interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchTime(i64);

impl BatchTime {
    /// A batch time from epoch milliseconds.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Epoch milliseconds.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The batch time one interval later.
    pub fn next(self, interval: Duration) -> Self {
        Self(self.0.saturating_add(interval_millis(interval)))
    }

    /// The latest batch time on the grid of `interval` that is not after `millis`.
    pub fn floor(millis: i64, interval: Duration) -> Self {
        let step = interval_millis(interval).max(1);
        Self(millis.div_euclid(step) * step)
    }
}

impl fmt::Display for BatchTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Milliseconds of a batch interval, saturating at `i64::MAX` (intervals are validated to be small).
pub(crate) fn interval_millis(interval: Duration) -> i64 {
    i64::try_from(interval.as_millis()).unwrap_or(i64::MAX)
}

/// A Kafka topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The half-open range of offsets `[from, until)` of one partition that one batch covers.
///
/// `until` is the first offset of the next batch. The range may hold fewer than `until - from`
/// records: compaction, transaction markers and aborted records leave gaps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The partition.
    pub tp: TopicPartition,
    /// First offset covered.
    pub from: i64,
    /// First offset not covered.
    pub until: i64,
}

impl OffsetRange {
    /// A range `[from, until)` of `tp`.
    pub fn new(tp: TopicPartition, from: i64, until: i64) -> Self {
        Self { tp, from, until }
    }

    /// True when the range covers no offset.
    pub fn is_empty(&self) -> bool {
        self.until <= self.from
    }

    /// The number of offsets in the range; records may be fewer.
    pub fn len(&self) -> u64 {
        u64::try_from(self.until.saturating_sub(self.from)).unwrap_or(0)
    }
}

impl fmt::Display for OffsetRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}..{})", self.tp, self.from, self.until)
    }
}

/// The plan of one batch: one offset range for every assigned Kafka partition, ordered by
/// partition. Kafka partitions map one to one onto batch partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// The batch this plan belongs to.
    pub batch_time: BatchTime,
    /// One range per partition, sorted by topic and partition.
    pub ranges: Vec<OffsetRange>,
    /// Offsets skipped because retention deleted them before they were read, recorded only when
    /// the user allowed it with `on_data_loss = "skip"` (invariant 6).
    #[serde(default)]
    pub lost: Vec<OffsetRange>,
}

impl BatchPlan {
    /// A plan with the given ranges, which are sorted by partition.
    pub fn new(batch_time: BatchTime, mut ranges: Vec<OffsetRange>) -> Self {
        ranges.sort();
        Self {
            batch_time,
            ranges,
            lost: Vec::new(),
        }
    }

    /// The most records the plan can produce (the sum of its ranges' lengths).
    pub fn record_upper_bound(&self) -> u64 {
        self.ranges.iter().map(OffsetRange::len).sum()
    }

    /// The position each partition reaches once this batch is done.
    pub fn end_positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.ranges
            .iter()
            .map(|r| (r.tp.clone(), r.until))
            .collect()
    }

    /// The gap this plan records before `range`, if any: offsets retention deleted before they
    /// were read (`from < until`), or a log that was replaced under weir (a topic deleted and
    /// recreated, or truncated: `from` is the old position, `until` the new log's start, and
    /// `from > until`). Both only under `on_data_loss = "skip"` (invariant 6).
    pub fn gap_before(&self, range: &OffsetRange) -> Option<&OffsetRange> {
        self.lost
            .iter()
            .find(|lost| lost.tp == range.tp && lost.from != lost.until)
    }

    /// Checks invariant 1 for one range of this plan: it must continue `position`, where its
    /// partition's previous batch ended, either directly or across the gap recorded before it.
    /// This is the one statement of the contiguity rule; the planner, the checkpoint, the sink
    /// and `weir verify` all apply it.
    pub fn continues(&self, position: i64, range: &OffsetRange) -> Result<(), String> {
        let start = match self.gap_before(range) {
            Some(gap) if gap.until != range.from => {
                return Err(format!(
                    "the recorded gap {gap} does not end where range {range} starts"
                ));
            }
            Some(gap) => gap.from,
            None => range.from,
        };
        if start == position {
            Ok(())
        } else {
            Err(format!(
                "{} starts at {start} but the previous batch ended at {position}",
                range.tp
            ))
        }
    }

    /// What a write of `range`'s records covers, in the order the sink's contiguity check must
    /// see them: the gap recorded before it (see [`gap_before`](Self::gap_before)), then the
    /// range.
    pub fn covered_by(&self, range: &OffsetRange) -> Vec<OffsetRange> {
        self.gap_before(range)
            .into_iter()
            .cloned()
            .chain(std::iter::once(range.clone()))
            .collect()
    }

    /// Every range the batch covers, recorded gaps included, each partition's gap before its
    /// range: what a write of output partitions fed by every Kafka partition (a keyed shuffle)
    /// covers.
    pub fn covered(&self) -> Vec<OffsetRange> {
        self.ranges
            .iter()
            .flat_map(|range| self.covered_by(range))
            .collect()
    }

    /// Checks invariant 1 between this plan and the one after it: every partition of `next` that
    /// this plan also covers continues exactly where this plan ended, and time moves forward.
    ///
    /// Partitions new in `next` (discovered mid-run) are accepted; a partition that vanished is
    /// not this check's business (the source stops on deleted partitions).
    pub fn check_followed_by(&self, next: &BatchPlan) -> Result<(), ContiguityViolation> {
        let violation = |detail: String| ContiguityViolation {
            previous: self.batch_time,
            next: next.batch_time,
            detail,
        };
        if next.batch_time <= self.batch_time {
            return Err(violation("batch time does not increase".to_owned()));
        }
        let ends = self.end_positions();
        for range in &next.ranges {
            if let Some(&end) = ends.get(&range.tp) {
                next.continues(end, range).map_err(violation)?;
            }
        }
        Ok(())
    }
}

impl OffsetRange {
    /// True for a gap that records a replaced log (`from` above `until`): the partition's log now
    /// starts below where weir had read it to. See [`BatchPlan::gap_before`].
    pub fn is_rewind(&self) -> bool {
        self.from > self.until
    }
}

/// Two successive plans that break invariant 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContiguityViolation {
    /// The earlier batch.
    pub previous: BatchTime,
    /// The later batch.
    pub next: BatchTime,
    /// What does not line up.
    pub detail: String,
}

impl fmt::Display for ContiguityViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch {} does not follow batch {}: {}",
            self.next, self.previous, self.detail
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn floor_snaps_to_the_interval_grid() {
        let i = Duration::from_millis(200);
        assert_eq!(BatchTime::floor(1_399, i).as_millis(), 1_200);
        assert_eq!(BatchTime::floor(1_400, i).as_millis(), 1_400);
        assert_eq!(BatchTime::floor(1_400, i).next(i).as_millis(), 1_600);
    }

    #[test]
    fn gap_and_overlap_are_violations() {
        let a = BatchPlan::new(
            BatchTime::from_millis(1),
            vec![OffsetRange::new(tp(0), 0, 10)],
        );
        let gap = BatchPlan::new(
            BatchTime::from_millis(2),
            vec![OffsetRange::new(tp(0), 11, 12)],
        );
        let overlap = BatchPlan::new(
            BatchTime::from_millis(2),
            vec![OffsetRange::new(tp(0), 9, 12)],
        );
        let back = BatchPlan::new(
            BatchTime::from_millis(1),
            vec![OffsetRange::new(tp(0), 10, 12)],
        );
        assert!(a.check_followed_by(&gap).is_err());
        assert!(a.check_followed_by(&overlap).is_err());
        assert!(a.check_followed_by(&back).is_err());
    }

    #[test]
    fn recorded_loss_bridges_the_gap() {
        let a = BatchPlan::new(
            BatchTime::from_millis(1),
            vec![OffsetRange::new(tp(0), 0, 10)],
        );
        let mut b = BatchPlan::new(
            BatchTime::from_millis(2),
            vec![OffsetRange::new(tp(0), 50, 60)],
        );
        assert!(a.check_followed_by(&b).is_err());
        b.lost.push(OffsetRange::new(tp(0), 10, 50));
        assert!(a.check_followed_by(&b).is_ok());
    }

    #[test]
    fn a_replaced_log_is_bridged_by_a_rewind_gap() {
        let a = BatchPlan::new(
            BatchTime::from_millis(1),
            vec![OffsetRange::new(tp(0), 0, 100)],
        );
        let mut b = BatchPlan::new(
            BatchTime::from_millis(2),
            vec![OffsetRange::new(tp(0), 0, 30)],
        );
        assert!(a.check_followed_by(&b).is_err());
        b.lost.push(OffsetRange::new(tp(0), 100, 0));
        assert!(a.check_followed_by(&b).is_ok());
        assert!(b.lost[0].is_rewind());
        assert_eq!(
            b.covered_by(&b.ranges[0]),
            vec![b.lost[0].clone(), b.ranges[0].clone()],
            "the gap comes first, so the sink advances its position across it"
        );
        assert_eq!(b.covered(), b.covered_by(&b.ranges[0]));
        let mut wrong = b.clone();
        wrong.lost[0].until = 5;
        assert!(
            a.check_followed_by(&wrong)
                .unwrap_err()
                .to_string()
                .contains("does not end")
        );
    }

    #[test]
    fn new_partition_is_accepted() {
        let a = BatchPlan::new(
            BatchTime::from_millis(1),
            vec![OffsetRange::new(tp(0), 0, 10)],
        );
        let b = BatchPlan::new(
            BatchTime::from_millis(2),
            vec![
                OffsetRange::new(tp(1), 0, 3),
                OffsetRange::new(tp(0), 10, 10),
            ],
        );
        assert!(a.check_followed_by(&b).is_ok());
        assert_eq!(b.ranges[0].tp, tp(0), "ranges are sorted by partition");
    }
}
