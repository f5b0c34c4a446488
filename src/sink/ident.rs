//! SQL identifiers: validated once at configuration load, quoted at every use.
//!
//! Only plain ASCII names are accepted (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes). That rules out
//! quotes, semicolons, whitespace and unicode look-alikes (a Cyrillic `а` in `tаble` is refused),
//! and names PostgreSQL would silently truncate to 63 bytes (two long names could collide).
//! Quoting is still applied everywhere, so reserved words such as `order` work as column names.

use crate::error::{Error, Result};

/// The longest identifier accepted: PostgreSQL's limit, also below MySQL's 64.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Checks that `name`, the value of configuration key `key`, is a plain SQL identifier.
///
/// ```
/// use weir::sink::validate_identifier;
/// assert!(validate_identifier("sink.table", "orders_2024").is_ok());
/// assert!(validate_identifier("sink.table", "orders\"; DROP TABLE x; --").is_err());
/// ```
pub fn validate_identifier(key: &str, name: &str) -> Result<()> {
    let bad_char = name
        .chars()
        .enumerate()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())));
    let reason = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Some(format!(
            "is {} bytes long; at most {MAX_IDENTIFIER_BYTES} are allowed (longer names are truncated by PostgreSQL and can collide)",
            name.len()
        ))
    } else {
        bad_char.map(|(at, c)| {
            format!(
                "contains {c:?} at character {at}; only ASCII letters, digits and `_` are allowed, not starting with a digit"
            )
        })
    };
    match reason {
        Some(reason) => Err(Error::config(
            key,
            format!("{name:?} is not a plain SQL identifier: it {reason}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        for name in ["a", "_x", "Orders", "order", "col_1", &"a".repeat(63)] {
            assert!(validate_identifier("k", name).is_ok(), "{name}");
        }
    }

    #[test]
    fn hostile_names_fail_naming_the_key() {
        let hostile = [
            "",
            "1abc",
            "a b",
            "a\"b",
            "a`b",
            "a'b",
            "a;b",
            "t; DROP TABLE users; --",
            "tаble",  // Cyrillic а
            "ｔable", // full-width t
            "caf\u{e9}",
            "a\u{200b}b", // zero-width space
            "a\0b",
            "a.b",
            "a-b",
            &"a".repeat(64),
        ];
        for name in hostile {
            let err = validate_identifier("sink.columns[2].name", name).unwrap_err();
            assert!(err.to_string().contains("sink.columns[2].name"), "{err}");
        }
    }
}
