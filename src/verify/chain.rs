//! The commit table read back: every commit of the pipeline with its offset ranges, and the check
//! that each Kafka partition's committed ranges form one chain from its start offset
//! (invariant 1).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::plan::{BatchTime, OffsetRange, TopicPartition};
use crate::sink::{SinkPool, SqlValue};
use crate::source::{KafkaSourceConfig, StartingOffsets};

use super::report::{Problem, ProblemKind};
use super::{SetAside, Spans, database};

/// One row of `weir_commits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    /// The batch.
    pub(crate) batch_time: BatchTime,
    /// The output partition.
    pub(crate) partition_id: i64,
    /// The ranges the commit covers, sorted.
    pub(crate) ranges: Vec<OffsetRange>,
}

/// Every commit of `pipeline`, in commit order: by batch time, then output partition.
pub(crate) async fn read_commits(
    pool: &SinkPool,
    pipeline: &str,
    topics: &[String],
) -> Result<Vec<Commit>> {
    let sql = pool.dialect().placeholders(
        "SELECT batch_time, partition_id, ranges FROM weir_commits WHERE pipeline = ? ORDER BY batch_time, partition_id",
    );
    let rows: Vec<(i64, i64, String)> = pool
        .fetch_all(sql, &[SqlValue::Text(pipeline.to_owned())])
        .await
        .map_err(database(format!(
            "reading the commit table weir_commits of pipeline {pipeline:?} (has the pipeline run against this database?)"
        )))?;
    if rows.is_empty() {
        tracing::warn!(
            message = "The commit table holds no commit of this pipeline: nothing was written yet.",
            pipeline,
            topics = ?topics,
        );
    }
    rows.into_iter()
        .map(|(batch_time, partition_id, ranges)| {
            let mut ranges: Vec<OffsetRange> =
                serde_json::from_str(&ranges).map_err(|e| Error::Contiguity {
                    what: format!(
                        "pipeline {pipeline:?} batch {batch_time} partition {partition_id}"
                    ),
                    detail: format!("the commit row's ranges {ranges:?} cannot be read ({e})"),
                })?;
            // By partition, keeping each partition's order (a recorded gap before its range).
            ranges.sort_by(|a, b| a.tp.cmp(&b.tp));
            Ok(Commit {
                batch_time: BatchTime::from_millis(batch_time),
                partition_id,
                ranges,
            })
        })
        .collect()
}

/// The records of `pipeline` stored in `weir_dead_letters`, with how often each is stored.
pub(crate) async fn read_dead_letters(pool: &SinkPool, pipeline: &str) -> Result<SetAside> {
    let sql = pool.dialect().placeholders(
        "SELECT topic, kafka_partition, kafka_offset FROM weir_dead_letters WHERE pipeline = ?",
    );
    let rows: Vec<(String, i32, i64)> = pool
        .fetch_all(sql, &[SqlValue::Text(pipeline.to_owned())])
        .await
        .map_err(database(format!(
            "reading the dead letters of pipeline {pipeline:?} (weir_dead_letters)"
        )))?;
    let mut stored = SetAside::new();
    for (topic, partition, offset) in rows {
        *stored
            .entry((TopicPartition::new(topic, partition), offset))
            .or_default() += 1;
    }
    Ok(stored)
}

/// Per Kafka partition, from the lowest `from` to the highest `until` of its committed ranges:
/// what has to be read from Kafka.
pub(crate) fn spans(commits: &[Commit]) -> Spans {
    let mut spans = Spans::new();
    for range in commits.iter().flat_map(|c| &c.ranges) {
        if range.is_empty() {
            continue;
        }
        spans
            .entry(range.tp.clone())
            .and_modify(|(from, until)| {
                *from = (*from).min(range.from);
                *until = (*until).max(range.until);
            })
            .or_insert((range.from, range.until));
    }
    spans
}

/// The gaps and overlaps between consecutive commits of each partition, and a chain that does
/// not begin at the partition's start offset. `log_starts` are the partitions' first offsets
/// still in Kafka, the start of a pipeline that reads from `earliest`.
pub(crate) fn check(
    commits: &[Commit],
    log_starts: &BTreeMap<TopicPartition, i64>,
    source: &KafkaSourceConfig,
) -> Vec<Problem> {
    let mut chains: BTreeMap<&TopicPartition, Vec<(BatchTime, &OffsetRange)>> = BTreeMap::new();
    for commit in commits {
        for range in commit.ranges.iter().filter(|r| !r.is_empty()) {
            chains
                .entry(&range.tp)
                .or_default()
                .push((commit.batch_time, range));
        }
    }
    let explicit = source.explicit_start_offsets();
    let mut problems = Vec::new();
    for (tp, chain) in chains {
        let Some(&(first_batch, first)) = chain.first() else {
            continue;
        };
        let start = match (explicit.get(tp), source.starting_offsets) {
            (Some(&offset), _) => Some(offset),
            (None, StartingOffsets::Earliest) => log_starts.get(tp).copied(),
            // Where `latest` or the group's offsets stood at the first start is not recorded.
            (None, StartingOffsets::Latest | StartingOffsets::Committed) => None,
        };
        if let Some(start) = start
            && first.from != start
        {
            let (from, until) = (start.min(first.from), start.max(first.from));
            problems.push(Problem {
                partition: tp.to_string(),
                kind: ProblemKind::WrongStart,
                from,
                until,
                detail: format!(
                    "the first commit (batch {first_batch}) covers {first}, but the partition starts at offset {start}"
                ),
            });
        }
        for pair in chain.windows(2) {
            let [(before_batch, before), (batch, range)] = pair else {
                continue;
            };
            let kind = match range.from.cmp(&before.until) {
                std::cmp::Ordering::Equal => continue,
                std::cmp::Ordering::Greater => ProblemKind::Gap,
                std::cmp::Ordering::Less => ProblemKind::Overlap,
            };
            problems.push(Problem {
                partition: tp.to_string(),
                kind,
                from: range.from.min(before.until),
                until: range.from.max(before.until),
                detail: format!(
                    "batch {before_batch} committed {before}, then batch {batch} committed {range}"
                ),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(t: i64, partition: i32, from: i64, until: i64) -> Commit {
        Commit {
            batch_time: BatchTime::from_millis(t),
            partition_id: i64::from(partition),
            ranges: vec![OffsetRange::new(
                TopicPartition::new("t", partition),
                from,
                until,
            )],
        }
    }

    fn source() -> KafkaSourceConfig {
        KafkaSourceConfig::new("127.0.0.1:1", vec!["t".into()])
    }

    #[test]
    fn a_clean_chain_has_no_problem_and_spans_cover_it() {
        let commits = [
            commit(1, 0, 0, 10),
            commit(1, 1, 5, 6),
            commit(2, 0, 10, 12),
        ];
        let starts = BTreeMap::from([
            (TopicPartition::new("t", 0), 0),
            (TopicPartition::new("t", 1), 5),
        ]);
        assert_eq!(check(&commits, &starts, &source()), []);
        let spans = spans(&commits);
        assert_eq!(spans[&TopicPartition::new("t", 0)], (0, 12));
        assert_eq!(spans[&TopicPartition::new("t", 1)], (5, 6));
    }

    #[test]
    fn gaps_overlaps_and_a_late_start_are_named() {
        let commits = [
            commit(1, 0, 2, 10),
            commit(2, 0, 12, 20),
            commit(3, 0, 18, 30),
        ];
        let starts = BTreeMap::from([(TopicPartition::new("t", 0), 0)]);
        let problems = check(&commits, &starts, &source());
        let kinds: Vec<(ProblemKind, i64, i64)> =
            problems.iter().map(|p| (p.kind, p.from, p.until)).collect();
        assert_eq!(
            kinds,
            [
                (ProblemKind::WrongStart, 0, 2),
                (ProblemKind::Gap, 10, 12),
                (ProblemKind::Overlap, 18, 20),
            ]
        );
        assert!(problems[1].detail.contains("batch 1 committed t/0[2..10)"));

        let mut latest = source();
        latest.starting_offsets = StartingOffsets::Latest;
        assert_eq!(check(&commits[..1], &starts, &latest), []);
    }
}
