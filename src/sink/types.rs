//! Column types: what a configured column holds, how it is spelled in each database, and how a
//! JSON value is read into it (see [`crate::sink::value`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::sink::dialect::Dialect;

/// The type of a sink column, written in the configuration as `type = "bigint"`.
///
/// Accepted spellings: `text`, `bigint`, `integer` (`int`), `double`, `boolean` (`bool`),
/// `numeric` or `numeric(p,s)` (`decimal`), `timestamptz`, `date`, `json` (`jsonb`),
/// `bytes` (`bytea`).
///
/// ```
/// use weir::sink::ColumnType;
/// let t: ColumnType = "numeric(20, 4)".parse().unwrap();
/// assert_eq!(t, ColumnType::Numeric { precision: Some((20, 4)) });
/// assert!("varchar".parse::<ColumnType>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    BigInt,
    /// 32-bit signed integer.
    Integer,
    /// 64-bit float.
    Double,
    /// true/false.
    Boolean,
    /// Exact decimal, never passed through a float. `precision` is `(precision, scale)`.
    Numeric {
        /// `(precision, scale)` when given as `numeric(p,s)`.
        precision: Option<(u8, u8)>,
    },
    /// An instant, stored in UTC: RFC 3339 text or epoch milliseconds in JSON.
    Timestamptz,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A JSON document (`jsonb` on PostgreSQL).
    Json,
    /// Raw bytes: base64 text in JSON, or the whole raw key/value.
    Bytes,
}

impl ColumnType {
    /// The column type in `CREATE TABLE` for `dialect`. `in_key` asks for a type MySQL can index.
    /// MySQL text columns also need a collation that compares byte for byte, which depends on
    /// the server (see [`crate::sink::SqlSink`]'s table creation).
    pub fn sql_type(self, dialect: Dialect, in_key: bool) -> String {
        use ColumnType as T;
        use Dialect as D;
        let fixed = match (self, dialect) {
            (T::Text, D::MySql) if in_key => "VARCHAR(255)",
            (T::Text, D::MySql) => "LONGTEXT",
            (T::Text, _) => "TEXT",
            (T::BigInt, _) => "BIGINT",
            (T::Integer, _) => "INTEGER",
            (T::Double, D::Postgres) => "DOUBLE PRECISION",
            (T::Double, D::MySql) => "DOUBLE",
            (T::Double, D::Sqlite) => "REAL",
            (T::Boolean, _) => "BOOLEAN",
            // SQLite's NUMERIC affinity would turn 0.1 into a float: keep the exact text.
            (T::Numeric { .. }, D::Sqlite) => "TEXT",
            (T::Numeric { precision }, _) => {
                return match (precision, dialect) {
                    (Some((p, s)), _) => format!("NUMERIC({p},{s})"),
                    (None, D::MySql) => "DECIMAL(65,30)".to_owned(),
                    (None, _) => "NUMERIC".to_owned(),
                };
            }
            (T::Timestamptz, D::Postgres) => "TIMESTAMPTZ",
            (T::Timestamptz, D::MySql) => "DATETIME(6)",
            (T::Timestamptz, D::Sqlite) => "TEXT",
            (T::Date, D::Sqlite) => "TEXT",
            (T::Date, _) => "DATE",
            (T::Json, D::Postgres) => "JSONB",
            (T::Json, D::MySql) => "JSON",
            (T::Json, D::Sqlite) => "TEXT",
            (T::Bytes, D::Postgres) => "BYTEA",
            (T::Bytes, D::MySql) if in_key => "VARBINARY(255)",
            (T::Bytes, D::MySql) => "LONGBLOB",
            (T::Bytes, D::Sqlite) => "BLOB",
        };
        fixed.to_owned()
    }
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (base, args) = match lower.split_once('(') {
            Some((base, rest)) => (base.trim(), Some(rest.strip_suffix(')').unwrap_or("x"))),
            None => (lower.as_str(), None),
        };
        let simple = match base {
            "text" => Some(Self::Text),
            "bigint" => Some(Self::BigInt),
            "integer" | "int" => Some(Self::Integer),
            "double" => Some(Self::Double),
            "boolean" | "bool" => Some(Self::Boolean),
            "timestamptz" => Some(Self::Timestamptz),
            "date" => Some(Self::Date),
            "json" | "jsonb" => Some(Self::Json),
            "bytes" | "bytea" => Some(Self::Bytes),
            _ => None,
        };
        let unknown = || {
            format!(
                "unknown column type {s:?}; use one of text, bigint, integer, double, boolean, numeric, numeric(p,s), timestamptz, date, json, bytes"
            )
        };
        match (simple, base, args) {
            (Some(t), _, None) => Ok(t),
            (None, "numeric" | "decimal", None) => Ok(Self::Numeric { precision: None }),
            (None, "numeric" | "decimal", Some(args)) => parse_precision(args)
                .map(|p| Self::Numeric { precision: Some(p) })
                .ok_or_else(|| {
                    format!("{s:?}: write numeric(p,s) with 1 <= p <= 65 and 0 <= s <= p")
                }),
            _ => Err(unknown()),
        }
    }
}

fn parse_precision(args: &str) -> Option<(u8, u8)> {
    let (p, s) = args.split_once(',').unwrap_or((args, "0"));
    let p: u8 = p.trim().parse().ok()?;
    let s: u8 = s.trim().parse().ok()?;
    ((1..=65).contains(&p) && s <= p).then_some((p, s))
}

impl TryFrom<String> for ColumnType {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ColumnType> for String {
    fn from(value: ColumnType) -> Self {
        value.to_string()
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Text => "text",
            Self::BigInt => "bigint",
            Self::Integer => "integer",
            Self::Double => "double",
            Self::Boolean => "boolean",
            Self::Numeric {
                precision: Some((p, s)),
            } => return write!(f, "numeric({p},{s})"),
            Self::Numeric { precision: None } => "numeric",
            Self::Timestamptz => "timestamptz",
            Self::Date => "date",
            Self::Json => "json",
            Self::Bytes => "bytes",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        for s in [
            "text",
            "bigint",
            "integer",
            "double",
            "boolean",
            "numeric",
            "numeric(10,2)",
            "timestamptz",
            "date",
            "json",
            "bytes",
        ] {
            let t: ColumnType = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert_eq!("JSONB".parse::<ColumnType>(), Ok(ColumnType::Json));
        assert_eq!(
            "decimal(7)".parse::<ColumnType>(),
            Ok(ColumnType::Numeric {
                precision: Some((7, 0))
            })
        );
    }

    #[test]
    fn bad_types_are_refused() {
        for s in [
            "varchar",
            "numeric(0,0)",
            "numeric(5,6)",
            "numeric(66,1)",
            "numeric(1",
            "text(3)",
            "",
        ] {
            assert!(s.parse::<ColumnType>().is_err(), "{s}");
        }
    }

    #[test]
    fn exact_numerics_stay_exact_on_sqlite() {
        let t = ColumnType::Numeric { precision: None };
        assert_eq!(t.sql_type(Dialect::Sqlite, false), "TEXT");
        assert_eq!(t.sql_type(Dialect::MySql, false), "DECIMAL(65,30)");
        assert_eq!(t.sql_type(Dialect::Postgres, false), "NUMERIC");
    }
}
