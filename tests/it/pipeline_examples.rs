//! Every pipeline file shipped in `examples/pipelines/` and `docker/` loads with the environment
//! it documents, and its table can be created on the database it names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use weir::config::PipelineConfig;
use weir::sink::{Dialect, Sink, SqlSink};

use crate::common::TestEnv;
use crate::sink_support::TestDb;

fn pipeline_files() -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    ensure!(files.len() >= 3, "examples/pipelines holds {files:?}");
    Ok(files)
}

fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<PipelineConfig> {
    let text = std::fs::read_to_string(path)?;
    PipelineConfig::from_toml_str_with_env(&text, env)
        .with_context(|| format!("{} does not load", path.display()))
}

#[tokio::test]
async fn pipeline_example_files_load_and_create_their_tables() -> Result<()> {
    let env = TestEnv::get().await;
    for path in pipeline_files()? {
        // The defaults alone must give a working file: nothing is required from the environment.
        let config = load(&path, |_| None)?;
        let dialect = Dialect::from_url(&config.sink.url).context("a sink URL weir supports")?;
        let db = match dialect {
            Dialect::Postgres => TestDb::Postgres(env.postgres_schema().await?),
            Dialect::MySql => TestDb::MySql(env.mysql_database().await?),
            Dialect::Sqlite => {
                let lite = env.sqlite()?;
                let pool = sqlx::SqlitePool::connect(&lite.url).await?;
                TestDb::Sqlite(lite, pool)
            }
        };
        let mut sink_config = config.sink.clone();
        sink_config.url = db.url().to_owned();
        let mut sink = SqlSink::new(sink_config)?;
        sink.open()
            .await
            .with_context(|| format!("{}: the sink does not open", path.display()))?;
        ensure!(
            db.count(&config.sink.table).await? == 0,
            "{}",
            path.display()
        );
        sink.close().await;
    }
    Ok(())
}

#[test]
fn pipeline_quickstart_file_uses_the_embedded_default() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = load(&dir.join("examples/pipelines/quickstart.toml"), |_| None)?;
    ensure!(config.sink.url == weir::sink::DEFAULT_SQLITE_URL);
    ensure!(config.pipeline.checkpoint_dir == Path::new("checkpoint"));
    Ok(())
}

#[test]
fn pipeline_docker_file_loads_with_the_compose_environment() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/pipeline.toml");
    let compose = |name: &str| {
        let value = match name {
            "WEIR_KAFKA_BROKERS" => "kafka:9092",
            "WEIR_POSTGRES_URL" => "postgres://weir:weir@postgres:5432/weir",
            "WEIR_MYSQL_URL" => "mysql://weir:weir@mysql:3306/weir",
            _ => return None,
        };
        Some(value.to_owned())
    };
    for config in [load(&path, compose)?, load(&path, |_| None)?] {
        ensure!(config.source.brokers == "kafka:9092");
        ensure!(
            config
                .sink
                .url
                .starts_with("postgres://weir:weir@postgres:5432/")
        );
        ensure!(config.pipeline.checkpoint_dir.starts_with("/var/lib/weir"));
    }
    Ok(())
}
