//! Reads every row of the target table back, each cell in its canonical text (see
//! [`super::cells`]). Each database is asked to render a column in a form that decodes the same
//! way everywhere: integers and booleans as 64-bit integers, doubles as doubles, everything else
//! as text (instants in UTC, bytes in hex).

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::AssertSqlSafe;

use crate::error::{Error, Result};
use crate::sink::{ColumnType, Dialect, SinkPool, SqlSinkConfig};

use super::Progress;
use super::cells::{Row, days, double, from_database_text};

/// Rows between two progress reports.
const PROGRESS_EVERY: u64 = 50_000;

/// How a column's cells come out of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Float,
    /// Text already canonical (PostgreSQL instants as epoch microseconds).
    Canonical,
    /// Days since 1970-01-01 as text (PostgreSQL dates), or other text as it is.
    Days,
}

/// Streams every row of the table of `sink` to `on_row`; returns how many there were.
/// `columns` are the table's columns in the sink's write order.
///
/// # Cancel safety
///
/// Safe to drop: it only reads.
pub(crate) async fn scan(
    pool: &SinkPool,
    sink: &SqlSinkConfig,
    columns: &[(String, ColumnType)],
    progress: &Arc<dyn Fn(Progress) + Send + Sync>,
    on_row: impl FnMut(Row),
) -> Result<u64> {
    let dialect = pool.dialect();
    let (expressions, kinds): (Vec<String>, Vec<Kind>) = columns
        .iter()
        .map(|(name, column_type)| select(dialect, &dialect.quote(name), *column_type))
        .unzip();
    let table = match &sink.schema {
        Some(schema) => format!("{}.{}", dialect.quote(schema), dialect.quote(&sink.table)),
        None => dialect.quote(&sink.table),
    };
    let sql = AssertSqlSafe(format!("SELECT {} FROM {table}", expressions.join(", ")));
    let scan = Scan {
        kinds: &kinds,
        types: columns.iter().map(|(_, t)| *t).collect(),
        progress: progress.as_ref(),
    };
    let scanned = match pool {
        SinkPool::Postgres(p) => scan.consume(sqlx::query(sql).fetch(p), on_row).await,
        SinkPool::MySql(p) => scan.consume(sqlx::query(sql).fetch(p), on_row).await,
        SinkPool::Sqlite(p) => scan.consume(sqlx::query(sql).fetch(p), on_row).await,
    };
    scanned.map_err(|e| Error::database(format!("reading the rows of table {table}"), e))
}

/// The select expression of a column, and how its cells decode.
fn select(dialect: Dialect, q: &str, column_type: ColumnType) -> (String, Kind) {
    use ColumnType as T;
    use Dialect as D;
    let (expression, kind) = match (dialect, column_type) {
        (D::Postgres, T::Text) => (q.to_owned(), Kind::Text),
        (D::Postgres, T::BigInt | T::Integer) => (format!("CAST({q} AS BIGINT)"), Kind::Int),
        (D::Postgres, T::Boolean) => (format!("CAST(CAST({q} AS INTEGER) AS BIGINT)"), Kind::Int),
        (D::Postgres, T::Double) => (format!("CAST({q} AS DOUBLE PRECISION)"), Kind::Float),
        (D::Postgres, T::Numeric { .. } | T::Json) => (format!("CAST({q} AS TEXT)"), Kind::Text),
        // Numbers, not to_char: its YYYY drops the era of BC years. EXTRACT is exact (numeric)
        // since PostgreSQL 14; infinity stays text, which matches no value.
        (D::Postgres, T::Timestamptz) => (
            format!(
                "CASE WHEN isfinite({q}) THEN CAST(CAST(EXTRACT(EPOCH FROM {q}) * 1000000 AS BIGINT) AS TEXT) ELSE CAST({q} AS TEXT) END"
            ),
            Kind::Canonical,
        ),
        (D::Postgres, T::Date) => (
            format!(
                "CASE WHEN isfinite({q}) THEN CAST({q} - DATE '1970-01-01' AS TEXT) ELSE CAST({q} AS TEXT) END"
            ),
            Kind::Days,
        ),
        (D::Postgres, T::Bytes) => (format!("encode({q}, 'hex')"), Kind::Text),
        (D::MySql, T::Text) => (q.to_owned(), Kind::Text),
        (D::MySql, T::BigInt | T::Integer | T::Boolean) => {
            (format!("CAST({q} AS SIGNED)"), Kind::Int)
        }
        (D::MySql, T::Double) => (format!("CAST({q} AS DOUBLE)"), Kind::Float),
        (D::MySql, T::Numeric { .. } | T::Json) => (format!("CAST({q} AS CHAR)"), Kind::Text),
        // The sink stores instants as UTC in DATETIME(6).
        (D::MySql, T::Timestamptz) => (
            format!("DATE_FORMAT({q}, '%Y-%m-%dT%H:%i:%s.%f')"),
            Kind::Text,
        ),
        (D::MySql, T::Date) => (format!("DATE_FORMAT({q}, '%Y-%m-%d')"), Kind::Text),
        (D::MySql, T::Bytes) => (format!("LOWER(HEX({q}))"), Kind::Text),
        (D::Sqlite, T::BigInt | T::Integer | T::Boolean) => {
            (format!("CAST({q} AS INTEGER)"), Kind::Int)
        }
        (D::Sqlite, T::Double) => (format!("CAST({q} AS REAL)"), Kind::Float),
        // hex(NULL) is '' in SQLite.
        (D::Sqlite, T::Bytes) => (
            format!("CASE WHEN {q} IS NULL THEN NULL ELSE lower(hex({q})) END"),
            Kind::Text,
        ),
        (D::Sqlite, _) => (format!("CAST({q} AS TEXT)"), Kind::Text),
    };
    (expression, kind)
}

/// Decoding state shared by the three databases.
struct Scan<'a> {
    kinds: &'a [Kind],
    types: Vec<ColumnType>,
    progress: &'a (dyn Fn(Progress) + Send + Sync),
}

impl Scan<'_> {
    async fn consume<R>(
        &self,
        mut rows: BoxStream<'_, Result<R, sqlx::Error>>,
        mut on_row: impl FnMut(Row),
    ) -> Result<u64, sqlx::Error>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let mut count: u64 = 0;
        while let Some(row) = rows.next().await {
            let row = row?;
            let mut cells = Row::with_capacity(self.kinds.len());
            for (i, kind) in self.kinds.iter().enumerate() {
                let cell = match kind {
                    Kind::Text => row
                        .try_get::<Option<String>, _>(i)?
                        .map(|text| from_database_text(text, self.types[i])),
                    Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(|v| v.to_string()),
                    Kind::Float => row.try_get::<Option<f64>, _>(i)?.map(double),
                    Kind::Canonical => row.try_get::<Option<String>, _>(i)?,
                    Kind::Days => row.try_get::<Option<String>, _>(i)?.map(days),
                };
                cells.push(cell);
            }
            on_row(cells);
            count += 1;
            if count.is_multiple_of(PROGRESS_EVERY) {
                (self.progress)(Progress::Table { rows: count });
            }
        }
        (self.progress)(Progress::Table { rows: count });
        Ok(count)
    }
}
