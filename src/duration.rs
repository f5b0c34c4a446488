//! Serde helpers for durations in pipeline files, written as `"200ms"`, `"1s"`, `"1m 30s"`.

use std::time::Duration;

use serde::{Deserializer, Serializer};

/// Serializes a duration as humantime text (`"7days"`).
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Deserializes a humantime duration.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"200ms\", \"1s\" or \"1m 30s\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text).map_err(|e| {
            E::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"200ms\", \"1s\" or \"1m 30s\""
            ))
        })
    }
}

/// The same for optional durations.
pub(crate) mod option {
    use std::time::Duration;

    use serde::Deserializer;

    /// Deserializes an optional humantime duration.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}
