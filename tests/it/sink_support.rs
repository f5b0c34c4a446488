//! Shared helpers of the sink tests: one fresh database of each kind, records, and reads.
#![allow(dead_code)]

use anyhow::Result;
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, FromRow};
use weir::plan::{BatchTime, OffsetRange, TopicPartition};
use weir::sink::{CommitKey, RetryPolicy, Sink, SqlSink, SqlSinkConfig, WriteOutcome};
use weir::source::{PartitionBatch, Record};

use crate::common::{TestEnv, TestMysqlDatabase, TestPgSchema, TestSqlite};

/// The topic every sink test reads from.
pub const TOPIC: &str = "orders";

/// A fresh database of one kind.
pub enum TestDb {
    Postgres(TestPgSchema),
    MySql(TestMysqlDatabase),
    Sqlite(TestSqlite, SqlitePool),
}

/// One fresh database of each kind.
pub async fn every_db() -> Result<Vec<TestDb>> {
    let env = TestEnv::get().await;
    let lite = env.sqlite()?;
    let pool = SqlitePool::connect(&lite.url).await?;
    Ok(vec![
        TestDb::Postgres(env.postgres_schema().await?),
        TestDb::MySql(env.mysql_database().await?),
        TestDb::Sqlite(lite, pool),
    ])
}

impl TestDb {
    pub fn url(&self) -> &str {
        match self {
            Self::Postgres(d) => &d.url,
            Self::MySql(d) => &d.url,
            Self::Sqlite(d, _) => &d.url,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::MySql(_) => "mysql",
            Self::Sqlite(..) => "sqlite",
        }
    }

    /// A sink from the `[sink]` TOML `body` (without `url`), opened, with quick retries.
    pub async fn sink(&self, body: &str) -> Result<SqlSink> {
        let text = format!("url = {:?}\n{body}", self.url());
        let config: SqlSinkConfig = toml::from_str(&text)?;
        let retry = RetryPolicy {
            max_attempts: 3,
            initial_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(50),
        };
        let mut sink = SqlSink::new(config)?.with_retry_policy(retry);
        sink.open().await?;
        Ok(sink)
    }

    /// Every row of `sql`.
    pub async fn fetch<T>(&self, sql: &str) -> Result<Vec<T>>
    where
        T: for<'r> FromRow<'r, PgRow>
            + for<'r> FromRow<'r, MySqlRow>
            + for<'r> FromRow<'r, SqliteRow>
            + Send
            + Unpin,
    {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match self {
            Self::Postgres(d) => sqlx::query_as(sql).fetch_all(&d.pool).await?,
            Self::MySql(d) => sqlx::query_as(sql).fetch_all(&d.pool).await?,
            Self::Sqlite(_, pool) => sqlx::query_as(sql).fetch_all(pool).await?,
        })
    }

    /// `SELECT COUNT(*)` of `table`.
    pub async fn count(&self, table: &str) -> Result<i64> {
        let rows: Vec<(i64,)> = self.fetch(&format!("SELECT COUNT(*) FROM {table}")).await?;
        Ok(rows[0].0)
    }
}

/// A record of partition `TOPIC/0` with a JSON (or any) value.
pub fn record(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
    Record {
        offset,
        timestamp: Some(1_714_557_600_000 + offset),
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: vec![("h".to_owned(), Some(b"\x00\xff".to_vec()))],
    }
}

/// The range `[from, until)` of `TOPIC/0`.
pub fn range(from: i64, until: i64) -> OffsetRange {
    OffsetRange::new(TopicPartition::new(TOPIC, 0), from, until)
}

/// Records at consecutive offsets from `from`, values as given.
pub fn batch(from: i64, values: &[Option<&str>]) -> Vec<PartitionBatch> {
    let until = from + i64::try_from(values.len()).unwrap_or(0);
    let records = values
        .iter()
        .zip(from..)
        .map(|(v, offset)| record(offset, None, v.map(str::as_bytes)))
        .collect();
    vec![PartitionBatch {
        range: range(from, until),
        records,
    }]
}

/// The key of batch `t` (milliseconds), partition 0, of pipeline `p`.
pub fn key(t: i64) -> CommitKey {
    CommitKey::new("p", BatchTime::from_millis(t), 0)
}

/// Writes `input` as batch `t` covering its ranges.
pub async fn write(
    sink: &SqlSink,
    t: i64,
    input: &[PartitionBatch],
) -> weir::Result<weir::sink::WriteOutcome> {
    let ranges: Vec<OffsetRange> = input.iter().map(|b| b.range.clone()).collect();
    sink.write(&key(t), &ranges, input).await
}

/// A committed write's outcome.
pub fn committed(rows: u64, skipped: u64, dead_letters: u64) -> WriteOutcome {
    WriteOutcome::Committed {
        rows,
        skipped,
        dead_letters,
    }
}

/// The `[[sink.columns]]` of a table `(id bigint, body text)`.
pub const ID_BODY_COLUMNS: &str = "[[columns]]\nname = \"id\"\ntype = \"bigint\"\n[[columns]]\nname = \"body\"\ntype = \"text\"\n";
