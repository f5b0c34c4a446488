//! One attempt at one atomic write (invariant 4), in one transaction:
//!
//! 1. insert the commit row `(pipeline, batch_time, partition_id)`; if it is already there, the
//!    write was done: roll back and report [`WriteOutcome::AlreadyCommitted`] (which is what
//!    makes increments, `count = count + excluded.count`, land once);
//! 2. check contiguity: each range must start where this output partition's last commit of that
//!    Kafka partition ended (`UPDATE weir_offsets … WHERE next_offset = from`);
//! 3. write the rows (fast path per database, in savepointed chunks), setting aside records the
//!    database refuses as the record's fault;
//! 4. write the dead letters; COMMIT.
//!
//! Retrying and resolving a COMMIT whose outcome is unknown are [`crate::sink::retry`]'s.

use sqlx::mysql::MySqlDatabaseError;

use crate::batch::{PartitionBatch, RangeReader};
use crate::error::{Error, Result};
use crate::ops::log_limit::LogLimit;
use crate::ops::metrics as m;
use crate::plan::{OffsetRange, TopicPartition};
use crate::sink::chunk;
use crate::sink::config::OnError;
use crate::sink::conn::{SinkPool, SinkTx};
use crate::sink::copy_text;
use crate::sink::dead_letter::{self, INSERT_DEAD_LETTER};
use crate::sink::dialect::{Conflict, Dialect, STAGE_TABLE, TableSql};
use crate::sink::failpoint::failpoint;
use crate::sink::mapping::{Mapped, Op, Origin, RowMapper};
use crate::sink::value::SqlValue;
use crate::sink::{CommitKey, WriteCounts, WriteOutcome, is_source_partition_id};

/// PostgreSQL COPY chunks hold at least this many rows: COPY has no parameter limit, and fewer,
/// larger chunks cost fewer round trips.
const COPY_CHUNK_ROWS: usize = 10_000;

/// How an attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Nothing was committed.
    Failed(Error),
    /// COMMIT was sent but its reply was lost: the commit table says what happened. `counts` is
    /// the outcome if it did commit.
    CommitUnknown {
        /// The error seen at COMMIT.
        error: Error,
        /// What was written, if the commit happened.
        counts: WriteCounts,
    },
}

impl From<Error> for AttemptError {
    fn from(error: Error) -> Self {
        Self::Failed(error)
    }
}

/// The rows of one attempt: mapped in advance, or mapped chunk by chunk as a range streams in.
/// Chunks in upsert mode keep the last write per key within the chunk, and later chunks
/// overwrite earlier ones in order, so the table ends as a whole-batch reduction would leave it.
pub(crate) enum Data<'m, 'r> {
    /// Every row of the write.
    Mapped(&'m Mapped<'m>),
    /// A range's records, mapped and written one chunk at a time.
    Stream(&'m RowMapper, &'r mut RangeReader),
}

/// Everything about the target table that does not change between writes.
#[derive(Debug, Clone)]
pub(crate) struct TableWriter {
    pub(crate) table: TableSql,
    pub(crate) on_error: OnError,
    pub(crate) batch_size: usize,
    /// MySQL's `max_allowed_packet`, less a margin; unused elsewhere.
    pub(crate) max_packet_bytes: usize,
}

/// The commit row and the offsets row statements, `?` placeholders.
const INSERT_COMMIT: &str =
    "INSERT INTO weir_commits (pipeline, batch_time, partition_id, ranges) VALUES (?, ?, ?, ?)";
const INSERT_COMMIT_OR_NOTHING: &str = "INSERT INTO weir_commits (pipeline, batch_time, partition_id, ranges) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING";
pub(crate) const SELECT_COMMIT: &str =
    "SELECT ranges FROM weir_commits WHERE pipeline = ? AND batch_time = ? AND partition_id = ?";
#[cfg(not(feature = "mutant-no-contiguity"))]
const ADVANCE_OFFSETS: &str = "UPDATE weir_offsets SET from_offset = ?, next_offset = ?, batch_time = ? WHERE pipeline = ? AND partition_id = ? AND topic = ? AND kafka_partition = ? AND next_offset = ?";
// MUTANT (scripts/chaos --mutant no-contiguity): the contiguity check always passes.
#[cfg(feature = "mutant-no-contiguity")]
const ADVANCE_OFFSETS: &str = "UPDATE weir_offsets SET from_offset = ?, next_offset = ?, batch_time = ? WHERE pipeline = ? AND partition_id = ? AND topic = ? AND kafka_partition = ? AND (next_offset = ? OR 1 = 1)";
const SELECT_OFFSETS: &str = "SELECT from_offset, next_offset, batch_time FROM weir_offsets WHERE pipeline = ? AND partition_id = ? AND topic = ? AND kafka_partition = ?";
const SELECT_OFFSETS_OF_OTHER_IDS: &str = "SELECT partition_id, next_offset FROM weir_offsets WHERE pipeline = ? AND topic = ? AND kafka_partition = ? AND partition_id <> ?";
const INSERT_OFFSETS: &str = "INSERT INTO weir_offsets (pipeline, partition_id, topic, kafka_partition, from_offset, next_offset, batch_time) VALUES (?, ?, ?, ?, ?, ?, ?)";

/// The parameters naming one commit key.
pub(crate) fn key_parameters(key: &CommitKey) -> Vec<SqlValue> {
    vec![
        SqlValue::Text(key.pipeline.clone()),
        SqlValue::BigInt(key.batch_time.as_millis()),
        SqlValue::BigInt(key.partition_id),
    ]
}

/// Where the write is: for error contexts.
pub(crate) fn describe(key: &CommitKey) -> String {
    format!(
        "pipeline {:?} batch {} partition {}",
        key.pipeline, key.batch_time, key.partition_id
    )
}

/// The ranges stored in a commit row, compared with the ranges being written: a replay must
/// cover exactly what was committed (invariant 2), or a planner bug is at work.
pub(crate) fn check_same_ranges(
    key: &CommitKey,
    stored: &str,
    ranges: &[OffsetRange],
) -> Result<()> {
    let stored_ranges: Vec<OffsetRange> =
        serde_json::from_str(stored).map_err(|e| Error::Contiguity {
            what: describe(key),
            detail: format!("the commit row's ranges {stored:?} cannot be read ({e})"),
        })?;
    if stored_ranges == ranges {
        return Ok(());
    }
    Err(Error::Contiguity {
        what: describe(key),
        detail: format!(
            "it was committed covering {} but is now written covering {}; a batch time must always be replayed with its logged plan",
            list(&stored_ranges),
            list(ranges)
        ),
    })
}

fn list(ranges: &[OffsetRange]) -> String {
    let parts: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::database(context, e)
}

impl TableWriter {
    /// One attempt. `ranges` are sorted; `ranges_json` is their JSON.
    pub(crate) async fn attempt(
        &self,
        pool: &SinkPool,
        key: &CommitKey,
        ranges: &[OffsetRange],
        ranges_json: &str,
        data: Data<'_, '_>,
    ) -> Result<WriteOutcome, AttemptError> {
        failpoint("sink::before_begin")?;
        let mut tx = pool
            .begin()
            .await
            .map_err(db(format!("{}: beginning the transaction", describe(key))))?;
        let result = self
            .in_transaction(&mut tx, key, ranges, ranges_json, data)
            .await;
        let counts = match result {
            Ok(Some(counts)) => counts,
            Ok(None) => {
                // Already committed: nothing of ours to keep.
                metrics::counter!(m::COMMIT_CONFLICTS, "pipeline" => key.pipeline.clone())
                    .increment(1);
                let _ = tx.rollback().await;
                return Ok(WriteOutcome::AlreadyCommitted);
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        };
        if let Err(error) = tx.commit().await {
            return Err(AttemptError::CommitUnknown {
                error: Error::database(format!("{}: COMMIT", describe(key)), error),
                counts,
            });
        }
        let unread = |error| AttemptError::CommitUnknown { error, counts };
        failpoint("sink::commit_sent_reply_unread").map_err(unread)?;
        failpoint("sink::after_commit").map_err(unread)?;
        self.count_committed(key, &counts);
        Ok(WriteOutcome::committed(counts))
    }

    /// Counts a committed write's rows, by operation, and its rejected records.
    pub(crate) fn count_committed(&self, key: &CommitKey, counts: &WriteCounts) {
        let pipeline = || ("pipeline", key.pipeline.clone());
        let write = match self.table.conflict {
            Conflict::None => "insert",
            Conflict::Overwrite => "upsert",
            Conflict::Add(_) => "increment",
        };
        let written = counts.rows - counts.deleted;
        metrics::counter!(m::ROWS_WRITTEN, &[pipeline(), ("op", write.to_owned())])
            .increment(written);
        metrics::counter!(m::ROWS_WRITTEN, &[pipeline(), ("op", "delete".to_owned())])
            .increment(counts.deleted);
        metrics::counter!(m::RECORDS_SKIPPED, &[pipeline()]).increment(counts.skipped);
        metrics::counter!(m::DEAD_LETTERS, &[pipeline()]).increment(counts.dead_letters);
        if counts.skipped + counts.dead_letters > 0 {
            crate::ops::status::status(&key.pipeline)
                .record_rejects(counts.skipped, counts.dead_letters);
        }
    }

    /// Steps 1–4 before COMMIT; `None` when the commit row was already there.
    async fn in_transaction(
        &self,
        tx: &mut SinkTx,
        key: &CommitKey,
        ranges: &[OffsetRange],
        ranges_json: &str,
        data: Data<'_, '_>,
    ) -> Result<Option<WriteCounts>> {
        let dialect = self.table.dialect;
        if !insert_commit_row(tx, dialect, key, ranges_json).await? {
            let stored: Option<(String,)> = tx
                .fetch_optional(dialect.placeholders(SELECT_COMMIT), &key_parameters(key))
                .await
                .map_err(db(format!("{}: reading the commit row", describe(key))))?;
            if let Some((stored,)) = stored {
                check_same_ranges(key, &stored, ranges)?;
            }
            return Ok(None);
        }
        for range in ranges {
            advance_offsets(tx, dialect, key, range).await?;
        }
        failpoint("sink::after_commit_row_before_data")?;
        let mut counts = WriteCounts::default();
        match data {
            Data::Mapped(mapped) => self.write_mapped(tx, key, mapped, &mut counts).await?,
            Data::Stream(mapper, input) => {
                while let Some(records) = input.next_chunk().await? {
                    failpoint("sink::stream_chunk_received")?;
                    let batch = PartitionBatch {
                        range: input.range().clone(),
                        records,
                    };
                    let mapped =
                        crate::blocking::cpu_bound(|| mapper.map(std::slice::from_ref(&batch)));
                    self.write_mapped(tx, key, &mapped, &mut counts).await?;
                    failpoint("sink::between_chunks")?;
                }
            }
        }
        failpoint("sink::after_data_before_commit")?;
        Ok(Some(counts))
    }

    /// Step 3 and the dead letters of step 4 for one set of mapped records: the whole batch,
    /// or one chunk of a streamed one.
    async fn write_mapped(
        &self,
        tx: &mut SinkTx,
        key: &CommitKey,
        mapped: &Mapped<'_>,
        counts: &mut WriteCounts,
    ) -> Result<()> {
        let dialect = self.table.dialect;

        counts.ignored += mapped.ignored;
        let mut rejected: Vec<(Origin<'_>, String)> = Vec::new();
        for r in &mapped.rejected {
            self.reject(r.origin, &r.reason, counts, &mut rejected)?;
        }
        let (deletes, writes): (Vec<_>, Vec<_>) = mapped
            .ops
            .iter()
            .partition(|(op, _)| matches!(op, Op::Delete(_)));
        // Chunk by chunk: this chunk's deletes are the rows its delete statements counted.
        let before = counts.rows;
        self.write_ops(tx, key, &deletes, counts, &mut rejected)
            .await?;
        counts.deleted += counts.rows - before;
        self.write_ops(tx, key, &writes, counts, &mut rejected)
            .await?;
        for (origin, reason) in &rejected {
            let sql = dialect.placeholders(INSERT_DEAD_LETTER);
            tx.execute(sql, &dead_letter::parameters(key, *origin, reason))
                .await
                .map_err(db(format!(
                    "{}: writing the dead letter of {}@{}",
                    describe(key),
                    origin.tp,
                    origin.record.offset
                )))?;
            crate::ops::status::status(&key.pipeline).record_dead_letter(
                crate::ops::status::DeadLetterPoint {
                    batch_time_ms: key.batch_time.as_millis(),
                    topic: origin.tp.topic.clone(),
                    partition: origin.tp.partition,
                    offset: origin.record.offset,
                    reason: reason.clone(),
                },
            );
        }
        Ok(())
    }

    /// Applies `on_error` to one refused record.
    fn reject<'a>(
        &self,
        origin: Origin<'a>,
        reason: &str,
        counts: &mut WriteCounts,
        rejected: &mut Vec<(Origin<'a>, String)>,
    ) -> Result<()> {
        match self.on_error {
            OnError::Fail => return Err(origin.error(reason)),
            OnError::Skip => {
                static LIMIT: LogLimit = LogLimit::new();
                if let Some(suppressed) = LIMIT.check() {
                    tracing::warn!(topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.record.offset, %reason, suppressed, "Skipped a record the sink cannot write (on_error = \"skip\"); `suppressed` counts the similar warnings left out before this one.");
                }
                counts.skipped += 1;
            }
            OnError::DeadLetter => {
                static LIMIT: LogLimit = LogLimit::new();
                if let Some(suppressed) = LIMIT.check() {
                    tracing::warn!(topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.record.offset, %reason, suppressed, "Sent a record the sink cannot write to the dead-letter table; `suppressed` counts the similar warnings left out before this one.");
                }
                counts.dead_letters += 1;
                rejected.push((origin, reason.to_owned()));
            }
        }
        Ok(())
    }

    /// Writes `ops` (all deletes or all writes) chunk by chunk, each chunk in a savepoint. A chunk
    /// the database refuses for a reason that is a record's fault is redone row by row to find
    /// the record.
    async fn write_ops<'a>(
        &self,
        tx: &mut SinkTx,
        key: &CommitKey,
        ops: &[&(Op, Origin<'a>)],
        counts: &mut WriteCounts,
        rejected: &mut Vec<(Origin<'a>, String)>,
    ) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let deleting = matches!(ops[0].0, Op::Delete(_));
        let dialect = self.table.dialect;
        let staged = self.table.stages() && !deleting;
        if staged {
            tx.execute(self.table.create_stage(), &[])
                .await
                .map_err(db(format!("{}: creating the staging table", describe(key))))?;
        }
        for range in self.chunks(ops, deleting) {
            let chunk = &ops[range];
            savepoint(tx, "SAVEPOINT weir_chunk", key).await?;
            match self.write_chunk(tx, chunk, deleting, staged).await {
                Ok(()) => {
                    savepoint(tx, "RELEASE SAVEPOINT weir_chunk", key).await?;
                    counts.rows += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                }
                Err(e) if is_record_fault(dialect, &e) => {
                    savepoint(tx, "ROLLBACK TO SAVEPOINT weir_chunk", key).await?;
                    savepoint(tx, "RELEASE SAVEPOINT weir_chunk", key).await?;
                    self.row_by_row(tx, key, chunk, deleting, counts, rejected)
                        .await?;
                }
                Err(e) => {
                    return Err(Error::database(
                        format!("{}: writing rows to {}", describe(key), self.table.table),
                        e,
                    ));
                }
            }
            failpoint("sink::mid_data_write")?;
        }
        Ok(())
    }

    /// Chunk boundaries for `ops`.
    fn chunks(&self, ops: &[&(Op, Origin<'_>)], deleting: bool) -> Vec<std::ops::Range<usize>> {
        let dialect = self.table.dialect;
        let width = if deleting {
            self.table.key.len()
        } else {
            self.table.columns.len()
        };
        let copying = dialect == Dialect::Postgres && !deleting;
        let max_rows = if copying {
            self.batch_size.max(COPY_CHUNK_ROWS)
        } else {
            chunk::rows_per_statement(self.batch_size, width, dialect.max_parameters())
        };
        let sizes: Vec<usize> = ops
            .iter()
            .map(|(op, _)| match op {
                Op::Write(v) | Op::Delete(v) => {
                    v.iter().map(SqlValue::wire_size).sum::<usize>() + 2 * v.len()
                }
            })
            .collect();
        let max_bytes = if dialect == Dialect::MySql {
            self.max_packet_bytes
        } else {
            usize::MAX
        };
        chunk::split(&sizes, max_rows, max_bytes)
    }

    /// One chunk on the fast path of its database.
    async fn write_chunk(
        &self,
        tx: &mut SinkTx,
        chunk: &[&(Op, Origin<'_>)],
        deleting: bool,
        staged: bool,
    ) -> Result<(), sqlx::Error> {
        let values = |op: &Op| match op {
            Op::Write(v) | Op::Delete(v) => v.clone(),
        };
        if deleting {
            let params: Vec<SqlValue> = chunk.iter().flat_map(|(op, _)| values(op)).collect();
            tx.execute(self.table.delete(chunk.len()), &params).await?;
            return Ok(());
        }
        match self.table.dialect {
            Dialect::Postgres => {
                let numbered = matches!(self.table.conflict, Conflict::Add(_));
                let mut data = Vec::new();
                for (n, (op, _)) in chunk.iter().enumerate() {
                    match op {
                        Op::Write(row) if numbered => {
                            copy_text::write_numbered_row(&mut data, row, n)
                        }
                        Op::Write(row) => copy_text::write_row(&mut data, row),
                        Op::Delete(_) => {}
                    }
                }
                tx.copy_in(&self.table.copy_into(), &data).await?;
                if staged {
                    tx.execute(self.table.upsert_from_stage(), &[]).await?;
                    tx.execute(format!("TRUNCATE {STAGE_TABLE}"), &[]).await?;
                }
            }
            Dialect::MySql => {
                let params: Vec<SqlValue> = chunk.iter().flat_map(|(op, _)| values(op)).collect();
                tx.execute(self.table.insert(chunk.len()), &params).await?;
            }
            Dialect::Sqlite => {
                let sql = self.table.insert(1);
                for (op, _) in chunk {
                    tx.execute(sql.clone(), &values(op)).await?;
                }
            }
        }
        Ok(())
    }

    /// The slow path after a refused chunk: each row in its own savepoint, so that only the
    /// records at fault are set aside.
    async fn row_by_row<'a>(
        &self,
        tx: &mut SinkTx,
        key: &CommitKey,
        chunk: &[&(Op, Origin<'a>)],
        deleting: bool,
        counts: &mut WriteCounts,
        rejected: &mut Vec<(Origin<'a>, String)>,
    ) -> Result<()> {
        let dialect = self.table.dialect;
        let sql = if deleting {
            self.table.delete(1)
        } else {
            self.table.insert(1)
        };
        for (op, origin) in chunk {
            let (Op::Write(values) | Op::Delete(values)) = op;
            savepoint(tx, "SAVEPOINT weir_row", key).await?;
            match tx.execute(sql.clone(), values).await {
                Ok(_) => {
                    savepoint(tx, "RELEASE SAVEPOINT weir_row", key).await?;
                    counts.rows += 1;
                }
                Err(e) if is_record_fault(dialect, &e) => {
                    savepoint(tx, "ROLLBACK TO SAVEPOINT weir_row", key).await?;
                    savepoint(tx, "RELEASE SAVEPOINT weir_row", key).await?;
                    let reason = format!(
                        "the database refused the row: {}",
                        crate::error::database_message(&e)
                    );
                    self.reject(*origin, &reason, counts, rejected)?;
                }
                Err(e) => {
                    return Err(Error::database(
                        format!(
                            "{}: writing the row of {}@{}",
                            describe(key),
                            origin.tp,
                            origin.record.offset
                        ),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }
}

async fn savepoint(tx: &mut SinkTx, statement: &'static str, key: &CommitKey) -> Result<()> {
    tx.execute(statement.to_owned(), &[])
        .await
        .map(|_| ())
        .map_err(db(format!("{}: {statement}", describe(key))))
}

/// Inserts the commit row; false when it already exists.
async fn insert_commit_row(
    tx: &mut SinkTx,
    dialect: Dialect,
    key: &CommitKey,
    ranges_json: &str,
) -> Result<bool> {
    let mut params = key_parameters(key);
    params.push(SqlValue::Text(ranges_json.to_owned()));
    let context = || format!("{}: inserting the commit row", describe(key));
    match dialect {
        Dialect::Postgres | Dialect::Sqlite => {
            let sql = dialect.placeholders(INSERT_COMMIT_OR_NOTHING);
            let inserted = tx
                .execute(sql, &params)
                .await
                .map_err(|e| Error::database(context(), e))?;
            Ok(inserted == 1)
        }
        // MySQL has no ON CONFLICT DO NOTHING; INSERT IGNORE would hide other errors too.
        Dialect::MySql => match tx.execute(INSERT_COMMIT.to_owned(), &params).await {
            Ok(_) => Ok(true),
            Err(e) if mysql_error_number(&e) == Some(1062) => Ok(false),
            Err(e) => Err(Error::database(context(), e)),
        },
    }
}

/// Moves this output partition's position in `range.tp` from `range.from` to `range.until`,
/// or refuses when the last commit did not end at `range.from`.
async fn advance_offsets(
    tx: &mut SinkTx,
    dialect: Dialect,
    key: &CommitKey,
    range: &OffsetRange,
) -> Result<()> {
    let context = || format!("{}: checking contiguity of {range}", describe(key));
    let where_params = |tp: &TopicPartition| {
        vec![
            SqlValue::Text(key.pipeline.clone()),
            SqlValue::BigInt(key.partition_id),
            SqlValue::Text(tp.topic.clone()),
            SqlValue::Integer(tp.partition),
        ]
    };
    let mut params = vec![
        SqlValue::BigInt(range.from),
        SqlValue::BigInt(range.until),
        SqlValue::BigInt(key.batch_time.as_millis()),
    ];
    params.extend(where_params(&range.tp));
    params.push(SqlValue::BigInt(range.from));
    let updated = tx
        .execute(dialect.placeholders(ADVANCE_OFFSETS), &params)
        .await
        .map_err(|e| Error::database(context(), e))?;
    if updated > 0 {
        return Ok(());
    }
    let current: Option<(i64, i64, i64)> = tx
        .fetch_optional(
            dialect.placeholders(SELECT_OFFSETS),
            &where_params(&range.tp),
        )
        .await
        .map_err(|e| Error::database(context(), e))?;
    match current {
        None => {
            if is_source_partition_id(key.partition_id) {
                refuse_if_written_under_another_id(tx, dialect, key, range).await?;
            }
            let mut params = where_params(&range.tp);
            params.extend([
                SqlValue::BigInt(range.from),
                SqlValue::BigInt(range.until),
                SqlValue::BigInt(key.batch_time.as_millis()),
            ]);
            tx.execute(dialect.placeholders(INSERT_OFFSETS), &params)
                .await
                .map_err(|e| Error::database(context(), e))?;
            Ok(())
        }
        // MySQL counts changed rows only: an unchanged row is still a match.
        Some((_, next, _)) if next == range.from => Ok(()),
        Some((from, next, batch_time)) => Err(Error::Contiguity {
            what: format!("{} on {}", describe(key), range.tp),
            detail: format!(
                "the new range {range} does not start where the last commit ended: batch {batch_time} committed {}",
                OffsetRange::new(range.tp.clone(), from, next)
            ),
        }),
    }
}

/// The first commit of a source-aligned output partition must be the first of its Kafka
/// partition: commits of the same topic-partition under another output partition id mean the
/// ids changed under a running pipeline, and accepting any start here could write its committed
/// ranges a second time under the new keys.
async fn refuse_if_written_under_another_id(
    tx: &mut SinkTx,
    dialect: Dialect,
    key: &CommitKey,
    range: &OffsetRange,
) -> Result<()> {
    let other: Option<(i64, i64)> = tx
        .fetch_optional(
            dialect.placeholders(SELECT_OFFSETS_OF_OTHER_IDS),
            &[
                SqlValue::Text(key.pipeline.clone()),
                SqlValue::Text(range.tp.topic.clone()),
                SqlValue::Integer(range.tp.partition),
                SqlValue::BigInt(key.partition_id),
            ],
        )
        .await
        .map_err(|e| {
            Error::database(
                format!(
                    "{}: checking the first commit of {}",
                    describe(key),
                    range.tp
                ),
                e,
            )
        })?;
    match other {
        None => Ok(()),
        Some((other, next)) => Err(Error::Contiguity {
            what: format!("{} on {}", describe(key), range.tp),
            detail: format!(
                "this is the first commit of output partition {} for {}, but the sink already holds its commits up to offset {next} under output partition {other}: the output partition ids changed. Stop, and report it: weir derives them from the topic-partition alone",
                key.partition_id, range.tp
            ),
        }),
    }
}

fn mysql_error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Whether the database refused a row because of the row: a constraint, a value out of range,
/// a malformed value. Lost connections, deadlocks and missing tables are not.
pub(crate) fn is_record_fault(dialect: Dialect, e: &sqlx::Error) -> bool {
    if crate::error::database_is_retryable(e) {
        return false;
    }
    match e {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match dialect {
                // Not null, duplicate, out of range, truncated, bad datetime, bad value, too
                // long, bad JSON, check constraint, foreign keys.
                Dialect::MySql => mysql_error_number(e).is_some_and(|n| {
                    matches!(
                        n,
                        1048 | 1062
                            | 1264
                            | 1265
                            | 1292
                            | 1366
                            | 1367
                            | 1406
                            | 1451
                            | 1452
                            | 1690
                            | 3140
                            | 4025
                    )
                }),
                // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE; and an
                // increment's total that overflows (see `dialect::sqlite_checked_sum`).
                Dialect::Sqlite => {
                    code.parse::<i32>()
                        .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25))
                        || (code == "1" && db.message() == "integer overflow")
                }
                // Data exceptions and integrity constraint violations.
                Dialect::Postgres => code.starts_with("22") || code.starts_with("23"),
            }
        }
        _ => false,
    }
}
