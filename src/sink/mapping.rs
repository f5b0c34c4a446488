//! From Kafka records to row operations: each record's value (and key) read into the configured
//! columns, tombstones turned into deletes, and, in upsert mode, only the last write to each key
//! of the batch kept. Increment mode keeps every write (each one adds), so that a record the
//! database refuses can be found and set aside alone, and orders them by key. A record that
//! cannot be mapped is set aside with the reason; the caller applies `on_error`.

use std::collections::HashMap;

use chrono::Datelike;

use crate::batch::{PartitionBatch, Record};
use crate::error::{Error, Result};
use crate::plan::TopicPartition;
use crate::sink::config::{KeySource, MetadataField, SqlSinkConfig, WriteMode};
use crate::sink::dialect::{Dialect, TableColumn};
use crate::sink::json::{self, Document, Leaf};
use crate::sink::types::ColumnType;
use crate::sink::value::{SqlValue, from_leaf};

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The record value, at the column's pointer.
    Value,
    /// The record key (a JSON object at the pointer, or the whole scalar key).
    RecordKey,
    /// A Kafka coordinate.
    Metadata(MetadataField),
}

#[derive(Debug, Clone)]
struct MappedColumn {
    name: String,
    column_type: ColumnType,
    pointer: String,
    nullable: bool,
    default: Option<SqlValue>,
    source: Source,
    /// An `increment` column: it needs a number, since adding NULL would erase the total.
    added: bool,
}

/// A record and where it came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) tp: &'a TopicPartition,
    pub(crate) record: &'a Record,
}

impl Origin<'_> {
    /// The record's error, for `on_error = "fail"`.
    pub(crate) fn error(&self, reason: impl Into<String>) -> Error {
        Error::Record {
            tp: self.tp.clone(),
            offset: self.record.offset,
            reason: reason.into(),
        }
    }
}

/// What one record does to the table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// Insert (or upsert) a row: one value per table column.
    Write(Vec<SqlValue>),
    /// Delete the row with these key values.
    Delete(Vec<SqlValue>),
}

/// A record the sink cannot write, and why.
#[derive(Debug, Clone)]
pub(crate) struct Rejected<'a> {
    pub(crate) origin: Origin<'a>,
    pub(crate) reason: String,
}

/// The operations of one output partition's batch.
#[derive(Debug, Default)]
pub(crate) struct Mapped<'a> {
    /// Row operations in input order, after the last-write-wins reduction in upsert mode; in
    /// increment mode ordered by key, each key's in input order.
    pub(crate) ops: Vec<(Op, Origin<'a>)>,
    /// Records that could not be mapped.
    pub(crate) rejected: Vec<Rejected<'a>>,
    /// Records that need no write: tombstones in append mode, or with deletes off.
    pub(crate) ignored: u64,
}

/// Maps records onto the columns of one table. Built once from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct RowMapper {
    columns: Vec<MappedColumn>,
    key: Vec<usize>,
    /// Positions of the `increment` columns.
    added: Vec<usize>,
    /// Whether only the last write to a key is kept (upsert mode).
    last_write_wins: bool,
    deletes: bool,
    /// PostgreSQL text cannot hold NUL characters.
    rejects_nul: bool,
    /// The years a date or instant may have: MySQL's DATETIME and DATE hold 1000 to 9999, and
    /// MariaDB stores a year beyond them as NULL or 0000-00-00 instead of refusing it.
    years: Option<std::ops::RangeInclusive<i32>>,
    /// Whether any column reads the value as JSON (otherwise the value may be any bytes).
    parses_value: bool,
}

impl RowMapper {
    /// The mapper of `config`; fails on a `default` that does not fit its column.
    pub(crate) fn new(config: &SqlSinkConfig, dialect: Dialect) -> Result<Self> {
        let key_names = config.key_columns();
        let mut columns = Vec::new();
        for (i, c) in config.columns.iter().enumerate() {
            let source = if config.key_source == KeySource::RecordKey && key_names.contains(&c.name)
            {
                Source::RecordKey
            } else {
                Source::Value
            };
            let default = match &c.default {
                None | Some(serde_json::Value::Null) => None,
                Some(value) => {
                    let text = value.to_string();
                    let doc = Document::parse(&text)
                        .map_err(|e| Error::config(format!("sink.columns[{i}].default"), e))?;
                    let leaf = doc.get("").ok().flatten().map(json::leaf);
                    let leaf = leaf
                        .unwrap_or(Ok(Leaf::Null))
                        .map_err(|e| Error::config(format!("sink.columns[{i}].default"), e))?;
                    Some(
                        from_leaf(leaf, c.column_type)
                            .map_err(|e| Error::config(format!("sink.columns[{i}].default"), e))?,
                    )
                }
            };
            columns.push(MappedColumn {
                name: c.name.clone(),
                column_type: c.column_type,
                pointer: c.pointer(),
                nullable: c.nullable,
                default,
                source,
                added: config.mode == WriteMode::Increment && config.increment.contains(&c.name),
            });
        }
        for (field, name) in config.metadata.columns() {
            columns.push(MappedColumn {
                name: name.to_owned(),
                column_type: field.column_type(),
                pointer: String::new(),
                nullable: matches!(field, MetadataField::Timestamp | MetadataField::Key),
                default: None,
                source: Source::Metadata(field),
                added: false,
            });
        }
        let key = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        let added = (0..columns.len()).filter(|&i| columns[i].added).collect();
        let parses_value = columns
            .iter()
            .any(|c| c.source == Source::Value && !is_raw(c));
        Ok(Self {
            columns,
            key,
            added,
            last_write_wins: config.mode == WriteMode::Upsert,
            deletes: config.deletes_on_tombstone(),
            rejects_nul: dialect == Dialect::Postgres,
            years: (dialect == Dialect::MySql).then_some(1000..=9999),
            parses_value,
        })
    }

    /// The table's columns in write order.
    pub(crate) fn table_columns(&self) -> Vec<TableColumn> {
        self.columns
            .iter()
            .map(|c| TableColumn {
                name: c.name.clone(),
                column_type: c.column_type,
                nullable: c.nullable && !c.added,
            })
            .collect()
    }

    /// Positions of the key columns.
    pub(crate) fn key(&self) -> &[usize] {
        &self.key
    }

    /// Positions of the `increment` columns (empty unless in increment mode).
    pub(crate) fn added(&self) -> &[usize] {
        &self.added
    }

    /// Maps every record of `input`, in order.
    pub(crate) fn map<'a>(&self, input: &'a [PartitionBatch]) -> Mapped<'a> {
        let mut mapped = Mapped::default();
        mapped
            .ops
            .reserve(input.iter().map(|batch| batch.records.len()).sum());
        let mut by_key: HashMap<Vec<u8>, usize> = HashMap::new();
        for batch in input {
            for record in &batch.records {
                let origin = Origin {
                    tp: &batch.range.tp,
                    record,
                };
                let op = match self.map_record(origin) {
                    Ok(Some(op)) => op,
                    Ok(None) => {
                        mapped.ignored += 1;
                        continue;
                    }
                    Err(reason) => {
                        mapped.rejected.push(Rejected { origin, reason });
                        continue;
                    }
                };
                if !self.last_write_wins {
                    mapped.ops.push((op, origin));
                    continue;
                }
                // Last write wins: a later op for the same key replaces the earlier one in place.
                let key_bytes = self.key_bytes(&op);
                match by_key.get(&key_bytes) {
                    Some(&at) => mapped.ops[at] = (op, origin),
                    None => {
                        by_key.insert(key_bytes, mapped.ops.len());
                        mapped.ops.push((op, origin));
                    }
                }
            }
        }
        if !self.added.is_empty() {
            // Output partitions of one batch often add to the same keys (a word count's "the")
            // at once: taking the rows' locks in one order everywhere keeps them from
            // deadlocking. The sort is stable, so each key's writes keep their order.
            mapped.ops.sort_by_cached_key(|(op, _)| self.key_bytes(op));
        }
        mapped
    }

    fn key_bytes(&self, op: &Op) -> Vec<u8> {
        let mut out = Vec::new();
        match op {
            Op::Write(values) => {
                for &i in &self.key {
                    values[i].write_key_bytes(&mut out);
                }
            }
            Op::Delete(key) => {
                for value in key {
                    value.write_key_bytes(&mut out);
                }
            }
        }
        out
    }

    /// The operation of one record; `None` when the record needs none.
    fn map_record(&self, origin: Origin<'_>) -> Result<Option<Op>, String> {
        let record = origin.record;
        // Only records whose key is read pay for checking it.
        let key_text = || {
            record
                .key
                .as_deref()
                .map(|k| std::str::from_utf8(k).map_err(|e| format!("key is not valid UTF-8: {e}")))
        };
        let Some(value) = &record.value else {
            if !self.deletes {
                return Ok(None);
            }
            let key_text = key_text().transpose()?;
            let key_doc = key_text.map(KeyDoc::parse);
            let values = self
                .key
                .iter()
                .map(|&i| {
                    let column = &self.columns[i];
                    match column.source {
                        Source::Metadata(field) => self.metadata(origin, field),
                        // A tombstone has no value: key fields are read from the record key.
                        Source::Value | Source::RecordKey => {
                            let leaf = key_doc
                                .as_ref()
                                .ok_or("a tombstone without a key cannot delete anything")?
                                .leaf(&column.pointer, self.key.len() == 1)?;
                            self.finish(column, leaf, "key")
                        }
                    }
                })
                .collect::<Result<Vec<_>, String>>()?;
            return Ok(Some(Op::Delete(values)));
        };
        let value_text = if self.parses_value {
            Some(std::str::from_utf8(value).map_err(|e| format!("value is not valid UTF-8: {e}"))?)
        } else {
            None
        };
        let doc = value_text.map(Document::parse).transpose()?;
        let mut key_doc = None;
        let mut row = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let v = match column.source {
                Source::Metadata(field) => self.metadata(origin, field)?,
                Source::Value if is_raw(column) => self.raw(column, value)?,
                Source::Value => {
                    let leaf = match doc
                        .as_ref()
                        .map(|d| d.get(&column.pointer))
                        .transpose()?
                        .flatten()
                    {
                        Some(raw) => json::leaf(raw)?,
                        None => Leaf::Null,
                    };
                    self.finish(column, leaf, "value")?
                }
                Source::RecordKey => {
                    if key_doc.is_none() {
                        let text = key_text()
                            .transpose()?
                            .ok_or("the record has no key, and key_source = \"record_key\"")?;
                        key_doc = Some(KeyDoc::parse(text));
                    }
                    let leaf = key_doc.as_ref().map_or(Ok(Leaf::Null), |k| {
                        k.leaf(&column.pointer, self.key.len() == 1)
                    })?;
                    self.finish(column, leaf, "key")?
                }
            };
            row.push(v);
        }
        Ok(Some(Op::Write(row)))
    }

    /// A field's value, default or NULL, checked against the column.
    fn finish(
        &self,
        column: &MappedColumn,
        leaf: Leaf<'_>,
        what: &str,
    ) -> Result<SqlValue, String> {
        let value = match leaf {
            Leaf::Null => match &column.default {
                Some(default) => default.clone(),
                None if column.added => {
                    return Err(format!(
                        "{what} field {} is missing or null, and increment column {} needs a number (give the column default = 0 to count a missing field as zero)",
                        display_pointer(&column.pointer),
                        column.name
                    ));
                }
                None if column.nullable => SqlValue::Null(column.column_type),
                None => {
                    return Err(format!(
                        "{what} field {} is missing or null, and column {} is not nullable",
                        display_pointer(&column.pointer),
                        column.name
                    ));
                }
            },
            leaf => from_leaf(leaf, column.column_type)
                .map_err(|e| format!("{what} field {}: {e}", display_pointer(&column.pointer)))?,
        };
        self.check_value(&value, &column.name)?;
        Ok(value)
    }

    /// Raw columns (`path = ""` with type text or bytes) take the value's bytes as they are.
    fn raw(&self, column: &MappedColumn, value: &[u8]) -> Result<SqlValue, String> {
        let v = match column.column_type {
            ColumnType::Bytes => SqlValue::Bytes(value.to_vec()),
            _ => SqlValue::Text(
                std::str::from_utf8(value)
                    .map_err(|e| format!("value is not valid UTF-8: {e}"))?
                    .to_owned(),
            ),
        };
        self.check_value(&v, &column.name)?;
        Ok(v)
    }

    fn metadata(&self, origin: Origin<'_>, field: MetadataField) -> Result<SqlValue, String> {
        let record = origin.record;
        let value = match field {
            MetadataField::Topic => SqlValue::Text(origin.tp.topic.clone()),
            MetadataField::Partition => SqlValue::Integer(origin.tp.partition),
            MetadataField::Offset => SqlValue::BigInt(record.offset),
            MetadataField::Timestamp => match record
                .timestamp
                .and_then(chrono::DateTime::from_timestamp_millis)
            {
                Some(t) => SqlValue::Timestamptz(t),
                None => SqlValue::Null(ColumnType::Timestamptz),
            },
            MetadataField::Key => match &record.key {
                Some(k) => SqlValue::Text(
                    std::str::from_utf8(k)
                        .map_err(|e| format!("key is not valid UTF-8: {e}"))?
                        .to_owned(),
                ),
                None => SqlValue::Null(ColumnType::Text),
            },
        };
        self.check_value(&value, "key")?;
        Ok(value)
    }

    /// Refuses what the database would store changed: NUL in PostgreSQL text, years MySQL
    /// cannot hold.
    fn check_value(&self, value: &SqlValue, column: &str) -> Result<(), String> {
        if let SqlValue::Text(s) = value
            && self.rejects_nul
            && s.contains('\0')
        {
            return Err(format!(
                "column {column}: text contains a NUL character, which PostgreSQL cannot store (use a bytes column)"
            ));
        }
        let year = match value {
            SqlValue::Timestamptz(t) => t.year(),
            SqlValue::Date(d) => d.year(),
            _ => return Ok(()),
        };
        if let Some(years) = &self.years
            && !years.contains(&year)
        {
            return Err(format!(
                "column {column}: {} is outside the years {} to {} that MySQL and MariaDB DATETIME and DATE columns hold",
                match value {
                    SqlValue::Timestamptz(t) =>
                        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    SqlValue::Date(d) => d.to_string(),
                    _ => String::new(),
                },
                years.start(),
                years.end()
            ));
        }
        Ok(())
    }
}

fn is_raw(column: &MappedColumn) -> bool {
    column.pointer.is_empty() && matches!(column.column_type, ColumnType::Bytes | ColumnType::Text)
}

fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(the whole document)"
    } else {
        pointer
    }
}

/// A record key: a JSON object read by pointer, or one scalar.
enum KeyDoc<'a> {
    Object(Document<'a>),
    Scalar(Leaf<'a>),
}

impl<'a> KeyDoc<'a> {
    fn parse(text: &'a str) -> Self {
        if text.trim_start().starts_with('{')
            && let Ok(doc) = Document::parse(text)
        {
            return Self::Object(doc);
        }
        Self::Scalar(json::scalar_or_text(text))
    }

    /// The key field for a column at `pointer`; a scalar key fills a single key column.
    fn leaf(&self, pointer: &str, single: bool) -> Result<Leaf<'a>, String> {
        match self {
            Self::Object(doc) => match doc.get(pointer)? {
                Some(raw) => json::leaf(raw),
                None => Ok(Leaf::Null),
            },
            Self::Scalar(leaf) if single => Ok(match leaf {
                Leaf::Null => Leaf::Null,
                Leaf::Bool(b) => Leaf::Bool(*b),
                Leaf::Number(n) => Leaf::Number(n),
                Leaf::String(s) => Leaf::String(s.clone()),
                Leaf::Composite(c) => Leaf::Composite(c),
            }),
            Self::Scalar(_) => Err(
                "the key is a scalar but there are several key columns; send a JSON object key"
                    .to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::OffsetRange;

    fn config(extra: &str) -> SqlSinkConfig {
        let text = format!(
            "{extra}\ntable = \"t\"\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\nnullable = false\n[[columns]]\nname = \"name\"\ntype = \"text\"\n"
        );
        let c: SqlSinkConfig = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        c
    }

    fn record(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
        Record {
            offset,
            timestamp: Some(1_000),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        }
    }

    fn batch(records: Vec<Record>) -> Vec<PartitionBatch> {
        let tp = TopicPartition::new("topic", 0);
        vec![PartitionBatch {
            range: OffsetRange::new(tp, 0, 100),
            records,
        }]
    }

    #[test]
    fn upsert_keeps_the_last_write_per_key_and_deletes_on_tombstones() {
        let c = config("mode = \"upsert\"\nkey = [\"id\"]");
        let mapper = RowMapper::new(&c, Dialect::Sqlite).unwrap();
        let input = batch(vec![
            record(0, Some(b"{\"id\":1}"), Some(br#"{"id":1,"name":"a"}"#)),
            record(1, Some(b"{\"id\":2}"), Some(br#"{"id":2,"name":"b"}"#)),
            record(2, Some(b"{\"id\":1}"), Some(br#"{"id":1,"name":"c"}"#)),
            record(3, Some(b"{\"id\":2}"), None),
            record(4, None, Some(b"not json")),
        ]);
        let mapped = mapper.map(&input);
        let ops: Vec<&Op> = mapped.ops.iter().map(|(op, _)| op).collect();
        assert_eq!(
            ops,
            [
                &Op::Write(vec![SqlValue::BigInt(1), SqlValue::Text("c".into())]),
                &Op::Delete(vec![SqlValue::BigInt(2)]),
            ]
        );
        assert_eq!(mapped.rejected.len(), 1);
        assert_eq!(mapped.rejected[0].origin.record.offset, 4);
        assert!(
            mapped.rejected[0].reason.contains("not valid JSON"),
            "{}",
            mapped.rejected[0].reason
        );
    }

    #[test]
    fn increments_keep_every_write_and_need_a_number() {
        let text = "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"n\"]\ntable = \"t\"\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\n[[columns]]\nname = \"n\"\ntype = \"bigint\"\n";
        let c: SqlSinkConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        let mapper = RowMapper::new(&c, Dialect::Sqlite).unwrap();
        assert_eq!(mapper.added(), [1]);
        assert!(!mapper.table_columns()[1].nullable, "created NOT NULL");
        let input = batch(vec![
            record(0, None, Some(br#"{"id":2,"n":1}"#)),
            record(1, None, Some(br#"{"id":1,"n":2}"#)),
            record(2, None, Some(br#"{"id":1,"n":3}"#)),
            record(3, None, Some(br#"{"id":1}"#)),
            record(4, Some(b"{\"id\":1}"), None),
        ]);
        let mapped = mapper.map(&input);
        // Every write kept, ordered by key, each key's writes in record order.
        let offsets: Vec<i64> = mapped.ops.iter().map(|(_, o)| o.record.offset).collect();
        assert_eq!(offsets, [1, 2, 0]);
        assert_eq!(
            mapped.ops[1].0,
            Op::Write(vec![SqlValue::BigInt(1), SqlValue::BigInt(3)])
        );
        assert_eq!(mapped.ignored, 1, "a tombstone adds nothing");
        assert_eq!(mapped.rejected.len(), 1);
        let reason = &mapped.rejected[0].reason;
        assert!(
            reason.contains("increment column n needs a number") && reason.contains("default = 0"),
            "{reason}"
        );
    }

    #[test]
    fn record_errors_say_what_is_wrong() {
        let mapper = RowMapper::new(&config(""), Dialect::Postgres).unwrap();
        let input = batch(vec![
            record(0, None, Some(br#"{"name":"no id"}"#)),
            record(1, None, Some(br#"{"id":"x"}"#)),
            record(2, None, Some(b"{\"id\":1,\"name\":\"a\\u0000b\"}")),
            record(3, None, Some(b"{\"id\":1,\"name\":\"\xff\"}")),
            record(4, None, None),
            record(5, None, Some(br#"{"id":5}"#)),
        ]);
        let mapped = mapper.map(&input);
        let reasons: Vec<&str> = mapped.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons[0].contains("/id is missing or null"),
            "{}",
            reasons[0]
        );
        assert!(reasons[1].contains("64-bit integer"), "{}", reasons[1]);
        assert!(reasons[2].contains("NUL"), "{}", reasons[2]);
        assert!(reasons[3].contains("UTF-8"), "{}", reasons[3]);
        assert_eq!(mapped.ignored, 1, "a tombstone in append mode is ignored");
        assert_eq!(mapped.ops.len(), 1);
        // SQLite stores NUL bytes in text as they are.
        let lite = RowMapper::new(&config(""), Dialect::Sqlite).unwrap();
        assert_eq!(lite.map(&input).rejected.len(), 3);
    }

    #[test]
    fn keys_from_the_record_key_and_kafka_coordinates() {
        let c = config("mode = \"upsert\"\nkey = [\"id\"]\nkey_source = \"record_key\"");
        let mapper = RowMapper::new(&c, Dialect::Sqlite).unwrap();
        let input = batch(vec![
            record(0, Some(b"7"), Some(br#"{"id":999,"name":"a"}"#)),
            record(1, Some(b"{\"id\": 8}"), Some(br#"{"name":"b"}"#)),
            record(2, None, Some(br#"{"name":"c"}"#)),
        ]);
        let mapped = mapper.map(&input);
        assert_eq!(
            mapped.ops[0].0,
            Op::Write(vec![SqlValue::BigInt(7), SqlValue::Text("a".into())])
        );
        assert_eq!(
            mapped.ops[1].0,
            Op::Write(vec![SqlValue::BigInt(8), SqlValue::Text("b".into())])
        );
        assert_eq!(mapped.rejected.len(), 1);

        let text = "mode = \"upsert\"\nkey_source = \"kafka\"\ntable = \"t\"\n[[columns]]\nname = \"name\"\ntype = \"text\"\n[metadata]\ntopic = \"t\"\npartition = \"p\"\noffset = \"o\"\n";
        let c: SqlSinkConfig = toml::from_str(text).unwrap();
        let mapper = RowMapper::new(&c, Dialect::Sqlite).unwrap();
        let input = batch(vec![record(42, None, Some(br#"{"name":"x"}"#))]);
        let mapped = mapper.map(&input);
        assert_eq!(
            mapped.ops[0].0,
            Op::Write(vec![
                SqlValue::Text("x".into()),
                SqlValue::Text("topic".into()),
                SqlValue::Integer(0),
                SqlValue::BigInt(42),
            ])
        );
    }

    #[test]
    fn raw_columns_take_any_bytes() {
        let text =
            "table = \"t\"\n[[columns]]\nname = \"payload\"\ntype = \"bytes\"\npath = \"\"\n";
        let c: SqlSinkConfig = toml::from_str(text).unwrap();
        let mapper = RowMapper::new(&c, Dialect::Postgres).unwrap();
        let input = batch(vec![record(0, None, Some(b"\xff\x00not json"))]);
        let mapped = mapper.map(&input);
        assert_eq!(
            mapped.ops[0].0,
            Op::Write(vec![SqlValue::Bytes(b"\xff\x00not json".to_vec())])
        );
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let text = "table = \"t\"\n[[columns]]\nname = \"n\"\ntype = \"numeric\"\nnullable = false\ndefault = \"0.00\"\n";
        let c: SqlSinkConfig = toml::from_str(text).unwrap();
        let mapper = RowMapper::new(&c, Dialect::Sqlite).unwrap();
        let input = batch(vec![record(0, None, Some(b"{}"))]);
        let mapped = mapper.map(&input);
        assert_eq!(
            mapped.ops[0].0,
            Op::Write(vec![SqlValue::Numeric(rust_decimal::Decimal::new(0, 2))])
        );
        let bad = "table = \"t\"\n[[columns]]\nname = \"n\"\ntype = \"bigint\"\ndefault = \"x\"\n";
        let c: SqlSinkConfig = toml::from_str(bad).unwrap();
        assert!(
            RowMapper::new(&c, Dialect::Sqlite)
                .unwrap_err()
                .to_string()
                .contains("sink.columns[0].default")
        );
    }

    mod any_record {
        use proptest::prelude::*;

        use super::*;
        use crate::sink::json::tests::json_text;

        /// Every column type, read from the top level, from nested paths, from array items,
        /// from the whole value and from the key.
        fn mappers(mode: &str) -> Vec<RowMapper> {
            let text = format!(
                r#"{mode}
table = "t"
columns = [
    {{ name = "id", type = "bigint" }},
    {{ name = "i", type = "integer", path = "/v" }},
    {{ name = "n", type = "numeric(12,2)", path = "/v/0" }},
    {{ name = "m", type = "numeric", path = "/v/a" }},
    {{ name = "d", type = "double", path = "/v/1" }},
    {{ name = "b", type = "boolean", path = "/v/v" }},
    {{ name = "s", type = "text", path = "/a~1b" }},
    {{ name = "j", type = "json", path = "/v" }},
    {{ name = "ts", type = "timestamptz", path = "/v/ts" }},
    {{ name = "day", type = "date", path = "/m~0n" }},
    {{ name = "raw", type = "bytes", path = "/v/2" }},
    {{ name = "whole", type = "json", path = "" }},
    {{ name = "req", type = "text", path = "/v/v", nullable = false }},
]
[metadata]
key = "k"
timestamp = "at"
"#
            );
            let config: SqlSinkConfig = toml::from_str(&text).unwrap();
            config.validate().unwrap();
            [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite]
                .into_iter()
                .map(|dialect| RowMapper::new(&config, dialect).unwrap())
                .collect()
        }

        fn any_value() -> impl Strategy<Value = Option<Vec<u8>>> {
            prop::option::weighted(
                0.9,
                prop_oneof![
                    4 => json_text().prop_map(String::into_bytes),
                    1 => prop::collection::vec(any::<u8>(), 0..20),
                ],
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the records hold, mapping never panics, and each record becomes a row
            /// operation, a rejection with a reason, or nothing (a tombstone that deletes
            /// nothing): none is lost.
            #[test]
            fn any_record_is_a_row_or_a_named_error(
                records in prop::collection::vec(
                    (
                        prop::option::of(prop_oneof![
                            json_text().prop_map(String::into_bytes),
                            prop::collection::vec(any::<u8>(), 0..8),
                        ]),
                        any_value(),
                        prop::option::of(any::<i64>()),
                    ),
                    1..8,
                ),
                mode in prop_oneof![
                    Just(""),
                    Just("mode = \"upsert\"\nkey = [\"id\"]"),
                    Just("mode = \"upsert\"\nkey = [\"id\"]\nkey_source = \"record_key\""),
                    Just("mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"i\"]"),
                ],
            ) {
                let records: Vec<Record> = records
                    .into_iter()
                    .zip(0..)
                    .map(|((key, value, timestamp), offset)| Record {
                        offset,
                        timestamp,
                        key,
                        value,
                        headers: Vec::new(),
                    })
                    .collect();
                let input = batch(records);
                for mapper in mappers(mode) {
                    let mapped = mapper.map(&input);
                    let accounted = mapped.ops.len() + mapped.rejected.len();
                    let ignored = usize::try_from(mapped.ignored).unwrap();
                    if mode.contains("upsert") {
                        // The last write per key wins: earlier ones are folded, never lost
                        // unaccounted.
                        prop_assert!(accounted + ignored <= input[0].records.len());
                    } else {
                        prop_assert_eq!(accounted + ignored, input[0].records.len());
                    }
                    let width = mapper.table_columns().len();
                    for (op, _) in &mapped.ops {
                        match op {
                            Op::Write(values) => prop_assert_eq!(values.len(), width),
                            Op::Delete(key) => prop_assert_eq!(key.len(), mapper.key().len()),
                        }
                    }
                    for rejected in &mapped.rejected {
                        prop_assert!(!rejected.reason.is_empty());
                    }
                }
            }
        }
    }
}
