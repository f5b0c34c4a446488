//! Invariant 1 over a snapshot and the plans after it: every partition's ranges follow on from
//! its last known position, with no gap and no overlap.

use std::collections::BTreeMap;

use crate::plan::{BatchPlan, BatchTime, ContiguityViolation, TopicPartition};

/// The position of every partition after the last batch seen: a snapshot's positions, advanced
/// by each plan after it.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    last: BatchTime,
    positions: BTreeMap<TopicPartition, i64>,
}

impl Chain {
    /// The chain after a snapshot at `batch_time` with these positions.
    pub fn new(batch_time: BatchTime, positions: BTreeMap<TopicPartition, i64>) -> Self {
        Self {
            last: batch_time,
            positions,
        }
    }

    /// The last batch time seen.
    pub fn last(&self) -> BatchTime {
        self.last
    }

    /// The position of every partition seen.
    pub fn positions(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.positions
    }

    /// Checks that `plan` may come next: its batch time is later and each of its ranges starts at
    /// its partition's position. A partition not seen before may start anywhere (it was just
    /// discovered); a range may also start after the position when the plan records the
    /// skipped offsets as lost (`on_data_loss = "skip"`, invariant 6).
    pub fn check(&self, plan: &BatchPlan) -> Result<(), ContiguityViolation> {
        // MUTANT (scripts/chaos --mutant no-contiguity): every plan may come next.
        if cfg!(feature = "mutant-no-contiguity") {
            return Ok(());
        }
        let violation = |detail: String| ContiguityViolation {
            previous: self.last,
            next: plan.batch_time,
            detail,
        };
        if plan.batch_time <= self.last {
            return Err(violation("batch time does not increase".to_owned()));
        }
        for range in &plan.ranges {
            if let Some(&position) = self.positions.get(&range.tp) {
                plan.continues(position, range).map_err(violation)?;
            }
        }
        Ok(())
    }

    /// Moves the chain past `plan`, which [`check`](Self::check) accepted.
    pub fn advance(&mut self, plan: &BatchPlan) {
        self.last = plan.batch_time;
        for range in &plan.ranges {
            self.positions.insert(range.tp.clone(), range.until);
        }
    }

    /// [`check`](Self::check), then [`advance`](Self::advance).
    pub fn push(&mut self, plan: &BatchPlan) -> Result<(), ContiguityViolation> {
        self.check(plan)?;
        self.advance(plan);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::OffsetRange;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn plan(t: i64, ranges: &[(i32, i64, i64)]) -> BatchPlan {
        let ranges = ranges
            .iter()
            .map(|&(p, from, until)| OffsetRange::new(tp(p), from, until))
            .collect();
        BatchPlan::new(BatchTime::from_millis(t), ranges)
    }

    fn chain() -> Chain {
        Chain::new(BatchTime::from_millis(0), BTreeMap::from([(tp(0), 10)]))
    }

    #[test]
    fn plans_must_start_at_the_snapshot_positions() {
        assert!(chain().check(&plan(1, &[(0, 10, 20)])).is_ok());
        let err = chain().check(&plan(1, &[(0, 11, 20)])).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("batch 1 does not follow batch 0: t/0 starts at 11 but the previous batch ended at 10".into())
        );
        assert!(chain().check(&plan(0, &[(0, 10, 20)])).is_err());
    }

    #[test]
    fn a_partition_that_skips_a_batch_is_still_checked() {
        let mut chain = chain();
        assert!(chain.push(&plan(1, &[(0, 10, 20), (1, 0, 5)])).is_ok());
        assert!(chain.push(&plan(2, &[(1, 5, 6)])).is_ok());
        assert!(chain.check(&plan(3, &[(0, 21, 30)])).is_err());
        assert!(chain.check(&plan(3, &[(0, 20, 30)])).is_ok());
    }

    #[test]
    fn recorded_data_loss_bridges_the_gap() {
        let mut lossy = plan(1, &[(0, 15, 20)]);
        lossy.lost.push(OffsetRange::new(tp(0), 10, 15));
        assert!(chain().check(&lossy).is_ok());
    }
}
