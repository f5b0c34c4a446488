//! Invariant 6 when a topic is deleted and recreated under the same name while the pipeline is
//! stopped: the new log ends below the stored position. The pipeline must not wait silently for
//! offsets above its old position (the new records below it would be lost): it stops with an
//! error that says what happened, or, under `on_data_loss = "skip"`, reads the new topic from its
//! first offset and records the gap, into a real PostgreSQL table.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

use crate::common::TestEnv;
use crate::pipeline_support::{Running, TABLE, pipeline_toml, produce};
use crate::sink_support::TestDb;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Deletes `topic` and creates it again with one partition, once the broker lets it.
async fn recreate(env: &TestEnv, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = env.kafka_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&[topic], &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("deleting topic {topic}: {code}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    loop {
        match admin.create_topics([&new], &options).await?.pop() {
            Some(Ok(_)) => break,
            // The deletion is still under way.
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => bail!("recreating topic {topic}: {other:?}"),
        }
    }
    // The new topic answers metadata once its leader is elected.
    let consumer: rdkafka::consumer::BaseConsumer = env.kafka_config().create()?;
    while consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .is_err()
    {
        ensure!(Instant::now() < deadline, "topic {topic} has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_stops_the_pipeline_or_is_read_from_its_start() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("recreated", 1).await?;
    let producer = env.producer()?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    let config = pipeline_toml(
        env,
        &topic,
        db.url(),
        &dir.path().join("checkpoint"),
        "on_data_loss = \"fail\"",
    );

    produce(&producer, &topic, 0..100, 1).await?;
    Running::start(&config)?.stop_at(&db, 100, TIMEOUT).await?;

    // Deleted and recreated while weir is stopped; the new log ends at 30, below position 100.
    recreate(env, &topic.name).await?;
    produce(&producer, &topic, 100..130, 1).await?;

    let error =
        match tokio::time::timeout(TIMEOUT, Running::start(&config)?.stop_at(&db, 101, TIMEOUT))
            .await
        {
            Ok(Err(error)) => format!("{error:#}"),
            Ok(Ok(summary)) => bail!("the pipeline read past a recreated topic: {summary:?}"),
            Err(_) => bail!("the pipeline neither stopped nor read the recreated topic"),
        };
    // (Its message, which says what to do, is checked in the planner's unit tests.)
    ensure!(
        error.contains("LogReplaced") && error.contains("position: 100, log_end: 30"),
        "the pipeline must stop because the log was replaced: {error}"
    );
    ensure!(db.count(TABLE).await? == 100, "nothing more may land");

    // With skip, the new topic is read from its first offset, exactly once.
    let skip = config.replace("on_data_loss = \"fail\"", "on_data_loss = \"skip\"");
    Running::start(&skip)?.stop_at(&db, 130, TIMEOUT).await?;
    let (rows, ids, min, max): (i64, i64, Option<i64>, Option<i64>) = db
        .fetch(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM {TABLE}"
        ))
        .await?
        .pop()
        .context("no answer")?;
    ensure!(
        (rows, ids, min, max) == (130, 130, Some(0), Some(129)),
        "expected orders 0..130 once each: {rows} rows, {ids} ids, from {min:?} to {max:?}"
    );
    // The gap is in the commit table: the old position 100, then the new log from 0.
    let ranges: Vec<(String,)> = db
        .fetch("SELECT ranges FROM weir_commits ORDER BY batch_time")
        .await?;
    ensure!(
        ranges
            .iter()
            .any(|(r,)| r.contains("\"from\":100,\"until\":0")),
        "a commit records the replaced log: {ranges:?}"
    );
    // `weir verify` cannot recompute the old topic's records, and says so instead of a verdict.
    let refused =
        weir::verify::verify(&weir::config::PipelineConfig::from_toml_str(&skip)?, |_| {})
            .await
            .err()
            .context("verify must refuse a pipeline whose log was replaced")?;
    ensure!(refused.to_string().contains("was replaced"), "{refused}");
    Ok(())
}
