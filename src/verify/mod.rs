//! `weir verify`: recomputes from Kafka what the sink must hold, and compares it with the table.
//!
//! The commit table says which offset ranges were written, and in which batch. Verification
//! checks that, for every Kafka partition, those ranges form one chain with no gap and no
//! overlap from the partition's start offset (invariant 1); reads exactly those ranges again
//! with an assign-based consumer at the pipeline's isolation level (`read_committed` by
//! default); maps every record through the sink's own record → row mapping; and compares the
//! result with the table:
//!
//! - `append`: the table must hold the multiset of mapped rows, each once.
//! - `upsert`: by key, the last write per key wins (batches in commit order) and a tombstone
//!   deletes the key's row.
//! - `increment`: by key, each increment column holds the sum over every write of the key, and
//!   the other columns are the last write's, as in an upsert.
//!
//! Differences are counted per partition: rows *missing* from the table, rows *duplicated*,
//! rows *differing* (same identity, other values) and rows the table holds that no committed
//! record explains (*unexpected*). Records the sink set aside (`on_error = "skip"` or
//! `"dead_letter"`, or listed in `weir_dead_letters`) are not expected in the table.
//!
//! ```no_run
//! # async fn example() -> weir::Result<()> {
//! let config = weir::config::PipelineConfig::from_path("orders.toml".as_ref())?;
//! let report = weir::verify::verify(&config, |progress| eprintln!("{progress}")).await?;
//! println!("{report}");
//! assert!(report.is_clean());
//! # Ok(()) }
//! ```

mod cells;
mod chain;
mod compare;
mod expected;
mod reader;
mod report;
mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use report::{PartitionReport, Problem, ProblemKind, Report};

use crate::batch::PartitionBatch;
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::plan::TopicPartition;
use crate::sink::{ColumnType, OnError, Op, RowMapper, SinkPool, WriteMode};

use compare::{Comparison, Identity};
use expected::Expected;

/// How far a verification is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Reading the committed ranges from Kafka.
    Kafka {
        /// Offsets read so far (records and the gaps between them).
        offsets: u64,
        /// Offsets to read in all.
        total: u64,
        /// Records received so far.
        records: u64,
    },
    /// Reading the table back.
    Table {
        /// Rows read so far.
        rows: u64,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Kafka {
                offsets,
                total,
                records,
            } => {
                let percent = offsets
                    .saturating_mul(100)
                    .checked_div(total)
                    .unwrap_or(100);
                write!(
                    f,
                    "reading Kafka: {records} records, {offsets} of {total} offsets ({percent}%)"
                )
            }
            Self::Table { rows } => write!(f, "reading the table: {rows} rows"),
        }
    }
}

/// Verifies the table of `config` against Kafka, as described in the [module docs](self).
/// `progress` is called from time to time (every few thousand records or rows), possibly from
/// a blocking thread.
///
/// Fails when verification is impossible: the database or Kafka cannot be reached, the
/// bookkeeping tables are missing, or committed records were deleted by retention. Differences
/// are not errors: they are in the [`Report`].
///
/// # Cancel safety
///
/// Safe to drop: it only reads. A Kafka read already under way finishes in the background.
pub async fn verify(
    config: &PipelineConfig,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<Report> {
    let progress: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(progress);
    let sink = &config.sink;
    sink.validate()?;
    let dialect = sink.dialect()?;
    let mapper = RowMapper::new(sink, dialect)?;
    let pool = SinkPool::connect_lazy(&sink.url, dialect, 2)?;
    let pipeline = config.pipeline.name.as_str();

    let commits = chain::read_commits(&pool, pipeline, &config.source.topics).await?;
    if let Some((commit, gap)) = commits
        .iter()
        .find_map(|c| c.ranges.iter().find(|r| r.is_rewind()).map(|r| (c, r)))
    {
        return Err(Error::Unverifiable {
            pipeline: pipeline.to_owned(),
            reason: format!(
                "batch {} recorded that the log of {} was replaced ({gap}: the topic was deleted and recreated, and read from its start under on_data_loss = \"skip\"); the records of the old topic are gone from Kafka, so what the table holds cannot be recomputed",
                commit.batch_time, gap.tp
            ),
        });
    }
    let set_aside = chain::read_dead_letters(&pool, pipeline).await?;
    let spans = chain::spans(&commits);
    let records = reader::read_ranges(&config.source, pipeline, &spans, &progress)
        .await
        .map_err(|e| match e {
            Error::Unverifiable { reason, .. } => Error::Unverifiable {
                pipeline: pipeline.to_owned(),
                reason,
            },
            other => other,
        })?;
    let mut problems = chain::check(&commits, &records.log_starts, &config.source);

    let columns: Vec<(String, ColumnType)> = mapper
        .table_columns()
        .into_iter()
        .map(|c| (c.name, c.column_type))
        .collect();
    let names: Vec<String> = columns.iter().map(|(name, _)| name.clone()).collect();
    let partitions: Vec<TopicPartition> = spans.keys().cloned().collect();
    let recomputed = Recomputed::new(&partitions, &mapper, sink.mode).run(
        &commits,
        &records,
        &set_aside,
        sink.on_error,
    );
    problems.extend(recomputed.problems);
    problems.extend(dead_letter_problems(&commits, &set_aside));

    let identity = Identity::for_config(sink, &names, mapper.key());
    let mut comparison = Comparison::new(recomputed.expected, identity, partitions.len(), names);
    let table_rows = table::scan(&pool, sink, &columns, &progress, |row| {
        comparison.observe(row);
    })
    .await?;
    // The table was read after the commits: a write committed meanwhile put rows in it that no
    // commit read explains. Only a commit table unchanged since then makes the comparison sound.
    let after = chain::read_commits(&pool, pipeline, &config.source.topics).await?;
    pool.close().await;
    if after.len() != commits.len() {
        return Err(Error::Unverifiable {
            pipeline: pipeline.to_owned(),
            reason: format!(
                "the pipeline committed {} more writes while verify read the table, so the table no longer matches the commits read first. Run verify while the pipeline is stopped or idle",
                after.len().abs_diff(commits.len())
            ),
        });
    }
    let outcome = comparison.finish();
    Ok(report::build(report::Parts {
        pipeline,
        table: &sink.table,
        mode: sink.mode,
        commits: &commits,
        partitions: &partitions,
        spans: &spans,
        tallies: recomputed.tallies,
        outcome,
        table_rows,
        problems,
    }))
}

/// What the table must hold, recomputed from the committed records.
struct Recomputed<'a> {
    partitions: &'a [TopicPartition],
    mapper: &'a RowMapper,
    expected: Expected,
    tallies: Vec<report::Tally>,
    problems: Vec<Problem>,
}

impl<'a> Recomputed<'a> {
    fn new(partitions: &'a [TopicPartition], mapper: &'a RowMapper, mode: WriteMode) -> Self {
        Self {
            partitions,
            mapper,
            expected: Expected::new(
                mode.is_keyed(),
                mapper.key().to_vec(),
                mapper.added().to_vec(),
            ),
            tallies: vec![report::Tally::default(); partitions.len()],
            problems: Vec::new(),
        }
    }

    /// Maps the records of every commit, in commit order, as the sink did; records stored as
    /// dead letters are not expected in the table.
    fn run(
        mut self,
        commits: &[chain::Commit],
        records: &reader::Read,
        set_aside: &SetAside,
        on_error: OnError,
    ) -> Self {
        for commit in commits {
            let input: Vec<PartitionBatch> = commit
                .ranges
                .iter()
                .map(|range| PartitionBatch {
                    range: range.clone(),
                    records: records.within(range),
                })
                .collect();
            let Some(home) = commit.ranges.first().and_then(|r| self.index(&r.tp)) else {
                continue;
            };
            let mapped = self.mapper.map(&input);
            let tally = &mut self.tallies[home];
            tally.commits += 1;
            tally.records += input.iter().map(|b| b.records.len() as u64).sum::<u64>();
            for rejected in &mapped.rejected {
                tally.rejected += 1;
                let (tp, offset) = (rejected.origin.tp, rejected.origin.record.offset);
                match on_error {
                    OnError::Fail => self.problems.push(Problem::unwritable(
                        &tp.to_string(),
                        offset,
                        &rejected.reason,
                    )),
                    OnError::DeadLetter if !set_aside.contains_key(&(tp.clone(), offset)) => {
                        self.problems.push(Problem::dead_letter(
                            ProblemKind::DeadLetterMissing,
                            &tp.to_string(),
                            offset,
                            format!(
                                "batch {} refused the record ({}), but weir_dead_letters does not hold it",
                                commit.batch_time, rejected.reason
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            for (op, origin) in &mapped.ops {
                let at = self.index(origin.tp).unwrap_or(home);
                if set_aside.contains_key(&(origin.tp.clone(), origin.record.offset)) {
                    self.tallies[at].dead_letters += 1;
                    continue;
                }
                match op {
                    Op::Write(values) => {
                        self.expected
                            .write(at, commit.batch_time, cells::row(values));
                    }
                    Op::Delete(key) => self.expected.delete(at, commit.batch_time, cells::row(key)),
                }
            }
        }
        self
    }

    fn index(&self, tp: &TopicPartition) -> Option<usize> {
        self.partitions.iter().position(|p| p == tp)
    }
}

/// Dead letters stored twice, or of records no commit covers.
fn dead_letter_problems(commits: &[chain::Commit], set_aside: &SetAside) -> Vec<Problem> {
    let covered = |tp: &TopicPartition, offset: i64| {
        commits
            .iter()
            .flat_map(|c| &c.ranges)
            .any(|r| r.tp == *tp && r.from <= offset && offset < r.until)
    };
    set_aside
        .iter()
        .filter_map(|((tp, offset), &count)| {
            let partition = tp.to_string();
            if count > 1 {
                Some(Problem::dead_letter(
                    ProblemKind::DeadLetterDuplicated,
                    &partition,
                    *offset,
                    format!("weir_dead_letters holds the record {count} times"),
                ))
            } else if !covered(tp, *offset) {
                Some(Problem::dead_letter(
                    ProblemKind::DeadLetterUnexpected,
                    &partition,
                    *offset,
                    "weir_dead_letters holds the record, but no commit covers it".to_owned(),
                ))
            } else {
                None
            }
        })
        .collect()
}

/// The `(topic, partition, offset)` of records the sink stored as dead letters.
/// The dead letters of the pipeline: how many times each record is stored.
type SetAside = BTreeMap<(TopicPartition, i64), u64>;

/// Per Kafka partition, the hull `[from, until)` of its committed ranges.
type Spans = BTreeMap<TopicPartition, (i64, i64)>;

fn database(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::database(context, e)
}
