//! One canonical text per stored value, so that a row computed from a record and the same row
//! read back from any of the three databases compare equal: integers and booleans as decimal
//! integers, exact numerics without trailing zeros, instants as epoch microseconds, JSON with
//! sorted keys, bytes as lowercase hex. `None` is SQL NULL.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::sink::{ColumnType, SqlValue};

/// A row as compared: one canonical cell per table column, in the sink's write order.
pub(crate) type Row = Vec<Option<String>>;

/// The canonical row of values the sink's mapping produced.
pub(crate) fn row(values: &[SqlValue]) -> Row {
    values.iter().map(cell).collect()
}

/// The canonical text of a value the sink's mapping produced.
pub(crate) fn cell(value: &SqlValue) -> Option<String> {
    Some(match value {
        SqlValue::Null(_) => return None,
        SqlValue::Text(s) => s.clone(),
        SqlValue::BigInt(v) => v.to_string(),
        SqlValue::Integer(v) => v.to_string(),
        SqlValue::Double(v) => double(*v),
        SqlValue::Boolean(v) => i64::from(*v).to_string(),
        SqlValue::Numeric(v) => decimal(&v.to_string()),
        SqlValue::Timestamptz(t) => t.timestamp_micros().to_string(),
        SqlValue::Date(d) => d.format("%Y-%m-%d").to_string(),
        SqlValue::Json(s) => json(s),
        SqlValue::Bytes(b) => hex(b),
    })
}

/// The canonical text of a cell read back as text from a column of `column_type` (see
/// [`crate::verify::table`] for what each database is asked to render). Text that cannot be
/// read stays as it is, and so compares unequal.
pub(crate) fn from_database_text(text: String, column_type: ColumnType) -> String {
    match column_type {
        ColumnType::Numeric { .. } => decimal(&text),
        ColumnType::Timestamptz => DateTime::parse_from_rfc3339(&text)
            .map(|t| t.timestamp_micros())
            .or_else(|_| {
                // RFC 3339 has no year below 0 or above 9999; SQLite holds chrono's signed
                // years (`-0043-…Z`, `+10000-…Z`), always in UTC.
                let naive = text.strip_suffix('Z').unwrap_or(&text);
                NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|t| t.and_utc().timestamp_micros())
            })
            .map_or(text, |micros| micros.to_string()),
        ColumnType::Json => json(&text),
        _ => text,
    }
}

/// A double's text; `0` for negative zero, which MariaDB and SQLite store as zero.
pub(crate) fn double(value: f64) -> String {
    if value == 0.0 {
        "0".to_owned()
    } else {
        value.to_string()
    }
}

/// The date `text` days after 1970-01-01, as [`cell`] writes dates; other text as it is.
pub(crate) fn days(text: String) -> String {
    text.parse::<i64>()
        .ok()
        .and_then(chrono::TimeDelta::try_days)
        .and_then(|d| NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(d))
        .map_or(text, |date| date.format("%Y-%m-%d").to_string())
}

/// Decimal text without trailing fractional zeros, and `0` for negative zero.
pub(crate) fn decimal(text: &str) -> String {
    let text = text.trim();
    let trimmed = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    };
    match trimmed {
        "-0" | "" | "-" => "0".to_owned(),
        other => other.to_owned(),
    }
}

/// JSON with object keys sorted and numbers as floats, or the text itself when it is not JSON.
pub(crate) fn json(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => {
            let mut out = String::with_capacity(text.len());
            write_json(&value, &mut out);
            out
        }
        Err(_) => text.to_owned(),
    }
}

fn write_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&value.to_string()),
        // 1.0, 1 and 1e0 are one number to a database that stores JSON as values.
        Value::Number(n) => {
            let _ = write!(out, "{}", n.as_f64().unwrap_or(f64::NAN));
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Utc};
    use rust_decimal::Decimal;

    #[test]
    fn values_and_database_text_meet() {
        let numeric = ColumnType::Numeric {
            precision: Some((10, 2)),
        };
        let mapped = cell(&SqlValue::Numeric(Decimal::new(1250, 2))).unwrap();
        assert_eq!(mapped, "12.5");
        assert_eq!(from_database_text("12.50".into(), numeric), mapped);
        assert_eq!(
            from_database_text("12.500000000000000000000000000000".into(), numeric),
            mapped
        );
        assert_eq!(decimal("-0.000"), "0");
        assert_eq!(decimal("100"), "100");

        let t = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let mapped = cell(&SqlValue::Timestamptz(t)).unwrap();
        for text in ["2024-05-01T10:00:00.123000", "2024-05-01T10:00:00.123Z"] {
            assert_eq!(
                from_database_text(text.into(), ColumnType::Timestamptz),
                mapped
            );
        }

        let mapped = cell(&SqlValue::Json(r#"{"b": 1.0, "a": [true, null]}"#.into())).unwrap();
        assert_eq!(
            from_database_text(r#"{"a":[true,null],"b":1}"#.into(), ColumnType::Json),
            mapped
        );

        assert_eq!(cell(&SqlValue::Bytes(vec![0, 255])).unwrap(), "00ff");
        assert_eq!(cell(&SqlValue::Boolean(true)).unwrap(), "1");
        assert_eq!(
            cell(&SqlValue::Date(
                NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
            ))
            .unwrap(),
            "2024-02-29"
        );
        assert_eq!(cell(&SqlValue::Null(ColumnType::Text)), None);
    }

    #[test]
    fn far_dates_and_negative_zero_meet() {
        assert_eq!(cell(&SqlValue::Double(-0.0)).unwrap(), double(0.0));
        let bc = NaiveDate::from_ymd_opt(-43, 3, 15).unwrap();
        let since_epoch = (bc - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days();
        assert_eq!(
            days(since_epoch.to_string()),
            cell(&SqlValue::Date(bc)).unwrap()
        );
        assert_eq!(days("infinity".into()), "infinity");
        let far = DateTime::from_timestamp_millis(253_402_300_801_234).unwrap();
        assert_eq!(
            from_database_text("+10000-01-01T00:00:01.234Z".into(), ColumnType::Timestamptz),
            cell(&SqlValue::Timestamptz(far)).unwrap()
        );
    }
}
