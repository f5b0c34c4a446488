//! The snapshot: positions and operator state after one batch, in one file (invariant 5).
//!
//! File layout, all integers little-endian:
//!
//! ```text
//! offset  size  field
//!      0     8  magic "WEIRSNAP"
//!      8     2  format version
//!     10     8  fingerprint of the pipeline identity
//!     18     8  payload length
//!     26     4  CRC32C of the payload
//!     30     4  CRC32C of bytes 0..30 (the header)
//!     34     …  payload: bincode (standard config) of `Snapshot`
//! ```
//!
//! The magic and the version stay at offsets 0 and 8 in every future format, so an older weir
//! can always tell "written by a newer weir" from "damaged".

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{BatchTime, TopicPartition};

use super::identity::PipelineIdentity;

/// The snapshot file format this weir writes and the newest it reads.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;

const MAGIC: [u8; 8] = *b"WEIRSNAP";
const VERSION_END: usize = 10;
const HEADER_CRC_START: usize = 30;
const HEADER_LEN: usize = 34;

/// Everything a pipeline needs to continue after batch `batch_time`: where each partition goes
/// on and the state of every stateful operator. Checkpoints hold data, never code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the checkpoint belongs to; its fingerprint is in the file header.
    pub identity: PipelineIdentity,
    /// The batch interval, in milliseconds, when the snapshot was written.
    pub batch_interval_ms: u64,
    /// The last batch whose effects the snapshot includes.
    pub batch_time: BatchTime,
    /// The `until` of every partition after `batch_time`: where the next batch starts.
    pub positions: BTreeMap<TopicPartition, i64>,
    /// The state of every stateful operator after `batch_time`, keyed by stable operator id.
    pub operator_state: BTreeMap<String, OperatorState>,
}

/// One operator's serialized state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    /// The version of the state's schema, as declared by the operator; part of the pipeline
    /// identity, so a change is noticed before the bytes are decoded.
    pub schema_version: u32,
    /// The state, serialized by the operator.
    pub bytes: Vec<u8>,
}

impl Snapshot {
    /// The snapshot a fresh pipeline writes before its first batch: `batch_time` is the batch
    /// before the first one, `positions` the starting offsets, and there is no state yet.
    pub fn initial(
        identity: PipelineIdentity,
        batch_interval: Duration,
        batch_time: BatchTime,
        positions: BTreeMap<TopicPartition, i64>,
    ) -> Self {
        Self {
            identity,
            batch_interval_ms: u64::try_from(batch_interval.as_millis()).unwrap_or(u64::MAX),
            batch_time,
            positions,
            operator_state: BTreeMap::new(),
        }
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.identity.pipeline
    }

    /// The batch interval when the snapshot was written.
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms)
    }

    /// The file contents: header and payload.
    pub(crate) fn encode(&self, path: &Path) -> Result<Vec<u8>> {
        let payload = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| Error::checkpoint(path, format!("cannot encode the snapshot: {e}")))?;
        let payload_len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.identity.fingerprint().to_le_bytes());
        bytes.extend_from_slice(&payload_len.to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        let header_crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&header_crc.to_le_bytes());
        bytes.extend_from_slice(&payload);
        Ok(bytes)
    }

    /// Decodes a snapshot file's contents; see [`SnapshotDefect`] for what can be wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SnapshotDefect> {
        let damaged = |why: String| Err(SnapshotDefect::Damaged(why));
        if bytes.len() < VERSION_END {
            return damaged(format!(
                "the file is {} bytes, shorter than a snapshot header (a torn write)",
                bytes.len()
            ));
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return damaged("it does not start with the snapshot magic bytes WEIRSNAP".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version > SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotDefect::NewerFormat(version));
        }
        if version == 0 {
            return damaged("format version 0 does not exist".into());
        }
        if bytes.len() < HEADER_LEN {
            return damaged(format!(
                "the file is {} bytes, shorter than a snapshot header (a torn write)",
                bytes.len()
            ));
        }
        if crc32c::crc32c(&bytes[..HEADER_CRC_START]) != le_u32(&bytes[30..34]) {
            return damaged("the header checksum does not match".into());
        }
        let fingerprint = le_u64(&bytes[10..18]);
        let payload_len = le_u64(&bytes[18..26]);
        let payload = &bytes[HEADER_LEN..];
        let actual_len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        if actual_len != payload_len {
            return damaged(format!(
                "the header announces a {payload_len}-byte payload but {actual_len} bytes follow{}",
                if actual_len < payload_len {
                    " (a torn write)"
                } else {
                    ""
                }
            ));
        }
        if crc32c::crc32c(payload) != le_u32(&bytes[26..30]) {
            return damaged("the payload checksum does not match".into());
        }
        let (snapshot, used): (Snapshot, usize) =
            bincode::serde::decode_from_slice(payload, bincode::config::standard()).map_err(
                |e| SnapshotDefect::Damaged(format!("the payload does not decode: {e}")),
            )?;
        if used != payload.len() {
            return damaged(format!(
                "the payload has {} bytes after the snapshot",
                payload.len() - used
            ));
        }
        if snapshot.identity.fingerprint() != fingerprint {
            return damaged("the header fingerprint does not match the payload's identity".into());
        }
        Ok(snapshot)
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnapshotDefect {
    /// Torn, corrupt or not a snapshot: recovery skips it and uses an older one.
    Damaged(String),
    /// Written by a newer weir: recovery stops, because skipping it would roll state back.
    NewerFormat(u16),
}

impl SnapshotDefect {
    /// The error that stops recovery for a snapshot written in a newer format.
    pub fn newer_format_error(path: &Path, version: u16) -> Error {
        Error::checkpoint(
            path,
            format!(
                "written by a newer weir (snapshot format version {version}; this weir reads up to \
                 {SNAPSHOT_FORMAT_VERSION}). Upgrade weir to resume this pipeline; if no newer weir \
                 ever ran on this checkpoint, the file is damaged: restore it from a backup"
            ),
        )
    }
}

pub(crate) fn le_u32(bytes: &[u8]) -> u32 {
    let mut array = [0; 4];
    array.copy_from_slice(bytes);
    u32::from_le_bytes(array)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut array = [0; 8];
    array.copy_from_slice(bytes);
    u64::from_le_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let identity = PipelineIdentity::new("orders", ["orders"], "sqlite://x.db table=t")
            .with_operator("counts", 3);
        let mut snapshot = Snapshot::initial(
            identity,
            Duration::from_millis(200),
            BatchTime::from_millis(1_000),
            BTreeMap::from([(TopicPartition::new("orders", 0), 42)]),
        );
        snapshot.operator_state.insert(
            "counts".into(),
            OperatorState {
                schema_version: 3,
                bytes: vec![1, 2, 3],
            },
        );
        snapshot
    }

    fn encoded() -> Vec<u8> {
        sample().encode(Path::new("x")).unwrap_or_default()
    }

    fn damage(bytes: &[u8]) -> String {
        match Snapshot::decode(bytes) {
            Err(SnapshotDefect::Damaged(why)) => why,
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(Snapshot::decode(&encoded()), Ok(sample()));
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encoded();
        for len in 0..bytes.len() {
            damage(&bytes[..len]);
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encoded();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            // Byte 8 is the low byte of the version: 1 ^ 1 = 0 is "no such version".
            assert!(
                Snapshot::decode(&flipped).is_err(),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn bad_payload_crc_is_named() {
        let mut bytes = encoded();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(damage(&bytes), "the payload checksum does not match");
    }

    #[test]
    fn newer_format_is_not_damage() {
        let mut bytes = encoded();
        bytes[8..10].copy_from_slice(&(SNAPSHOT_FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            Snapshot::decode(&bytes),
            Err(SnapshotDefect::NewerFormat(SNAPSHOT_FORMAT_VERSION + 1))
        );
        let message = SnapshotDefect::newer_format_error(Path::new("s"), 2).to_string();
        assert!(message.contains("Upgrade weir"), "{message}");
    }
}
