//! The plan log: every batch plan, durable before the batch has any effect (invariant 2).
//!
//! File layout, all integers little-endian:
//!
//! ```text
//! header   8 bytes magic "WEIRPLAN", 2 bytes format version
//! record   4 bytes payload length n
//!          4 bytes CRC32C of the length bytes followed by the payload
//!          n bytes payload: bincode (standard config) of `BatchPlan`
//! record   …
//! ```
//!
//! Records are appended one at a time and fsynced, so only the last record can be torn by a
//! crash; it was never acted on and is dropped. A damaged record with intact records after it
//! cannot come from a crash and is reported as corruption.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::BatchPlan;

use super::files::{self, failpoint};
use super::snapshot::le_u32;

/// The plan log format this weir writes and the newest it reads.
pub const PLAN_LOG_FORMAT_VERSION: u16 = 1;

const MAGIC: [u8; 8] = *b"WEIRPLAN";
const HEADER_LEN: usize = 10;
const RECORD_HEADER_LEN: usize = 8;
/// Far above any real plan (100,000 partitions take about 4 MiB); a larger length is damage.
const MAX_RECORD_LEN: usize = 256 << 20;

const AFTER_APPEND_BEFORE_FSYNC: &str = "checkpoint::plan_log::after_append_before_fsync";

/// A plan log's contents: the header followed by one record per plan.
pub(crate) fn encode(plans: &[BatchPlan], path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&PLAN_LOG_FORMAT_VERSION.to_le_bytes());
    for plan in plans {
        bytes.extend_from_slice(&encode_record(plan, path)?);
    }
    Ok(bytes)
}

fn encode_record(plan: &BatchPlan, path: &Path) -> Result<Vec<u8>> {
    let payload =
        bincode::serde::encode_to_vec(plan, bincode::config::standard()).map_err(|e| {
            Error::checkpoint(
                path,
                format!("cannot encode the plan of batch {}: {e}", plan.batch_time),
            )
        })?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| usize::try_from(len).is_ok_and(|len| len <= MAX_RECORD_LEN))
        .ok_or_else(|| {
            Error::checkpoint(
                path,
                format!(
                    "the plan of batch {} is {} bytes, more than a plan record may hold ({MAX_RECORD_LEN})",
                    plan.batch_time,
                    payload.len()
                ),
            )
        })?;
    let len_bytes = len.to_le_bytes();
    let crc = record_crc(&len_bytes, &payload);
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    record.extend_from_slice(&len_bytes);
    record.extend_from_slice(&crc.to_le_bytes());
    record.extend_from_slice(&payload);
    Ok(record)
}

fn record_crc(len_bytes: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), payload)
}

/// The readable part of a plan log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogContents {
    /// The plans, in batch-time order.
    pub plans: Vec<BatchPlan>,
    /// The length of the file without a torn tail.
    pub valid_len: u64,
    /// A partial last record, if a crash left one.
    pub torn_tail: Option<TornTail>,
}

/// A last record that a crash cut short or left half-written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TornTail {
    /// Where the record starts.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a plan log cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogDefect {
    /// Written by a newer weir.
    NewerFormat(u16),
    /// Damaged where a crash cannot have damaged it.
    Corrupt {
        /// The byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl LogDefect {
    /// The error that stops recovery.
    pub fn into_error(self, path: &Path) -> Error {
        match self {
            Self::NewerFormat(version) => Error::checkpoint(
                path,
                format!(
                    "written by a newer weir (plan log format version {version}; this weir reads up \
                     to {PLAN_LOG_FORMAT_VERSION}). Upgrade weir to resume this pipeline"
                ),
            ),
            Self::Corrupt { offset, reason } => Error::checkpoint(
                path,
                format!(
                    "the plan log is corrupt at byte offset {offset}: {reason}. Logged plans must be \
                     replayed exactly and cannot be recomputed: restore the checkpoint directory \
                     from a backup"
                ),
            ),
        }
    }
}

/// Reads a plan log's contents, telling a torn last record (dropped) from corruption (an error).
pub(crate) fn parse(bytes: &[u8]) -> Result<LogContents, LogDefect> {
    let corrupt = |offset: usize, reason: String| LogDefect::Corrupt {
        offset: to_u64(offset),
        reason,
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(
            0,
            format!(
                "the file is {} bytes, shorter than the plan log header (plan logs are created whole)",
                bytes.len()
            ),
        ));
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(
            0,
            "it does not start with the plan log magic bytes WEIRPLAN".into(),
        ));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > PLAN_LOG_FORMAT_VERSION {
        return Err(LogDefect::NewerFormat(version));
    }
    if version == 0 {
        return Err(corrupt(8, "format version 0 does not exist".into()));
    }
    let mut plans: Vec<BatchPlan> = Vec::new();
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        match read_record(bytes, offset) {
            Ok((plan, next)) => {
                if let Some(last) = plans.last()
                    && plan.batch_time <= last.batch_time
                {
                    return Err(corrupt(
                        offset,
                        format!(
                            "batch {} is logged after batch {}; batch times must increase",
                            plan.batch_time, last.batch_time
                        ),
                    ));
                }
                plans.push(plan);
                offset = next;
            }
            Err(RecordProblem::Undecodable(reason)) => return Err(corrupt(offset, reason)),
            Err(RecordProblem::Damaged(reason)) => {
                if let Some(next) = find_valid_record(bytes, offset + 1) {
                    return Err(corrupt(
                        offset,
                        format!(
                            "{reason}, yet an intact record follows at byte offset {next}, so this \
                             is not a torn last write"
                        ),
                    ));
                }
                return Ok(LogContents {
                    plans,
                    valid_len: to_u64(offset),
                    torn_tail: Some(TornTail {
                        offset: to_u64(offset),
                        reason,
                    }),
                });
            }
        }
    }
    Ok(LogContents {
        plans,
        valid_len: to_u64(bytes.len()),
        torn_tail: None,
    })
}

enum RecordProblem {
    /// Short or failing its checksum: what a torn write leaves.
    Damaged(String),
    /// Whole and checksummed, yet not a plan: never a torn write.
    Undecodable(String),
}

/// The record at `offset` and the offset after it.
fn read_record(bytes: &[u8], offset: usize) -> Result<(BatchPlan, usize), RecordProblem> {
    let damaged = |why: String| Err(RecordProblem::Damaged(why));
    let remaining = bytes.len() - offset;
    if remaining < RECORD_HEADER_LEN {
        return damaged(format!(
            "only {remaining} bytes remain, fewer than a record header"
        ));
    }
    let len_bytes = &bytes[offset..offset + 4];
    let len = usize::try_from(le_u32(len_bytes)).unwrap_or(usize::MAX);
    if len > MAX_RECORD_LEN {
        return damaged(format!("the record length {len} is implausible"));
    }
    let start = offset + RECORD_HEADER_LEN;
    let end = start + len;
    if end > bytes.len() {
        return damaged(format!(
            "the record announces {len} bytes but only {} remain",
            bytes.len() - start
        ));
    }
    let payload = &bytes[start..end];
    if record_crc(len_bytes, payload) != le_u32(&bytes[offset + 4..start]) {
        return damaged("the record checksum does not match".into());
    }
    let (plan, used): (BatchPlan, usize) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard()).map_err(|e| {
            RecordProblem::Undecodable(format!("the record does not decode as a plan: {e}"))
        })?;
    if used != len {
        return Err(RecordProblem::Undecodable(format!(
            "the record has {} bytes after the plan",
            len - used
        )));
    }
    Ok((plan, end))
}

/// The first offset at or after `from` where a whole, checksummed record starts.
///
/// Only called on damage, over the rest of the file; a torn tail is at most one record long.
fn find_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    let last_start = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
    (from..=last_start).find(|&offset| {
        let len_bytes = &bytes[offset..offset + 4];
        let len = usize::try_from(le_u32(len_bytes)).unwrap_or(usize::MAX);
        let start = offset + RECORD_HEADER_LEN;
        len > 0
            && len <= MAX_RECORD_LEN
            && start + len <= bytes.len()
            && record_crc(len_bytes, &bytes[start..start + len])
                == le_u32(&bytes[offset + 4..start])
    })
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Appends plans to one plan log, each durable before [`PlanLogWriter::append`] returns.
///
/// An append that fails (a full disk, say) may leave part of its record behind. That part is cut
/// off at once when possible, and otherwise before the next append: a record after a partial one
/// would make the log look corrupt. So an append can be tried again, in the same process, once
/// its cause is gone.
#[derive(Debug)]
pub(crate) struct PlanLogWriter {
    path: PathBuf,
    file: File,
    /// The length of the header and the whole records: the last append that succeeded ends here.
    len: u64,
    /// A failed append may have left bytes after `len`.
    unclean: bool,
}

impl PlanLogWriter {
    /// Writes a whole plan log atomically, replacing any file at `path`.
    pub fn create(path: &Path, plans: &[BatchPlan]) -> Result<()> {
        files::write_atomically(path, &encode(plans, path)?, None)
    }

    /// Opens an existing plan log, whose torn tail recovery has already cut off, for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            unclean: false,
        })
    }

    /// Appends one record and fsyncs it. Fails without effect when what an earlier failed append
    /// left cannot be cut off first.
    pub fn append(&mut self, plan: &BatchPlan) -> Result<()> {
        let record = encode_record(plan, &self.path)?;
        self.cut_failed_append()?;
        let written = self
            .file
            .write_all(&record)
            .map_err(|e| Error::io(&self.path, e))
            .and_then(|()| failpoint(Some(AFTER_APPEND_BEFORE_FSYNC), &self.path))
            .and_then(|()| self.file.sync_data().map_err(|e| Error::io(&self.path, e)));
        match written {
            Ok(()) => {
                self.len += to_u64(record.len());
                Ok(())
            }
            Err(e) => {
                self.unclean = true;
                // Now rather than at the next append: on a full disk this frees the space, and
                // the log stays whole for recovery. If it fails, the next append tries again.
                let _ = self.cut_failed_append();
                Err(e)
            }
        }
    }

    /// Cuts what a failed append left after the last whole record off, durably, if anything. The
    /// next record is then written whole, so pages whose writeback failed (after a failed fsync
    /// the page cache cannot be trusted) are written again too.
    pub fn cut_failed_append(&mut self) -> Result<()> {
        if self.unclean {
            self.file
                .set_len(self.len)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| Error::io(&self.path, e))?;
            self.unclean = false;
        }
        Ok(())
    }
}

/// Cuts a torn last record off a plan log, durably.
pub(crate) fn truncate(path: &Path, valid_len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.set_len(valid_len)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BatchTime, OffsetRange, TopicPartition};

    fn plan(i: i64) -> BatchPlan {
        BatchPlan::new(
            BatchTime::from_millis(i * 100),
            vec![OffsetRange::new(
                TopicPartition::new("t", 0),
                i * 10,
                i * 10 + 10,
            )],
        )
    }

    fn log(n: i64) -> Vec<u8> {
        let plans: Vec<BatchPlan> = (1..=n).map(plan).collect();
        encode(&plans, Path::new("x")).unwrap_or_default()
    }

    #[test]
    fn round_trip() {
        let contents = parse(&log(3)).ok();
        assert_eq!(contents.map(|c| c.plans), Some((1..=3).map(plan).collect()));
    }

    #[test]
    fn torn_last_record_is_dropped() {
        let whole = log(3);
        let two = log(2).len();
        for cut in two + 1..whole.len() {
            let contents = parse(&whole[..cut]).ok();
            let contents = contents.unwrap_or_else(|| panic!("cut at {cut} is not a torn tail"));
            assert_eq!(contents.plans.len(), 2);
            assert_eq!(contents.valid_len, to_u64(two));
            assert!(contents.torn_tail.is_some());
        }
    }

    #[test]
    fn zeroed_tail_is_a_torn_tail() {
        let mut bytes = log(2);
        bytes.extend_from_slice(&[0; 64]);
        let contents = parse(&bytes).ok();
        assert_eq!(contents.map(|c| c.plans.len()), Some(2));
    }

    #[test]
    fn damage_followed_by_records_is_corruption() {
        let mut bytes = log(3);
        let first_payload = HEADER_LEN + RECORD_HEADER_LEN;
        bytes[first_payload] ^= 0xff;
        match parse(&bytes) {
            Err(LogDefect::Corrupt { offset, reason }) => {
                assert_eq!(offset, to_u64(HEADER_LEN));
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn damaged_length_followed_by_records_is_corruption() {
        let mut bytes = log(3);
        bytes[HEADER_LEN + 3] = 0x7f; // the first record now claims ~2 GiB
        assert!(matches!(parse(&bytes), Err(LogDefect::Corrupt { .. })));
    }

    /// The cut that a failed append could not make at once is made before the next append.
    #[test]
    fn what_a_failed_append_left_is_cut_off_before_the_next_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("plans-0.log");
        PlanLogWriter::create(&path, &[plan(1)])?;
        let mut writer = PlanLogWriter::open(&path)?;
        let partial = encode_record(&plan(2), &path)?;
        OpenOptions::new()
            .append(true)
            .open(&path)?
            .write_all(&partial[..partial.len() / 2])?;
        writer.unclean = true;
        writer.append(&plan(2))?;
        writer.append(&plan(3))?;
        assert_eq!(std::fs::read(&path)?, log(3));
        Ok(())
    }

    #[test]
    fn newer_format_is_reported() {
        let mut bytes = log(1);
        bytes[8..10].copy_from_slice(&(PLAN_LOG_FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            parse(&bytes),
            Err(LogDefect::NewerFormat(PLAN_LOG_FORMAT_VERSION + 1))
        );
    }
}
