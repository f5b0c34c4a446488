//! The test harness: real Kafka, PostgreSQL and MariaDB, with a fresh topic, schema and database
//! for every test so that tests run in parallel without seeing each other.
//!
//! Services come from the environment that `scripts/services env` prints:
//! `WEIR_KAFKA_BROKERS`, `WEIR_POSTGRES_URL`, `WEIR_MYSQL_URL`. `scripts/test` sets them. When they are
//! unset and the crate is built with the `testcontainers` feature (for users who have a Docker
//! engine), the same three services are started in containers. Otherwise every test fails with one
//! line that says what to run.
//!
//! Everything a test creates is dropped when its guard goes out of scope, even when the test
//! panics. Names carry the process id and a counter, so reruns and parallel tests never collide.
#![allow(dead_code, clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlx::{MySqlPool, PgPool};
use tokio::sync::OnceCell;

#[cfg(feature = "testcontainers")]
mod containers;
pub mod engine;

/// Where the test services are.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// A PostgreSQL URL whose user may create schemas.
    pub postgres_url: String,
    /// A MariaDB/MySQL URL whose user may create databases.
    pub mysql_url: String,
}

static ENV: OnceCell<TestEnv> = OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

const MISSING: &str = "no test services: run `scripts/services up && eval \"$(scripts/services env)\"` (or set WEIR_KAFKA_BROKERS, WEIR_POSTGRES_URL and WEIR_MYSQL_URL; with Docker, build with --features testcontainers)";

impl TestEnv {
    /// The services of this test process, found once.
    pub async fn get() -> &'static TestEnv {
        ENV.get_or_init(|| async {
            match Self::from_env() {
                Some(env) => env,
                None => Self::without_env().await,
            }
        })
        .await
    }

    fn from_env() -> Option<TestEnv> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Some(TestEnv {
            brokers: var("WEIR_KAFKA_BROKERS")?,
            postgres_url: var("WEIR_POSTGRES_URL")?,
            mysql_url: var("WEIR_MYSQL_URL")?,
        })
    }

    #[cfg(feature = "testcontainers")]
    async fn without_env() -> TestEnv {
        containers::start()
            .await
            .unwrap_or_else(|e| panic!("{MISSING} ({e:#})"))
    }

    #[cfg(not(feature = "testcontainers"))]
    async fn without_env() -> TestEnv {
        panic!("{MISSING}")
    }

    /// A name no other test, in this run or an earlier one, uses.
    pub fn unique_name(prefix: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
    }

    /// An rdkafka client configuration pointing at the test broker.
    pub fn kafka_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// A fresh topic with `partitions` partitions, deleted when the guard drops.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> Result<TestTopic> {
        let name = Self::unique_name(&format!("weir-test-{prefix}"));
        let admin: AdminClient<DefaultClientContext> = self.kafka_config().create()?;
        let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&topic], &options).await? {
            result.map_err(|(topic, code)| anyhow::anyhow!("creating topic {topic}: {code}"))?;
        }
        wait_for_topic(&admin, &name, partitions).await?;
        Ok(TestTopic {
            name,
            brokers: self.brokers.clone(),
        })
    }

    /// A producer with idempotence on, so test input has no duplicates of its own.
    pub fn producer(&self) -> Result<FutureProducer> {
        Ok(self
            .kafka_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()?)
    }

    /// A fresh PostgreSQL schema, dropped (with everything in it) when the guard drops.
    pub async fn postgres_schema(&self) -> Result<TestPgSchema> {
        let schema = Self::unique_name("weir_test");
        let admin = PgPool::connect(&self.postgres_url)
            .await
            .with_context(|| format!("connecting to {}", self.postgres_url))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let separator = if self.postgres_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{separator}options[search_path]={schema}",
            self.postgres_url
        );
        let pool = PgPool::connect(&url).await?;
        Ok(TestPgSchema {
            url,
            schema,
            pool,
            admin_url: self.postgres_url.clone(),
        })
    }

    /// A fresh MariaDB database, dropped when the guard drops.
    pub async fn mysql_database(&self) -> Result<TestMysqlDatabase> {
        let database = Self::unique_name("weir_test");
        let admin = MySqlPool::connect(&self.mysql_url)
            .await
            .with_context(|| format!("connecting to {}", self.mysql_url))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let url = replace_url_path(&self.mysql_url, &database);
        let pool = MySqlPool::connect(&url).await?;
        Ok(TestMysqlDatabase {
            url,
            database,
            pool,
            admin_url: self.mysql_url.clone(),
        })
    }

    /// A SQLite database file in a fresh temporary directory.
    pub fn sqlite(&self) -> Result<TestSqlite> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("weir.db");
        Ok(TestSqlite {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            dir,
        })
    }
}

/// Metadata of a just-created topic can lag behind the CreateTopics answer: wait until every
/// partition has a leader.
async fn wait_for_topic(
    admin: &AdminClient<DefaultClientContext>,
    name: &str,
    partitions: i32,
) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(5))?;
        let ready = metadata.topics().iter().any(|t| {
            t.name() == name
                && t.error().is_none()
                && t.partitions().len() == usize::try_from(partitions).unwrap_or(0)
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "topic {name} has no leader for all {partitions} partitions after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn replace_url_path(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs `cleanup` to completion on a runtime of its own: guards drop in sync code, often while
/// the test's runtime is shutting down.
fn run_cleanup<F>(what: String, cleanup: F)
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(cleanup)
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("cleanup of {what} failed: {e:#}"),
        Err(_) => eprintln!("cleanup of {what} panicked"),
    }
}

/// A topic that exists for one test.
#[derive(Debug)]
pub struct TestTopic {
    /// The topic's name.
    pub name: String,
    brokers: String,
}

impl TestTopic {
    /// Produces `count` records with keys `key-<i>` and JSON values `{"id": i}` round-robin over
    /// `partitions` partitions, and waits until every one is acknowledged.
    pub async fn produce_keyed(
        &self,
        producer: &FutureProducer,
        count: usize,
        partitions: i32,
    ) -> Result<()> {
        let mut pending = Vec::with_capacity(count);
        for i in 0..count {
            let key = format!("key-{i}");
            let value = format!("{{\"id\":{i}}}");
            let partition = i32::try_from(i % usize::try_from(partitions)?)?;
            let record = FutureRecord::to(&self.name)
                .partition(partition)
                .key(&key)
                .payload(&value);
            pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for delivery in pending {
            delivery.await?.map_err(|(e, _)| e)?;
        }
        producer.flush(Duration::from_secs(30))?;
        Ok(())
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let name = self.name.clone();
        let brokers = self.brokers.clone();
        run_cleanup(format!("topic {name}"), async move {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()?;
            admin
                .delete_topics(&[name.as_str()], &AdminOptions::new())
                .await?;
            Ok(())
        });
    }
}

/// A PostgreSQL schema that exists for one test.
#[derive(Debug)]
pub struct TestPgSchema {
    /// A URL whose connections use this schema as their search path.
    pub url: String,
    /// The schema's name.
    pub schema: String,
    /// A pool on `url`.
    pub pool: PgPool,
    admin_url: String,
}

impl Drop for TestPgSchema {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let admin_url = self.admin_url.clone();
        run_cleanup(format!("schema {schema}"), async move {
            let admin = PgPool::connect(&admin_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
            Ok(())
        });
    }
}

/// A MariaDB database that exists for one test.
#[derive(Debug)]
pub struct TestMysqlDatabase {
    /// A URL whose default database is this one.
    pub url: String,
    /// The database's name.
    pub database: String,
    /// A pool on `url`.
    pub pool: MySqlPool,
    admin_url: String,
}

impl Drop for TestMysqlDatabase {
    fn drop(&mut self) {
        let database = self.database.clone();
        let admin_url = self.admin_url.clone();
        run_cleanup(format!("database {database}"), async move {
            let admin = MySqlPool::connect(&admin_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{database}`"
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
            Ok(())
        });
    }
}

/// A SQLite database file that exists for one test.
#[derive(Debug)]
pub struct TestSqlite {
    /// `sqlite://…?mode=rwc`.
    pub url: String,
    /// The directory holding the file; removed on drop.
    pub dir: tempfile::TempDir,
}

#[cfg(test)]
mod tests {
    use super::replace_url_path;

    #[test]
    fn database_goes_into_the_url_path() {
        assert_eq!(
            replace_url_path("mysql://u:p@127.0.0.1:13306/weir?ssl-mode=disabled", "t1"),
            "mysql://u:p@127.0.0.1:13306/t1?ssl-mode=disabled"
        );
        assert_eq!(
            replace_url_path("mysql://u:p@h:1", "t1"),
            "mysql://u:p@h:1/t1"
        );
    }
}
