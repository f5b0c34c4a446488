//! [`SourceSet`]: the sources of one streaming program behind one [`Source`], each partition
//! routed to the source its topic names.
//!
//! Kafka topic names cannot hold `:` or `/`, so the other sources name their one partition's
//! topic with a scheme: `file:<directory>` and `socket:<host>:<port>`. Those names are what the
//! checkpoint's identity records, so pointing a program at another directory or socket is
//! reported at start, like a changed Kafka topic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{FileSource, Guarantee, KafkaSource, PartitionBatch, SocketSource, Source, Watermarks};
use crate::error::{Error, Result};
use crate::plan::{BatchPlan, TopicPartition};

/// What kind of source a topic name belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A Kafka topic.
    Kafka,
    /// `file:<directory>`: the text files that appear in a directory.
    Files(PathBuf),
    /// `socket:<host>:<port>`: lines read from a TCP server.
    Socket {
        /// The server's host name or address.
        host: String,
        /// Its port.
        port: u16,
    },
}

impl SourceKind {
    /// The kind of `topic`, by its scheme.
    ///
    /// ```
    /// use weir::source::SourceKind;
    ///
    /// assert_eq!(SourceKind::of("orders").unwrap(), SourceKind::Kafka);
    /// assert_eq!(
    ///     SourceKind::of("socket:localhost:9999").unwrap(),
    ///     SourceKind::Socket { host: "localhost".into(), port: 9999 },
    /// );
    /// assert!(SourceKind::of("socket:localhost").is_err());
    /// ```
    pub fn of(topic: &str) -> Result<Self> {
        if let Some(dir) = topic.strip_prefix("file:") {
            return Ok(Self::Files(PathBuf::from(dir)));
        }
        if let Some(address) = topic.strip_prefix("socket:") {
            let parsed = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .filter(|(host, _)| !host.is_empty());
            return match parsed {
                Some((host, port)) => Ok(Self::Socket {
                    host: host.to_owned(),
                    port,
                }),
                None => Err(Error::config(
                    "socket_text_stream",
                    format!("{address:?} is not host:port, e.g. localhost:9999"),
                )),
            };
        }
        Ok(Self::Kafka)
    }

    /// The topic name of a file source reading `dir`.
    pub fn file_topic(dir: &std::path::Path) -> String {
        format!("file:{}", dir.display())
    }

    /// The topic name of a socket source reading `host:port`.
    pub fn socket_topic(host: &str, port: u16) -> String {
        format!("socket:{host}:{port}")
    }
}

/// Several sources as one: Kafka topics through one [`KafkaSource`], and one [`FileSource`] or
/// [`SocketSource`] per directory or socket.
#[derive(Debug, Default)]
pub struct SourceSet {
    kafka: Option<(BTreeSet<String>, KafkaSource)>,
    files: Vec<FileSource>,
    sockets: Vec<SocketSource>,
}

/// Runs `$body` with `$s` bound to the file or socket source that owns topic `$topic`.
macro_rules! with_member {
    ($set:expr, $topic:expr, |$s:ident| $body:expr) => {{
        let topic: &str = $topic;
        if let Some($s) = $set.files.iter_mut().find(|f| f.topic() == topic) {
            $body
        } else if let Some($s) = $set.sockets.iter_mut().find(|s| s.topic() == topic) {
            $body
        } else {
            Err(Error::SourceVanished {
                what: format!("topic {topic} (no source of this program reads it)"),
            })
        }
    }};
}

impl SourceSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the Kafka source, which reads `topics`.
    pub fn with_kafka(mut self, topics: BTreeSet<String>, source: KafkaSource) -> Self {
        self.kafka = Some((topics, source));
        self
    }

    /// Adds a directory source.
    pub fn with_files(mut self, source: FileSource) -> Self {
        self.files.push(source);
        self
    }

    /// Adds a socket source.
    pub fn with_socket(mut self, source: SocketSource) -> Self {
        self.sockets.push(source);
        self
    }

    /// Every topic of every member.
    fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .kafka
            .iter()
            .flat_map(|(t, _)| t.iter().cloned())
            .collect();
        topics.extend(self.files.iter().map(|f| f.topic().to_owned()));
        topics.extend(self.sockets.iter().map(|s| s.topic().to_owned()));
        topics
    }

    /// `partitions` grouped by topic.
    fn by_topic(
        partitions: &BTreeSet<TopicPartition>,
    ) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut grouped: BTreeMap<String, BTreeSet<TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            grouped
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.clone());
        }
        grouped
    }

    /// The Kafka member's share of `partitions` first, as one request, then the others topic
    /// by topic.
    fn split(
        &self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> (
        BTreeSet<TopicPartition>,
        BTreeMap<String, BTreeSet<TopicPartition>>,
    ) {
        let (kafka, other): (BTreeSet<_>, BTreeSet<_>) =
            partitions.iter().cloned().partition(|tp| {
                self.kafka
                    .as_ref()
                    .is_some_and(|(topics, _)| topics.contains(&tp.topic))
            });
        (kafka, Self::by_topic(&other))
    }
}

impl Source for SourceSet {
    async fn discover(&mut self) -> Result<BTreeSet<TopicPartition>> {
        let mut found = BTreeSet::new();
        if let Some((_, kafka)) = self.kafka.as_mut() {
            found.extend(Source::discover(kafka).await?);
        }
        for files in &mut self.files {
            found.extend(files.discover().await?);
        }
        for socket in &mut self.sockets {
            found.extend(socket.discover().await?);
        }
        Ok(found)
    }

    async fn watermarks(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Watermarks>> {
        let (kafka, other) = self.split(partitions);
        let mut all = BTreeMap::new();
        if !kafka.is_empty()
            && let Some((_, source)) = self.kafka.as_mut()
        {
            all.extend(Source::watermarks(source, &kafka).await?);
        }
        for (topic, tps) in other {
            all.extend(with_member!(self, &topic, |s| s.watermarks(&tps).await)?);
        }
        Ok(all)
    }

    async fn starting_positions(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let (kafka, other) = self.split(partitions);
        let mut all = BTreeMap::new();
        if !kafka.is_empty()
            && let Some((_, source)) = self.kafka.as_mut()
        {
            all.extend(Source::starting_positions(source, &kafka).await?);
        }
        for (topic, tps) in other {
            all.extend(with_member!(self, &topic, |s| s
                .starting_positions(&tps)
                .await)?);
        }
        Ok(all)
    }

    fn assign(&mut self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let mut shares: BTreeMap<String, BTreeMap<TopicPartition, i64>> = self
            .topics()
            .into_iter()
            .map(|t| (t, BTreeMap::new()))
            .collect();
        for (tp, &position) in positions {
            match shares.get_mut(&tp.topic) {
                Some(share) => {
                    share.insert(tp.clone(), position);
                }
                None => {
                    return Err(Error::SourceVanished {
                        what: format!("{tp} (no source of this program reads it)"),
                    });
                }
            }
        }
        if let Some((topics, source)) = self.kafka.as_mut() {
            let share: BTreeMap<TopicPartition, i64> = positions
                .iter()
                .filter(|(tp, _)| topics.contains(&tp.topic))
                .map(|(tp, &o)| (tp.clone(), o))
                .collect();
            Source::assign(source, &share)?;
        }
        for files in &mut self.files {
            files.assign(shares.get(files.topic()).unwrap_or(&BTreeMap::new()))?;
        }
        for socket in &mut self.sockets {
            socket.assign(shares.get(socket.topic()).unwrap_or(&BTreeMap::new()))?;
        }
        Ok(())
    }

    fn assigned(&self) -> BTreeSet<TopicPartition> {
        let mut all = BTreeSet::new();
        if let Some((_, kafka)) = &self.kafka {
            all.extend(Source::assigned(kafka));
        }
        for files in &self.files {
            all.extend(files.assigned());
        }
        for socket in &self.sockets {
            all.extend(socket.assigned());
        }
        all
    }

    async fn fetch(&mut self, plan: &BatchPlan, replay: bool) -> Result<Vec<PartitionBatch>> {
        let mut shares: BTreeMap<Option<String>, BatchPlan> = BTreeMap::new();
        for range in &plan.ranges {
            let is_kafka = self
                .kafka
                .as_ref()
                .is_some_and(|(topics, _)| topics.contains(&range.tp.topic));
            let owner = (!is_kafka).then(|| range.tp.topic.clone());
            shares
                .entry(owner)
                .or_insert_with(|| BatchPlan::new(plan.batch_time, Vec::new()))
                .ranges
                .push(range.clone());
        }
        let mut batches: BTreeMap<TopicPartition, PartitionBatch> = BTreeMap::new();
        for (owner, share) in shares {
            let fetched = match owner {
                None => match self.kafka.as_mut() {
                    Some((_, source)) => Source::fetch(source, &share, replay).await?,
                    None => Vec::new(),
                },
                Some(topic) => with_member!(self, &topic, |s| s.fetch(&share, replay).await)?,
            };
            batches.extend(fetched.into_iter().map(|b| (b.range.tp.clone(), b)));
        }
        // In the plan's order, as the contract says.
        Ok(plan
            .ranges
            .iter()
            .filter_map(|r| batches.remove(&r.tp))
            .collect())
    }

    fn commit_offsets(&self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        match &self.kafka {
            Some((topics, kafka)) => {
                let share: BTreeMap<TopicPartition, i64> = positions
                    .iter()
                    .filter(|(tp, _)| topics.contains(&tp.topic))
                    .map(|(tp, &o)| (tp.clone(), o))
                    .collect();
                if share.is_empty() {
                    Ok(())
                } else {
                    Source::commit_offsets(kafka, &share)
                }
            }
            None => Ok(()),
        }
    }

    fn guarantee(&self) -> Guarantee {
        if self.sockets.is_empty() {
            Guarantee::ExactlyOnce
        } else {
            Guarantee::AtMostOnce
        }
    }
}
