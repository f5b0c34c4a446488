//! Pipelines through the broker's SASL_SSL listener (`scripts/services`: TLS with a CA of its
//! own, SCRAM-SHA-512 user), configured with `[source.properties]`: records land exactly once; a
//! wrong password or an untrusted certificate stops `weir run` and `run_pipeline` within a
//! bounded time with an error that names what to fix, and never shows the password.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio_util::sync::CancellationToken;
use weir::config::PipelineConfig;
use weir::runtime::run_pipeline;

use crate::common::{TestEnv, TestTopic};
use crate::pipeline_support::{Running, assert_exactly_once, pipeline_toml, produce};
use crate::sink_support::TestDb;

const TIMEOUT: Duration = Duration::from_secs(120);
/// How long a refused pipeline may take to stop: a request timeout (10 s) and start-up.
const REFUSED_WITHIN: Duration = Duration::from_secs(45);
/// A password no test server accepts, distinct enough to grep for.
const WRONG_PASSWORD: &str = "wrong-pass-5f2c9e";

/// The secured listener, from what `scripts/services env` prints.
struct Secured {
    brokers: String,
    user: String,
    password: String,
    ca: String,
}

impl Secured {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
                panic!(
                    "{name} is not set: the broker's SASL_SSL listener is missing. Run `scripts/services up && eval \"$(scripts/services env)\"`"
                )
            })
        };
        Self {
            brokers: var("WEIR_KAFKA_SECURE_BROKERS"),
            user: var("WEIR_KAFKA_SASL_USER"),
            password: var("WEIR_KAFKA_SASL_PASSWORD"),
            ca: var("WEIR_KAFKA_CA"),
        }
    }

    /// A pipeline file reading `topic` through the secured listener as `password`, trusting
    /// `ca` (librdkafka's default trust store when `None`).
    fn pipeline(
        &self,
        env: &TestEnv,
        topic: &TestTopic,
        db: &TestDb,
        dir: &std::path::Path,
        password: &str,
        ca: Option<&str>,
    ) -> String {
        let mut secured = env.clone();
        secured.brokers.clone_from(&self.brokers);
        let ca = ca.map_or(String::new(), |ca| {
            format!("\"ssl.ca.location\" = {ca:?}\n")
        });
        let properties = format!(
            "[source.properties]\n\"security.protocol\" = \"sasl_ssl\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = {user:?}\n\"sasl.password\" = {password:?}\n{ca}",
            user = self.user,
        );
        pipeline_toml(&secured, topic, db.url(), dir, &properties)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_reads_through_sasl_ssl_exactly_once() -> Result<()> {
    let secured = Secured::from_env();
    let env = TestEnv::get().await;
    let topic = env.topic("secured", 2).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    let config = secured.pipeline(
        env,
        &topic,
        &db,
        &dir.path().join("checkpoint"),
        &secured.password,
        Some(&secured.ca),
    );
    // Produced through the plaintext listener: the same log, read through the secured one.
    produce(&env.producer()?, &topic, 0..500, 2).await?;
    Running::start(&config)?.stop_at(&db, 500, TIMEOUT).await?;
    produce(&env.producer()?, &topic, 500..1000, 2).await?;
    Running::start(&config)?.stop_at(&db, 1000, TIMEOUT).await?;
    assert_exactly_once(&db, 1000).await
}

/// Runs `run_pipeline` on `config` and returns its error, which must come within
/// [`REFUSED_WITHIN`].
async fn refused_in_process(config: &str) -> Result<String> {
    let config = PipelineConfig::from_toml_str(config)?;
    let run = run_pipeline(&config, CancellationToken::new(), None);
    let ended = tokio::time::timeout(REFUSED_WITHIN, run)
        .await
        .with_context(|| format!("run_pipeline still runs after {REFUSED_WITHIN:?}"))?;
    match ended {
        Ok(summary) => anyhow::bail!("run_pipeline succeeded: {summary:?}"),
        Err(error) => {
            ensure!(!error.is_retryable(), "a retryable error: {error}");
            Ok(error.to_string())
        }
    }
}

/// Runs `weir run` on `config` with debug logs and returns everything it printed; it must fail
/// within [`REFUSED_WITHIN`].
async fn refused_weir_run(config: &str, dir: &std::path::Path) -> Result<String> {
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, config)?;
    // Into a file, not a pipe: a pipe nobody reads would stall a talkative child.
    let log = dir.join("weir-run.log");
    let output = std::fs::File::create(&log)?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(&file)
        .env("WEIR_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()?;
    let deadline = std::time::Instant::now() + REFUSED_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            anyhow::bail!(
                "weir run still runs after {REFUSED_WITHIN:?}: {}",
                std::fs::read_to_string(&log)?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log)?;
    ensure!(!status.success(), "weir run succeeded: {text}");
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_with_a_clear_error_that_hides_it() -> Result<()> {
    let secured = Secured::from_env();
    let env = TestEnv::get().await;
    let topic = env.topic("secured-refused", 1).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    produce(&env.producer()?, &topic, 0..10, 1).await?;
    let config = secured.pipeline(
        env,
        &topic,
        &db,
        &dir.path().join("checkpoint"),
        WRONG_PASSWORD,
        Some(&secured.ca),
    );

    let error = refused_in_process(&config).await?;
    ensure!(
        error.contains("authentication failed") && error.contains("sasl.password"),
        "the error does not name the problem: {error}"
    );
    ensure!(
        !error.contains(WRONG_PASSWORD),
        "the error shows the password: {error}"
    );

    let output = refused_weir_run(&config, dir.path()).await?;
    ensure!(
        output.contains("authentication failed") && output.contains("sasl.password"),
        "weir run does not name the problem: {output}"
    );
    ensure!(
        !output.contains(WRONG_PASSWORD),
        "weir run shows the password: {output}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_with_a_clear_error() -> Result<()> {
    let secured = Secured::from_env();
    let env = TestEnv::get().await;
    let topic = env.topic("secured-untrusted", 1).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    // No `ssl.ca.location`: the default trust store does not hold the test CA.
    let config = secured.pipeline(
        env,
        &topic,
        &db,
        &dir.path().join("checkpoint"),
        &secured.password,
        None,
    );
    let error = refused_in_process(&config).await?;
    ensure!(
        error.contains("TLS") && error.contains("ssl.ca.location"),
        "the error does not name the problem: {error}"
    );
    ensure!(
        !error.contains(&secured.password),
        "the error shows the password: {error}"
    );
    Ok(())
}
