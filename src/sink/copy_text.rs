//! PostgreSQL `COPY … FROM STDIN` text format: one line per row, tab-separated, `\N` for NULL,
//! backslash escapes for backslash, newline, carriage return and tab. Values are written as
//! PostgreSQL reads them back exactly (numerics as their decimal text, bytea as `\x` hex).

use std::io::Write as _;

use crate::sink::value::SqlValue;

/// Appends one row to `out`.
pub(crate) fn write_row(out: &mut Vec<u8>, row: &[SqlValue]) {
    write_values(out, row);
    out.push(b'\n');
}

/// Appends one row to `out` with `number` as one more, last, column (the staging table of
/// increments numbers its rows).
pub(crate) fn write_numbered_row(out: &mut Vec<u8>, row: &[SqlValue], number: usize) {
    write_values(out, row);
    let _ = writeln!(out, "\t{number}");
}

fn write_values(out: &mut Vec<u8>, row: &[SqlValue]) {
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        write_value(out, value);
    }
}

/// Appends one value; writing to a `Vec` cannot fail, so the results are ignored.
fn write_value(out: &mut Vec<u8>, value: &SqlValue) {
    match value {
        SqlValue::Null(_) => out.extend_from_slice(b"\\N"),
        SqlValue::Text(s) | SqlValue::Json(s) => escape(out, s),
        SqlValue::Bytes(b) => {
            out.extend_from_slice(b"\\\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        SqlValue::BigInt(v) => {
            let _ = write!(out, "{v}");
        }
        SqlValue::Integer(v) => {
            let _ = write!(out, "{v}");
        }
        // `{:?}` keeps every digit needed to read the same f64 back.
        SqlValue::Double(v) => {
            let _ = write!(out, "{v:?}");
        }
        SqlValue::Boolean(v) => out.push(if *v { b't' } else { b'f' }),
        SqlValue::Numeric(d) => {
            let _ = write!(out, "{d}");
        }
        SqlValue::Timestamptz(t) => {
            let _ = write!(
                out,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
        SqlValue::Date(d) => {
            let _ = write!(out, "{}", d.format("%Y-%m-%d"));
        }
    }
}

fn escape(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::types::ColumnType;

    #[test]
    fn rows_are_escaped() {
        let mut out = Vec::new();
        write_row(
            &mut out,
            &[
                SqlValue::Text("a\tb\nc\\d\re'\"".into()),
                SqlValue::Null(ColumnType::Text),
                SqlValue::Bytes(vec![0, 255]),
                SqlValue::Double(0.1),
                SqlValue::Boolean(true),
                SqlValue::Numeric("12.50".parse().unwrap()),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\\nc\\\\d\\re'\"\t\\N\t\\\\x00ff\t0.1\tt\t12.50\n"
        );
        let mut out = Vec::new();
        write_numbered_row(&mut out, &[SqlValue::BigInt(7), SqlValue::Integer(1)], 3);
        assert_eq!(out, b"7\t1\t3\n");
    }
}
