//! A database that drops the pipeline's connections mid-run, again and again: every sink session
//! is killed on the database side (`pg_terminate_backend`, MariaDB's `KILL`) about twice a
//! second while the pipeline writes, many of them in the middle of a transaction. The pipeline waits, reconnects,
//! and the table ends with every record exactly once. The servers themselves stay up: other tests
//! share them.

use std::time::Duration;

use anyhow::{Result, ensure};
use sqlx::{MySqlPool, PgPool};
use tokio_util::sync::CancellationToken;

use crate::common::TestEnv;
use crate::pipeline_support::{
    LogCapture, Running, TABLE, assert_exactly_once, pipeline_toml, produce,
};
use crate::sink_support::TestDb;

const PARTITIONS: i32 = 4;
const ORDERS: i64 = 4_000;
/// 100 records per partition per 100 ms batch: the orders take at least ten batches.
const RATE: &str = "max_rate_per_partition = 1000";
/// Time between two rounds of killing.
const KILL_EVERY: Duration = Duration::from_millis(200);
/// How long the offsets rows are held locked before the sessions are killed.
const LOCK_HELD: Duration = Duration::from_millis(250);

/// Kills the sink's sessions until cancelled; returns how many it killed.
///
/// The statements of a sink transaction are quick, too quick to catch in the act, so each round
/// makes them wait first: the killer locks the sink's offsets rows, the sink's transactions stop
/// at their contiguity check (after their commit row), and then every sink session is killed,
/// idle or waiting. The lock is let go, and the next round comes 200 ms later.
async fn kill_sessions(db: Killer, stop: CancellationToken) -> Result<u64> {
    let mut killed = 0;
    while !stop.is_cancelled() {
        killed += match &db {
            Killer::Postgres {
                admin,
                schema,
                application,
            } => {
                let mut lock = admin.begin().await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT 1 FROM \"{schema}\".weir_offsets FOR UPDATE"
                )))
                .execute(&mut *lock)
                .await?;
                tokio::time::sleep(LOCK_HELD).await;
                let rows: Vec<(bool,)> = sqlx::query_as(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(application)
                .fetch_all(&mut *lock)
                .await?;
                lock.rollback().await?;
                rows.into_iter().filter(|(done,)| *done).count()
            }
            Killer::MySql { admin, database } => {
                let mut lock = admin.begin().await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT 1 FROM `{database}`.weir_offsets FOR UPDATE"
                )))
                .execute(&mut *lock)
                .await?;
                tokio::time::sleep(LOCK_HELD).await;
                let ids: Vec<(i64,)> = sqlx::query_as(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                )
                .bind(database)
                .fetch_all(&mut *lock)
                .await?;
                let mut n = 0;
                for (id,) in ids {
                    // The session may have ended by itself since: that is no failure.
                    if sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
                        .execute(&mut *lock)
                        .await
                        .is_ok()
                    {
                        n += 1;
                    }
                }
                lock.rollback().await?;
                n
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(KILL_EVERY) => {}
        }
    }
    Ok(u64::try_from(killed)?)
}

/// Where the sink's sessions are, and an administrator's connection to kill them.
enum Killer {
    Postgres {
        admin: PgPool,
        schema: String,
        application: String,
    },
    MySql {
        admin: MySqlPool,
        database: String,
    },
}

/// Runs the pipeline into `db` (through `url`) while `killer` kills its sessions.
async fn survive(db: &TestDb, url: &str, killer: Killer) -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("sessions-killed", PARTITIONS).await?;
    produce(&env.producer()?, &topic, 0..ORDERS, PARTITIONS).await?;
    let dir = tempfile::tempdir()?;
    let config = pipeline_toml(env, &topic, url, &dir.path().join("checkpoint"), RATE);
    let log = LogCapture::start();
    let running = Running::start(&config)?;

    // Start killing once the sink is open and writing: an `open` that fails is a failed start,
    // which is another story.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while db.count(TABLE).await.unwrap_or(0) == 0 {
        ensure!(
            std::time::Instant::now() < deadline,
            "{}: no rows after 60 s",
            db.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = CancellationToken::new();
    let killing = tokio::spawn(kill_sessions(killer, stop.clone()));
    let finished = running.stop_at(db, ORDERS, Duration::from_secs(240)).await;
    stop.cancel();
    let killed = killing.await??;
    finished?;
    assert_exactly_once(db, ORDERS).await?;
    let text = log.text();
    let retried: Vec<&str> = text.lines().filter(|l| l.contains("retrying")).collect();
    eprintln!(
        "{}: {killed} sink sessions killed mid-run, {} writes retried; {ORDERS} orders exactly once",
        db.name(),
        retried.len()
    );
    for line in retried.iter().take(3) {
        eprintln!("  {line}");
    }
    ensure!(
        killed >= 3,
        "{}: only {killed} sessions were killed",
        db.name()
    );
    ensure!(
        !retried.is_empty(),
        "{}: no write was cut off mid-way, so nothing was shown",
        db.name()
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn pipeline_survives_postgres_killing_its_sessions() -> Result<()> {
    let env = TestEnv::get().await;
    let schema = env.postgres_schema().await?;
    let application = TestEnv::unique_name("weir_sink");
    let url = format!("{}&application_name={application}", schema.url);
    let admin = PgPool::connect(&env.postgres_url).await?;
    let killer = Killer::Postgres {
        admin,
        schema: schema.schema.clone(),
        application,
    };
    survive(&TestDb::Postgres(schema), &url, killer).await
}

#[tokio::test(flavor = "current_thread")]
async fn pipeline_survives_mariadb_killing_its_sessions() -> Result<()> {
    let env = TestEnv::get().await;
    let database = env.mysql_database().await?;
    let admin = MySqlPool::connect(&env.mysql_url).await?;
    let name = database.database.clone();
    let url = database.url.clone();
    let db = TestDb::MySql(database);
    survive(
        &db,
        &url,
        Killer::MySql {
            admin,
            database: name,
        },
    )
    .await
}
