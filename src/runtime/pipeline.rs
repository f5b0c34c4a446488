//! The main job assembled from a pipeline file: Kafka topics into a SQL table.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::job::TableJob;
use super::scheduler::{RunSummary, Schedule, Scheduler};
use crate::checkpoint::{CheckpointStore, PipelineIdentity};
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::rate::RateController;
use crate::sink::{Sink, SqlSink};
use crate::source::{KafkaSource, Planner};

/// The identity a pipeline file gives its checkpoint: what must not change silently.
pub fn pipeline_identity(config: &PipelineConfig) -> PipelineIdentity {
    PipelineIdentity::new(
        config.pipeline.name.clone(),
        config.source.topics.iter().cloned(),
        config.sink.identity(),
    )
}

/// Runs the pipeline of `config` until `shutdown` is cancelled (or `max_batches` new batches
/// ran): recovers from the checkpoint, then consumes the topics into the table.
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
    let dir = section.checkpoint_dir.clone();
    let store = tokio::task::spawn_blocking(move || CheckpointStore::open(&dir))
        .await
        .map_err(|e| Error::TaskFailed {
            what: "opening the checkpoint".to_owned(),
            message: e.to_string(),
        })??;

    let mut sink = SqlSink::connect(&config.sink).await?;
    sink.open().await?;
    info!(
        message = "Sink ready.",
        sink = %config.sink.identity(),
        table = %config.sink.table,
    );

    let source = KafkaSource::connect(&config.source, &config.group_id())?;
    let planner = Planner::new(config.source.on_data_loss);
    let rate = RateController::new(config.source.rate_config(), section.batch_interval)?;
    let parallelism = usize::try_from(config.sink.pool_size).unwrap_or(1);
    let job = TableJob::new(
        section.name.clone(),
        config.source.topics.clone(),
        Arc::new(sink),
        parallelism,
    );
    let schedule = Schedule {
        pipeline: section.name.clone(),
        batch_interval: section.batch_interval,
        checkpoint_interval: section.checkpoint_interval(),
        metadata_refresh_interval: config.source.metadata_refresh_interval,
        commit_offsets: config.source.commit_offsets,
        identity: pipeline_identity(config),
        max_batches,
    };
    Scheduler::new(schedule, source, planner, rate, store, job, shutdown)
        .run()
        .await
}
