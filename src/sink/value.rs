//! Typed SQL values, and how a JSON value becomes one for a column type.
//!
//! Conversions are strict where a guess could change data (a float never becomes a numeric, a
//! fractional number never becomes an integer) and lenient where nothing is lost (a string holding
//! an integer fills a bigint column, as 64-bit ids are often sent as strings).

use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::sink::json::Leaf;
use crate::sink::types::ColumnType;

/// Standard base64 (RFC 4648), padded or not, the way Kafka Connect's JSON converter writes bytes:
/// bytes columns read it from JSON, dead letters write record headers with it. Trailing bits that
/// a canonical encoder leaves zero must be zero, so no two texts decode to the same bytes.
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// One value bound to one column.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL, typed for the databases that type their parameters.
    Null(ColumnType),
    /// Text.
    Text(String),
    /// 64-bit integer.
    BigInt(i64),
    /// 32-bit integer.
    Integer(i32),
    /// 64-bit float.
    Double(f64),
    /// Boolean.
    Boolean(bool),
    /// Exact decimal.
    Numeric(Decimal),
    /// Instant in UTC.
    Timestamptz(DateTime<Utc>),
    /// Calendar date.
    Date(NaiveDate),
    /// A JSON document's text.
    Json(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl SqlValue {
    /// Bytes this value takes on the wire, for sizing MySQL packets.
    pub(crate) fn wire_size(&self) -> usize {
        match self {
            Self::Text(s) | Self::Json(s) => s.len() + 9,
            Self::Bytes(b) => b.len() + 9,
            Self::Numeric(_) => 40,
            _ => 12,
        }
    }

    /// Appends a canonical encoding used to compare keys within a batch (numerics normalized, so
    /// `1.0` and `1.00` are one key, as they are to the database).
    pub(crate) fn write_key_bytes(&self, out: &mut Vec<u8>) {
        let (tag, body): (u8, Vec<u8>) = match self {
            Self::Null(_) => (0, Vec::new()),
            Self::Text(s) => (1, s.as_bytes().to_vec()),
            Self::BigInt(v) => (2, v.to_be_bytes().to_vec()),
            Self::Integer(v) => (2, i64::from(*v).to_be_bytes().to_vec()),
            Self::Double(v) => (3, v.to_bits().to_be_bytes().to_vec()),
            Self::Boolean(v) => (4, vec![u8::from(*v)]),
            Self::Numeric(v) => (5, v.normalize().to_string().into_bytes()),
            Self::Timestamptz(v) => (6, v.timestamp_micros().to_be_bytes().to_vec()),
            Self::Date(v) => (7, v.to_string().into_bytes()),
            Self::Json(s) => (8, s.as_bytes().to_vec()),
            Self::Bytes(b) => (9, b.clone()),
        };
        out.push(tag);
        out.extend_from_slice(&u64::try_from(body.len()).unwrap_or(u64::MAX).to_be_bytes());
        out.extend_from_slice(&body);
    }
}

/// Reads `leaf` as a value of `column_type`. `Leaf::Null` is not handled here (the caller decides
/// between the default, NULL and an error). The error is the reason the record is refused.
pub(crate) fn from_leaf(leaf: Leaf<'_>, column_type: ColumnType) -> Result<SqlValue, String> {
    use ColumnType as T;
    // The common case, without a copy of the string.
    let leaf = match (column_type, leaf) {
        (T::Text, Leaf::String(s)) => return Ok(SqlValue::Text(s)),
        (_, leaf) => leaf,
    };
    let wrong = |expected: &str| {
        let found = match &leaf {
            Leaf::Null => "null".to_owned(),
            Leaf::Bool(b) => b.to_string(),
            Leaf::Number(n) => format!("the number {n}"),
            Leaf::String(s) => format!("the string {:?}", truncate(s)),
            Leaf::Composite(c) => format!("the JSON {}", truncate(c)),
        };
        Err(format!(
            "expected {expected} for a {column_type} column, found {found}"
        ))
    };
    match (column_type, &leaf) {
        (_, Leaf::Null) => Ok(SqlValue::Null(column_type)),
        (T::Text, Leaf::String(s)) => Ok(SqlValue::Text(s.clone())),
        (T::Text, Leaf::Number(n)) => Ok(SqlValue::Text((*n).to_owned())),
        (T::Text, Leaf::Bool(b)) => Ok(SqlValue::Text(b.to_string())),
        (T::BigInt, Leaf::Number(n)) => n
            .parse()
            .map(SqlValue::BigInt)
            .or_else(|_| wrong("a 64-bit integer")),
        (T::BigInt, Leaf::String(s)) => s
            .parse()
            .map(SqlValue::BigInt)
            .or_else(|_| wrong("a 64-bit integer")),
        (T::Integer, Leaf::Number(n)) => n
            .parse()
            .map(SqlValue::Integer)
            .or_else(|_| wrong("a 32-bit integer")),
        (T::Integer, Leaf::String(s)) => s
            .parse()
            .map(SqlValue::Integer)
            .or_else(|_| wrong("a 32-bit integer")),
        (T::Double, Leaf::Number(n)) => {
            parse_double(n).map_or_else(|| wrong("a finite number"), Ok)
        }
        (T::Double, Leaf::String(s)) => {
            parse_double(s).map_or_else(|| wrong("a finite number"), Ok)
        }
        (T::Boolean, Leaf::Bool(b)) => Ok(SqlValue::Boolean(*b)),
        (T::Boolean, Leaf::String(s)) if s == "true" || s == "false" => {
            Ok(SqlValue::Boolean(s == "true"))
        }
        (T::Numeric { precision }, Leaf::Number(n)) => parse_numeric(n, precision),
        (T::Numeric { precision }, Leaf::String(s)) => parse_numeric(s, precision),
        (T::Timestamptz, Leaf::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| SqlValue::Timestamptz(t.with_timezone(&Utc)))
            .or_else(|_| {
                wrong("an RFC 3339 timestamp such as 2024-05-01T12:00:00Z, or epoch milliseconds")
            }),
        (T::Timestamptz, Leaf::Number(n)) => n
            .parse()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .map(SqlValue::Timestamptz)
            .map_or_else(
                || wrong("epoch milliseconds (an integer) or an RFC 3339 timestamp"),
                Ok,
            ),
        (T::Date, Leaf::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(SqlValue::Date)
            .or_else(|_| wrong("a date such as 2024-05-01")),
        (T::Date, Leaf::Number(n)) => n
            .parse::<i64>()
            .ok()
            .and_then(|days| {
                NaiveDate::from_ymd_opt(1970, 1, 1)?
                    .checked_add_signed(chrono::TimeDelta::try_days(days)?)
            })
            .map(SqlValue::Date)
            .map_or_else(
                || wrong("a date such as 2024-05-01, or days since 1970-01-01"),
                Ok,
            ),
        (T::Json, Leaf::String(s)) => serde_json::to_string(s)
            .map(SqlValue::Json)
            .map_err(|e| e.to_string()),
        (T::Json, Leaf::Number(n) | Leaf::Composite(n)) => Ok(SqlValue::Json((*n).to_owned())),
        (T::Json, Leaf::Bool(b)) => Ok(SqlValue::Json(b.to_string())),
        (T::Bytes, Leaf::String(s)) => BASE64
            .decode(s)
            .map(SqlValue::Bytes)
            .or_else(|_| wrong("base64 text")),
        _ => wrong(match column_type {
            T::Text => "a string",
            T::Boolean => "true or false",
            T::Numeric { .. } => "a number",
            T::Bytes => "base64 text",
            _ => "a scalar",
        }),
    }
}

fn parse_double(text: &str) -> Option<SqlValue> {
    f64::from_str(text)
        .ok()
        .filter(|v| v.is_finite())
        .map(SqlValue::Double)
}

/// Parses decimal text exactly: no rounding, and within the column's declared scale.
fn parse_numeric(text: &str, precision: Option<(u8, u8)>) -> Result<SqlValue, String> {
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    let value = parsed.map_err(|e| {
        format!(
            "{:?} is not an exact decimal weir can carry (at most 28 significant digits): {e}",
            truncate(text)
        )
    })?;
    if let Some((p, s)) = precision {
        let digits = value
            .mantissa()
            .unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d + 1);
        let integer_digits = digits.saturating_sub(value.scale());
        if value.scale() > u32::from(s) || integer_digits > u32::from(p - s) {
            return Err(format!(
                "{text} does not fit numeric({p},{s}) without rounding"
            ));
        }
    }
    Ok(SqlValue::Numeric(value))
}

/// At most 80 characters of `s`, for error messages.
pub(crate) fn truncate(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_rfc4648_padded_or_not_and_canonical() {
        use base64::Engine as _;

        use super::BASE64;
        let vectors = [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(BASE64.encode(plain), encoded);
            assert_eq!(BASE64.decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                BASE64.decode(encoded.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        assert!(BASE64.decode("Zm9v!").is_err());
        assert!(BASE64.decode("Z").is_err());
        // "Zh==" has non-zero trailing bits: it must not decode as "f".
        assert!(BASE64.decode("Zh==").is_err());
    }

    use super::*;
    use crate::sink::json::{Document, leaf};

    fn read(json: &str, t: &str) -> Result<SqlValue, String> {
        let doc = Document::parse(json).unwrap();
        from_leaf(
            leaf(doc.get("").unwrap().unwrap()).unwrap(),
            t.parse().unwrap(),
        )
    }

    #[test]
    fn exact_numerics_never_pass_through_a_float() {
        assert_eq!(
            read("0.1", "numeric").unwrap(),
            SqlValue::Numeric(Decimal::from_str("0.1").unwrap())
        );
        let big = "1234567890123456.789012345678";
        assert_eq!(
            read(big, "numeric").unwrap().to_owned(),
            SqlValue::Numeric(Decimal::from_str(big).unwrap())
        );
        assert_eq!(
            read("\"12.50\"", "numeric").unwrap(),
            SqlValue::Numeric(Decimal::from_str("12.50").unwrap())
        );
        assert_eq!(
            read("1.5e2", "numeric").unwrap(),
            SqlValue::Numeric(Decimal::from(150))
        );
        assert!(read("12.345", "numeric(10,2)").is_err());
        assert!(read("123456789.1", "numeric(10,2)").is_err());
        assert!(read("12345678.12", "numeric(10,2)").is_ok());
        assert!(
            read("1.00000000000000000000000000001", "numeric").is_err(),
            "29+ digits are refused, not rounded"
        );
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(
            read("9007199254740993", "bigint").unwrap(),
            SqlValue::BigInt(9_007_199_254_740_993)
        );
        assert_eq!(read("\"-5\"", "bigint").unwrap(), SqlValue::BigInt(-5));
        assert!(read("1.5", "bigint").is_err());
        assert!(read("2147483648", "integer").is_err());
        assert!(read("true", "bigint").is_err());
    }

    #[test]
    fn timestamps_from_rfc3339_or_epoch_millis() {
        let expected = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            read("\"2024-05-01T12:00:00.123+02:00\"", "timestamptz").unwrap(),
            SqlValue::Timestamptz(expected)
        );
        assert_eq!(
            read("1714557600123", "timestamptz").unwrap(),
            SqlValue::Timestamptz(expected)
        );
        assert!(read("\"yesterday\"", "timestamptz").is_err());
        assert!(read("1.5", "timestamptz").is_err());
        assert_eq!(
            read("\"2024-02-29\"", "date").unwrap(),
            SqlValue::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
        );
        assert_eq!(
            read("1", "date").unwrap(),
            SqlValue::Date(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap())
        );
        assert!(read("\"2023-02-29\"", "date").is_err());
    }

    #[test]
    fn other_types() {
        assert_eq!(
            read("\"a\\u0000b\"", "text").unwrap(),
            SqlValue::Text("a\0b".into())
        );
        assert_eq!(read("42", "text").unwrap(), SqlValue::Text("42".into()));
        assert!(read("{}", "text").is_err());
        assert_eq!(read("1e3", "double").unwrap(), SqlValue::Double(1000.0));
        assert_eq!(read("false", "boolean").unwrap(), SqlValue::Boolean(false));
        assert!(read("0", "boolean").is_err());
        assert_eq!(
            read(r#"{"a": [1]}"#, "json").unwrap(),
            SqlValue::Json(r#"{"a": [1]}"#.into())
        );
        assert_eq!(
            read("\"s\"", "json").unwrap(),
            SqlValue::Json("\"s\"".into())
        );
        assert_eq!(
            read("\"AAE=\"", "bytes").unwrap(),
            SqlValue::Bytes(vec![0, 1])
        );
        assert!(read("\"%%\"", "bytes").is_err());
        assert_eq!(
            read("null", "bigint").unwrap(),
            SqlValue::Null(ColumnType::BigInt)
        );
    }

    #[test]
    fn equal_numerics_are_one_key() {
        let key = |v: SqlValue| {
            let mut out = Vec::new();
            v.write_key_bytes(&mut out);
            out
        };
        let a = SqlValue::Numeric(Decimal::from_str("1.0").unwrap());
        let b = SqlValue::Numeric(Decimal::from_str("1.00").unwrap());
        assert_eq!(key(a), key(b));
        assert_ne!(key(SqlValue::Text("1".into())), key(SqlValue::BigInt(1)));
    }
}
