//! Pipeline configuration: one TOML file per pipeline, validated with errors that name the key
//! and the file.
//!
//! ```
//! let config = weir::config::PipelineConfig::from_toml_str(r#"
//!     [pipeline]
//!     name = "orders"
//!     batch_interval = "200ms"
//!     checkpoint_dir = "/var/lib/weir/orders"
//!
//!     [source]
//!     brokers = "127.0.0.1:9092"
//!     topics = ["orders"]
//!     max_rate_per_partition = 50000
//!
//!     [sink]
//!     table = "orders"
//!     [[sink.columns]]
//!     name = "id"
//!     type = "bigint"
//! "#).unwrap();
//! assert_eq!(config.pipeline.batch_interval.as_millis(), 200);
//! assert_eq!(config.pipeline.checkpoint_interval().as_secs(), 10);
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sink::SqlSinkConfig;
use crate::source::KafkaSourceConfig;

/// The smallest batch interval weir accepts.
pub const MIN_BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Identity, timing and checkpoint of the pipeline.
    pub pipeline: PipelineSection,
    /// The Kafka source.
    pub source: KafkaSourceConfig,
    /// The SQL sink; SQLite in `weir.db` when the file has no `[sink]` url.
    pub sink: SqlSinkConfig,
}

/// The `[pipeline]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Stable name; part of every commit key, so it must never change for a running pipeline.
    pub name: String,
    /// Time between batches, e.g. `"200ms"` or `"1s"`; at least 50 ms.
    #[serde(with = "duration")]
    pub batch_interval: Duration,
    /// Directory of snapshots and the plan log; one process at a time.
    pub checkpoint_dir: PathBuf,
    /// Time between snapshots; defaults to the smallest multiple of the batch interval that is
    /// at least 10 s. Must be a multiple of the batch interval.
    #[serde(default, with = "duration::option")]
    pub checkpoint_interval: Option<Duration>,
    /// Address of the operations server, e.g. `"127.0.0.1:9400"`: Prometheus metrics at
    /// `/metrics`, `/health/live`, `/health/ready`, the status page at `/` and its data at
    /// `/api/status`. Off unless set (or given as `weir run --http ADDR`).
    #[serde(default)]
    pub http: Option<std::net::SocketAddr>,
}

impl PipelineSection {
    /// The snapshot interval in force.
    pub fn checkpoint_interval(&self) -> Duration {
        self.checkpoint_interval
            .unwrap_or_else(|| crate::checkpoint::default_checkpoint_interval(self.batch_interval))
    }
}

impl PipelineConfig {
    /// Reads and validates a pipeline file; errors name the file and the key. `${NAME}` in
    /// string values is replaced by the environment variable (see
    /// [`PipelineConfig::from_toml_str_with_env`]).
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates a pipeline from TOML text, with `${NAME}` in string values replaced
    /// by environment variables (see [`PipelineConfig::from_toml_str_with_env`]).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::from_toml_str_with_env(text, |name| std::env::var(name).ok())
    }

    /// Parses and validates a pipeline from TOML text, replacing in every string value
    /// `${NAME}` by `lookup(NAME)` (an error when it gives `None`), `${NAME:-default}` by
    /// `default` when it gives `None` or `""`, and `$${` by a literal `${`.
    ///
    /// ```
    /// use weir::config::PipelineConfig;
    ///
    /// let text = r#"
    ///     [pipeline]
    ///     name = "orders"
    ///     batch_interval = "1s"
    ///     checkpoint_dir = "${STATE:-/var/lib/weir}/orders"
    ///     [source]
    ///     brokers = "${BROKERS}"
    ///     topics = ["orders"]
    ///     [sink]
    ///     table = "orders"
    ///     [[sink.columns]]
    ///     name = "id"
    ///     type = "bigint"
    /// "#;
    /// let env = |name: &str| (name == "BROKERS").then(|| "kafka:9092".to_owned());
    /// let config = PipelineConfig::from_toml_str_with_env(text, env)?;
    /// assert_eq!(config.source.brokers, "kafka:9092");
    /// assert_eq!(config.pipeline.checkpoint_dir.to_str(), Some("/var/lib/weir/orders"));
    ///
    /// let error = PipelineConfig::from_toml_str_with_env(text, |_| None).unwrap_err();
    /// assert!(error.to_string().contains("source.brokers"));
    /// # Ok::<(), weir::Error>(())
    /// ```
    pub fn from_toml_str_with_env(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut table = toml::de::DeTable::parse(text).map_err(toml_error)?;
        env::substitute_table(table.get_mut(), "", &lookup)?;
        let config = Self::deserialize(toml::de::Deserializer::from(table)).map_err(|mut e| {
            e.set_input(Some(text));
            toml_error(e)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<()> {
        let name = &self.pipeline.name;
        let plain = !name.is_empty()
            && name.len() <= 100
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(Error::config(
                "pipeline.name",
                format!("{name:?} must be 1 to 100 of a-z A-Z 0-9 . _ -"),
            ));
        }
        let interval = self.pipeline.batch_interval;
        if interval < MIN_BATCH_INTERVAL {
            return Err(Error::config(
                "pipeline.batch_interval",
                format!(
                    "{} is below the minimum of 50ms",
                    humantime::format_duration(interval)
                ),
            ));
        }
        if !interval.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(Error::config(
                "pipeline.batch_interval",
                "must be a whole number of milliseconds",
            ));
        }
        if let Some(every) = self.pipeline.checkpoint_interval
            && (every.is_zero() || every.as_nanos() % interval.as_nanos() != 0)
        {
            return Err(Error::config(
                "pipeline.checkpoint_interval",
                format!(
                    "{} is not a multiple of the batch interval {}",
                    humantime::format_duration(every),
                    humantime::format_duration(interval)
                ),
            ));
        }
        self.source.validate()?;
        self.sink.validate()?;
        Ok(())
    }

    /// The Kafka consumer group used for lag reporting and `starting_offsets = "committed"`.
    pub fn group_id(&self) -> String {
        self.source
            .group_id
            .clone()
            .unwrap_or_else(|| format!("weir-{}", self.pipeline.name))
    }
}

/// A TOML error as a configuration error that names the key.
fn toml_error(e: toml::de::Error) -> Error {
    let key = e
        .message()
        .split('`')
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_else(|| "(file)".to_owned());
    Error::config(key, e.to_string().trim_end().to_owned())
}

/// `${NAME}` in string values.
mod env {
    use std::borrow::Cow;

    use toml::de::{DeTable, DeValue};

    use crate::error::{Error, Result};

    /// Substitutes in every string value of `table`, whose dotted key is `prefix`.
    pub(super) fn substitute_table(
        table: &mut DeTable<'_>,
        prefix: &str,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<()> {
        for (key, value) in table.iter_mut() {
            let key = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            substitute_value(value.get_mut(), &key, lookup)?;
        }
        Ok(())
    }

    fn substitute_value(
        value: &mut DeValue<'_>,
        key: &str,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<()> {
        match value {
            DeValue::String(text) if text.contains("${") => {
                *text = Cow::Owned(expand(text, key, lookup)?);
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    substitute_value(item.get_mut(), &format!("{key}[{i}]"), lookup)?;
                }
            }
            DeValue::Table(table) => substitute_table(table, key, lookup)?,
            _ => {}
        }
        Ok(())
    }

    /// `text` with its references expanded; errors name `key`.
    pub(super) fn expand(
        text: &str,
        key: &str,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let end = after.find('}').ok_or_else(|| {
                    Error::config(key, format!("{text:?} has a `${{` without its `}}`; write `$${{` for a literal `${{`"))
                })?;
                let (name, default) = match after[..end].split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (&after[..end], None),
                };
                let plain = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !plain {
                    return Err(Error::config(
                        key,
                        format!(
                            "`${{{name}}}` in {text:?} is not an environment variable name (letters, digits and _)"
                        ),
                    ));
                }
                let value = match (lookup(name), default) {
                    (Some(value), Some(default)) if value.is_empty() => default.to_owned(),
                    (Some(value), _) => value,
                    (None, Some(default)) => default.to_owned(),
                    (None, None) => {
                        return Err(Error::config(
                            key,
                            format!(
                                "environment variable {name} is not set; set it, or give a default: `${{{name}:-default}}`"
                            ),
                        ));
                    }
                };
                out.push_str(&value);
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Serde helpers for durations written as `"200ms"`, `"1s"`, `"1m 30s"`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes a duration as humantime text (`"7days"`).
    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Deserializes a humantime duration.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"200ms\", \"1s\" or \"1m 30s\""
            ))
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [pipeline]
        name = "orders"
        batch_interval = "1s"
        checkpoint_dir = "/tmp/x"
        [source]
        brokers = "127.0.0.1:9092"
        topics = ["orders"]
        [sink]
        table = "orders"
        [[sink.columns]]
        name = "id"
        type = "bigint"
    "#;

    #[test]
    fn minimal_file_loads_with_defaults() {
        let c = PipelineConfig::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.group_id(), "weir-orders");
        assert_eq!(c.pipeline.checkpoint_interval(), Duration::from_secs(10));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("topics =", "topicz = [\"x\"]\ntopics =");
        let e = PipelineConfig::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("topicz"), "{e}");
        // The line, even though the text went through the `${NAME}` substitution.
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn bad_interval_is_named() {
        let text = MINIMAL.replace("\"1s\"", "\"10ms\"");
        let e = PipelineConfig::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline.batch_interval"), "{e}");
        let text = MINIMAL.replace("\"1s\"", "\"soon\"");
        let e = PipelineConfig::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn environment_variables_fill_string_values() {
        let lookup = |name: &str| match name {
            "HOST" => Some("kafka".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let expand = |text: &str| env::expand(text, "k", &lookup);
        assert_eq!(expand("${HOST}:9092").unwrap(), "kafka:9092");
        assert_eq!(expand("${NONE:-a:-b}/${EMPTY:-x}").unwrap(), "a:-b/x");
        assert_eq!(expand("$$HOST $${HOST} $").unwrap(), "$$HOST ${HOST} $");
        for bad in ["${NONE}", "${HOST", "${1X}", "${}"] {
            let e = expand(bad).unwrap_err().to_string();
            assert!(e.starts_with("config key `k`"), "{bad}: {e}");
        }
        assert!(
            expand("${NONE}")
                .unwrap_err()
                .to_string()
                .contains("NONE is not set")
        );

        let text = MINIMAL
            .replace("127.0.0.1:9092", "${HOST}:9092")
            .replace("[\"orders\"]", "[\"${NONE:-orders}\", \"x${HOST}\"]");
        let c = PipelineConfig::from_toml_str_with_env(&text, lookup).unwrap();
        assert_eq!(c.source.brokers, "kafka:9092");
        assert_eq!(c.source.topics, ["orders", "xkafka"]);
        let text = MINIMAL.replace("\"id\"", "\"${NONE}\"");
        let e = PipelineConfig::from_toml_str_with_env(&text, lookup)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sink.columns[0].name`"), "{e}");
    }

    #[test]
    fn file_is_named() {
        let e = Error::config("a.b", "bad")
            .in_file("/etc/p.toml")
            .to_string();
        assert_eq!(e, "/etc/p.toml: config key `a.b`: bad");
    }
}
