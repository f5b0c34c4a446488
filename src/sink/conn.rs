//! One connection pool and one transaction type over the three databases, so that the commit
//! protocol is written once. Each variant binds [`SqlValue`]s the way its driver needs them
//! (PostgreSQL types its parameters, so even NULLs carry their column type).

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow,
};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Arguments, AssertSqlSafe, ConnectOptions, Connection, Executor, FromRow, Transaction};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::sink::config::redact;
use crate::sink::dialect::Dialect;
use crate::sink::types::ColumnType;
use crate::sink::value::SqlValue;

/// Set on every MySQL connection: a value the column cannot hold is an error, not a silent
/// truncation or zero date, whatever the server's default `sql_mode`.
const MYSQL_SESSION: &str = "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')";

/// A pool of connections to the sink database.
#[derive(Debug, Clone)]
pub(crate) enum SinkPool {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// An open transaction on one pooled connection.
pub(crate) enum SinkTx {
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// A row type that can be read from every database weir speaks: a tuple such as
/// `(String, bool)`, or a struct with `#[derive(sqlx::FromRow)]`. The sink reads its commit
/// table with it, and reference tables of streaming programs their queries.
pub trait SqlRow:
    for<'r> FromRow<'r, PgRow>
    + for<'r> FromRow<'r, MySqlRow>
    + for<'r> FromRow<'r, SqliteRow>
    + Send
    + Unpin
    + 'static
{
}
impl<T> SqlRow for T where
    T: for<'r> FromRow<'r, PgRow>
        + for<'r> FromRow<'r, MySqlRow>
        + for<'r> FromRow<'r, SqliteRow>
        + Send
        + Unpin
        + 'static
{
}

/// Runs `$body` with `$c` bound to the variant's inner value and `$args` to `$params` as that
/// database's arguments.
macro_rules! dispatch {
    ($self:expr, $c:ident, $args:ident = $params:expr => $body:expr) => {
        match $self {
            Self::Postgres($c) => {
                let $args = pg_arguments($params)?;
                $body
            }
            Self::MySql($c) => {
                let $args = mysql_arguments($params)?;
                $body
            }
            Self::Sqlite($c) => {
                let $args = sqlite_arguments($params)?;
                $body
            }
        }
    };
}

impl SinkPool {
    /// A pool that connects on first use (so a database that is down is a retryable error
    /// later, not a failure here).
    pub(crate) fn connect_lazy(url: &str, dialect: Dialect, size: u32) -> Result<Self> {
        let bad_url =
            |e: sqlx::Error| Error::config("sink.url", format!("cannot use {}: {e}", redact(url)));
        let acquire_timeout = Duration::from_secs(10);
        Ok(match dialect {
            Dialect::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(bad_url)?;
                Self::Postgres(
                    PgPoolOptions::new()
                        .max_connections(size)
                        .acquire_timeout(acquire_timeout)
                        .connect_lazy_with(options),
                )
            }
            Dialect::MySql => {
                let url = match url.split_once("://") {
                    Some((_, rest)) => format!("mysql://{rest}"),
                    None => url.to_owned(),
                };
                let options = MySqlConnectOptions::from_str(&url).map_err(bad_url)?;
                Self::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(size)
                        .acquire_timeout(acquire_timeout)
                        .after_connect(|conn, _| {
                            Box::pin(async move { conn.execute(MYSQL_SESSION).await.map(drop) })
                        })
                        .connect_lazy_with(options),
                )
            }
            Dialect::Sqlite => {
                // FULL: a commit the checkpoint relies on must survive a power cut.
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(bad_url)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(30));
                Self::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(size)
                        .acquire_timeout(Duration::from_secs(60))
                        .connect_lazy_with(options),
                )
            }
        })
    }

    /// The dialect of this pool.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Postgres(_) => Dialect::Postgres,
            Self::MySql(_) => Dialect::MySql,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Applies the bookkeeping migrations of `migrations/<database>/`, then runs `create_table`
    /// (a `CREATE TABLE IF NOT EXISTS`) if given: on a connection of its own, under a lock,
    /// so that pipelines starting at once on a fresh database do not race (sqlx's own
    /// migration lock does not hold on MariaDB, and PostgreSQL's `IF NOT EXISTS` is not atomic).
    /// A connection dropped midway ends its session, which releases the lock.
    pub(crate) async fn set_up(&self, create_table: Option<(String, &str)>) -> Result<()> {
        let lock = |e| Error::database("locking the database to set up weir's tables", e);
        match self {
            Self::Postgres(p) => {
                let mut conn = p.connect_options().connect().await.map_err(lock)?;
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(SET_UP_LOCK_KEY)
                    .execute(&mut conn)
                    .await
                    .map_err(lock)?;
                let migrator = sqlx::migrate!("migrations/postgres");
                // run_direct: `run` trips "Acquire is not general enough" in a Send future.
                migrator
                    .run_direct(None, &mut conn, false)
                    .await
                    .map_err(migrate_error)?;
                if let Some((sql, table)) = create_table {
                    conn.execute(AssertSqlSafe(sql))
                        .await
                        .map_err(creating(table))?;
                }
                // Closing the session releases the lock.
                conn.close().await.map_err(lock)
            }
            Self::MySql(p) => {
                let mut conn = p.connect_options().connect().await.map_err(lock)?;
                let (locked,): (Option<i64>,) = sqlx::query_as("SELECT GET_LOCK(?, ?)")
                    .bind(SET_UP_LOCK_NAME)
                    .bind(SET_UP_LOCK_SECONDS)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(lock)?;
                if locked != Some(1) {
                    return Err(lock(sqlx::Error::Protocol(format!(
                        "another process held the lock {SET_UP_LOCK_NAME:?} for {SET_UP_LOCK_SECONDS} s; retry"
                    ))));
                }
                let migrator = sqlx::migrate!("migrations/mysql");
                // run_direct: `run` trips "Acquire is not general enough" in a Send future.
                migrator
                    .run_direct(None, &mut conn, false)
                    .await
                    .map_err(migrate_error)?;
                if let Some((sql, table)) = create_table {
                    conn.execute(AssertSqlSafe(sql))
                        .await
                        .map_err(creating(table))?;
                }
                conn.close().await.map_err(lock)
            }
            Self::Sqlite(p) => {
                // Connections opening a fresh file at once (switching it to WAL) can be told
                // "database is locked" without waiting for the busy timeout: try again.
                let mut waited = Duration::ZERO;
                loop {
                    match set_up_sqlite(p, create_table.as_ref()).await {
                        Err(error) if error.is_retryable() && waited < SQLITE_SET_UP_PATIENCE => {
                            let wait = crate::sink::retry::jitter(Duration::from_millis(200));
                            tokio::time::sleep(wait).await;
                            waited += wait;
                        }
                        done => return done,
                    }
                }
            }
        }
    }

    /// Begins a transaction on a connection of its own.
    pub(crate) async fn begin(&self) -> Result<SinkTx, sqlx::Error> {
        Ok(match self {
            Self::Postgres(p) => SinkTx::Postgres(p.begin().await?),
            Self::MySql(p) => SinkTx::MySql(p.begin().await?),
            Self::Sqlite(p) => SinkTx::Sqlite(p.begin().await?),
        })
    }

    /// Runs one statement outside a transaction; returns the rows affected.
    // Unused since table creation moved into `set_up`; kept for one-off statements.
    #[allow(dead_code)]
    pub(crate) async fn execute(
        &self,
        sql: String,
        params: &[SqlValue],
    ) -> Result<u64, sqlx::Error> {
        dispatch!(self, c, args = params => sqlx::query_with(AssertSqlSafe(sql), args).execute(c).await.map(|r| r.rows_affected()))
    }

    /// Every row of a query.
    pub(crate) async fn fetch_all<T: SqlRow>(
        &self,
        sql: String,
        params: &[SqlValue],
    ) -> Result<Vec<T>, sqlx::Error> {
        dispatch!(self, c, args = params => sqlx::query_as_with(AssertSqlSafe(sql), args).fetch_all(c).await)
    }

    /// The first row of a query, if any.
    pub(crate) async fn fetch_optional<T: SqlRow>(
        &self,
        sql: String,
        params: &[SqlValue],
    ) -> Result<Option<T>, sqlx::Error> {
        dispatch!(self, c, args = params => sqlx::query_as_with(AssertSqlSafe(sql), args).fetch_optional(c).await)
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        match self {
            Self::Postgres(p) => p.close().await,
            Self::MySql(p) => p.close().await,
            Self::Sqlite(p) => p.close().await,
        }
    }
}

/// How long a SQLite set-up waits for other processes setting up the same file.
const SQLITE_SET_UP_PATIENCE: Duration = Duration::from_secs(30);

/// [`SinkPool::set_up`] on SQLite: under the write lock of an IMMEDIATE transaction, which other
/// processes wait for (a pooled connection: a dropped transaction is rolled back).
async fn set_up_sqlite(p: &sqlx::SqlitePool, create_table: Option<&(String, &str)>) -> Result<()> {
    let lock = |e| Error::database("locking the database to set up weir's tables", e);
    let mut tx = p.begin_with("BEGIN IMMEDIATE").await.map_err(lock)?;
    let migrator = sqlx::migrate!("migrations/sqlite");
    migrator
        .run_direct(None, &mut *tx, false)
        .await
        .map_err(migrate_error)?;
    if let Some((sql, table)) = create_table {
        tx.execute(AssertSqlSafe(sql.clone()))
            .await
            .map_err(creating(table))?;
    }
    tx.commit().await.map_err(lock)
}

impl SinkTx {
    /// Runs one statement; returns the rows affected.
    pub(crate) async fn execute(
        &mut self,
        sql: String,
        params: &[SqlValue],
    ) -> Result<u64, sqlx::Error> {
        dispatch!(self, c, args = params => sqlx::query_with(AssertSqlSafe(sql), args).execute(&mut **c).await.map(|r| r.rows_affected()))
    }

    /// The first row of a query, if any.
    pub(crate) async fn fetch_optional<T: SqlRow>(
        &mut self,
        sql: String,
        params: &[SqlValue],
    ) -> Result<Option<T>, sqlx::Error> {
        dispatch!(self, c, args = params => sqlx::query_as_with(AssertSqlSafe(sql), args).fetch_optional(&mut **c).await)
    }

    /// PostgreSQL only: streams `data` (COPY text format) through `statement`; returns the rows
    /// copied.
    pub(crate) async fn copy_in(
        &mut self,
        statement: &str,
        data: &[u8],
    ) -> Result<u64, sqlx::Error> {
        let Self::Postgres(tx) = self else {
            return Err(sqlx::Error::Protocol("COPY is PostgreSQL only".into()));
        };
        let mut copy = tx.copy_in_raw(statement).await?;
        // Bounded messages: the server buffers each one whole.
        for piece in data.chunks(1 << 20) {
            if let Err(e) = copy.send(piece).await {
                // The connection may still be usable: end COPY mode before reporting.
                let _ = copy.abort(e.to_string()).await;
                return Err(e);
            }
        }
        copy.finish().await
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(tx) => tx.commit().await,
            Self::MySql(tx) => tx.commit().await,
            Self::Sqlite(tx) => tx.commit().await,
        }
    }

    /// Rolls back.
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(tx) => tx.rollback().await,
            Self::MySql(tx) => tx.rollback().await,
            Self::Sqlite(tx) => tx.rollback().await,
        }
    }
}

/// The PostgreSQL advisory lock key of [`SinkPool::set_up`] ("weirsetu" in ASCII).
const SET_UP_LOCK_KEY: i64 = 0x7765_6972_7365_7475;
/// The MySQL named lock of [`SinkPool::set_up`], and how long to wait for it.
const SET_UP_LOCK_NAME: &str = "weir.set_up";
const SET_UP_LOCK_SECONDS: i64 = 300;

const MIGRATING: &str =
    "applying the bookkeeping migrations (weir_commits, weir_offsets, weir_dead_letters)";

fn migrate_error(e: sqlx::migrate::MigrateError) -> Error {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => Error::database(MIGRATING, e),
        other => Error::database(MIGRATING, sqlx::Error::Migrate(Box::new(other))),
    }
}

fn creating(table: &str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::database(format!("creating table {table}"), e)
}

fn encode_error(e: sqlx::error::BoxDynError) -> sqlx::Error {
    sqlx::Error::Encode(e)
}

fn pg_arguments(params: &[SqlValue]) -> Result<PgArguments, sqlx::Error> {
    let mut args = PgArguments::default();
    for value in params {
        match value {
            SqlValue::Null(t) => match t {
                ColumnType::Text => args.add(None::<&str>),
                ColumnType::BigInt => args.add(None::<i64>),
                ColumnType::Integer => args.add(None::<i32>),
                ColumnType::Double => args.add(None::<f64>),
                ColumnType::Boolean => args.add(None::<bool>),
                ColumnType::Numeric { .. } => args.add(None::<Decimal>),
                ColumnType::Timestamptz => args.add(None::<DateTime<Utc>>),
                ColumnType::Date => args.add(None::<NaiveDate>),
                ColumnType::Json => args.add(None::<Json<&RawValue>>),
                ColumnType::Bytes => args.add(None::<&[u8]>),
            },
            SqlValue::Json(s) => match serde_json::from_str::<&RawValue>(s) {
                Ok(raw) => args.add(Json(raw)),
                // Not JSON after all: let PostgreSQL refuse it as the record's error.
                Err(_) => args.add(s.as_str()),
            },
            SqlValue::Numeric(d) => args.add(*d),
            SqlValue::Timestamptz(t) => args.add(*t),
            other => add_common(&mut args, other),
        }
        .map_err(encode_error)?;
    }
    Ok(args)
}

fn mysql_arguments(params: &[SqlValue]) -> Result<MySqlArguments, sqlx::Error> {
    let mut args = MySqlArguments::default();
    for value in params {
        match value {
            SqlValue::Null(_) => args.add(None::<&str>),
            SqlValue::Numeric(d) => args.add(*d),
            // As DATETIME: sqlx sends a DateTime as a TIMESTAMP, which MariaDB turns into NULL
            // outside 1970–2038 even in a DATETIME column. The session's time zone is UTC.
            SqlValue::Timestamptz(t) => args.add(t.naive_utc()),
            other => add_common(&mut args, other),
        }
        .map_err(encode_error)?;
    }
    Ok(args)
}

fn sqlite_arguments(params: &[SqlValue]) -> Result<SqliteArguments, sqlx::Error> {
    let mut args = SqliteArguments::default();
    for value in params {
        match value {
            SqlValue::Null(_) => args.add(None::<&str>),
            SqlValue::Json(s) => args.add(s.as_str()),
            // SQLite has no exact decimal type: the exact text.
            SqlValue::Numeric(d) => args.add(d.to_string()),
            SqlValue::Timestamptz(t) => {
                args.add(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            other => add_common(&mut args, other),
        }
        .map_err(encode_error)?;
    }
    Ok(args)
}

/// Binds the values every driver encodes the same way.
fn add_common<A>(args: &mut A, value: &SqlValue) -> Result<(), sqlx::error::BoxDynError>
where
    A: Arguments,
    for<'a> &'a str: sqlx::Encode<'a, A::Database> + sqlx::Type<A::Database>,
    i64: for<'a> sqlx::Encode<'a, A::Database> + sqlx::Type<A::Database>,
    i32: for<'a> sqlx::Encode<'a, A::Database> + sqlx::Type<A::Database>,
    f64: for<'a> sqlx::Encode<'a, A::Database> + sqlx::Type<A::Database>,
    bool: for<'a> sqlx::Encode<'a, A::Database> + sqlx::Type<A::Database>,
    NaiveDate: for<'a> sqlx::Encode<'a, A::Database> + sqlx::Type<A::Database>,
    for<'a> &'a [u8]: sqlx::Encode<'a, A::Database> + sqlx::Type<A::Database>,
{
    match value {
        SqlValue::Text(s) | SqlValue::Json(s) => args.add(s.as_str()),
        SqlValue::BigInt(v) => args.add(*v),
        SqlValue::Integer(v) => args.add(*v),
        SqlValue::Double(v) => args.add(*v),
        SqlValue::Boolean(v) => args.add(*v),
        SqlValue::Numeric(_) | SqlValue::Timestamptz(_) | SqlValue::Null(_) => {
            Err("internal: NULL, numeric and timestamptz are bound per database".into())
        }
        SqlValue::Date(v) => args.add(*v),
        SqlValue::Bytes(v) => args.add(v.as_slice()),
    }
}
