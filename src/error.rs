//! The one error type of weir.
//!
//! Every error says what to do and names what it is about: the record (topic/partition/offset),
//! the configuration key, the checkpoint file or the batch. Each one knows whether trying again can
//! help ([`Error::is_retryable`]): a database that went away is worth waiting for, a record that is
//! not valid JSON is not.

use std::path::{Path, PathBuf};

use crate::plan::{BatchTime, OffsetRange, TopicPartition};

/// `Result` with weir's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in weir.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or invalid.
    #[error("{}config key `{key}`: {message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Config {
        /// The file the key was read from, when there is one.
        file: Option<PathBuf>,
        /// The dotted key, e.g. `source.max_rate_per_partition`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },

    /// A call to Kafka failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What weir was doing.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// The brokers refused weir's login, or the TLS handshake with them failed. librdkafka
    /// would reconnect forever; trying again cannot help until the configuration changes.
    #[error("kafka: {problem}: {reason}; {advice}")]
    KafkaRefused {
        /// What failed, e.g. `authentication failed`.
        problem: String,
        /// librdkafka's account, naming the broker (never a credential).
        reason: String,
        /// Which keys to check.
        advice: String,
    },

    /// A topic or partition the pipeline reads was deleted.
    #[error(
        "kafka: {what} no longer exists; a pipeline cannot continue without its input. Recreate it or remove it from `source.topics` and reset the checkpoint"
    )]
    SourceVanished {
        /// The topic or partition, e.g. `orders/3`.
        what: String,
    },

    /// Records the pipeline has not read yet were deleted by retention (invariant 6).
    #[error(
        "data loss on {tp}: offsets [{from}..{log_start}) were deleted by retention before weir read them. Raise the topic's retention, or set `source.on_data_loss = \"skip\"` to skip them and record the gap"
    )]
    DataLoss {
        /// The partition.
        tp: TopicPartition,
        /// The first offset weir needed.
        from: i64,
        /// The partition's log start offset now.
        log_start: i64,
    },

    /// A partition's log ends below where weir has read it to: the topic was deleted and
    /// recreated under the same name, or an unclean leader election truncated it (invariant 6).
    #[error(
        "kafka: the log of {tp} ends at offset {log_end}, below weir's position {position}: the topic was deleted and recreated (or truncated by an unclean leader election), and its new records would be read only from offset {position} on. To read the new topic from its first offset and record the gap, restart with `source.on_data_loss = \"skip\"`; to start over, reset the checkpoint and the sink's bookkeeping"
    )]
    LogReplaced {
        /// The partition.
        tp: TopicPartition,
        /// Where weir had read it to.
        position: i64,
        /// Where its log ends now.
        log_end: i64,
    },

    /// `weir verify` cannot recompute what the sink must hold.
    #[error("verify pipeline {pipeline:?}: {reason}")]
    Unverifiable {
        /// The pipeline.
        pipeline: String,
        /// Why, and what was found.
        reason: String,
    },

    /// A record could not be processed.
    #[error("record {tp}@{offset}: {reason}")]
    Record {
        /// The partition of the record.
        tp: TopicPartition,
        /// The record's offset.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },

    /// The checkpoint directory is unusable.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },

    /// Another process holds the checkpoint directory.
    #[error("checkpoint {} is in use by another weir process (lock held on its LOCK file); stop that process first, or give this pipeline its own `pipeline.checkpoint_dir`", path.display())]
    CheckpointLocked {
        /// The directory.
        path: PathBuf,
    },

    /// The checkpoint was written by a pipeline whose identity differs from this one.
    #[error("checkpoint {} belongs to a different pipeline: {changes}. Undo the change, or run `weir checkpoint reset --keep-offsets <pipeline.toml>` to start fresh state at the stored offsets", path.display())]
    FingerprintMismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// What changed, e.g. `topics: [a] -> [a, b]`.
        changes: String,
    },

    /// Two batches do not line up (invariant 1): a planner or recovery bug, so the pipeline stops
    /// rather than lose or double data.
    #[error(
        "contiguity violated for {what}: {detail}; the pipeline stopped so that nothing is lost or doubled"
    )]
    Contiguity {
        /// The pipeline and partition concerned.
        what: String,
        /// Both ranges.
        detail: String,
    },

    /// A database operation failed.
    #[error("database: {context}: {}", database_message(source))]
    Database {
        /// What weir was doing, naming the batch and partition when there is one.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// A file operation failed. On a full disk or an exhausted quota the message says where to
    /// free space.
    #[error("{}: {source}{}", path.display(), io_advice(path, source))]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A batch failed for a reason named in `message`.
    #[error("batch {batch_time}: {message}")]
    Batch {
        /// The batch.
        batch_time: BatchTime,
        /// What went wrong.
        message: String,
    },

    /// A background task panicked or was cancelled: a bug in weir.
    #[error("{what} failed: {message}; this is a bug in weir, please report it with the log")]
    TaskFailed {
        /// What the task was doing.
        what: String,
        /// The panic or cancellation.
        message: String,
    },

    /// A committed range in the sink does not match what the checkpoint expects.
    #[error("sink and checkpoint disagree on {range}: {message}")]
    SinkAhead {
        /// The range the sink holds.
        range: OffsetRange,
        /// What to do.
        message: String,
    },
}

impl Error {
    /// A configuration error for `key`, without a file yet (see [`Error::in_file`]).
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            file: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// A Kafka error with what weir was doing. The value of a secret property (`sasl.password`,
    /// …) that librdkafka refused is masked, in the message and in `Debug` output.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        use rdkafka::error::KafkaError;
        let source = match source {
            KafkaError::ClientConfig(code, description, key, value)
                if crate::redact::is_secret_name(&key) =>
            {
                let description = if value.is_empty() {
                    description
                } else {
                    description.replace(&value, crate::redact::MASK)
                };
                KafkaError::ClientConfig(code, description, key, crate::redact::MASK.to_owned())
            }
            other => other,
        };
        Self::Kafka {
            context: context.into(),
            source,
        }
    }

    /// A database error with what weir was doing.
    pub fn database(context: impl Into<String>, source: sqlx::Error) -> Self {
        Self::Database {
            context: context.into(),
            source,
        }
    }

    /// A checkpoint error for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Attaches the configuration file to a [`Error::Config`]; other errors pass through.
    #[must_use]
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            Self::Config { key, message, .. } => Self::Config {
                file: Some(path.into()),
                key,
                message,
            },
            other => other,
        }
    }

    /// True when the same operation may succeed if tried again later: lost connections,
    /// deadlocks, a broker that is restarting. Errors about data, configuration or protocol
    /// invariants are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka { source, .. } => kafka_is_retryable(source),
            Self::Database { source, .. } => database_is_retryable(source),
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }
}

/// `error` and its causes, each said once, joined by `: `, for the one line a command prints
/// when it fails. weir's own errors already say their cause (cleaned up, see
/// [`Error::Database`]), so the chain ends at the first of them; a cause whose text is already
/// in the line is left out.
///
/// ```
/// use weir::Error;
///
/// let io = std::io::Error::other("disk on fire");
/// let error = anyhow::Error::new(Error::io("/var/lib/weir/x", io)).context("writing the snapshot");
/// assert_eq!(
///     weir::error::report(error.as_ref()),
///     "writing the snapshot: /var/lib/weir/x: disk on fire"
/// );
/// ```
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(error);
    while let Some(error) = cause {
        let text = error.to_string();
        let text = text.trim_end();
        if !line.contains(text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(text);
        }
        if error.is::<Error>() {
            break;
        }
        cause = error.source();
    }
    line
}

/// What the database said, once: its message, detail and hint with the SQLSTATE (and MySQL's
/// error number), without the server's source file and line that PostgreSQL errors carry, and
/// without sqlx's "error returned from database" wrapping.
pub(crate) fn database_message(error: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = error else {
        return error.to_string();
    };
    let mut text = db.message().trim_end().to_owned();
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        if let Some(detail) = pg.detail() {
            text.push_str("; ");
            text.push_str(detail.trim_end());
        }
        if let Some(hint) = pg.hint() {
            text.push_str("; hint: ");
            text.push_str(hint.trim_end());
        }
        text.push_str(&format!(" (SQLSTATE {})", pg.code()));
    } else if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        match mysql.code() {
            Some(code) => text.push_str(&format!(" (error {}, SQLSTATE {code})", mysql.number())),
            None => text.push_str(&format!(" (error {})", mysql.number())),
        }
    } else if let Some(code) = db.code() {
        text.push_str(&format!(" (code {code})"));
    }
    text
}

/// What to do about an I/O error on `path` that only the operator can cure: a full disk or an
/// exhausted quota, which a retry gets past once space is freed.
fn io_advice(path: &Path, error: &std::io::Error) -> String {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(path);
    match error.kind() {
        std::io::ErrorKind::StorageFull => format!(
            "; the disk is full: free space on the file system that holds {}",
            dir.display()
        ),
        std::io::ErrorKind::QuotaExceeded => format!(
            "; the disk quota is used up: free space in {} or raise the quota",
            dir.display()
        ),
        _ => String::new(),
    }
}

/// Only the codes that say "not now" are retried: lost connections, elections, timeouts,
/// coordinators loading, throttling. Everything else (authentication and authorization
/// failures, unknown topics, bad configuration, protocol errors, and any code this list does not
/// know) is final, so a misconfigured pipeline stops with its error instead of retrying forever.
fn kafka_is_retryable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
    match error.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::Resolve
                | Code::MessageTimedOut
                | Code::OperationTimedOut
                | Code::TimedOutQueue
                | Code::QueueFull
                | Code::WaitingForCoordinator
                | Code::WaitCache
                | Code::InProgress
                | Code::PreviousInProgress
                | Code::Retry
                | Code::Interrupted
                | Code::NodeUpdate
                | Code::ISRInsufficient
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::RequestTimedOut
                | Code::BrokerNotAvailable
                | Code::ReplicaNotAvailable
                | Code::NetworkException
                | Code::CoordinatorLoadInProgress
                | Code::CoordinatorNotAvailable
                | Code::NotCoordinator
                | Code::NotEnoughReplicas
                | Code::NotEnoughReplicasAfterAppend
                | Code::NotController
                | Code::KafkaStorageError
                | Code::FetchSessionIdNotFound
                | Code::InvalidFetchSessionEpoch
                | Code::FencedLeaderEpoch
                | Code::UnknownLeaderEpoch
                | Code::OffsetNotAvailable
                | Code::PreferredLeaderNotAvailable
                | Code::EligibleLeadersNotAvailable
                | Code::ThrottlingQuotaExceeded
                | Code::RebalanceInProgress
                | Code::ReassignmentInProgress
                | Code::RebootstrapRequired
        ),
        None => !matches!(
            error,
            KafkaError::ClientCreation(_)
                | KafkaError::ClientConfig(..)
                | KafkaError::Subscription(_)
                | KafkaError::Canceled
        ),
    }
}

/// Connection loss, pool exhaustion, deadlocks and serialization failures are transient;
/// constraint and type errors belong to the data.
pub(crate) fn database_is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // MySQL reports most server errors under the catch-all SQLSTATE HY000: its own error
            // number says what happened. 1205 lock wait timeout, 1213 deadlock, 1927 connection
            // killed, 2006/2013 server gone, 1053 server shutdown.
            if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                && matches!(mysql.number(), 1053 | 1205 | 1213 | 1927 | 2006 | 2013)
            {
                return true;
            }
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // PostgreSQL SQLSTATE classes 08 (connection), 40 (transaction rollback: deadlock,
            // serialization), 53 (insufficient resources), 57P0x (admin shutdown / crash);
            // SQLite 5/6 (busy/locked).
            code.starts_with("08")
                || code.starts_with("40")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(code, "5" | "6")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

    #[test]
    fn only_kafka_errors_that_say_not_now_are_retried() {
        let retryable = |code| Error::kafka("test", KafkaError::MetadataFetch(code)).is_retryable();
        for code in [
            Code::BrokerTransportFailure,
            Code::AllBrokersDown,
            Code::NotLeaderForPartition,
            Code::RequestTimedOut,
        ] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::Authentication,
            Code::SaslAuthenticationFailed,
            Code::SSL,
            Code::TopicAuthorizationFailed,
            Code::ClusterAuthorizationFailed,
            Code::UnsupportedSASLMechanism,
            Code::Fail,
            Code::Unknown,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }

    fn occurrences(text: &str, part: &str) -> usize {
        text.matches(part).count()
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let config = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Configuration property \"ssl.key.password\" not supported in this build".to_owned(),
            "ssl.key.password".to_owned(),
            "hunter2".to_owned(),
        );
        let error = anyhow::Error::new(Error::kafka("creating a consumer", config))
            .context("starting the pipeline");
        let line = report(error.as_ref());
        assert_eq!(
            occurrences(&line, "not supported in this build"),
            1,
            "{line}"
        );
        assert!(
            line.starts_with("starting the pipeline: kafka: creating a consumer: "),
            "{line}"
        );
        assert!(!line.contains("hunter2"), "{line}");
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");

        let io = std::io::Error::other("connection reset");
        let error = anyhow::Error::new(Error::database("writing batch 7", sqlx::Error::Io(io)))
            .context("running");
        let line = report(error.as_ref());
        assert_eq!(occurrences(&line, "connection reset"), 1, "{line}");
        assert_eq!(
            line,
            "running: database: writing batch 7: error communicating with database: connection reset"
        );

        // Causes that are not weir's are each printed once too.
        let error = anyhow::Error::new(std::io::Error::other("gone")).context("reading");
        assert_eq!(report(error.as_ref()), "reading: gone");
    }
}
