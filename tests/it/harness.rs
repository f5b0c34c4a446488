//! Proves the harness itself against the real services: Kafka keeps every record where it was
//! produced, and both databases honour commit and rollback.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::common::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn kafka_keeps_every_record_by_partition_and_offset() -> Result<()> {
    const RECORDS: usize = 10_000;
    const PARTITIONS: i32 = 4;
    let env = TestEnv::get().await;
    let topic = env.topic("harness", PARTITIONS).await?;
    topic
        .produce_keyed(&env.producer()?, RECORDS, PARTITIONS)
        .await?;

    // Assign, never subscribe: the direct source reads exactly this way.
    let consumer: BaseConsumer = env
        .kafka_config()
        .set("group.id", TestEnv::unique_name("harness"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(&topic.name, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;

    let per_partition = RECORDS / usize::try_from(PARTITIONS)?;
    let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let consumer = tokio::task::spawn_blocking(move || -> Result<BTreeMap<(i32, i64), String>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < RECORDS {
            ensure!(
                std::time::Instant::now() < deadline,
                "read only {} of {RECORDS} records in 60 s",
                seen.len()
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            let key = String::from_utf8(message.key().context("record without key")?.to_vec())?;
            let previous = seen.insert((message.partition(), message.offset()), key);
            ensure!(previous.is_none(), "offset read twice");
        }
        Ok(seen)
    });
    let seen = consumer.await??;

    // Round-robin production puts record i at partition i % 4, offset i / 4.
    for i in 0..RECORDS {
        let partition = i32::try_from(i % 4)?;
        let offset = i64::try_from(i / 4)?;
        let key = seen
            .get(&(partition, offset))
            .with_context(|| format!("record {i} missing at {partition}@{offset}"))?;
        ensure!(
            key == &format!("key-{i}"),
            "{partition}@{offset} holds {key}, not key-{i}"
        );
    }
    for p in 0..PARTITIONS {
        let count = seen.keys().filter(|(partition, _)| *partition == p).count();
        ensure!(count == per_partition, "partition {p} has {count} records");
    }
    Ok(())
}

/// Commits ten rows, then rolls back an insert and a delete: only the ten rows remain. The same
/// test for each database, with its own placeholders and its own fresh schema or database.
macro_rules! commit_and_rollback_test {
    ($name:ident, $fresh:ident, $create:literal, $insert:literal) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() -> Result<()> {
            let env = TestEnv::get().await;
            let db = env.$fresh().await?;
            let pool = &db.pool;
            sqlx::query($create).execute(pool).await?;

            let mut tx = pool.begin().await?;
            for id in 0..10_i64 {
                sqlx::query($insert)
                    .bind(id)
                    .bind(format!("item {id}"))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;

            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO items (id, name) VALUES (100, 'never')")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM items WHERE id < 5")
                .execute(&mut *tx)
                .await?;
            tx.rollback().await?;

            let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM items ORDER BY id")
                .fetch_all(pool)
                .await?;
            let expected: Vec<(i64, String)> =
                (0..10).map(|id| (id, format!("item {id}"))).collect();
            ensure!(rows == expected, "after rollback the table holds {rows:?}");
            Ok(())
        }
    };
}

commit_and_rollback_test!(
    postgres_commits_and_rolls_back,
    postgres_schema,
    "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    "INSERT INTO items (id, name) VALUES ($1, $2)"
);

commit_and_rollback_test!(
    mariadb_commits_and_rolls_back,
    mysql_database,
    "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL) ENGINE=InnoDB",
    "INSERT INTO items (id, name) VALUES (?, ?)"
);

#[tokio::test(flavor = "multi_thread")]
async fn postgres_test_schema_is_the_search_path() -> Result<()> {
    let env = TestEnv::get().await;
    let schema = env.postgres_schema().await?;
    sqlx::query("CREATE TABLE items (id BIGINT PRIMARY KEY)")
        .execute(&schema.pool)
        .await?;
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'items' AND table_schema = $1",
    )
    .bind(&schema.schema)
    .fetch_optional(&schema.pool)
    .await?;
    ensure!(found.is_some(), "table not created in the test schema");
    Ok(())
}
