//! The start-up cross-check: a checkpoint that was lost, or restored from an old copy, is behind
//! the sink's commit table; the stateless main job then resumes from the sink and says so, with
//! nothing lost and nothing doubled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rdkafka::producer::FutureProducer;
use tempfile::TempDir;

use crate::common::{TestEnv, TestTopic};
use crate::pipeline_support::{LogCapture, Running, assert_exactly_once, pipeline_toml, produce};
use crate::sink_support::TestDb;

const PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(120);
const RESUMED: &str = "The sink is ahead of the checkpoint";

/// A topic, a SQLite database and a checkpoint directory, and the pipeline between them.
struct Rig {
    topic: TestTopic,
    producer: FutureProducer,
    db: TestDb,
    dir: TempDir,
    checkpoint: PathBuf,
    config: String,
}

impl Rig {
    async fn new(prefix: &str) -> Result<Self> {
        let env = TestEnv::get().await;
        let topic = env.topic(prefix, PARTITIONS).await?;
        let lite = env.sqlite()?;
        let pool = sqlx::SqlitePool::connect(&lite.url).await?;
        let db = TestDb::Sqlite(lite, pool);
        let dir = tempfile::tempdir()?;
        let checkpoint = dir.path().join("checkpoint");
        let config = pipeline_toml(env, &topic, db.url(), &checkpoint, "");
        Ok(Self {
            producer: env.producer()?,
            topic,
            db,
            dir,
            checkpoint,
            config,
        })
    }

    /// Produces orders `ids`, then runs the pipeline until the table holds `0..ids.end`.
    async fn run_through(&self, ids: std::ops::Range<i64>) -> Result<()> {
        let end = ids.end;
        produce(&self.producer, &self.topic, ids, PARTITIONS).await?;
        Running::start(&self.config)?
            .stop_at(&self.db, end, TIMEOUT)
            .await?;
        assert_exactly_once(&self.db, end).await
    }
}

#[tokio::test(flavor = "current_thread")]
async fn pipeline_resumes_from_the_sink_when_the_checkpoint_is_lost() -> Result<()> {
    let rig = Rig::new("lost-ckpt").await?;
    rig.run_through(0..2_000).await?;
    std::fs::remove_dir_all(&rig.checkpoint)?;

    let log = LogCapture::start();
    rig.run_through(2_000..3_000).await?;
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
    let log = LogCapture::start();
    rig.run_through(3_000..3_400).await?;
    ensure!(!log.text().contains(RESUMED), "{}", log.text());
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn pipeline_resumes_from_the_sink_when_the_checkpoint_is_an_old_copy() -> Result<()> {
    let rig = Rig::new("old-ckpt").await?;
    let backup = rig.dir.path().join("backup");
    rig.run_through(0..1_000).await?;
    copy_dir(&rig.checkpoint, &backup)?;
    rig.run_through(1_000..2_000).await?;

    // Restore the old copy, as an operator restoring last night's backup would.
    std::fs::remove_dir_all(&rig.checkpoint)?;
    copy_dir(&backup, &rig.checkpoint)?;
    let log = LogCapture::start();
    rig.run_through(2_000..2_500).await?;
    let text = log.text();
    ensure!(text.contains(RESUMED), "{text}");
    ensure!(
        text.contains("checkpoint 250, sink 500"),
        "the log names both positions:\n{text}"
    );
    // The old files are kept beside the checkpoint, for inspection.
    let set_aside = std::fs::read_dir(rig.dir.path())?
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
