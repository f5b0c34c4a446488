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

use crate::duration;
use crate::error::{Error, Result};
use crate::sink::SqlSinkConfig;
use crate::source::{ByteSize, KafkaSourceConfig, MemoryBudget};

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
    /// The most bytes of records in flight at once (librdkafka's prefetch, records read ahead,
    /// chunks on their way to the sink), e.g. `"64MiB"` (the default); at least 4 MiB. A batch
    /// larger than this streams through it.
    #[serde(default)]
    pub memory_budget: Option<ByteSize>,
    /// Address of the operations server, e.g. `"127.0.0.1:9400"`: Prometheus metrics at
    /// `/metrics`, `/health/live`, `/health/ready`, the status page at `/` and its data at
    /// `/api/status`. Off unless set (or given as `weir run --http ADDR`).
    #[serde(default)]
    pub http: Option<std::net::SocketAddr>,
}

impl PipelineSection {
    /// The memory budget in force.
    pub fn memory_budget(&self) -> Result<MemoryBudget> {
        self.memory_budget.map_or_else(
            || Ok(MemoryBudget::default()),
            |size| MemoryBudget::new(size, "pipeline.memory_budget"),
        )
    }

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
        let mut table = toml::de::DeTable::parse(text).map_err(|e| toml_error(&e, text))?;
        env::substitute_table(table.get_mut(), "", &lookup)?;
        let config = Self::deserialize(toml::de::Deserializer::from(table)).map_err(|mut e| {
            e.set_input(Some(text));
            toml_error(&e, text)
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
        self.pipeline.memory_budget()?;
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

/// A TOML error as a configuration error that names the full key (`pipeline.batch_interval`,
/// `sink.columns[2].type`), found from where in `text` the error is; passwords in the quoted
/// line are masked.
fn toml_error(e: &toml::de::Error, text: &str) -> Error {
    let message = e.message();
    // serde's `missing field `x`` is about a key the table at the span lacks.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .map(key::segment);
    let at = e.span().and_then(|span| key::at(text, &span));
    let key = match (at, missing) {
        (Some(at), Some(missing)) => format!("{at}.{missing}"),
        (Some(at), None) => at,
        (None, Some(missing)) => missing,
        (None, None) => "(file)".to_owned(),
    };
    Error::config(key, crate::redact::redact(e.to_string().trim_end()))
}

/// The dotted keys of a TOML document, by position.
mod key {
    use std::ops::Range;

    use toml::de::{DeTable, DeValue};

    /// The key of the innermost key or value of `text` that covers `span`.
    pub(super) fn at(text: &str, span: &Range<usize>) -> Option<String> {
        let table = DeTable::parse(text).ok()?;
        let mut best: Option<(usize, String)> = None;
        visit_table(table.get_ref(), "", span, &mut best);
        best.map(|(_, key)| key)
    }

    /// A key as it is written in a dotted key: bare when it can be, quoted otherwise.
    pub(super) fn segment(key: &str) -> String {
        let bare = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if bare {
            key.to_owned()
        } else {
            format!("{key:?}")
        }
    }

    fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end
    }

    /// Keeps `key` when its `node` covers `span` more tightly than the best so far.
    fn consider(
        node: &Range<usize>,
        key: &str,
        span: &Range<usize>,
        best: &mut Option<(usize, String)>,
    ) {
        if covers(node, span) && best.as_ref().is_none_or(|(len, _)| node.len() <= *len) {
            *best = Some((node.len(), key.to_owned()));
        }
    }

    fn visit_table(
        table: &DeTable<'_>,
        prefix: &str,
        span: &Range<usize>,
        best: &mut Option<(usize, String)>,
    ) {
        for (key, value) in table {
            let name = segment(key.get_ref());
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            consider(&key.span(), &path, span, best);
            visit_value(value.get_ref(), &value.span(), &path, span, best);
        }
    }

    fn visit_value(
        value: &DeValue<'_>,
        value_span: &Range<usize>,
        path: &str,
        span: &Range<usize>,
        best: &mut Option<(usize, String)>,
    ) {
        consider(value_span, path, span, best);
        match value {
            DeValue::Table(table) => visit_table(table, path, span, best),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    visit_value(
                        item.get_ref(),
                        &item.span(),
                        &format!("{path}[{i}]"),
                        span,
                        best,
                    );
                }
            }
            _ => {}
        }
    }
}

/// `${NAME}` in string values.
mod env {
    use std::borrow::Cow;

    use toml::de::{DeTable, DeValue};

    use crate::error::{Error, Result};
    use crate::redact::redact;

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
                    Error::config(
                        key,
                        format!(
                            "{:?} has a `${{` without its `}}`; write `$${{` for a literal `${{`",
                            redact(text)
                        ),
                    )
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
                            "`${{{name}}}` in {:?} is not an environment variable name (letters, digits and _)",
                            redact(text)
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
        let e = expand("postgres://u:pw@h/${HOST").unwrap_err().to_string();
        assert!(
            e.contains("postgres://u:***@h/") && !e.contains("pw"),
            "{e}"
        );
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

    /// The key a config error names.
    fn key_of(text: &str) -> String {
        match PipelineConfig::from_toml_str(text) {
            Err(Error::Config { key, .. }) => key,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn type_errors_name_the_full_key() {
        let cases = [
            (
                "batch_interval = \"1s\"",
                "batch_interval = 200",
                "pipeline.batch_interval",
            ),
            (
                "batch_interval = \"1s\"",
                "batch_interval = \"1s\"\ncheckpoint_interval = 5",
                "pipeline.checkpoint_interval",
            ),
            ("name = \"orders\"", "name = 7", "pipeline.name"),
            ("type = \"bigint\"", "type = 5", "sink.columns[0].type"),
            (
                "type = \"bigint\"",
                "type = \"varchar\"",
                "sink.columns[0].type",
            ),
            (
                "type = \"bigint\"",
                "type = \"bigint\"\nnullable = \"yes\"",
                "sink.columns[0].nullable",
            ),
            ("[\"orders\"]", "\"orders\"", "source.topics"),
            ("[\"orders\"]", "[\"orders\", 2]", "source.topics[1]"),
            (
                "topics =",
                "max_rate_per_partition = \"fast\"\ntopics =",
                "source.max_rate_per_partition",
            ),
            ("topics =", "topicz = [\"x\"]\ntopics =", "source.topicz"),
            (
                "table = \"orders\"",
                "table = \"orders\"\nmode = \"upsrt\"",
                "sink.mode",
            ),
            (
                "table = \"orders\"",
                "table = \"orders\"\n[sink.metadata]\noffset = 1",
                "sink.metadata.offset",
            ),
            ("table = \"orders\"", "", "sink.table"),
            (
                "[sink]",
                "[source.properties]\n\"sasl.mechanism\" = 5\n[sink]",
                "source.properties.\"sasl.mechanism\"",
            ),
            (
                "brokers = \"127.0.0.1:9092\"",
                "brokers = \"127.0.0.1:9092\"\nbackpressure_pid = { proportional = \"1\" }",
                "source.backpressure_pid.proportional",
            ),
        ];
        for (from, to, key) in cases {
            let text = MINIMAL.replacen(from, to, 1);
            assert_ne!(text, MINIMAL, "{from}");
            assert_eq!(key_of(&text), key, "{to}");
        }
        // A whole missing section, at the top.
        let text = MINIMAL.replace("[pipeline]", "[pipelines]");
        assert_eq!(key_of(&text), "pipelines");
        let text = &MINIMAL[..MINIMAL.find("[sink]").unwrap()];
        assert_eq!(key_of(text), "sink");

        // The whole message names the key, the value and the line, the key only as the key.
        let e = PipelineConfig::from_toml_str(&MINIMAL.replace("\"1s\"", "200"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config key `pipeline.batch_interval`: "),
            "{e}"
        );
        assert!(e.contains("line 4") && e.contains("integer `200`"), "{e}");
        assert!(e.contains("expected a duration such as \"200ms\""), "{e}");
        assert!(!e.contains("`200`:"), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_mask_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let text = MINIMAL.replace(
            "table = \"orders\"",
            "table = \"orders\"\nurl = \"postgres://u:hunter2@h/db?password=hunter3\"\nmode = 1",
        );
        std::fs::write(&path, text).unwrap();
        let e = PipelineConfig::from_path(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: config key `sink.mode`: ", path.display())),
            "{e}"
        );
        let text = MINIMAL.replace(
            "table = \"orders\"",
            "url = \"postgres://u:hunter2@h/db?password=hunter3\" x\ntable = \"orders\"",
        );
        let e = PipelineConfig::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres://u:***@h/db?password=***"), "{e}");
        assert!(!e.contains("hunter"), "{e}");
    }

    mod any_input {
        use proptest::prelude::*;

        use super::*;

        /// The keys of `MINIMAL`, each with the line that sets it.
        const KEYS: [(&str, &str); 7] = [
            ("name = \"orders\"", "pipeline.name"),
            ("batch_interval = \"1s\"", "pipeline.batch_interval"),
            ("checkpoint_dir = \"/tmp/x\"", "pipeline.checkpoint_dir"),
            ("brokers = \"127.0.0.1:9092\"", "source.brokers"),
            ("topics = [\"orders\"]", "source.topics"),
            ("table = \"orders\"", "sink.table"),
            ("type = \"bigint\"", "sink.columns[0].type"),
        ];

        /// A TOML value that is not a string, nor an array of strings.
        fn wrong_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>()
                    .prop_filter("TOML floats", |f| f.is_finite())
                    .prop_map(|f| format!("{f:?}")),
                any::<bool>().prop_map(|b| b.to_string()),
                Just("1979-05-27T07:32:00Z".to_owned()),
                Just("{ a = 1 }".to_owned()),
                prop::collection::vec(any::<i32>(), 1..3).prop_map(|v| format!("{v:?}")),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// A value of the wrong type under any key is refused naming that key (or, inside
            /// an array, the item's key), never the value.
            #[test]
            fn a_wrong_type_names_its_key(which in 0..KEYS.len(), value in wrong_value()) {
                let (line, key) = KEYS[which];
                let name = line.split(" = ").next().unwrap();
                let text = MINIMAL.replacen(line, &format!("{name} = {value}"), 1);
                match PipelineConfig::from_toml_str(&text) {
                    Err(Error::Config { key: named, .. }) => {
                        prop_assert!(named.starts_with(key), "{} named {}", key, named);
                    }
                    other => prop_assert!(false, "{}: {:?}", text, other),
                }
            }

            /// No text makes the parser panic: anything inserted anywhere in a good file, or a
            /// file of TOML's own punctuation, loads or is refused with a configuration error.
            #[test]
            fn no_input_panics(
                at in 0..MINIMAL.len(),
                inserted in prop_oneof![
                    any::<String>(),
                    "[\\[\\]{}=\"'.,#\n a-z0-9_${}:-]{0,12}",
                ],
                noise in "[\\[\\]{}=\"'.,#\n a-z0-9_${}:-]{0,80}",
            ) {
                let at = (0..=at).rev().find(|&i| MINIMAL.is_char_boundary(i)).unwrap_or(0);
                let text = format!("{}{inserted}{}", &MINIMAL[..at], &MINIMAL[at..]);
                for text in [text.as_str(), noise.as_str()] {
                    match PipelineConfig::from_toml_str_with_env(text, |_| Some("v".to_owned())) {
                        Ok(_) | Err(Error::Config { .. }) => {}
                        Err(other) => prop_assert!(false, "{}: {}", text, other),
                    }
                }
            }

            /// `${NAME}` gives the variable's value as it is (a `${` in it is not expanded
            /// again), `$${` gives `${`, and text without `$` is left alone.
            #[test]
            fn references_expand_once_and_escapes_survive(
                text in any::<String>(),
                name in "[A-Za-z_][A-Za-z0-9_]{0,10}",
                value in any::<String>(),
            ) {
                let lookup = |n: &str| (n == name).then(|| value.clone());
                let expand = |t: &str| env::expand(t, "k", &lookup);
                let plain: String = text.chars().filter(|&c| c != '$').collect();
                prop_assert_eq!(expand(&plain).unwrap(), plain.clone());
                let escaped = text.replace("${", "$${");
                prop_assert_eq!(expand(&escaped).unwrap(), text.clone());
                let reference = format!("{plain}${{{name}}}{escaped}");
                prop_assert_eq!(expand(&reference).unwrap(), format!("{plain}{value}{text}"));
                // Anything else is expanded or refused naming the key, never a panic.
                if let Err(e) = expand(&text) {
                    prop_assert!(e.to_string().starts_with("config key `k`"), "{}", e);
                }
            }
        }
    }

    #[test]
    fn file_is_named() {
        let e = Error::config("a.b", "bad")
            .in_file("/etc/p.toml")
            .to_string();
        assert_eq!(e, "/etc/p.toml: config key `a.b`: bad");
    }
}
