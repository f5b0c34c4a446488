//! Starts Kafka, PostgreSQL and MySQL with testcontainers, for users who have a Docker engine
//! and no services of their own (`cargo test --features testcontainers`). CI and the project's
//! own machines use `scripts/services` instead.

use anyhow::{Context, Result};
use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::mysql::Mysql;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

use super::TestEnv;

/// Starts the three containers; they live as long as the test process (the testcontainers
/// reaper removes them afterwards).
pub(super) async fn start() -> Result<TestEnv> {
    let kafka = Kafka::default().start().await.context("starting Kafka")?;
    let postgres = Postgres::default()
        .start()
        .await
        .context("starting PostgreSQL")?;
    let mysql = Mysql::default().start().await.context("starting MySQL")?;
    let env = TestEnv {
        brokers: format!("127.0.0.1:{}", kafka.get_host_port_ipv4(KAFKA_PORT).await?),
        postgres_url: format!(
            "postgres://postgres:postgres@127.0.0.1:{}/postgres",
            postgres.get_host_port_ipv4(5432).await?
        ),
        mysql_url: format!(
            "mysql://root@127.0.0.1:{}/test",
            mysql.get_host_port_ipv4(3306).await?
        ),
    };
    // The containers must outlive every test of this process.
    std::mem::forget((kafka, postgres, mysql));
    Ok(env)
}
