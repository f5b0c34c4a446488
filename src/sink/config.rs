//! `SqlSinkConfig`: the `[sink]` table of a pipeline file, which maps a topic onto a table.
//!
//! The keys follow Kafka Connect's JDBC sink where they overlap (`insert.mode` → `mode`,
//! `pk.mode` → `key_source`, `pk.fields` → `key`, `auto.create` → `create_table`,
//! `delete.enabled` → `delete_on_tombstone`, `batch.size` → `batch_size`, `errors.tolerance` →
//! `on_error`). `mode = "increment"` has no Connect counterpart: it upserts by `key` but adds the
//! `increment` columns to what the row holds (`count = count + excluded.count`), which only an
//! exactly-once sink can offer, since a replayed increment would count twice.
//!
//! ```
//! use weir::sink::SqlSinkConfig;
//! let config: SqlSinkConfig = toml::from_str(r#"
//!     url = "postgres://weir:weir@127.0.0.1:5432/weir"
//!     table = "orders"
//!     mode = "upsert"
//!     key = ["id"]
//!     on_error = "dead_letter"
//!     [[columns]]
//!     name = "id"
//!     type = "bigint"
//!     nullable = false
//!     [[columns]]
//!     name = "total"
//!     type = "numeric(12,2)"
//!     path = "/amount/total"
//!     [metadata]
//!     offset = "src_offset"
//! "#).unwrap();
//! config.validate().unwrap();
//! assert_eq!(config.columns[1].pointer(), "/amount/total");
//! ```
//!
//! Running totals, e.g. the per-batch counts of a stateless word count:
//!
//! ```
//! use weir::sink::{SqlSinkConfig, WriteMode};
//! let config: SqlSinkConfig = toml::from_str(r#"
//!     table = "word_counts"
//!     mode = "increment"
//!     key = ["word"]
//!     increment = ["count"]
//!     create_table = true
//!     columns = [{ name = "word", type = "text" }, { name = "count", type = "bigint" }]
//! "#).unwrap();
//! config.validate().unwrap();
//! assert_eq!(config.mode, WriteMode::Increment);
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sink::dialect::Dialect;
use crate::sink::ident::validate_identifier;
use crate::sink::types::ColumnType;

/// Default `sink.url`: SQLite file `weir.db` in the working directory, created if missing.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://weir.db?mode=rwc";

/// PostgreSQL's limit on bind parameters in one statement, which also bounds MySQL's.
pub const MAX_BIND_PARAMETERS: usize = 65_535;

/// The `[sink]` table: where and how records are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSinkConfig {
    /// Database URL: `postgres://…`, `mysql://…` (`mariadb://…` is the same), or `sqlite://…`.
    /// Default: `sqlite://weir.db?mode=rwc`.
    #[serde(default = "default_url")]
    pub url: String,
    /// PostgreSQL schema or MySQL database that holds `table`; the connection's default when unset.
    #[serde(default)]
    pub schema: Option<String>,
    /// The target table.
    pub table: String,
    /// `append` inserts every record; `upsert` inserts or updates by `key`; `increment` inserts
    /// or adds to the `increment` columns by `key`.
    #[serde(default)]
    pub mode: WriteMode,
    /// Key column names (the table's primary key or a unique key). Required in upsert and
    /// increment mode; with `key_source = "kafka"` it defaults to the topic, partition and offset
    /// columns.
    #[serde(default)]
    pub key: Vec<String>,
    /// Increment mode: the columns added to (`count = count + excluded.count`); the other
    /// non-key columns are overwritten, the last write winning. Each must be a `[[columns]]`
    /// entry of type `bigint`, `integer` or `numeric` (not on SQLite, which stores numerics as
    /// text), and not a key column. Required, and only allowed, in increment mode.
    #[serde(default)]
    pub increment: Vec<String>,
    /// Where the key columns' values come from.
    #[serde(default)]
    pub key_source: KeySource,
    /// What happens to a record that cannot be written.
    #[serde(default)]
    pub on_error: OnError,
    /// Create the table from `columns` (and the metadata columns) if it does not exist.
    #[serde(default)]
    pub create_table: bool,
    /// The table's columns filled from each record.
    #[serde(default)]
    pub columns: Vec<ColumnConfig>,
    /// Columns filled with the record's Kafka coordinates.
    #[serde(default)]
    pub metadata: MetadataColumns,
    /// Database connections, which is also how many output partitions are written at once.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Rows per statement or chunk; lowered further to stay under 65,535 bind parameters and,
    /// on MySQL, under `max_allowed_packet`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Whether a tombstone (a record with a null value) deletes its key's row. Upsert mode only;
    /// default true there. Increment mode ignores tombstones (a total cannot be un-added).
    #[serde(default)]
    pub delete_on_tombstone: Option<bool>,
    /// How long commit rows are kept one per batch in `weir_commits`. Older ones of an output
    /// partition are folded into one row covering their ranges, so the table stops growing while
    /// `weir verify` and the contiguity check lose nothing; only a replay of a batch that old
    /// would no longer be recognised, and the contiguity check refuses it. Default 7 days.
    #[serde(default = "default_commit_retention", with = "crate::config::duration")]
    pub commit_retention: std::time::Duration,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Insert every record as a new row. Tombstones are skipped.
    #[default]
    Append,
    /// Insert or update by the key; within a batch the last write to a key wins, and a tombstone
    /// deletes the key's row.
    Upsert,
    /// Insert or update by the key, adding each record's `increment` columns to the row's
    /// (`count = count + excluded.count`) and overwriting the other non-key columns. Exactly
    /// once, because the additions commit with the commit row. Tombstones are skipped.
    Increment,
}

impl WriteMode {
    /// The mode as written in the configuration: `append`, `upsert` or `increment`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Upsert => "upsert",
            Self::Increment => "increment",
        }
    }

    /// Whether rows are keyed: an existing row with the key is updated, not appended to.
    pub fn is_keyed(self) -> bool {
        matches!(self, Self::Upsert | Self::Increment)
    }
}

/// Where the key columns' values come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// Fields of the record value, like every other column. A tombstone has no value: its key
    /// columns are read from the record key, parsed as JSON, at the same paths.
    #[default]
    Value,
    /// The Kafka record key: a JSON object read at the key columns' paths, or a scalar (JSON or
    /// plain text) that fills the single key column.
    RecordKey,
    /// The Kafka coordinates: the metadata columns for topic, partition and offset.
    Kafka,
}

/// What to do with a record that cannot be written (bad JSON, wrong type, constraint violation).
/// A database that is unreachable is never the record's fault: that is retried, then fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop, naming the topic, partition, offset and reason; nothing of the output partition's
    /// batch is committed.
    #[default]
    Fail,
    /// Leave the record out, count it and log it.
    Skip,
    /// Store the raw record and the error in `weir_dead_letters`, in the same transaction.
    DeadLetter,
}

/// One `[[sink.columns]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Column name in the table.
    pub name: String,
    /// Column type; see [`ColumnType`].
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// JSON pointer (RFC 6901) to the field in the record value; default `/<name>`. `""` is the
    /// whole value.
    #[serde(default)]
    pub path: Option<String>,
    /// Whether a missing or null field is stored as NULL (true, the default) or is the record's
    /// error.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// Value used when the field is missing or null, read like the field itself.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

impl ColumnConfig {
    /// A nullable column read from `/<name>`.
    pub fn new(name: impl Into<String>, column_type: ColumnType) -> Self {
        Self {
            name: name.into(),
            column_type,
            path: None,
            nullable: true,
            default: None,
        }
    }

    /// The JSON pointer the column is read from.
    pub fn pointer(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("/{}", self.name))
    }
}

/// `[sink.metadata]`: column names for the record's Kafka coordinates, each optional.
/// Types: topic text, partition integer, offset bigint, timestamp timestamptz, key text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataColumns {
    /// Column for the topic name.
    #[serde(default)]
    pub topic: Option<String>,
    /// Column for the Kafka partition.
    #[serde(default)]
    pub partition: Option<String>,
    /// Column for the record's offset.
    #[serde(default)]
    pub offset: Option<String>,
    /// Column for the record's timestamp (NULL when the broker gave none).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Column for the record key as UTF-8 text (NULL for records without a key).
    #[serde(default)]
    pub key: Option<String>,
}

/// A Kafka coordinate a metadata column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataField {
    /// The topic name.
    Topic,
    /// The partition.
    Partition,
    /// The offset.
    Offset,
    /// The record timestamp.
    Timestamp,
    /// The record key, as text.
    Key,
}

impl MetadataField {
    /// The type of the column that holds this coordinate.
    pub fn column_type(self) -> ColumnType {
        match self {
            Self::Topic | Self::Key => ColumnType::Text,
            Self::Partition => ColumnType::Integer,
            Self::Offset => ColumnType::BigInt,
            Self::Timestamp => ColumnType::Timestamptz,
        }
    }

    fn key_name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Partition => "partition",
            Self::Offset => "offset",
            Self::Timestamp => "timestamp",
            Self::Key => "key",
        }
    }
}

impl MetadataColumns {
    /// The configured metadata columns in a fixed order, with what each holds.
    pub fn columns(&self) -> Vec<(MetadataField, &str)> {
        [
            (MetadataField::Topic, &self.topic),
            (MetadataField::Partition, &self.partition),
            (MetadataField::Offset, &self.offset),
            (MetadataField::Timestamp, &self.timestamp),
            (MetadataField::Key, &self.key),
        ]
        .into_iter()
        .filter_map(|(field, name)| name.as_deref().map(|n| (field, n)))
        .collect()
    }
}

fn default_url() -> String {
    DEFAULT_SQLITE_URL.to_owned()
}

fn default_commit_retention() -> std::time::Duration {
    std::time::Duration::from_secs(7 * 24 * 3600)
}

fn default_pool_size() -> u32 {
    4
}

fn default_batch_size() -> usize {
    1_000
}

fn default_true() -> bool {
    true
}

impl SqlSinkConfig {
    /// A minimal configuration: append into `table` through `url`, no columns yet.
    pub fn new(url: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            table: table.into(),
            mode: WriteMode::Append,
            key: Vec::new(),
            increment: Vec::new(),
            key_source: KeySource::Value,
            on_error: OnError::Fail,
            create_table: false,
            columns: Vec::new(),
            metadata: MetadataColumns::default(),
            pool_size: default_pool_size(),
            batch_size: default_batch_size(),
            delete_on_tombstone: None,
            commit_retention: default_commit_retention(),
        }
    }

    /// Whether tombstones delete rows: only in upsert mode, by default there.
    pub fn deletes_on_tombstone(&self) -> bool {
        self.mode == WriteMode::Upsert && self.delete_on_tombstone.unwrap_or(true)
    }

    /// What the sink writes to, for the checkpoint fingerprint: the URL without credentials or
    /// options, and the table, e.g. `postgres://db:5432/shop table=orders`.
    pub fn identity(&self) -> String {
        let url = redact(&self.url);
        let url = url.split('?').next().unwrap_or_default();
        let url = match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}{}", &url[..scheme_end + 3], &url[at + 1..])
            }
            _ => url.to_owned(),
        };
        match &self.schema {
            Some(schema) => format!("{url} table={schema}.{}", self.table),
            None => format!("{url} table={}", self.table),
        }
    }

    /// The database kind of `url`.
    pub fn dialect(&self) -> Result<Dialect> {
        Dialect::from_url(&self.url)
            .ok_or_else(|| Error::config("sink.url", format!("{:?} is not a database URL weir supports; use postgres://…, mysql://…, mariadb://… or sqlite://…", redact(&self.url))))
    }

    /// The key columns, with the kafka-coordinates default applied.
    pub fn key_columns(&self) -> Vec<String> {
        if self.key.is_empty() && self.key_source == KeySource::Kafka {
            let m = &self.metadata;
            return [&m.topic, &m.partition, &m.offset]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
        }
        self.key.clone()
    }

    /// Checks everything that can be checked without a database: the URL, every identifier,
    /// the key against the columns, sizes. Errors name the key, e.g. `sink.columns[2].name`.
    pub fn validate(&self) -> Result<()> {
        self.dialect()?;
        if let Some(schema) = &self.schema {
            validate_identifier("sink.schema", schema)?;
        }
        validate_identifier("sink.table", &self.table)?;
        for (i, column) in self.columns.iter().enumerate() {
            validate_identifier(&format!("sink.columns[{i}].name"), &column.name)?;
            let pointer = column.pointer();
            if !(pointer.is_empty() || pointer.starts_with('/')) {
                return Err(Error::config(
                    format!("sink.columns[{i}].path"),
                    format!(
                        "{pointer:?} is not a JSON pointer; write it like \"/order/id\" (or \"\" for the whole value)"
                    ),
                ));
            }
        }
        for (field, name) in self.metadata.columns() {
            validate_identifier(&format!("sink.metadata.{}", field.key_name()), name)?;
        }
        self.validate_unique_names()?;
        self.validate_key()?;
        self.validate_increment()?;
        if self.pool_size == 0 {
            return Err(Error::config("sink.pool_size", "must be at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BIND_PARAMETERS {
            return Err(Error::config(
                "sink.batch_size",
                format!("must be between 1 and {MAX_BIND_PARAMETERS}"),
            ));
        }
        Ok(())
    }

    /// All written column names, in write order: configured columns, then metadata columns.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.metadata.columns().into_iter().map(|(_, n)| n))
            .collect()
    }

    fn validate_unique_names(&self) -> Result<()> {
        let names = self.column_names();
        if names.is_empty() {
            return Err(Error::config(
                "sink.columns",
                "no columns: declare at least one [[sink.columns]] or [sink.metadata] column",
            ));
        }
        for (i, name) in names.iter().enumerate() {
            // Databases compare unquoted-looking names case-insensitively in places (MySQL).
            if names[..i].iter().any(|n| n.eq_ignore_ascii_case(name)) {
                return Err(Error::config(
                    "sink.columns",
                    format!(
                        "column {name:?} is declared twice (columns and metadata columns share one namespace)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_key(&self) -> Result<()> {
        let key = self.key_columns();
        for (i, k) in self.key.iter().enumerate() {
            validate_identifier(&format!("sink.key[{i}]"), k)?;
        }
        if self.mode.is_keyed() && key.is_empty() {
            return Err(Error::config(
                "sink.key",
                format!(
                    "{} mode needs key columns, e.g. key = [\"id\"]",
                    self.mode.name()
                ),
            ));
        }
        let names = self.column_names();
        for (i, k) in key.iter().enumerate() {
            if !names.contains(&k.as_str()) {
                return Err(Error::config(
                    format!("sink.key[{i}]"),
                    format!("{k:?} is not one of the declared columns {names:?}"),
                ));
            }
        }
        match self.key_source {
            KeySource::Kafka => {
                let m = &self.metadata;
                let expected: Vec<&String> = [&m.topic, &m.partition, &m.offset]
                    .into_iter()
                    .flatten()
                    .collect();
                if expected.len() != 3
                    || key.len() != 3
                    || !expected.iter().all(|e| key.contains(e))
                {
                    return Err(Error::config(
                        "sink.key_source",
                        "\"kafka\" keys rows by their coordinates: set [sink.metadata] topic, partition and offset, and leave sink.key unset (or list exactly those three columns)",
                    ));
                }
            }
            KeySource::RecordKey | KeySource::Value => {
                let metadata: Vec<&str> = self
                    .metadata
                    .columns()
                    .into_iter()
                    .map(|(_, n)| n)
                    .collect();
                if let Some((i, k)) = key
                    .iter()
                    .enumerate()
                    .find(|(_, k)| metadata.contains(&k.as_str()))
                {
                    return Err(Error::config(
                        format!("sink.key[{i}]"),
                        format!(
                            "{k:?} is a metadata column; key on Kafka coordinates with key_source = \"kafka\""
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `increment` list against the mode, the columns, the key and the database.
    fn validate_increment(&self) -> Result<()> {
        if self.mode != WriteMode::Increment {
            if !self.increment.is_empty() {
                return Err(Error::config(
                    "sink.increment",
                    format!(
                        "increment columns are only used with mode = \"increment\" (the mode is {:?})",
                        self.mode.name()
                    ),
                ));
            }
            return Ok(());
        }
        if self.increment.is_empty() {
            return Err(Error::config(
                "sink.increment",
                "increment mode needs the columns to add to, e.g. increment = [\"count\"]",
            ));
        }
        if self.delete_on_tombstone == Some(true) {
            return Err(Error::config(
                "sink.delete_on_tombstone",
                "increment mode does not support deletes: a tombstone cannot take back what was added; remove delete_on_tombstone (tombstones are then skipped)",
            ));
        }
        let key = self.key_columns();
        let sqlite = self.dialect()? == Dialect::Sqlite;
        for (i, name) in self.increment.iter().enumerate() {
            let at = format!("sink.increment[{i}]");
            validate_identifier(&at, name)?;
            if self.increment[..i].contains(name) {
                return Err(Error::config(at, format!("{name:?} is listed twice")));
            }
            if key.contains(name) {
                return Err(Error::config(
                    at,
                    format!(
                        "{name:?} is a key column; key columns name the row and cannot be added to"
                    ),
                ));
            }
            let Some(column) = self.columns.iter().find(|c| &c.name == name) else {
                let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::config(
                    at,
                    format!("{name:?} is not one of the [[sink.columns]] {names:?}"),
                ));
            };
            match column.column_type {
                ColumnType::BigInt | ColumnType::Integer => {}
                ColumnType::Numeric { .. } if !sqlite => {}
                ColumnType::Numeric { .. } => {
                    return Err(Error::config(
                        at,
                        format!(
                            "{name:?} is numeric, which SQLite stores as text and cannot add exactly; count in a bigint column (e.g. cents) or use PostgreSQL or MySQL"
                        ),
                    ));
                }
                other => {
                    return Err(Error::config(
                        at,
                        format!(
                            "{name:?} has type {other}; increment columns must be bigint, integer or numeric (exact types, so totals do not depend on the order of additions)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `url` without its password (in the user info or a `password`/`sslpassword` parameter), for
/// logs and error messages.
pub(crate) fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = redact_userinfo(base);
    let Some(query) = query else { return base };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().contains("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with `top` keys, table `t`, column `id bigint`, then `tail` tables.
    fn config(top: &str, tail: &str) -> SqlSinkConfig {
        let text =
            format!("{top}\ntable = \"t\"\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\n{tail}");
        toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn error_of(config: &SqlSinkConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_sqlite_append_fail() {
        let c = config("", "");
        c.validate().unwrap();
        assert_eq!(c.url, DEFAULT_SQLITE_URL);
        assert_eq!(c.dialect().unwrap(), Dialect::Sqlite);
        assert_eq!(
            (c.mode, c.on_error, c.key_source),
            (WriteMode::Append, OnError::Fail, KeySource::Value)
        );
        assert!(!c.deletes_on_tombstone());
    }

    #[test]
    fn hostile_identifiers_are_refused_naming_the_key() {
        let mut table = config("", "");
        for hostile in ["t; DROP TABLE x", "t\"x", "tаble", &"t".repeat(64)] {
            table.table = hostile.to_owned();
            assert!(error_of(&table).contains("sink.table"), "{hostile}");
        }
        let cases = [
            ("schema = \"a\\\"b\"", "", "sink.schema"),
            (
                "",
                "[[columns]]\nname = \"ok\"\ntype = \"text\"\n[[columns]]\nname = \"bаd\"\ntype = \"text\"\n",
                "sink.columns[2].name",
            ),
            (
                "",
                "[metadata]\noffset = \"o`ff\"\n",
                "sink.metadata.offset",
            ),
            ("mode = \"upsert\"\nkey = [\"id'\"]", "", "sink.key[0]"),
        ];
        for (top, tail, key) in cases {
            let err = error_of(&config(top, tail));
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_types_fail_to_parse() {
        let text = "insert_mode = \"upsert\"\ntable = \"t\"\n";
        assert!(toml::from_str::<SqlSinkConfig>(text).is_err());
        let text = "table = \"t\"\n[[columns]]\nname = \"a\"\ntype = \"varchar\"\n";
        assert!(toml::from_str::<SqlSinkConfig>(text).is_err());
    }

    #[test]
    fn key_rules() {
        assert!(error_of(&config("mode = \"upsert\"", "")).contains("sink.key"));
        let unknown_key = config("mode = \"upsert\"\nkey = [\"nope\"]", "");
        assert!(error_of(&unknown_key).contains("sink.key[0]"));
        let kafka = config(
            "mode = \"upsert\"\nkey_source = \"kafka\"",
            "[metadata]\ntopic = \"t\"\npartition = \"p\"\noffset = \"o\"\n",
        );
        kafka.validate().unwrap();
        assert_eq!(kafka.key_columns(), ["t", "p", "o"]);
        assert!(kafka.deletes_on_tombstone());
        let kafka_missing = config(
            "mode = \"upsert\"\nkey_source = \"kafka\"",
            "[metadata]\ntopic = \"t\"\n",
        );
        assert!(error_of(&kafka_missing).contains("sink.key_source"));
    }

    #[test]
    fn increment_rules_name_the_key() {
        let counts = "[[columns]]\nname = \"n\"\ntype = \"bigint\"\n[[columns]]\nname = \"w\"\ntype = \"text\"\n[[columns]]\nname = \"amount\"\ntype = \"numeric(12,2)\"\n";
        let pg = "url = \"postgres://h/db\"\nmode = \"increment\"\nkey = [\"id\"]";
        let ok = config(&format!("{pg}\nincrement = [\"n\", \"amount\"]"), counts);
        ok.validate().unwrap();
        assert_eq!(ok.mode, WriteMode::Increment);
        assert!(ok.mode.is_keyed());
        assert!(!ok.deletes_on_tombstone(), "increments never delete");
        let cases = [
            ("mode = \"increment\"\nincrement = [\"n\"]", "sink.key"),
            ("mode = \"increment\"\nkey = [\"id\"]", "sink.increment"),
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = []",
                "sink.increment",
            ),
            (
                "mode = \"upsert\"\nkey = [\"id\"]\nincrement = [\"n\"]",
                "sink.increment",
            ),
            ("increment = [\"n\"]", "sink.increment"),
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"n\", \"nope\"]",
                "sink.increment[1]",
            ),
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"id\"]",
                "sink.increment[0]",
            ),
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"n\", \"n\"]",
                "sink.increment[1]",
            ),
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"w\"]",
                "sink.increment[0]",
            ),
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"n;\"]",
                "sink.increment[0]",
            ),
            // SQLite (the default URL) keeps numerics as text: it cannot add them exactly.
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"amount\"]",
                "sink.increment[0]",
            ),
            (
                "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"n\"]\ndelete_on_tombstone = true",
                "sink.delete_on_tombstone",
            ),
        ];
        for (top, key) in cases {
            let err = error_of(&config(top, counts));
            assert!(err.contains(key), "{top}: {key}: {err}");
        }
        let metadata = config(
            "mode = \"increment\"\nkey = [\"id\"]\nincrement = [\"o\"]",
            "[metadata]\noffset = \"o\"\n",
        );
        let err = error_of(&metadata);
        assert!(
            err.contains("sink.increment[0]") && err.contains("columns"),
            "{err}"
        );
        let text = error_of(&config("mode = \"increment\"\nkey = [\"id\"]", counts));
        assert!(text.contains("increment = [\"count\"]"), "{text}");
        assert!(
            toml::from_str::<SqlSinkConfig>("table = \"t\"\nincrements = [\"n\"]\n").is_err(),
            "unknown keys stay refused"
        );
    }

    #[test]
    fn duplicate_columns_and_bad_sizes_are_refused() {
        assert!(error_of(&config("", "[metadata]\noffset = \"ID\"\n")).contains("twice"));
        assert!(config("batch_size = 0", "").validate().is_err());
        assert!(config("pool_size = 0", "").validate().is_err());
        assert!(error_of(&config("url = \"redis://x\"", "")).contains("sink.url"));
    }

    #[test]
    fn identity_has_no_credentials() {
        let mut c = config("url = \"postgres://u:pw@db:5432/shop?sslmode=disable\"", "");
        assert_eq!(c.identity(), "postgres://db:5432/shop table=t");
        c.schema = Some("s".into());
        assert_eq!(c.identity(), "postgres://db:5432/shop table=s.t");
        assert_eq!(config("", "").identity(), "sqlite://weir.db table=t");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=secret&sslpassword=s2"),
            "postgres://u@h/db?sslmode=require&password=***&sslpassword=***"
        );
    }
}
