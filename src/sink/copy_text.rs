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
    use proptest::prelude::*;

    use super::*;
    use crate::sink::types::ColumnType;

    /// One field read back by PostgreSQL's COPY text rules: `\N` alone is NULL; `\b \f \n \r
    /// \t \v`, `\` and one to three octal digits, `\x` and one or two hex digits are those
    /// bytes; a backslash before any other character is that character.
    fn read_field(field: &[u8]) -> Option<Vec<u8>> {
        if field == b"\\N" {
            return None;
        }
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            if field[i] != b'\\' || i + 1 == field.len() {
                out.push(field[i]);
                i += 1;
                continue;
            }
            let next = field[i + 1];
            i += 2;
            let radix_digits = |i: &mut usize, radix: u32, max: usize| {
                let mut value = 0u32;
                let mut n = 0;
                while n < max && *i < field.len() && char::from(field[*i]).is_digit(radix) {
                    value = value * radix + char::from(field[*i]).to_digit(radix).unwrap();
                    *i += 1;
                    n += 1;
                }
                (u8::try_from(value & 0xff).unwrap(), n)
            };
            match next {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    i -= 1;
                    out.push(radix_digits(&mut i, 8, 3).0);
                }
                b'x' => match radix_digits(&mut i, 16, 2) {
                    (byte, 1..) => out.push(byte),
                    (_, _) => out.push(b'x'),
                },
                other => out.push(other),
            }
        }
        Some(out)
    }

    /// A line of `write_row` read back: fields split at the (unescaped) tabs.
    fn read_row(line: &[u8]) -> Vec<Option<Vec<u8>>> {
        let line = line.strip_suffix(b"\n").expect("a row ends with a newline");
        line.split(|&b| b == b'\t').map(read_field).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Whatever text is written (PostgreSQL text holds no NUL, which the mapper refuses
        /// before), COPY reads back the same fields: one line, no raw tab inside a field, NULL
        /// only where it was NULL.
        #[test]
        fn copy_text_reads_back_what_was_written(
            fields in prop::collection::vec(
                prop::option::of(prop_oneof![
                    any::<String>(),
                    "[\\\\\t\n\rN.x0-9a]{0,8}",
                ]),
                1..6,
            ),
            json in any::<bool>(),
        ) {
            let fields: Vec<Option<String>> = fields
                .into_iter()
                .map(|f| f.map(|s| s.replace('\0', "")))
                .collect();
            let row: Vec<SqlValue> = fields
                .iter()
                .map(|f| match f {
                    None => SqlValue::Null(ColumnType::Text),
                    Some(s) if json => SqlValue::Json(s.clone()),
                    Some(s) => SqlValue::Text(s.clone()),
                })
                .collect();
            let mut out = Vec::new();
            write_row(&mut out, &row);
            prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert!(!out.contains(&b'\r'));
            let read: Vec<Option<Vec<u8>>> = read_row(&out);
            let expected: Vec<Option<Vec<u8>>> =
                fields.iter().map(|f| f.as_ref().map(|s| s.as_bytes().to_vec())).collect();
            prop_assert_eq!(read, expected);
        }

        /// Bytes reach bytea as `\x` and hex once COPY has unescaped them; numbers as text that
        /// reads back to the same value.
        #[test]
        fn bytes_and_numbers_read_back(
            bytes in prop::collection::vec(any::<u8>(), 0..40),
            big in any::<i64>(),
            small in any::<i32>(),
            double in any::<f64>(),
        ) {
            let mut out = Vec::new();
            write_row(
                &mut out,
                &[
                    SqlValue::Bytes(bytes.clone()),
                    SqlValue::BigInt(big),
                    SqlValue::Integer(small),
                    SqlValue::Double(double),
                ],
            );
            let read = read_row(&out);
            let hex = read[0].clone().unwrap();
            prop_assert!(hex.starts_with(b"\\x"));
            let decoded: Vec<u8> = hex[2..]
                .chunks(2)
                .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
                .collect();
            prop_assert_eq!(decoded, bytes);
            let text = |i: usize| String::from_utf8(read[i].clone().unwrap()).unwrap();
            prop_assert_eq!(text(1).parse::<i64>().unwrap(), big);
            prop_assert_eq!(text(2).parse::<i32>().unwrap(), small);
            let back = text(3).parse::<f64>().unwrap();
            prop_assert!(back.to_bits() == double.to_bits() || (back.is_nan() && double.is_nan()));
        }
    }

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
