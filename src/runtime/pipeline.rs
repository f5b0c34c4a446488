//! The main job assembled from a pipeline file: Kafka topics into a SQL table.

mod cross_check;

pub(crate) use cross_check::refuse_when_sink_ahead;

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Level, debug, info, warn};

use super::job::{PROGRESS_TARGET, Positions, TableJob};
use super::scheduler::{RunSummary, Schedule, Scheduler, now_millis};
use crate::blocking::run_blocking;
use crate::checkpoint::{CheckpointStore, PipelineIdentity};
use crate::config::PipelineConfig;
use crate::error::Result;
use crate::plan::BatchTime;
use crate::rate::RateController;
use crate::sink::{Sink, SqlSink};
use crate::source::{KafkaSource, Planner};

/// How often the lag of a reporting run is measured.
const LAG_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often old commit rows are folded (`sink.commit_retention`).
const FOLD_INTERVAL: Duration = Duration::from_secs(3600);

/// The identity a pipeline file gives its checkpoint: what must not change silently.
pub fn pipeline_identity(config: &PipelineConfig) -> PipelineIdentity {
    PipelineIdentity::new(
        config.pipeline.name.clone(),
        config.source.topics.iter().cloned(),
        config.sink.identity(),
    )
}

/// Runs the pipeline of `config` until `shutdown` is cancelled (or `max_batches` new batches
/// ran): recovers from the checkpoint, cross-checks it against the sink's commit table, then
/// consumes the topics into the table.
///
/// When the sink is ahead of the checkpoint (the checkpoint was lost or restored from an old
/// copy), this pipeline, which keeps no state, resumes from the sink's committed positions and
/// logs a warning that says so; the old checkpoint's files are moved to
/// `<checkpoint_dir>.behind-sink-<t>`.
///
/// Progress for a status line comes as debug events of target `weir::progress`: "Batch
/// written." after every batch (`batch_time` in epoch ms, `records`, `rows`, `write_ms`) and,
/// when that target is enabled, "Lag." about once a second (`total_lag`, `partitions`).
///
/// # Cancel safety
///
/// Dropping the future is safe for exactly-once but skips the final snapshot; cancel `shutdown`
/// to stop gracefully.
pub async fn run_pipeline(
    config: &PipelineConfig,
    shutdown: CancellationToken,
    max_batches: Option<u64>,
) -> Result<RunSummary> {
    let section = &config.pipeline;
    let status = crate::ops::status::status(&section.name);
    status.starting(
        u64::try_from(section.batch_interval.as_millis()).unwrap_or(u64::MAX),
        config_summary(config),
    );
    let stop_ops = CancellationToken::new();
    let _stop_ops = stop_ops.clone().drop_guard();
    if let Some(addr) = section.http {
        crate::ops::http::serve(addr, Arc::clone(&status), stop_ops).await?;
    }
    let dir = section.checkpoint_dir.clone();
    let store = run_blocking("opening the checkpoint", move || {
        CheckpointStore::open(&dir)
    })
    .await?;

    let mut sink = SqlSink::connect(&config.sink).await?;
    sink.open().await?;
    status.set_sink_ready();
    info!(message = "Sink ready.", sink = %config.sink.identity());

    let source = KafkaSource::connect_with_budget(
        &config.source,
        &config.group_id(),
        section.memory_budget()?,
    )?;
    let identity = pipeline_identity(config);
    let store = cross_check::reconcile(store, &identity, &sink, &source, config).await?;
    let planner =
        Planner::new(config.source.on_data_loss).with_batch_interval(section.batch_interval);
    let rate = RateController::new(config.source.rate_config(), section.batch_interval)?;
    let parallelism = usize::try_from(config.sink.pool_size).unwrap_or(1);
    let sink = Arc::new(sink);
    let mut job = TableJob::new(section.name.clone(), Arc::clone(&sink), parallelism);
    let stop_probe = CancellationToken::new();
    tokio::spawn(fold_old_commits(
        sink,
        section.name.clone(),
        config.sink.commit_retention,
        stop_probe.clone(),
    ));
    if tracing::enabled!(target: PROGRESS_TARGET, Level::DEBUG) {
        let positions = Positions::default();
        job = job.with_positions(Arc::clone(&positions));
        let lag_source = KafkaSource::connect(&config.source, &config.group_id())?;
        tokio::spawn(probe_lag(lag_source, positions, stop_probe.clone()));
    }
    let _stop_probe = stop_probe.drop_guard();
    let schedule = Schedule {
        pipeline: section.name.clone(),
        batch_interval: section.batch_interval,
        checkpoint_interval: section.checkpoint_interval(),
        metadata_refresh_interval: config.source.metadata_refresh_interval,
        commit_offsets: config.source.commit_offsets,
        identity,
        max_batches,
    };
    Scheduler::new(schedule, source, planner, rate, store, job, shutdown)
        .run()
        .await
}

/// What the status page shows of the configuration: nothing secret (the sink URL without its
/// credentials and parameters, no Kafka properties).
fn config_summary(config: &PipelineConfig) -> serde_json::Value {
    serde_json::json!({
        "pipeline": config.pipeline.name,
        "batch_interval": humantime::format_duration(config.pipeline.batch_interval).to_string(),
        "checkpoint_interval": humantime::format_duration(config.pipeline.checkpoint_interval()).to_string(),
        "checkpoint_dir": config.pipeline.checkpoint_dir.display().to_string(),
        "topics": config.source.topics,
        "max_rate_per_partition": config.source.max_rate_per_partition,
        "sink": config.sink.identity(),
        "mode": config.sink.mode.name(),
        "pool_size": config.sink.pool_size,
    })
}

/// Folds the commit rows older than `retention` into one per output partition, at start and
/// then every [`FOLD_INTERVAL`], until `stop`. A failure only delays the fold: it is logged.
async fn fold_old_commits<S: Sink>(
    sink: Arc<S>,
    pipeline: String,
    retention: Duration,
    stop: CancellationToken,
) {
    loop {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before = BatchTime::from_millis(now_millis().saturating_sub(retention_ms));
        if let Err(error) = sink.fold_commits(&pipeline, before).await {
            warn!(message = "Cannot fold old commit rows; trying again later.", %error);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(FOLD_INTERVAL) => {}
        }
    }
}

/// Measures the total lag of the partitions the job has written about once a second, until
/// `stop`, as progress events. Failures only cost a stale number: they are logged at debug level.
async fn probe_lag(source: KafkaSource, positions: Positions, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LAG_PROBE_INTERVAL) => {}
        }
        let known = positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if known.is_empty() {
            continue;
        }
        let partitions: BTreeSet<_> = known.keys().cloned().collect();
        match source.watermarks(&partitions).await {
            Ok(watermarks) => {
                let lag: u64 = known
                    .iter()
                    .filter_map(|(tp, &position)| {
                        let end = watermarks.get(tp)?.stable_end;
                        u64::try_from(end.saturating_sub(position)).ok()
                    })
                    .sum();
                debug!(target: PROGRESS_TARGET, message = "Lag.", total_lag = lag, partitions = known.len());
            }
            Err(error) => debug!(%error, "Cannot measure the lag; trying again."),
        }
    }
}
