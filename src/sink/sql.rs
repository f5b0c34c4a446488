//! [`SqlSink`]: the built-in [`Sink`] into PostgreSQL, MySQL/MariaDB or SQLite.

use std::collections::{BTreeMap, BTreeSet};

use crate::batch::{PartitionBatch, RangeReader};
use crate::error::{Error, Result};
use crate::plan::{BatchTime, OffsetRange, TopicPartition};
use crate::sink::config::{SqlSinkConfig, WriteMode, redact};
use crate::sink::conn::SinkPool;
use crate::sink::dialect::{
    Conflict, Dialect, MYSQL_BYTE_COLLATIONS, TableSql, mysql_compares_bytes,
};
use crate::sink::mapping::RowMapper;
use crate::sink::protocol::{AttemptError, Data, TableWriter, describe};
use crate::sink::retry::{RetryPolicy, note_retry, resolve, with_retries};
use crate::sink::value::SqlValue;
use crate::sink::{CommitKey, CommittedPosition, Sink, WriteOutcome};

/// Writes Kafka records into one SQL table, exactly once per `(pipeline, batch time, partition)`.
///
/// ```no_run
/// use weir::plan::{BatchTime, OffsetRange, TopicPartition};
/// use weir::sink::{CommitKey, Sink, SqlSink, SqlSinkConfig};
///
/// # async fn example(input: Vec<weir::source::PartitionBatch>) -> weir::Result<()> {
/// let config: SqlSinkConfig = toml::from_str(r#"
///     url = "sqlite://weir.db?mode=rwc"
///     table = "orders"
///     create_table = true
///     [[columns]]
///     name = "id"
///     type = "bigint"
/// "#).expect("valid TOML");
/// let mut sink = SqlSink::new(config)?;
/// sink.open().await?;
/// let key = CommitKey::new("orders", BatchTime::from_millis(1_000), 0);
/// let ranges = [OffsetRange::new(TopicPartition::new("orders", 0), 0, 10)];
/// let outcome = sink.write(&key, &ranges, &input).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqlSink {
    config: SqlSinkConfig,
    dialect: Dialect,
    mapper: RowMapper,
    retry: RetryPolicy,
    opened: Option<Opened>,
}

#[derive(Debug)]
struct Opened {
    pool: SinkPool,
    writer: TableWriter,
}

/// Margin left in MySQL's `max_allowed_packet` for the statement's own framing.
const PACKET_MARGIN: usize = 64 * 1024;

impl SqlSink {
    /// A sink for `config`, validated; no connection is made before [`Sink::open`].
    pub fn new(config: SqlSinkConfig) -> Result<Self> {
        config.validate()?;
        let dialect = config.dialect()?;
        if dialect == Dialect::Sqlite && config.schema.is_some() {
            return Err(Error::config(
                "sink.schema",
                "SQLite has no schemas; remove sink.schema",
            ));
        }
        let mapper = RowMapper::new(&config, dialect)?;
        Ok(Self {
            config,
            dialect,
            mapper,
            retry: RetryPolicy::default(),
            opened: None,
        })
    }

    /// [`SqlSink::new`] from a borrowed configuration; no connection is made before
    /// [`Sink::open`].
    ///
    /// # Cancel safety
    /// Safe: it does no I/O.
    pub async fn connect(config: &SqlSinkConfig) -> Result<Self> {
        Self::new(config.clone())
    }

    /// Replaces the retry policy for transient failures.
    #[must_use]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SqlSinkConfig {
        &self.config
    }

    /// Closes the connections.
    ///
    /// # Cancel safety
    /// Safe: connections not yet closed are closed when the sink drops.
    pub async fn close(&self) {
        if let Some(opened) = &self.opened {
            opened.pool.close().await;
        }
    }

    fn table_sql(&self) -> TableSql {
        TableSql::new(
            self.dialect,
            self.config.schema.as_deref(),
            &self.config.table,
            self.mapper.table_columns(),
            self.mapper.key().to_vec(),
            match self.config.mode {
                WriteMode::Append => Conflict::None,
                WriteMode::Upsert => Conflict::Overwrite,
                WriteMode::Increment => Conflict::Add(self.mapper.added().to_vec()),
            },
        )
    }

    fn opened(&self) -> Result<&Opened> {
        self.opened.as_ref().ok_or_else(|| {
            Error::config(
                "sink",
                "the sink is not open: call Sink::open before writing",
            )
        })
    }

    /// Checks that the table exists with every configured column and, for upserts and
    /// increments on MySQL (where a missing unique key would silently append), a unique key on
    /// the key columns.
    async fn validate_table(
        &self,
        pool: &SinkPool,
        table: &TableSql,
        text_collation: &str,
    ) -> Result<()> {
        let name = SqlValue::Text(self.config.table.clone());
        let schema = self.config.schema.clone().map_or(
            SqlValue::Null(crate::sink::ColumnType::Text),
            SqlValue::Text,
        );
        let (sql, params) = match self.dialect {
            Dialect::Postgres => (
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2",
                vec![schema.clone(), name.clone()],
            ),
            Dialect::MySql => (
                "SELECT CAST(column_name AS CHAR) FROM information_schema.columns WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
                vec![schema.clone(), name.clone()],
            ),
            Dialect::Sqlite => ("SELECT name FROM pragma_table_info(?)", vec![name.clone()]),
        };
        let context = format!("reading the columns of table {}", table.table);
        let found: Vec<(String,)> = pool
            .fetch_all(sql.to_owned(), &params)
            .await
            .map_err(|e| Error::database(context, e))?;
        if found.is_empty() {
            return Err(Error::config(
                "sink.table",
                format!(
                    "table {} does not exist in {}; create it, or set sink.create_table = true",
                    table.table,
                    redact(&self.config.url)
                ),
            ));
        }
        let found: BTreeSet<String> = found
            .into_iter()
            .map(|(c,)| c.to_ascii_lowercase())
            .collect();
        for column in &table.columns {
            if !found.contains(&column.name.to_ascii_lowercase()) {
                let key = self
                    .config
                    .columns
                    .iter()
                    .position(|c| c.name == column.name)
                    .map_or_else(
                        || "sink.metadata".to_owned(),
                        |i| format!("sink.columns[{i}].name"),
                    );
                return Err(Error::config(
                    key,
                    format!(
                        "table {} has no column {:?} (it has {found:?})",
                        table.table, column.name
                    ),
                ));
            }
        }
        if self.dialect == Dialect::MySql {
            self.check_mysql_columns(pool, table, text_collation)
                .await?;
        }
        if self.config.mode.is_keyed() {
            self.check_unique_key(pool, table, schema, name).await?;
        }
        Ok(())
    }

    /// Checks that the table has a primary key or unique index on exactly the key columns:
    /// without one, MySQL would append and the others refuse every write.
    async fn check_unique_key(
        &self,
        pool: &SinkPool,
        table: &TableSql,
        schema: SqlValue,
        name: SqlValue,
    ) -> Result<()> {
        let (sql, params) = match self.dialect {
            Dialect::MySql => (
                "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.statistics WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND non_unique = 0",
                vec![schema, name],
            ),
            // What ON CONFLICT can infer: unique, immediate, without predicate or expression.
            Dialect::Postgres => (
                "SELECT ic.relname::text, a.attname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2 AND i.indisunique AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL",
                vec![schema, name],
            ),
            // The primary key (which may be the rowid, with no index) and unique indexes.
            Dialect::Sqlite => (
                "SELECT '', name FROM pragma_table_info(?) WHERE pk > 0 UNION ALL SELECT il.name, COALESCE(ii.name, '') FROM pragma_index_list(?) AS il, pragma_index_info(il.name) AS ii WHERE il.\"unique\" = 1 AND il.partial = 0",
                vec![name.clone(), name],
            ),
        };
        let unique: Vec<(String, String)> =
            pool.fetch_all(sql.to_owned(), &params).await.map_err(|e| {
                Error::database(format!("reading the unique keys of {}", table.table), e)
            })?;
        let mut indexes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (index, column) in unique {
            indexes
                .entry(index)
                .or_default()
                .insert(column.to_ascii_lowercase());
        }
        let key: BTreeSet<String> = self
            .config
            .key_columns()
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        if indexes.values().any(|columns| *columns == key) {
            return Ok(());
        }
        let effect = match self.dialect {
            Dialect::MySql => "would append",
            Dialect::Postgres | Dialect::Sqlite => "cannot write",
        };
        let columns: Vec<String> = table
            .key
            .iter()
            .map(|&i| self.dialect.quote(&table.columns[i].name))
            .collect();
        Err(Error::config(
            "sink.key",
            format!(
                "table {} has no primary key or unique index on exactly {key:?}, so an {} {effect} (was it created for append mode?); add one: CREATE UNIQUE INDEX {} ON {} ({}), or change sink.key to the table's key",
                table.table,
                self.config.mode.name(),
                self.dialect
                    .quote(&format!("{}_weir_key", self.config.table)),
                table.table,
                columns.join(", ")
            ),
        ))
    }

    /// MySQL only: refuses text key columns that do not compare byte for byte (rows whose keys
    /// differ only in trailing spaces or letter case would merge), and warns about instants
    /// kept in a TIMESTAMP column (1970 to 2038 only).
    async fn check_mysql_columns(
        &self,
        pool: &SinkPool,
        table: &TableSql,
        text_collation: &str,
    ) -> Result<()> {
        let schema = self.config.schema.clone().map_or(
            SqlValue::Null(crate::sink::ColumnType::Text),
            SqlValue::Text,
        );
        let found: Vec<(String, String, Option<String>)> = pool
            .fetch_all(
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(collation_name AS CHAR) FROM information_schema.columns WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?".to_owned(),
                &[schema, SqlValue::Text(self.config.table.clone())],
            )
            .await
            .map_err(|e| Error::database(format!("reading the columns of table {}", table.table), e))?;
        let key = self.config.key_columns();
        for (name, data_type, collation) in &found {
            let configured = table
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name));
            if key.iter().any(|k| k.eq_ignore_ascii_case(name))
                && !mysql_compares_bytes(collation.as_deref())
            {
                return Err(Error::config(
                    "sink.key",
                    format!(
                        "key column {name} of table {} has collation {}, which takes keys that differ only in trailing spaces or letter case for one, so their rows would merge; make it compare bytes: ALTER TABLE {} MODIFY `{name}` VARCHAR(255) COLLATE {text_collation} NOT NULL",
                        table.table,
                        collation.as_deref().unwrap_or_default(),
                        table.table
                    ),
                ));
            }
            if configured.is_some_and(|c| c.column_type == crate::sink::ColumnType::Timestamptz)
                && data_type.eq_ignore_ascii_case("timestamp")
            {
                tracing::warn!(
                    table = %table.table,
                    column = %name,
                    "Column is a TIMESTAMP, which holds instants from 1970 to 2038 only; others are refused under on_error. Change it to DATETIME(6) to hold years 1000 to 9999."
                );
            }
        }
        Ok(())
    }
}

/// The collation text columns of new MySQL tables get: the first of
/// [`MYSQL_BYTE_COLLATIONS`] the server has, else `utf8mb4_bin` (then a text key is refused by
/// the check of the table's columns).
async fn mysql_text_collation(pool: &SinkPool) -> Result<&'static str> {
    let found: Vec<(String,)> = pool
        .fetch_all(
            "SELECT CAST(collation_name AS CHAR) FROM information_schema.collations WHERE collation_name IN (?, ?)".to_owned(),
            &MYSQL_BYTE_COLLATIONS.map(|c| SqlValue::Text(c.to_owned())),
        )
        .await
        .map_err(|e| Error::database("reading the server's collations", e))?;
    Ok(MYSQL_BYTE_COLLATIONS
        .into_iter()
        .find(|c| found.iter().any(|(f,)| f.eq_ignore_ascii_case(c)))
        .unwrap_or("utf8mb4_bin"))
}

impl Sink for SqlSink {
    /// Connects, applies the bookkeeping migrations, creates the table if configured, and checks
    /// the table against the configuration.
    async fn open(&mut self) -> Result<()> {
        let pool = SinkPool::connect_lazy(&self.config.url, self.dialect, self.config.pool_size)?;
        let table = self.table_sql();
        let text_collation = match self.dialect {
            Dialect::MySql => mysql_text_collation(&pool).await?,
            Dialect::Postgres | Dialect::Sqlite => "",
        };
        let create = self
            .config
            .create_table
            .then(|| (table.create_table(text_collation), table.table.as_str()));
        pool.set_up(create).await?;
        self.validate_table(&pool, &table, text_collation).await?;
        let max_packet_bytes = if self.dialect == Dialect::MySql {
            let (packet,): (i64,) = pool
                .fetch_optional(
                    "SELECT CAST(@@max_allowed_packet AS SIGNED)".to_owned(),
                    &[],
                )
                .await
                .map_err(|e| Error::database("reading max_allowed_packet", e))?
                .unwrap_or((4 << 20,));
            usize::try_from(packet)
                .unwrap_or(4 << 20)
                .saturating_sub(PACKET_MARGIN)
                .max(PACKET_MARGIN)
        } else {
            usize::MAX
        };
        let writer = TableWriter {
            table,
            on_error: self.config.on_error,
            batch_size: self.config.batch_size,
            max_packet_bytes,
        };
        // Debug: the pipeline says "Sink ready." once it is open.
        tracing::debug!(url = %redact(&self.config.url), table = %writer.table.table, "SQL sink open");
        self.opened = Some(Opened { pool, writer });
        Ok(())
    }

    async fn write(
        &self,
        key: &CommitKey,
        ranges: &[OffsetRange],
        input: &[PartitionBatch],
    ) -> Result<WriteOutcome> {
        let opened = self.opened()?;
        let (ranges, ranges_json) = commit_ranges(key, ranges)?;
        let mapped = crate::blocking::cpu_bound(|| self.mapper.map(input));
        with_retries(&self.retry, &opened.pool, key, &ranges, || {
            opened.writer.attempt(
                &opened.pool,
                key,
                &ranges,
                &ranges_json,
                Data::Mapped(&mapped),
            )
        })
        .await
    }

    /// Opens the transaction, inserts the commit row and checks contiguity before it takes the
    /// first chunk, then maps and writes each chunk as it arrives; COMMIT once the range is
    /// complete. Failures before the first chunk is taken are retried here; later ones fail the
    /// write (the chunks are gone), and the batch runs again from its logged plan.
    async fn write_stream(
        &self,
        key: &CommitKey,
        ranges: &[OffsetRange],
        mut input: RangeReader,
    ) -> Result<WriteOutcome> {
        let opened = self.opened()?;
        let (ranges, ranges_json) = commit_ranges(key, ranges)?;
        let mut n = 0;
        // Not ready while a failed attempt waits to run again.
        let mut _failing = None;
        loop {
            n += 1;
            let data = Data::Stream(&self.mapper, &mut input);
            let error = match opened
                .writer
                .attempt(&opened.pool, key, &ranges, &ranges_json, data)
                .await
            {
                Ok(outcome) => return Ok(outcome),
                Err(AttemptError::CommitUnknown { error, counts }) => {
                    tracing::warn!(write = %describe(key), %error, "COMMIT outcome unknown; reading the commit table");
                    if resolve(&self.retry, &opened.pool, key, &ranges).await? {
                        return Ok(WriteOutcome::committed(counts));
                    }
                    return Err(error);
                }
                Err(AttemptError::Failed(error)) => error,
            };
            if input.started() || !error.is_retryable() || n >= self.retry.max_attempts {
                return Err(error);
            }
            _failing = Some(note_retry(key, &error, n, self.retry.max_attempts));
            let wait = self.retry.jittered_backoff(n);
            tracing::warn!(write = %describe(key), attempt = n, ?wait, %error, "Sink write failed; retrying.");
            tokio::time::sleep(wait).await;
        }
    }

    async fn fold_commits(&self, pipeline: &str, before: BatchTime) -> Result<u64> {
        let opened = self.opened()?;
        let folded = super::retention::fold_commits(&opened.pool, pipeline, before).await?;
        if folded.rows_removed > 0 {
            tracing::info!(
                message = "Folded old commit rows.",
                pipeline,
                before = %before,
                partitions = folded.partitions,
                rows_removed = folded.rows_removed,
            );
        }
        Ok(folded.rows_removed)
    }

    async fn adopt_partition_ids(
        &self,
        pipeline: &str,
        renames: &[(i64, TopicPartition, i64)],
    ) -> Result<()> {
        if renames.is_empty() {
            return Ok(());
        }
        let opened = self.opened()?;
        let dialect = opened.pool.dialect();
        let context = || format!("replacing the output partition ids of pipeline {pipeline:?}");
        let mut tx = opened
            .pool
            .begin()
            .await
            .map_err(|e| Error::database(context(), e))?;
        for (old, tp, new) in renames {
            let offsets = [
                SqlValue::BigInt(*new),
                SqlValue::Text(pipeline.to_owned()),
                SqlValue::BigInt(*old),
                SqlValue::Text(tp.topic.clone()),
                SqlValue::Integer(tp.partition),
            ];
            tx.execute(
                dialect.placeholders("UPDATE weir_offsets SET partition_id = ? WHERE pipeline = ? AND partition_id = ? AND topic = ? AND kafka_partition = ?"),
                &offsets,
            )
            .await
            .map_err(|e| Error::database(context(), e))?;
            let others = [
                SqlValue::BigInt(*new),
                SqlValue::Text(pipeline.to_owned()),
                SqlValue::BigInt(*old),
            ];
            for sql in [
                "UPDATE weir_commits SET partition_id = ? WHERE pipeline = ? AND partition_id = ?",
                "UPDATE weir_dead_letters SET partition_id = ? WHERE pipeline = ? AND partition_id = ?",
            ] {
                tx.execute(dialect.placeholders(sql), &others)
                    .await
                    .map_err(|e| Error::database(context(), e))?;
            }
        }
        tx.commit()
            .await
            .map_err(|e| Error::database(context(), e))?;
        tracing::info!(
            message =
                "Replaced the output partition ids of an older weir in the sink's bookkeeping.",
            pipeline,
            partitions = renames.len(),
        );
        Ok(())
    }

    async fn committed_positions(
        &self,
        pipeline: &str,
    ) -> Result<BTreeMap<(i64, TopicPartition), CommittedPosition>> {
        let opened = self.opened()?;
        let sql = opened.pool.dialect().placeholders(
            "SELECT partition_id, topic, kafka_partition, from_offset, next_offset, batch_time FROM weir_offsets WHERE pipeline = ?",
        );
        let rows: Vec<(i64, String, i32, i64, i64, i64)> = opened
            .pool
            .fetch_all(sql, &[SqlValue::Text(pipeline.to_owned())])
            .await
            .map_err(|e| {
                Error::database(
                    format!("reading the committed positions of pipeline {pipeline:?}"),
                    e,
                )
            })?;
        Ok(rows
            .into_iter()
            .map(|(partition_id, topic, partition, from, next, batch_time)| {
                let tp = TopicPartition::new(topic, partition);
                let position = CommittedPosition {
                    batch_time: BatchTime::from_millis(batch_time),
                    range: OffsetRange::new(tp.clone(), from, next),
                };
                ((partition_id, tp), position)
            })
            .collect())
    }
}

/// The ranges a write covers as its commit row stores them, and their JSON: by partition, keeping
/// each partition's order (a recorded gap comes before the range it bridges, and the contiguity
/// check advances across it in that order).
fn commit_ranges(key: &CommitKey, ranges: &[OffsetRange]) -> Result<(Vec<OffsetRange>, String)> {
    let mut ranges = ranges.to_vec();
    ranges.sort_by(|a, b| a.tp.cmp(&b.tp));
    let json = serde_json::to_string(&ranges).map_err(|e| Error::Batch {
        batch_time: key.batch_time,
        message: format!("cannot encode the offset ranges: {e}"),
    })?;
    Ok((ranges, json))
}
