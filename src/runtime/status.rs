//! `weir status`: where a pipeline stands, from its sink's bookkeeping tables, its checkpoint
//! and Kafka's end offsets, without a running process.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::blocking::run_blocking;
use crate::checkpoint::RecoveryPreview;
use crate::config::PipelineConfig;
use crate::error::Result;
use crate::plan::TopicPartition;
use crate::sink::{Sink, SqlSink};
use crate::source::KafkaSource;

/// Where one Kafka partition stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset after the last committed record in the sink; `None` before the first commit.
    pub committed: Option<i64>,
    /// Where the checkpoint's next batch starts; `None` without a checkpoint.
    pub checkpoint: Option<i64>,
    /// The end of the log (the last stable offset under `read_committed`).
    pub end: i64,
    /// Records after the committed offset (after the log start before the first commit).
    pub lag: u64,
    /// The batch time of the last commit, epoch ms.
    pub last_commit_ms: Option<i64>,
}

/// What `weir status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// The sink, without credentials.
    pub sink: String,
    /// What the checkpoint would do at the next start, in words.
    pub checkpoint: String,
    /// Per partition, by topic and partition.
    pub partitions: Vec<PartitionStatus>,
    /// The lag over all partitions.
    pub total_lag: u64,
}

/// Reads the status of the pipeline of `config`. Opens the sink (which applies its migrations,
/// as a start would) and asks Kafka for the end offsets; writes nothing else.
pub async fn pipeline_status(config: &PipelineConfig) -> Result<StatusReport> {
    let dir = config.pipeline.checkpoint_dir.clone();
    let preview = if dir.is_dir() {
        Some(
            run_blocking("inspecting the checkpoint", move || {
                crate::checkpoint::inspect(&dir)
            })
            .await?
            .recovery,
        )
    } else {
        None
    };
    let (checkpoint, positions) = match preview {
        None => (
            "none (the pipeline never ran here)".to_owned(),
            BTreeMap::new(),
        ),
        Some(RecoveryPreview::Fresh) => ("empty".to_owned(), BTreeMap::new()),
        Some(RecoveryPreview::Fails(why)) => {
            (format!("recovery would fail: {why}"), BTreeMap::new())
        }
        Some(RecoveryPreview::Resume {
            snapshot,
            replay,
            positions,
        }) => {
            let replay = replay.map_or_else(String::new, |(_, _, n)| {
                format!(", {n} logged plans to replay")
            });
            (
                format!(
                    "snapshot at {}{replay}",
                    format_millis(snapshot.as_millis())
                ),
                positions,
            )
        }
    };

    let mut sink = SqlSink::connect(&config.sink).await?;
    sink.open().await?;
    let committed = sink.committed_positions(&config.pipeline.name).await;
    sink.close().await;
    let mut newest: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
    for ((_, tp), position) in committed? {
        let entry = newest
            .entry(tp)
            .or_insert((position.range.until, position.batch_time.as_millis()));
        *entry = (
            entry.0.max(position.range.until),
            entry.1.max(position.batch_time.as_millis()),
        );
    }

    let source = KafkaSource::connect(&config.source, &config.group_id())?;
    let mut partitions: BTreeSet<TopicPartition> = source.discover().await?;
    partitions.extend(newest.keys().cloned());
    partitions.extend(positions.keys().cloned());
    let watermarks = source.watermarks(&partitions).await?;

    let partitions: Vec<PartitionStatus> = partitions
        .into_iter()
        .filter_map(|tp| {
            let marks = watermarks.get(&tp)?;
            let committed = newest.get(&tp).map(|&(until, _)| until);
            let from = committed.unwrap_or(marks.log_start).max(marks.log_start);
            Some(PartitionStatus {
                lag: u64::try_from(marks.stable_end.saturating_sub(from)).unwrap_or(0),
                committed,
                checkpoint: positions.get(&tp).copied(),
                end: marks.stable_end,
                last_commit_ms: newest.get(&tp).map(|&(_, t)| t),
                topic: tp.topic,
                partition: tp.partition,
            })
        })
        .collect();
    Ok(StatusReport {
        pipeline: config.pipeline.name.clone(),
        sink: config.sink.identity(),
        checkpoint,
        total_lag: partitions.iter().map(|p| p.lag).sum(),
        partitions,
    })
}

fn format_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pipeline    {}", self.pipeline)?;
        writeln!(f, "sink        {}", self.sink)?;
        writeln!(f, "checkpoint  {}", self.checkpoint)?;
        writeln!(f, "total lag   {}", self.total_lag)?;
        writeln!(f)?;
        let width = self
            .partitions
            .iter()
            .map(|p| p.topic.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:<width$}  {:>9}  {:>12}  {:>12}  {:>12}  {:>10}  LAST COMMIT",
            "TOPIC", "PARTITION", "COMMITTED", "CHECKPOINT", "END", "LAG"
        )?;
        let or_dash = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        for p in &self.partitions {
            writeln!(
                f,
                "{:<width$}  {:>9}  {:>12}  {:>12}  {:>12}  {:>10}  {}",
                p.topic,
                p.partition,
                or_dash(p.committed),
                or_dash(p.checkpoint),
                p.end,
                p.lag,
                p.last_commit_ms
                    .map_or_else(|| "never".to_owned(), format_millis),
            )?;
        }
        Ok(())
    }
}
