//! [`SocketSource`]: lines of text from a TCP server (Spark's `socketTextStream`). **At most
//! once**: a socket cannot be read twice, so lines received but not yet in a finished batch
//! when the process dies are lost, and so are lines sent while it is down. No line is ever
//! delivered twice. Use it for demos and tests; put real input in Kafka.
//!
//! A background task connects (and reconnects, every second, logging each outage once), reads
//! lines into a bounded queue, and stops reading when the queue is full, so a fast sender is
//! slowed by TCP rather than filling memory. Lines are numbered as they are counted into a
//! watermark; a batch's range takes exactly the lines counted for it. A logged plan executed
//! again after a restart finds no lines (they died with the old process): its batch runs empty
//! and the loss is logged with the number of lines.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use super::{Guarantee, PartitionBatch, Record, Source, Watermarks};
use crate::error::Result;
use crate::plan::{BatchPlan, TopicPartition};

/// Lines the reader may queue before it stops reading the socket.
const QUEUE_LINES: usize = 100_000;
/// Time between connection attempts.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// A TCP server's lines as a one-partition source.
#[derive(Debug)]
pub struct SocketSource {
    topic: String,
    host: String,
    port: u16,
    lines: Option<mpsc::Receiver<Vec<u8>>>,
    reader: Option<AbortOnDropHandle<()>>,
    /// Lines counted into a watermark and not yet taken by a batch; the first is line `next`.
    counted: VecDeque<Vec<u8>>,
    next: i64,
    assigned: bool,
}

impl SocketSource {
    /// A source of the lines the server at `host:port` sends. Nothing connects until the
    /// pipeline starts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        Self {
            topic: super::SourceKind::socket_topic(&host, port),
            host,
            port,
            lines: None,
            reader: None,
            counted: VecDeque::new(),
            next: 0,
            assigned: false,
        }
    }

    /// The topic name of the source's one partition, `socket:<host>:<port>`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), 0)
    }

    fn start_reader(&mut self) {
        if self.reader.is_some() {
            return;
        }
        let (sender, receiver) = mpsc::channel(QUEUE_LINES);
        let address = format!("{}:{}", self.host, self.port);
        self.lines = Some(receiver);
        self.reader = Some(AbortOnDropHandle::new(tokio::spawn(read_lines(
            address, sender,
        ))));
    }

    /// Moves the lines received so far into the counted queue.
    fn count_received(&mut self) {
        if let Some(lines) = self.lines.as_mut() {
            while let Ok(line) = lines.try_recv() {
                self.counted.push_back(line);
            }
        }
    }

    fn end(&self) -> i64 {
        self.next
            .saturating_add(i64::try_from(self.counted.len()).unwrap_or(i64::MAX))
    }
}

/// Connects, reads lines into `sender`, reconnects when the server goes away; ends when the
/// source is dropped.
async fn read_lines(address: String, sender: mpsc::Sender<Vec<u8>>) {
    let mut reported = false;
    loop {
        match TcpStream::connect(&address).await {
            Ok(stream) => {
                info!(message = "Connected to the socket source; it is at-most-once.", %address);
                reported = false;
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = Vec::new();
                    let read = (&mut reader)
                        .take(MAX_LINE_BYTES + 1)
                        .read_until(b'\n', &mut line)
                        .await;
                    match read {
                        Ok(0) => break,
                        Ok(_) if line.len() > max_line_len(&line) => {
                            warn!(message = "Dropped a line longer than the socket source allows.", %address, max_bytes = MAX_LINE_BYTES);
                            if skip_line(&mut reader).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {
                            while line.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                                line.pop();
                            }
                            if sender.send(line).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            warn!(message = "Lost the socket source; reconnecting.", %address, %error);
                            break;
                        }
                    }
                }
            }
            Err(error) if !reported => {
                warn!(message = "Cannot connect to the socket source; retrying every second.", %address, %error);
                reported = true;
            }
            Err(_) => {}
        }
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// The longest line the source accepts; longer ones are dropped with a warning, so that a sender
/// that never ends its line cannot fill memory.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// The most bytes `line` may have: the limit, plus its line end when it has one.
fn max_line_len(line: &[u8]) -> usize {
    let limit = usize::try_from(MAX_LINE_BYTES).unwrap_or(usize::MAX);
    if line.ends_with(b"\n") {
        limit + 1
    } else {
        limit
    }
}

/// Reads and drops the rest of a line, in chunks of at most the line limit.
async fn skip_line(reader: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    loop {
        let mut chunk = Vec::new();
        let n = (&mut *reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut chunk)
            .await?;
        if n == 0 || chunk.ends_with(b"\n") {
            return Ok(());
        }
    }
}

impl Source for SocketSource {
    async fn discover(&mut self) -> Result<BTreeSet<TopicPartition>> {
        self.start_reader();
        Ok(BTreeSet::from([self.partition()]))
    }

    async fn watermarks(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Watermarks>> {
        self.start_reader();
        self.count_received();
        let watermarks = Watermarks {
            log_start: self.next,
            stable_end: self.end(),
        };
        Ok(super::answer_for(partitions, &self.partition(), watermarks))
    }

    async fn starting_positions(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        Ok(super::answer_for(partitions, &self.partition(), 0))
    }

    fn assign(&mut self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        match positions.get(&self.partition()) {
            Some(&position) => {
                // Lines already counted keep their order and are numbered from here.
                self.next = position;
                self.assigned = true;
            }
            None => self.assigned = false,
        }
        Ok(())
    }

    fn assigned(&self) -> BTreeSet<TopicPartition> {
        if self.assigned {
            BTreeSet::from([self.partition()])
        } else {
            BTreeSet::new()
        }
    }

    async fn fetch(&mut self, plan: &BatchPlan, replay: bool) -> Result<Vec<PartitionBatch>> {
        let mut batches = Vec::new();
        for range in plan.ranges.iter().filter(|r| r.tp.topic == self.topic) {
            let mut records = Vec::new();
            if replay {
                if !range.is_empty() {
                    warn!(
                        message = "Lines of a batch planned before the restart are lost: the socket source is at-most-once.",
                        batch_time = %plan.batch_time,
                        lines = range.len(),
                    );
                }
            } else {
                // Lines numbered before the range were never planned: they cannot be read.
                while self.next < range.from && self.counted.pop_front().is_some() {
                    self.next += 1;
                }
                while self.next < range.until {
                    let Some(line) = self.counted.pop_front() else {
                        break;
                    };
                    records.push(Record {
                        offset: self.next,
                        timestamp: None,
                        key: None,
                        value: Some(line),
                        headers: Vec::new(),
                    });
                    self.next += 1;
                }
            }
            self.next = self.next.max(range.until);
            batches.push(PartitionBatch {
                range: range.clone(),
                records,
            });
        }
        Ok(batches)
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::AtMostOnce
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BatchTime, OffsetRange};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn lines_are_numbered_and_a_replay_finds_none() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut source = SocketSource::new("127.0.0.1", port);
        let parts = source.discover().await.unwrap();
        let tp = source.partition();
        source.assign(&BTreeMap::from([(tp.clone(), 10)])).unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        // A line over the limit is dropped, not kept growing.
        let long = vec![b'x'; usize::try_from(MAX_LINE_BYTES).unwrap() * 2 + 7];
        conn.write_all(&long).await.unwrap();
        conn.write_all(b"\na b\r\nc\n").await.unwrap();

        let mut end = 10;
        while end < 12 {
            end = source.watermarks(&parts).await.unwrap()[&tp].stable_end;
            tokio::task::yield_now().await;
        }
        let plan = BatchPlan::new(
            BatchTime::from_millis(0),
            vec![OffsetRange::new(tp.clone(), 10, 12)],
        );
        let batch = source.fetch(&plan, false).await.unwrap();
        let lines: Vec<(i64, &[u8])> = batch[0]
            .records
            .iter()
            .map(|r| (r.offset, r.value.as_deref().unwrap()))
            .collect();
        assert_eq!(lines, [(10, &b"a b"[..]), (11, b"c")]);

        let replay = BatchPlan::new(
            BatchTime::from_millis(100),
            vec![OffsetRange::new(tp.clone(), 12, 15)],
        );
        assert!(
            source.fetch(&replay, true).await.unwrap()[0]
                .records
                .is_empty()
        );
        assert_eq!(source.watermarks(&parts).await.unwrap()[&tp].log_start, 15);
    }
}
