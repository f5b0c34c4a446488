//! `weir status` after a run: the committed offsets from the sink, the checkpoint's positions,
//! Kafka's end offsets and the lag of what arrived since.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::common::TestEnv;
use crate::pipeline_support::{Running, pipeline_toml, produce};
use crate::sink_support::TestDb;

const PARTITIONS: i32 = 2;
const READ: i64 = 40;
const WAITING: i64 = 6;

fn weir_status(file: &std::path::Path, json: bool) -> Result<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.arg("status").arg(file);
    if json {
        command.arg("--json");
    }
    let output = command.output()?;
    ensure!(
        output.status.success(),
        "weir status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_weir_status_shows_committed_offsets_and_lag_without_a_running_pipeline() -> Result<()>
{
    let env = TestEnv::get().await;
    let topic = env.topic("ops-status", PARTITIONS).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    let toml = pipeline_toml(env, &topic, db.url(), &dir.path().join("checkpoint"), "");
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, &toml)?;

    let producer = env.producer()?;
    produce(&producer, &topic, 0..READ, PARTITIONS).await?;
    Running::start(&toml)?
        .stop_at(&db, READ, Duration::from_secs(60))
        .await?;
    // Arrives after the pipeline stopped: the lag.
    produce(&producer, &topic, READ..READ + WAITING, PARTITIONS).await?;

    let report: serde_json::Value = serde_json::from_str(&weir_status(&file, true)?)?;
    let partitions = report["partitions"].as_array().context("no partitions")?;
    ensure!(partitions.len() == 2, "{report:#}");
    let sum = |key: &str| {
        partitions
            .iter()
            .filter_map(|p| p[key].as_i64())
            .sum::<i64>()
    };
    ensure!(sum("committed") == READ, "committed: {report:#}");
    ensure!(sum("checkpoint") == READ, "checkpoint: {report:#}");
    ensure!(sum("end") == READ + WAITING, "end: {report:#}");
    ensure!(
        sum("lag") == WAITING && report["total_lag"] == WAITING,
        "lag: {report:#}"
    );
    ensure!(
        partitions
            .iter()
            .all(|p| p["last_commit_ms"].as_i64().is_some()),
        "no last commit: {report:#}"
    );

    let text = weir_status(&file, false)?;
    ensure!(
        text.contains("LAST COMMIT") && text.contains(&topic.name),
        "{text}"
    );
    ensure!(text.contains(&format!("total lag   {WAITING}")), "{text}");
    println!("{text}");
    Ok(())
}
