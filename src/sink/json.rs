//! Reading fields out of a record's JSON without losing anything: numbers keep their literal
//! text (so `0.1` reaches a numeric column as exactly `0.1`, never through a float), and objects
//! and arrays keep their raw text for json columns.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A parsed JSON document whose top-level object members are indexed once per record.
pub(crate) struct Document<'a> {
    text: &'a str,
    /// The members of an object document, in document order.
    members: Option<Members<'a>>,
    /// The document, when it is not an object.
    root: Option<&'a RawValue>,
}

/// A JSON value found at a pointer.
#[derive(Debug, PartialEq)]
pub(crate) enum Leaf<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    /// A string, unescaped.
    String(String),
    /// An object or array, as written.
    Composite(&'a str),
}

fn bad_json(e: serde_json::Error) -> String {
    format!("value is not valid JSON: {e}")
}

impl<'a> Document<'a> {
    /// Parses `text`, checking all of it; the error is the reason a record is refused.
    pub(crate) fn parse(text: &'a str) -> Result<Self, String> {
        if text.trim_start().starts_with('{') {
            let members = serde_json::from_str(text).map_err(bad_json)?;
            return Ok(Self {
                text,
                members: Some(members),
                root: None,
            });
        }
        let root = serde_json::from_str(text).map_err(bad_json)?;
        Ok(Self {
            text,
            members: None,
            root: Some(root),
        })
    }

    /// The value at JSON pointer `pointer` (RFC 6901), `None` when absent.
    pub(crate) fn get(&self, pointer: &str) -> Result<Option<&'a RawValue>, String> {
        let mut tokens = tokens(pointer);
        let Some(first) = tokens.next() else {
            return match self.root {
                Some(root) => Ok(Some(root)),
                None => serde_json::from_str(self.text).map(Some).map_err(bad_json),
            };
        };
        let Some(mut current) = self.members.as_ref().and_then(|m| m.get(&first)) else {
            return Ok(None);
        };
        for token in tokens {
            match step(current, &token)? {
                Some(next) => current = next,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }
}

/// The members of a JSON object, keys borrowed from the text unless they hold escapes.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The member named `key`; the last one when the object repeats it (as serde_json's maps).
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, value)| *value)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(PhantomData<&'a ()>);

        impl<'de> Visitor<'de> for MembersVisitor<'de> {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor(PhantomData))
    }
}

/// An object key, borrowed when it has no escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// One level down from `raw` by `token`: an object member or an array index.
fn step<'a>(raw: &'a RawValue, token: &str) -> Result<Option<&'a RawValue>, String> {
    let text = raw.get();
    if text.starts_with('{') {
        let members: Members<'a> = serde_json::from_str(text).map_err(bad_json)?;
        Ok(members.get(token))
    } else if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(bad_json)?;
        // Only the canonical decimal indexes an array: not `01`, `+1` or `-`.
        Ok(array_index(token).and_then(|i| items.get(i).copied()))
    } else {
        Ok(None)
    }
}

/// `token` as an array index (RFC 6901): `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0"
        || (token.starts_with(|c: char| matches!(c, '1'..='9'))
            && token.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| token.parse().ok()).flatten()
}

/// Checks a JSON pointer (RFC 6901) before it is used: it is empty (the whole value) or starts
/// with `/`, every `~` escapes `0` (`~`) or `1` (`/`), and no token is digits with a leading
/// zero, which is no array index (`/items/01`). The error says what is wrong.
pub(crate) fn check_pointer(pointer: &str) -> Result<(), String> {
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return Err(format!(
            "{pointer:?} is not a JSON pointer; write it like \"/order/id\" (or \"\" for the whole value)"
        ));
    }
    for token in pointer.split('/').skip(1) {
        let mut chars = token.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "{pointer:?} has a `~` that is not `~0` (for `~`) or `~1` (for `/`) in {token:?} (RFC 6901)"
                ));
            }
        }
        if token.len() > 1 && token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit()) {
            let index = match token.trim_start_matches('0') {
                "" => "0",
                index => index,
            };
            return Err(format!(
                "{pointer:?} has the token {token:?}, digits with a leading zero, which is no array index (RFC 6901); write {index:?}"
            ));
        }
    }
    Ok(())
}

/// The unescaped reference tokens of a JSON pointer (`~1` is `/`, `~0` is `~`).
fn tokens(pointer: &str) -> impl Iterator<Item = Cow<'_, str>> + '_ {
    pointer.split('/').skip(1).map(|t| {
        if t.contains('~') {
            Cow::Owned(t.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(t)
        }
    })
}

/// What kind of JSON value `raw` is.
pub(crate) fn leaf(raw: &RawValue) -> Result<Leaf<'_>, String> {
    let text = raw.get().trim();
    Ok(match text.as_bytes().first() {
        Some(b'n') => Leaf::Null,
        Some(b't') => Leaf::Bool(true),
        Some(b'f') => Leaf::Bool(false),
        Some(b'"') => {
            Leaf::String(serde_json::from_str(text).map_err(|e| format!("bad JSON string: {e}"))?)
        }
        Some(b'{' | b'[') => Leaf::Composite(text),
        _ => Leaf::Number(text),
    })
}

/// Parses a scalar that may or may not be JSON (a record key): JSON if it parses, else the text
/// itself as a string.
pub(crate) fn scalar_or_text(text: &str) -> Leaf<'_> {
    match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => leaf(raw).unwrap_or_else(|_| Leaf::String(text.to_owned())),
        Err(_) => Leaf::String(text.to_owned()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// JSON text of any shape, with the edges that matter to a mapper: numbers of any size and
    /// precision, escapes (`\u0000`, surrogate pairs), repeated and odd keys, deep nesting,
    /// and blanks.
    pub(crate) fn json_text() -> impl Strategy<Value = String> {
        let number = "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,4})?";
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number,
            any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
            Just(r#""\u0000""#.to_owned()),
            Just(r#""\ud83d\ude00 \\ \" \/""#.to_owned()),
            "\"[0-9TZ:+. -]{0,30}\"",
            "\"[A-Za-z0-9+/=]{0,12}\"",
        ];
        let key = prop_oneof![
            Just("id".to_owned()),
            Just("v".to_owned()),
            Just("a".to_owned()),
            Just("ts".to_owned()),
            Just("01".to_owned()),
            Just("a/b".to_owned()),
            Just("m~n".to_owned()),
            any::<String>(),
        ];
        leaf.prop_recursive(4, 32, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key.clone(), inner, " ?"), 0..5).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v, blank)| {
                            format!("{}{blank}:{blank}{v}", serde_json::Value::String(k))
                        })
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any member name, escaped by RFC 6901's rules, is found again; only names of digits
        /// with a leading zero are refused, as no array index.
        #[test]
        fn every_member_name_is_reachable_by_its_escaped_pointer(
            name in any::<String>(),
            inner in any::<String>(),
        ) {
            let token = name.replace('~', "~0").replace('/', "~1");
            let pointer = format!("/{token}/x");
            let leading_zero = name.len() > 1
                && name.starts_with('0')
                && name.bytes().all(|b| b.is_ascii_digit());
            prop_assert_eq!(check_pointer(&pointer).is_ok(), !leading_zero, "{}", pointer);
            let text = serde_json::json!({ name: { "x": inner.clone() } }).to_string();
            let doc = Document::parse(&text).unwrap();
            let found = doc.get(&pointer).unwrap().map(|raw| leaf(raw).unwrap());
            prop_assert_eq!(found, Some(Leaf::String(inner)));
        }

        /// No pointer and no document panics: a pointer is refused or used; a document is
        /// refused or read.
        #[test]
        fn pointers_into_any_document_never_panic(
            pointer in "(/[a-z0-9~+ -]{0,4}){0,4}",
            text in json_text(),
        ) {
            let checked = check_pointer(&pointer);
            let doc = Document::parse(&text);
            prop_assert!(doc.is_ok(), "generated JSON is valid: {}", text);
            if let (Ok(()), Ok(doc)) = (checked, doc)
                && let Some(raw) = doc.get(&pointer).unwrap()
            {
                let _ = leaf(raw);
            }
        }
    }

    fn at<'a>(doc: &Document<'a>, pointer: &str) -> Option<Leaf<'a>> {
        doc.get(pointer).unwrap().map(|raw| leaf(raw).unwrap())
    }

    #[test]
    fn pointers_reach_nested_fields_and_keep_number_text() {
        let text = r#"{"id": 7, "amount": {"total": 0.10000000000000000001}, "tags": ["a", "b"], "a/b": 1, "m~n": 2, "s": "x\"y", "o": {"k": [1, 2]}}"#;
        let doc = Document::parse(text).unwrap();
        assert_eq!(at(&doc, "/id"), Some(Leaf::Number("7")));
        assert_eq!(
            at(&doc, "/amount/total"),
            Some(Leaf::Number("0.10000000000000000001"))
        );
        assert_eq!(at(&doc, "/tags/1"), Some(Leaf::String("b".into())));
        assert_eq!(at(&doc, "/a~1b"), Some(Leaf::Number("1")));
        assert_eq!(at(&doc, "/m~0n"), Some(Leaf::Number("2")));
        assert_eq!(at(&doc, "/s"), Some(Leaf::String("x\"y".into())));
        assert_eq!(at(&doc, "/o"), Some(Leaf::Composite(r#"{"k": [1, 2]}"#)));
        assert_eq!(at(&doc, "/missing"), None);
        assert_eq!(at(&doc, "/tags/9"), None);
        assert_eq!(at(&doc, "/id/deeper"), None);
        assert!(matches!(at(&doc, ""), Some(Leaf::Composite(_))));
    }

    #[test]
    fn bad_json_is_the_records_error() {
        for text in ["{", "{\"a\":}", "[1,]", "nul", "{} x", ""] {
            assert!(Document::parse(text).is_err(), "{text}");
        }
        assert!(Document::parse("42").unwrap().get("/a").unwrap().is_none());
    }

    #[test]
    fn escaped_and_repeated_keys_are_found() {
        let doc =
            Document::parse(r#" {"a\u0062": 1, "k": 2, "k": 3, "n": {"x\"y": [4]}}"#).unwrap();
        assert_eq!(at(&doc, "/ab"), Some(Leaf::Number("1")));
        assert_eq!(at(&doc, "/k"), Some(Leaf::Number("3")));
        assert_eq!(at(&doc, "/n/x\"y/0"), Some(Leaf::Number("4")));
        assert!(matches!(at(&doc, ""), Some(Leaf::Composite(_))));
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        for ok in [
            "", "/", "/a", "/a~0b", "/a~1b", "/~01", "/arr/0", "/arr/10", "/-", "/a b/é",
        ] {
            assert_eq!(check_pointer(ok), Ok(()), "{ok}");
        }
        for bad in ["a", "/a~2", "/a~", "/a~x/b", "/arr/01", "/00", "/x/007/y"] {
            assert!(check_pointer(bad).is_err(), "{bad}");
        }
        let doc = Document::parse(r#"{"arr": [10, 11], "o": {"01": 1, "+1": 2}}"#).unwrap();
        assert_eq!(at(&doc, "/arr/1"), Some(Leaf::Number("11")));
        // Not indexes of an array; an object's members of those names are found.
        for not_an_index in ["/arr/01", "/arr/+1", "/arr/-", "/arr/ 1", "/arr/1 "] {
            assert_eq!(at(&doc, not_an_index), None, "{not_an_index}");
        }
        assert_eq!(at(&doc, "/o/+1"), Some(Leaf::Number("2")));
    }

    #[test]
    fn keys_may_be_plain_text() {
        assert_eq!(scalar_or_text("42"), Leaf::Number("42"));
        assert_eq!(scalar_or_text("\"k\""), Leaf::String("k".into()));
        assert_eq!(scalar_or_text("key-1"), Leaf::String("key-1".into()));
    }
}
