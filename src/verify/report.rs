//! The result of a verification: totals, one line per partition, problems of the commit chain,
//! and a few differences described row by row. [`Report`] prints as a summary a person can
//! read and serializes to JSON for scripts.

use std::fmt;

use serde::Serialize;

use crate::plan::TopicPartition;
use crate::sink::WriteMode;

use super::Spans;
use super::chain::Commit;
use super::compare::Outcome;

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The pipeline.
    pub pipeline: String,
    /// The table compared.
    pub table: String,
    /// `append`, `upsert` or `increment`.
    pub mode: String,
    /// Commits of the pipeline in `weir_commits`.
    pub commits: u64,
    /// Records read from Kafka within the committed ranges.
    pub records: u64,
    /// Rows the table holds.
    pub table_rows: u64,
    /// Rows of the committed records missing from the table.
    pub missing: u64,
    /// Rows the table holds more often than the committed records say.
    pub duplicated: u64,
    /// Rows whose identity (upsert and increment: key) is expected but whose values are not.
    pub differing: u64,
    /// Rows no committed record explains (including keys that were deleted last).
    pub unexpected: u64,
    /// Records the sink's mapping refuses (left out under `on_error = "skip"` or
    /// `"dead_letter"`).
    pub rejected: u64,
    /// Records found in `weir_dead_letters`, not expected in the table.
    pub dead_letters: u64,
    /// Gaps, overlaps and wrong starts of the committed ranges, and records that no commit
    /// could have written.
    pub problems: Vec<Problem>,
    /// One entry per Kafka partition with commits.
    pub partitions: Vec<PartitionReport>,
    /// A few differences, described row by row.
    pub examples: Vec<String>,
}

/// What a verification found in one Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// `topic/partition`.
    pub partition: String,
    /// Commits covering it.
    pub commits: u64,
    /// The first committed offset.
    pub from: i64,
    /// One past the last committed offset.
    pub until: i64,
    /// Records read in the committed ranges.
    pub records: u64,
    /// See [`Report::missing`].
    pub missing: u64,
    /// See [`Report::duplicated`].
    pub duplicated: u64,
    /// See [`Report::differing`].
    pub differing: u64,
    /// Rows of keys this partition deleted last that the table still holds.
    pub unexpected: u64,
    /// See [`Report::rejected`].
    pub rejected: u64,
    /// See [`Report::dead_letters`].
    pub dead_letters: u64,
}

/// Something wrong with the committed ranges themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `topic/partition`.
    pub partition: String,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// First offset concerned.
    pub from: i64,
    /// One past the last offset concerned.
    pub until: i64,
    /// The commits or the record concerned.
    pub detail: String,
}

/// Kinds of [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Offsets between two consecutive commits that no commit covers: lost records.
    Gap,
    /// Offsets two commits cover: records written twice.
    Overlap,
    /// The first commit does not begin at the partition's start offset.
    WrongStart,
    /// A record of a committed range that the sink cannot write, under `on_error = "fail"`.
    Unwritable,
    /// A record the sink must have dead-lettered (`on_error = "dead_letter"`) that
    /// `weir_dead_letters` does not hold: a dead letter was deleted.
    DeadLetterMissing,
    /// A record held more than once in `weir_dead_letters`.
    DeadLetterDuplicated,
    /// A dead letter of a record that no commit covers.
    DeadLetterUnexpected,
}

impl Problem {
    /// A problem with the dead letter of one record.
    pub(crate) fn dead_letter(
        kind: ProblemKind,
        partition: &str,
        offset: i64,
        detail: String,
    ) -> Self {
        Self {
            partition: partition.to_owned(),
            kind,
            from: offset,
            until: offset + 1,
            detail,
        }
    }

    /// A record in a committed range that the sink's mapping refuses although `on_error` is
    /// `fail`: it cannot have been written.
    pub(crate) fn unwritable(partition: &str, offset: i64, reason: &str) -> Self {
        Self {
            partition: partition.to_owned(),
            kind: ProblemKind::Unwritable,
            from: offset,
            until: offset + 1,
            detail: reason.to_owned(),
        }
    }
}

impl Report {
    /// True when the table holds exactly what the committed records say and the commits form
    /// clean chains.
    pub fn is_clean(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && self.differing == 0
            && self.unexpected == 0
            && self.problems.is_empty()
    }
}

/// Per-partition counts gathered while mapping the records.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) commits: u64,
    pub(crate) records: u64,
    pub(crate) rejected: u64,
    pub(crate) dead_letters: u64,
}

/// Everything a report is made of.
pub(crate) struct Parts<'a> {
    pub(crate) pipeline: &'a str,
    pub(crate) table: &'a str,
    pub(crate) mode: WriteMode,
    pub(crate) commits: &'a [Commit],
    pub(crate) partitions: &'a [TopicPartition],
    pub(crate) spans: &'a Spans,
    pub(crate) tallies: Vec<Tally>,
    pub(crate) outcome: Outcome,
    pub(crate) table_rows: u64,
    pub(crate) problems: Vec<super::Problem>,
}

/// Assembles the report.
pub(crate) fn build(parts: Parts<'_>) -> Report {
    let outcome = &parts.outcome;
    let partitions: Vec<PartitionReport> = parts
        .partitions
        .iter()
        .enumerate()
        .map(|(i, tp)| {
            let (from, until) = parts.spans.get(tp).copied().unwrap_or_default();
            let tally = parts.tallies.get(i).copied().unwrap_or_default();
            let at = |counts: &[u64]| counts.get(i).copied().unwrap_or(0);
            PartitionReport {
                partition: tp.to_string(),
                commits: tally.commits,
                from,
                until,
                records: tally.records,
                missing: at(&outcome.missing),
                duplicated: at(&outcome.duplicated),
                differing: at(&outcome.differing),
                unexpected: at(&outcome.unexpected),
                rejected: tally.rejected,
                dead_letters: tally.dead_letters,
            }
        })
        .collect();
    let sum = |f: fn(&PartitionReport) -> u64| partitions.iter().map(f).sum::<u64>();
    Report {
        pipeline: parts.pipeline.to_owned(),
        table: parts.table.to_owned(),
        mode: parts.mode.name().to_owned(),
        commits: parts.commits.len() as u64,
        records: sum(|p| p.records),
        table_rows: parts.table_rows,
        missing: sum(|p| p.missing),
        duplicated: sum(|p| p.duplicated),
        differing: sum(|p| p.differing),
        unexpected: sum(|p| p.unexpected) + outcome.unattributed,
        rejected: sum(|p| p.rejected),
        dead_letters: sum(|p| p.dead_letters),
        problems: parts.problems,
        examples: outcome.examples.clone(),
        partitions,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_clean() {
            "OK: the table holds exactly the committed records"
        } else {
            "MISMATCH"
        };
        writeln!(
            f,
            "verify pipeline {} → table {} ({}): {verdict}",
            self.pipeline, self.table, self.mode
        )?;
        writeln!(
            f,
            "  {} commits, {} records in committed ranges, {} rows in the table",
            self.commits, self.records, self.table_rows
        )?;
        writeln!(
            f,
            "  missing {}, duplicated {}, differing {}, unexpected {}; rejected {}, dead letters {}",
            self.missing,
            self.duplicated,
            self.differing,
            self.unexpected,
            self.rejected,
            self.dead_letters
        )?;
        writeln!(
            f,
            "  {:<24} {:>7} {:>22} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "partition", "commits", "offsets", "records", "missing", "dup", "differ", "unexp"
        )?;
        for p in &self.partitions {
            writeln!(
                f,
                "  {:<24} {:>7} {:>22} {:>9} {:>8} {:>8} {:>8} {:>8}",
                p.partition,
                p.commits,
                format!("[{}..{})", p.from, p.until),
                p.records,
                p.missing,
                p.duplicated,
                p.differing,
                p.unexpected
            )?;
        }
        for problem in &self.problems {
            writeln!(
                f,
                "  {:?} in {} [{}..{}): {}",
                problem.kind, problem.partition, problem.from, problem.until, problem.detail
            )?;
        }
        for example in &self.examples {
            writeln!(f, "  {example}")?;
        }
        Ok(())
    }
}
