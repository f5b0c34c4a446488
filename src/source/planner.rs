//! Batch planning: which offsets of every partition the next batch covers. Pure logic: the
//! source fetches the watermarks and hands them in.

use std::collections::BTreeMap;

use super::OnDataLoss;
use crate::error::{Error, Result};
use crate::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};

/// The offsets of one partition that a batch may read, as Kafka reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// The first offset still in the log; retention moves it forward.
    pub log_start: i64,
    /// The first offset not yet readable: the last stable offset under `read_committed`, the high
    /// watermark otherwise.
    pub stable_end: i64,
}

/// How many plans in a row may find a log ending below a partition's position before it counts
/// as replaced, unless set from the batch interval ([`Planner::with_batch_interval`]).
const DEFAULT_REPLACED_AFTER: u32 = 10;

/// How long a log may end below a partition's position before it counts as replaced: longer
/// than a new leader takes to catch its end offset up after an election.
pub(crate) const REPLACED_LOG_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Plans batches from partition positions.
///
/// The planner holds the position of every partition, the first offset no logged plan covers
/// yet. From the partitions' watermarks and the rate controller's caps it plans the next batch,
/// `from = position`, `until = min(stable end, from + cap)`, and it moves its positions only
/// when told that the plan was logged ([`Planner::advance`]). That split keeps invariants 1 and
/// 2: a plan that failed to reach the plan log leaves the planner as it was, and the next attempt
/// starts from the same offsets.
///
/// ```
/// use std::collections::BTreeMap;
/// use weir::plan::{BatchTime, TopicPartition};
/// use weir::source::{OnDataLoss, Planner, Watermarks, lags};
///
/// # fn main() -> weir::Result<()> {
/// let tp = TopicPartition::new("orders", 0);
/// let mut planner = Planner::new(OnDataLoss::Fail);
/// planner.restore(BTreeMap::from([(tp.clone(), 100)]));
///
/// let watermarks = BTreeMap::from([(tp.clone(), Watermarks { log_start: 0, stable_end: 1_000 })]);
/// assert_eq!(lags(planner.positions(), &watermarks)[&tp], 900);
///
/// // At most 300 records of this partition in the batch.
/// let caps = BTreeMap::from([(tp.clone(), Some(300))]);
/// let plan = planner.plan(BatchTime::from_millis(1_000), &watermarks, &caps)?;
/// assert_eq!((plan.ranges[0].from, plan.ranges[0].until), (100, 400));
///
/// // Only once the plan is in the plan log do the positions move.
/// assert_eq!(planner.positions()[&tp], 100);
/// planner.advance(&plan)?;
/// assert_eq!(planner.positions()[&tp], 400);
///
/// let next = planner.plan(BatchTime::from_millis(2_000), &watermarks, &caps)?;
/// assert!(plan.check_followed_by(&next).is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Planner {
    positions: BTreeMap<TopicPartition, i64>,
    on_data_loss: OnDataLoss,
    /// How many plans in a row may find a partition's log ending below its position before
    /// the log counts as replaced.
    replaced_after: u32,
    /// Per partition, how many plans in a row found its log ending below its position.
    behind: BTreeMap<TopicPartition, u32>,
}

impl Planner {
    /// A planner that knows no partition yet: each one starts at its log start offset.
    pub fn new(on_data_loss: OnDataLoss) -> Self {
        Self {
            positions: BTreeMap::new(),
            on_data_loss,
            replaced_after: DEFAULT_REPLACED_AFTER,
            behind: BTreeMap::new(),
        }
    }

    /// [`replaced_after`](Self::replaced_after) as many plans as `interval` fits in 10 s.
    #[must_use]
    pub fn with_batch_interval(self, interval: std::time::Duration) -> Self {
        let plans = REPLACED_LOG_GRACE.as_millis() / interval.as_millis().max(1);
        self.replaced_after(u32::try_from(plans).unwrap_or(u32::MAX))
    }

    /// A log that ends below a partition's position in `plans` plans in a row (at least 1) was
    /// replaced: the topic was deleted and recreated, or an unclean leader election truncated
    /// it. Fewer plans than that wait, since a new leader's end offset may briefly lag.
    #[must_use]
    pub fn replaced_after(mut self, plans: u32) -> Self {
        self.replaced_after = plans.max(1);
        self
    }

    /// Replaces every position, e.g. with the `until` offsets of a snapshot. Logged plans after
    /// the snapshot are then replayed through [`Planner::advance`].
    pub fn restore(&mut self, positions: BTreeMap<TopicPartition, i64>) {
        self.positions = positions;
    }

    /// The first offset of every known partition that no plan covers yet.
    pub fn positions(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.positions
    }

    /// Plans batch `batch_time`: one range for every partition in `watermarks`, empty ones
    /// included, `until = min(stable_end, from + cap)` and never below `from`.
    ///
    /// A partition not known yet starts at its log start, so nothing written to it is lost. A
    /// partition missing from `caps`, or with cap `None`, is read up to its stable end. A position
    /// above the stable end (a new leader whose high watermark is still catching up) gives an
    /// empty range: the partition waits.
    ///
    /// Fails with [`Error::SourceVanished`] when a known partition is missing from `watermarks`,
    /// and with [`Error::DataLoss`] when retention deleted offsets at a position and the policy is
    /// [`OnDataLoss::Fail`]. With [`OnDataLoss::Skip`] those offsets go to [`BatchPlan::lost`].
    /// The planner itself does not change: see [`Planner::advance`].
    pub fn plan(
        &mut self,
        batch_time: BatchTime,
        watermarks: &BTreeMap<TopicPartition, Watermarks>,
        caps: &BTreeMap<TopicPartition, Option<u64>>,
    ) -> Result<BatchPlan> {
        if let Some(tp) = self
            .positions
            .keys()
            .find(|tp| !watermarks.contains_key(*tp))
        {
            return Err(Error::SourceVanished {
                what: tp.to_string(),
            });
        }
        let mut ranges = Vec::with_capacity(watermarks.len());
        let mut lost = Vec::new();
        for (tp, marks) in watermarks {
            let mut from = match self.positions.get(tp) {
                Some(&position) => position,
                None => {
                    tracing::info!(%tp, %batch_time, log_start = marks.log_start,
                        "new partition {tp}: reading it from its earliest offset {}", marks.log_start);
                    marks.log_start
                }
            };
            if from > marks.stable_end && self.positions.contains_key(tp) {
                let seen = self.behind.entry(tp.clone()).or_default();
                *seen = seen.saturating_add(1);
                if *seen >= self.replaced_after {
                    match self.on_data_loss {
                        OnDataLoss::Fail => {
                            return Err(Error::LogReplaced {
                                tp: tp.clone(),
                                position: from,
                                log_end: marks.stable_end,
                            });
                        }
                        OnDataLoss::Skip => {
                            tracing::warn!(
                                partition = %tp, %batch_time, position = from,
                                log_start = marks.log_start, log_end = marks.stable_end,
                                "The partition's log ends below weir's position: the topic was \
                                 recreated or truncated. Reading the new log from its first \
                                 offset, as source.on_data_loss = \"skip\" allows, and recording \
                                 the gap."
                            );
                            lost.push(OffsetRange::new(tp.clone(), from, marks.log_start));
                            from = marks.log_start;
                        }
                    }
                }
            } else {
                self.behind.remove(tp);
            }
            if from < marks.log_start {
                match self.on_data_loss {
                    OnDataLoss::Fail => {
                        return Err(Error::DataLoss {
                            tp: tp.clone(),
                            from,
                            log_start: marks.log_start,
                        });
                    }
                    OnDataLoss::Skip => {
                        tracing::warn!(%tp, %batch_time, from, log_start = marks.log_start,
                            "retention deleted offsets [{from}..{}) of {tp} before weir read them; \
                             skipping them as source.on_data_loss = \"skip\" allows, and recording \
                             the gap in the plan of batch {batch_time}", marks.log_start);
                        lost.push(OffsetRange::new(tp.clone(), from, marks.log_start));
                        from = marks.log_start;
                    }
                }
            }
            let end = match caps.get(tp).copied().flatten() {
                Some(cap) => marks
                    .stable_end
                    .min(from.saturating_add(i64::try_from(cap).unwrap_or(i64::MAX))),
                None => marks.stable_end,
            };
            ranges.push(OffsetRange::new(tp.clone(), from, end.max(from)));
        }
        let mut plan = BatchPlan::new(batch_time, ranges);
        plan.lost = lost;
        Ok(plan)
    }

    /// Moves every partition of `plan` to the end of its range. Call it once the plan is in the
    /// plan log, and for every logged plan replayed after a restore.
    ///
    /// Fails with [`Error::Contiguity`], changing nothing, when the plan does not start at the
    /// positions (with its lost ranges in between) or holds a partition twice or a range that ends
    /// before it starts.
    pub fn advance(&mut self, plan: &BatchPlan) -> Result<()> {
        let mut ends = BTreeMap::new();
        for range in &plan.ranges {
            let violation = |detail: String| Error::Contiguity {
                what: range.tp.to_string(),
                detail: format!("batch {}: {detail}", plan.batch_time),
            };
            if range.until < range.from {
                return Err(violation(format!("range {range} ends before it starts")));
            }
            if ends.insert(range.tp.clone(), range.until).is_some() {
                return Err(violation(format!("the plan holds {} twice", range.tp)));
            }
            if let Some(&position) = self.positions.get(&range.tp) {
                plan.continues(position, range).map_err(violation)?;
            }
        }
        self.positions.extend(ends);
        Ok(())
    }
}

/// The records waiting in each partition of `watermarks`: from its position (its log start when
/// it has none, or when retention passed it) to its stable end, 0 when none wait. Feeds the
/// rate controller and the lag metrics.
pub fn lags(
    positions: &BTreeMap<TopicPartition, i64>,
    watermarks: &BTreeMap<TopicPartition, Watermarks>,
) -> BTreeMap<TopicPartition, u64> {
    watermarks
        .iter()
        .map(|(tp, marks)| {
            let from = positions
                .get(tp)
                .map_or(marks.log_start, |&position| position.max(marks.log_start));
            let lag = u64::try_from(marks.stable_end.saturating_sub(from)).unwrap_or(0);
            (tp.clone(), lag)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn at(millis: i64) -> BatchTime {
        BatchTime::from_millis(millis)
    }

    fn marks(log_start: i64, stable_end: i64) -> Watermarks {
        Watermarks {
            log_start,
            stable_end,
        }
    }

    fn no_caps() -> BTreeMap<TopicPartition, Option<u64>> {
        BTreeMap::new()
    }

    fn restored(policy: OnDataLoss, positions: &[(i32, i64)]) -> Planner {
        let mut planner = Planner::new(policy);
        planner.restore(
            positions
                .iter()
                .map(|&(p, position)| (tp(p), position))
                .collect(),
        );
        planner
    }

    #[test]
    fn ranges_respect_caps_and_stable_end_and_include_empty_ones() {
        let mut planner = restored(OnDataLoss::Fail, &[(0, 10), (1, 50), (2, 7)]);
        let watermarks = BTreeMap::from([
            (tp(0), marks(0, 100)),
            (tp(1), marks(0, 60)),
            (tp(2), marks(0, 7)),
        ]);
        let caps = BTreeMap::from([(tp(0), Some(25)), (tp(1), Some(25)), (tp(2), None)]);
        let plan = planner.plan(at(1_000), &watermarks, &caps).unwrap();
        let bounds: Vec<_> = plan.ranges.iter().map(|r| (r.from, r.until)).collect();
        assert_eq!(bounds, [(10, 35), (50, 60), (7, 7)]);
        assert!(plan.lost.is_empty());
    }

    #[test]
    fn zero_cap_and_position_above_stable_end_give_empty_ranges() {
        let mut planner = restored(OnDataLoss::Fail, &[(0, 10), (1, 80)]);
        let watermarks = BTreeMap::from([(tp(0), marks(0, 100)), (tp(1), marks(0, 70))]);
        let caps = BTreeMap::from([(tp(0), Some(0)), (tp(1), Some(5))]);
        let plan = planner.plan(at(1_000), &watermarks, &caps).unwrap();
        assert!(plan.ranges.iter().all(OffsetRange::is_empty), "{plan:?}");
        assert_eq!(plan.ranges[1].from, 80, "never below the position");
    }

    #[test]
    fn data_loss_fails_by_default_naming_the_range() {
        let mut planner = restored(OnDataLoss::Fail, &[(0, 10)]);
        let watermarks = BTreeMap::from([(tp(0), marks(40, 100))]);
        let error = planner
            .plan(at(1_000), &watermarks, &no_caps())
            .unwrap_err();
        assert!(
            matches!(&error, Error::DataLoss { tp: lost, from: 10, log_start: 40 } if *lost == tp(0)),
            "{error}"
        );
        assert!(error.to_string().contains("on_data_loss"), "{error}");
    }

    #[test]
    fn data_loss_with_skip_records_the_gap_and_starts_at_log_start() {
        let mut planner = restored(OnDataLoss::Skip, &[(0, 10)]);
        let watermarks = BTreeMap::from([(tp(0), marks(40, 100))]);
        let caps = BTreeMap::from([(tp(0), Some(20))]);
        let plan = planner.plan(at(1_000), &watermarks, &caps).unwrap();
        assert_eq!(plan.lost, [OffsetRange::new(tp(0), 10, 40)]);
        assert_eq!(plan.ranges, [OffsetRange::new(tp(0), 40, 60)]);
        planner.advance(&plan).unwrap();
        assert_eq!(planner.positions()[&tp(0)], 60);
    }

    #[test]
    fn a_log_ending_below_the_position_waits_then_counts_as_replaced() {
        let recreated = BTreeMap::from([(tp(0), marks(0, 30))]);
        let mut planner = restored(OnDataLoss::Fail, &[(0, 100)]).replaced_after(3);
        for t in 1..3 {
            let plan = planner.plan(at(t), &recreated, &no_caps()).unwrap();
            assert_eq!(
                plan.ranges,
                vec![OffsetRange::new(tp(0), 100, 100)],
                "waits"
            );
        }
        let error = planner.plan(at(3), &recreated, &no_caps()).unwrap_err();
        assert!(
            matches!(&error, Error::LogReplaced { tp: t, position: 100, log_end: 30 } if *t == tp(0)),
            "{error:?}"
        );
        assert!(error.to_string().contains("on_data_loss"), "{error}");

        // A log that catches up in time (a new leader) resets the count.
        let mut planner = restored(OnDataLoss::Fail, &[(0, 100)]).replaced_after(2);
        planner.plan(at(1), &recreated, &no_caps()).unwrap();
        let caught_up = BTreeMap::from([(tp(0), marks(0, 120))]);
        planner.plan(at(2), &caught_up, &no_caps()).unwrap();
        planner.plan(at(3), &recreated, &no_caps()).unwrap();
    }

    #[test]
    fn a_replaced_log_under_skip_is_read_from_its_start_with_the_gap_recorded() {
        let recreated = BTreeMap::from([(tp(0), marks(5, 30))]);
        let mut planner = restored(OnDataLoss::Skip, &[(0, 100)]).replaced_after(1);
        let plan = planner.plan(at(1), &recreated, &no_caps()).unwrap();
        assert_eq!(plan.ranges, vec![OffsetRange::new(tp(0), 5, 30)]);
        assert_eq!(plan.lost, vec![OffsetRange::new(tp(0), 100, 5)]);
        planner.advance(&plan).unwrap();
        assert_eq!(planner.positions()[&tp(0)], 30);
    }

    #[test]
    fn new_partitions_start_at_their_log_start() {
        let mut planner = restored(OnDataLoss::Fail, &[(0, 10)]);
        let watermarks = BTreeMap::from([(tp(0), marks(0, 10)), (tp(1), marks(5, 30))]);
        let plan = planner.plan(at(1_000), &watermarks, &no_caps()).unwrap();
        assert_eq!(plan.ranges[1], OffsetRange::new(tp(1), 5, 30));
        assert!(
            plan.lost.is_empty(),
            "a new partition's deleted past was never ours to read"
        );
    }

    #[test]
    fn a_known_partition_missing_from_watermarks_vanished() {
        let mut planner = restored(OnDataLoss::Skip, &[(0, 10), (1, 3)]);
        let watermarks = BTreeMap::from([(tp(0), marks(0, 10))]);
        let error = planner
            .plan(at(1_000), &watermarks, &no_caps())
            .unwrap_err();
        assert!(
            matches!(&error, Error::SourceVanished { what } if what == "t/1"),
            "{error}"
        );
    }

    #[test]
    fn an_unlogged_plan_changes_nothing() {
        let mut planner = restored(OnDataLoss::Fail, &[(0, 10)]);
        let watermarks = BTreeMap::from([(tp(0), marks(0, 100))]);
        let first = planner.plan(at(1_000), &watermarks, &no_caps()).unwrap();
        let again = planner.plan(at(1_000), &watermarks, &no_caps()).unwrap();
        assert_eq!(first, again);
        assert_eq!(planner.positions()[&tp(0)], 10);
    }

    #[test]
    fn advance_rejects_plans_that_do_not_start_at_the_positions() {
        let mut planner = restored(OnDataLoss::Skip, &[(0, 10), (1, 20)]);
        let before = planner.positions().clone();
        let gap = BatchPlan::new(
            at(1_000),
            vec![
                OffsetRange::new(tp(0), 10, 15),
                OffsetRange::new(tp(1), 21, 25),
            ],
        );
        let error = planner.advance(&gap).unwrap_err();
        assert!(
            matches!(&error, Error::Contiguity { what, .. } if what == "t/1"),
            "{error}"
        );
        assert_eq!(planner.positions(), &before, "nothing half-applied");

        let mut bad_lost = BatchPlan::new(at(1_000), vec![OffsetRange::new(tp(0), 30, 35)]);
        bad_lost.lost = vec![OffsetRange::new(tp(0), 10, 29)];
        assert!(planner.advance(&bad_lost).is_err());
        let twice = BatchPlan::new(
            at(1_000),
            vec![
                OffsetRange::new(tp(0), 10, 15),
                OffsetRange::new(tp(0), 10, 15),
            ],
        );
        assert!(planner.advance(&twice).is_err());
        let backwards = BatchPlan::new(at(1_000), vec![OffsetRange::new(tp(0), 10, 5)]);
        assert!(planner.advance(&backwards).is_err());
        assert_eq!(planner.positions(), &before);
    }

    #[test]
    fn lags_count_from_position_or_log_start() {
        let positions = BTreeMap::from([(tp(0), 10), (tp(1), 5), (tp(2), 90)]);
        let watermarks = BTreeMap::from([
            (tp(0), marks(0, 100)),
            (tp(1), marks(50, 100)),
            (tp(2), marks(0, 80)),
            (tp(3), marks(20, 25)),
        ]);
        let waiting: Vec<u64> = lags(&positions, &watermarks).into_values().collect();
        assert_eq!(waiting, [90, 50, 0, 5]);
    }

    /// How one partition's log changes before one batch.
    #[derive(Debug, Clone)]
    struct LogMove {
        /// Records appended.
        appended: i64,
        /// How far retention moves the log start (clamped to the stable end).
        retained: i64,
        cap: Option<u64>,
    }

    /// Everything that happens before one batch.
    #[derive(Debug, Clone)]
    struct Step {
        moves: Vec<LogMove>,
        /// The plan is made but never logged, so it is planned again.
        log_fails: bool,
        /// The process restarts after this batch: a new planner restored from the positions.
        restart: bool,
    }

    const PARTITIONS: usize = 3;

    fn step_strategy() -> impl Strategy<Value = Step> {
        let log_move = (
            prop_oneof![Just(0i64), 0..40i64],
            prop_oneof![4 => Just(0i64), 1 => 0..120i64],
            prop::option::of(0..30u64),
        )
            .prop_map(|(appended, retained, cap)| LogMove {
                appended,
                retained,
                cap,
            });
        (
            prop::collection::vec(log_move, PARTITIONS),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(moves, log_fails, restart)| Step {
                moves,
                log_fails,
                restart,
            })
    }

    /// Runs `steps` through planners with `policy` and checks every plan; returns every range
    /// each partition's plans covered, planned and lost, with the offset its coverage began at.
    fn run_steps(
        policy: OnDataLoss,
        first_log_start: &[i64],
        appears_at: &[usize],
        steps: &[Step],
    ) -> std::result::Result<Coverage, TestCaseError> {
        let mut planner = Planner::new(policy);
        let mut logs: BTreeMap<TopicPartition, Watermarks> = BTreeMap::new();
        let mut coverage = Coverage::default();
        let mut previous: Option<BatchPlan> = None;
        for (k, step) in steps.iter().enumerate() {
            let mut caps = BTreeMap::new();
            for (p, log_move) in step.moves.iter().enumerate() {
                if appears_at[p] > k {
                    continue;
                }
                let tp = tp(i32::try_from(p).unwrap());
                let marks = logs
                    .entry(tp.clone())
                    .or_insert(marks(first_log_start[p], first_log_start[p]));
                marks.stable_end += log_move.appended;
                marks.log_start = (marks.log_start + log_move.retained).min(marks.stable_end);
                caps.insert(tp, log_move.cap);
            }
            let batch_time = at(i64::try_from(k + 1).unwrap() * 100);
            let lagging_behind_retention = planner
                .positions()
                .iter()
                .find(|(tp, position)| **position < logs[*tp].log_start)
                .map(|(tp, &position)| (tp.clone(), position));
            let plan = match (policy, lagging_behind_retention) {
                (OnDataLoss::Fail, Some((tp, position))) => {
                    let tp = &tp;
                    let error = planner.plan(batch_time, &logs, &caps).unwrap_err();
                    let is_loss = matches!(&error,
                        Error::DataLoss { tp: lost, from, log_start }
                            if lost == tp && *from == position && *log_start == logs[tp].log_start);
                    prop_assert!(is_loss, "{}", error);
                    return Ok(coverage);
                }
                _ => planner.plan(batch_time, &logs, &caps).unwrap(),
            };
            if step.log_fails {
                let again = planner.plan(batch_time, &logs, &caps).unwrap();
                prop_assert_eq!(&again, &plan);
            }
            if let Some(previous) = &previous {
                let chained = previous.check_followed_by(&plan);
                prop_assert!(chained.is_ok(), "{}", chained.unwrap_err());
            }
            for range in &plan.ranges {
                let marks = logs[&range.tp];
                prop_assert!(
                    range.from >= marks.log_start,
                    "{} reads deleted offsets",
                    range
                );
                prop_assert!(
                    range.until <= marks.stable_end.max(range.from),
                    "{} unstable",
                    range
                );
                if let Some(cap) = caps[&range.tp] {
                    prop_assert!(range.len() <= cap, "{} exceeds cap {}", range, cap);
                }
                coverage.add(range, marks.log_start);
            }
            for lost in &plan.lost {
                coverage.add(lost, logs[&lost.tp].log_start);
                coverage.lost += 1;
            }
            planner.advance(&plan).unwrap();
            if step.restart {
                let positions = planner.positions().clone();
                planner = Planner::new(policy);
                planner.restore(positions);
            }
            previous = Some(plan);
        }
        for (tp, position) in planner.positions() {
            let covered_until = coverage.ranges[tp].iter().map(|r| r.until).max();
            prop_assert_eq!(covered_until, Some(*position));
        }
        Ok(coverage)
    }

    /// Per partition: the log start when it was first planned and every range covered, planned
    /// or lost; and how many ranges were lost.
    #[derive(Default)]
    struct Coverage {
        began_at: BTreeMap<TopicPartition, i64>,
        ranges: BTreeMap<TopicPartition, Vec<OffsetRange>>,
        lost: usize,
    }

    impl Coverage {
        fn add(&mut self, range: &OffsetRange, log_start: i64) {
            self.began_at
                .entry(range.tp.clone())
                .or_insert(log_start.min(range.from));
            self.ranges
                .entry(range.tp.clone())
                .or_default()
                .push(range.clone());
        }

        /// Every offset from where the partition began to its last `until`, exactly once.
        fn check_exactly_once(&self) -> std::result::Result<(), TestCaseError> {
            for (tp, ranges) in &self.ranges {
                let mut ranges = ranges.clone();
                ranges.sort_by_key(|r| (r.from, r.until));
                let mut next = self.began_at[tp];
                for range in &ranges {
                    prop_assert_eq!(range.from, next, "gap or overlap at {}", range);
                    next = range.until;
                }
            }
            Ok(())
        }
    }

    fn scenario() -> impl Strategy<Value = (Vec<i64>, Vec<usize>, Vec<Step>)> {
        (
            prop::collection::vec(0..50i64, PARTITIONS),
            prop::collection::vec(prop_oneof![2 => Just(0usize), 1 => 0..12usize], PARTITIONS),
            prop::collection::vec(step_strategy(), 1..40),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn skip_plans_chain_honour_caps_and_cover_every_offset_once(
            (first_log_start, appears_at, steps) in scenario()
        ) {
            let coverage = run_steps(OnDataLoss::Skip, &first_log_start, &appears_at, &steps)?;
            coverage.check_exactly_once()?;
        }

        #[test]
        fn fail_plans_chain_until_exactly_the_first_data_loss(
            (first_log_start, appears_at, steps) in scenario()
        ) {
            let coverage = run_steps(OnDataLoss::Fail, &first_log_start, &appears_at, &steps)?;
            coverage.check_exactly_once()?;
            prop_assert_eq!(coverage.lost, 0, "fail never skips");
        }
    }
}
