//! Commit-table retention: `weir_commits` keeps one row per batch and output partition only for
//! `sink.commit_retention`; older rows of an output partition are folded into one row that
//! covers all their ranges.
//!
//! Nothing the protocol needs is lost. The contiguity check reads `weir_offsets`, never
//! `weir_commits`. `weir verify` reads the folded row as one batch that covered the same offsets,
//! which maps them to the same rows. Only the idempotency of a *replay* of a folded batch is
//! gone, and such a replay (of a plan older than the retention) is refused by the contiguity
//! check, which the folded batches have moved past: it can fail, never double.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::plan::{BatchTime, OffsetRange, TopicPartition};
use crate::sink::conn::SinkPool;
use crate::sink::value::SqlValue;

/// What one fold did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Folded {
    /// Output partitions whose old commits were folded.
    pub(crate) partitions: u64,
    /// Commit rows removed (each folded partition keeps one).
    pub(crate) rows_removed: u64,
}

/// Folds the commits of `pipeline` older than `before` into one row per output partition,
/// always keeping each partition's newest commit as it is. A partition whose old ranges do not
/// chain (a recorded gap or a replaced log) is left as it is, so a fold never hides one.
pub(crate) async fn fold_commits(
    pool: &SinkPool,
    pipeline: &str,
    before: BatchTime,
) -> Result<Folded> {
    let dialect = pool.dialect();
    let context = || format!("folding the old commits of pipeline {pipeline:?}");
    let newest: Vec<(i64, i64)> = pool
        .fetch_all(
            dialect.placeholders("SELECT partition_id, MAX(batch_time) FROM weir_commits WHERE pipeline = ? GROUP BY partition_id"),
            &[SqlValue::Text(pipeline.to_owned())],
        )
        .await
        .map_err(|e| Error::database(context(), e))?;
    let mut folded = Folded::default();
    for (partition_id, newest) in newest {
        let cutoff = before.as_millis().min(newest);
        let rows: Vec<(i64, String)> = pool
            .fetch_all(
                dialect.placeholders("SELECT batch_time, ranges FROM weir_commits WHERE pipeline = ? AND partition_id = ? AND batch_time < ? ORDER BY batch_time"),
                &[
                    SqlValue::Text(pipeline.to_owned()),
                    SqlValue::BigInt(partition_id),
                    SqlValue::BigInt(cutoff),
                ],
            )
            .await
            .map_err(|e| Error::database(context(), e))?;
        if rows.len() < 2 {
            continue;
        }
        let Some(merged) = merge(&rows) else {
            tracing::debug!(
                message = "Old commits of an output partition do not chain; left unfolded.",
                pipeline,
                partition_id,
            );
            continue;
        };
        let last = rows.last().map_or(cutoff, |(t, _)| *t);
        let json = serde_json::to_string(&merged).map_err(|e| Error::Batch {
            batch_time: BatchTime::from_millis(last),
            message: format!("cannot encode the folded offset ranges: {e}"),
        })?;
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| Error::database(context(), e))?;
        let removed = tx
            .execute(
                dialect.placeholders("DELETE FROM weir_commits WHERE pipeline = ? AND partition_id = ? AND batch_time <= ?"),
                &[
                    SqlValue::Text(pipeline.to_owned()),
                    SqlValue::BigInt(partition_id),
                    SqlValue::BigInt(last),
                ],
            )
            .await
            .map_err(|e| Error::database(context(), e))?;
        tx.execute(
            dialect.placeholders("INSERT INTO weir_commits (pipeline, batch_time, partition_id, ranges) VALUES (?, ?, ?, ?)"),
            &[
                SqlValue::Text(pipeline.to_owned()),
                SqlValue::BigInt(last),
                SqlValue::BigInt(partition_id),
                SqlValue::Text(json),
            ],
        )
        .await
        .map_err(|e| Error::database(context(), e))?;
        tx.commit()
            .await
            .map_err(|e| Error::database(context(), e))?;
        folded.partitions += 1;
        folded.rows_removed += removed.saturating_sub(1);
    }
    Ok(folded)
}

/// One range per Kafka partition covering every range of `rows` (commit ranges as stored, in
/// batch order), or `None` when some range does not start where the previous one of its
/// partition ended, or a commit records a gap (offsets lost to retention, a replaced log).
fn merge(rows: &[(i64, String)]) -> Option<Vec<OffsetRange>> {
    let mut spans: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
    for (_, json) in rows {
        let ranges: Vec<OffsetRange> = serde_json::from_str(json).ok()?;
        let mut seen = std::collections::BTreeSet::new();
        for range in ranges {
            // Two ranges of one partition in one commit: a recorded gap, which must stay visible.
            if range.is_rewind() || !seen.insert(range.tp.clone()) {
                return None;
            }
            match spans.get_mut(&range.tp) {
                Some((_, until)) if *until == range.from => *until = range.until,
                Some(_) => return None,
                None => {
                    spans.insert(range.tp.clone(), (range.from, range.until));
                }
            }
        }
    }
    Some(
        spans
            .into_iter()
            .map(|(tp, (from, until))| OffsetRange::new(tp, from, until))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: i64, ranges: &[(i32, i64, i64)]) -> (i64, String) {
        let ranges: Vec<OffsetRange> = ranges
            .iter()
            .map(|&(p, from, until)| OffsetRange::new(TopicPartition::new("t", p), from, until))
            .collect();
        (t, serde_json::to_string(&ranges).unwrap())
    }

    #[test]
    fn chained_ranges_fold_into_one_per_partition() {
        let rows = [
            row(1, &[(0, 0, 10), (1, 0, 4)]),
            row(2, &[(0, 10, 10), (1, 4, 9)]),
            row(3, &[(0, 10, 15), (1, 9, 9)]),
        ];
        let merged = merge(&rows).unwrap();
        assert_eq!(
            merged,
            vec![
                OffsetRange::new(TopicPartition::new("t", 0), 0, 15),
                OffsetRange::new(TopicPartition::new("t", 1), 0, 9),
            ]
        );
    }

    #[test]
    fn a_gap_or_a_replaced_log_is_never_folded_away() {
        assert!(merge(&[row(1, &[(0, 0, 10)]), row(2, &[(0, 11, 12)])]).is_none());
        assert!(merge(&[row(1, &[(0, 0, 10)]), row(2, &[(0, 10, 0), (0, 0, 5)])]).is_none());
        // Offsets lost to retention, recorded beside the range they precede.
        assert!(merge(&[row(1, &[(0, 0, 10)]), row(2, &[(0, 10, 30), (0, 30, 35)])]).is_none());
    }
}
