//! Output partition ids come from the topic-partition itself: reordering `source.topics`, or
//! adding a topic in front, changes no commit key, so a restart continues exactly where the
//! sink's commits end, with nothing doubled and no contiguity error.

use std::time::Duration;

use anyhow::{Result, ensure};

use crate::common::TestEnv;
use crate::pipeline_support::{Running, TABLE, pipeline_toml, produce};
use crate::sink_support::TestDb;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordering_and_adding_topics_keeps_every_commit_key() -> Result<()> {
    let env = TestEnv::get().await;
    let (a, b, c) = (
        env.topic("order-a", 2).await?,
        env.topic("order-b", 2).await?,
        env.topic("order-c", 2).await?,
    );
    let producer = env.producer()?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    let one_topic = pipeline_toml(env, &a, db.url(), &dir.path().join("checkpoint"), "");
    let topics = |names: &[&str]| {
        let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        one_topic.replace(
            &format!("topics = [\"{}\"]", a.name),
            &format!("topics = [{}]", list.join(", ")),
        )
    };

    produce(&producer, &a, 0..100, 2).await?;
    produce(&producer, &b, 100..200, 2).await?;
    Running::start(&topics(&[&a.name, &b.name]))?
        .stop_at(&db, 200, TIMEOUT)
        .await?;

    // The same topics in another order.
    produce(&producer, &a, 200..250, 2).await?;
    produce(&producer, &b, 250..300, 2).await?;
    Running::start(&topics(&[&b.name, &a.name]))?
        .stop_at(&db, 300, TIMEOUT)
        .await?;

    // A topic added in front of the others, which changes the pipeline's identity: the
    // checkpoint is reset with its offsets kept, as the fingerprint error advises.
    produce(&producer, &c, 300..350, 2).await?;
    produce(&producer, &a, 350..400, 2).await?;
    let three = topics(&[&c.name, &b.name, &a.name]);
    let config = weir::config::PipelineConfig::from_toml_str(&three)?;
    weir::checkpoint::reset_keep_offsets(
        &config.pipeline.checkpoint_dir,
        &weir::runtime::pipeline_identity(&config),
    )?;
    Running::start(&three)?.stop_at(&db, 400, TIMEOUT).await?;

    let (rows, ids): (i64, i64) = db
        .fetch(&format!("SELECT COUNT(*), COUNT(DISTINCT id) FROM {TABLE}"))
        .await?
        .pop()
        .unwrap_or_default();
    ensure!(
        (rows, ids) == (400, 400),
        "expected orders 0..400 once each: {rows} rows, {ids} ids"
    );
    // One output partition per Kafka partition, whatever the topic order was.
    let partitions: Vec<(i64,)> = db
        .fetch("SELECT COUNT(DISTINCT partition_id) FROM weir_offsets")
        .await?;
    ensure!(
        partitions[0].0 == 6,
        "6 Kafka partitions, {} output partitions",
        partitions[0].0
    );
    Ok(())
}
