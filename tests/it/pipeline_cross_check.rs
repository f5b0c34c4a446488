//! The start-up cross-check: a checkpoint that was lost, or restored from an old copy, is behind
//! the sink's commit table; the stateless main job then resumes from the sink and says so, with
//! nothing lost and nothing doubled.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::common::TestEnv;
use crate::pipeline_support::{LogCapture, Running, assert_exactly_once, pipeline_toml, produce};
use crate::sink_support::TestDb;

const PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(120);
const RESUMED: &str = "The sink is ahead of the checkpoint";

async fn sqlite_db(env: &TestEnv) -> Result<TestDb> {
    let lite = env.sqlite()?;
    let pool = sqlx::SqlitePool::connect(&lite.url).await?;
    Ok(TestDb::Sqlite(lite, pool))
}

#[tokio::test(flavor = "current_thread")]
async fn pipeline_resumes_from_the_sink_when_the_checkpoint_is_lost() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("lost-ckpt", PARTITIONS).await?;
    let producer = env.producer()?;
    let db = sqlite_db(env).await?;
    let dir = tempfile::tempdir()?;
    let checkpoint = dir.path().join("checkpoint");
    let config = pipeline_toml(env, &topic, db.url(), &checkpoint, "");

    produce(&producer, &topic, 0..2_000, PARTITIONS).await?;
    Running::start(&config)?
        .stop_at(&db, 2_000, TIMEOUT)
        .await?;
    std::fs::remove_dir_all(&checkpoint)?;

    produce(&producer, &topic, 2_000..3_000, PARTITIONS).await?;
    let log = LogCapture::start();
    Running::start(&config)?
        .stop_at(&db, 3_000, TIMEOUT)
        .await?;
    assert_exactly_once(&db, 3_000).await?;
    let text = log.text();
    ensure!(
        text.contains(RESUMED),
        "no word of the resume in the log:\n{text}"
    );
    ensure!(
        text.contains("checkpoint none, sink 500"),
        "the log names the partitions and offsets:\n{text}"
    );

    // The rewritten checkpoint is an ordinary one: the next start resumes from it quietly.
    produce(&producer, &topic, 3_000..3_400, PARTITIONS).await?;
    let log = LogCapture::start();
    Running::start(&config)?
        .stop_at(&db, 3_400, TIMEOUT)
        .await?;
    assert_exactly_once(&db, 3_400).await?;
    ensure!(!log.text().contains(RESUMED), "{}", log.text());
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn pipeline_resumes_from_the_sink_when_the_checkpoint_is_an_old_copy() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("old-ckpt", PARTITIONS).await?;
    let producer = env.producer()?;
    let db = sqlite_db(env).await?;
    let dir = tempfile::tempdir()?;
    let checkpoint = dir.path().join("checkpoint");
    let backup = dir.path().join("backup");
    let config = pipeline_toml(env, &topic, db.url(), &checkpoint, "");

    produce(&producer, &topic, 0..1_000, PARTITIONS).await?;
    Running::start(&config)?
        .stop_at(&db, 1_000, TIMEOUT)
        .await?;
    copy_dir(&checkpoint, &backup)?;
    produce(&producer, &topic, 1_000..2_000, PARTITIONS).await?;
    Running::start(&config)?
        .stop_at(&db, 2_000, TIMEOUT)
        .await?;

    // Restore the old copy, as an operator restoring last night's backup would.
    std::fs::remove_dir_all(&checkpoint)?;
    copy_dir(&backup, &checkpoint)?;
    produce(&producer, &topic, 2_000..2_500, PARTITIONS).await?;
    let log = LogCapture::start();
    Running::start(&config)?
        .stop_at(&db, 2_500, TIMEOUT)
        .await?;
    assert_exactly_once(&db, 2_500).await?;
    let text = log.text();
    ensure!(text.contains(RESUMED), "{text}");
    ensure!(
        text.contains("checkpoint 250, sink 500"),
        "the log names both positions:\n{text}"
    );
    // The old files are kept beside the checkpoint, for inspection.
    let set_aside = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoint.behind-sink-")
        })
        .context("the old checkpoint's files were not kept")?;
    ensure!(std::fs::read_dir(set_aside.path())?.count() > 0);
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
