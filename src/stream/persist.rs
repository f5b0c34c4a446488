//! `persist` and `persist_with`: one computed batch shared by several outputs, kept in memory or,
//! when it is large, spilled to disk (Spark's `MEMORY_ONLY` and `MEMORY_AND_DISK`).
//!
//! Every stream's batch is computed once per batch time and handed to each of its readers (see
//! [`super::graph`]): the last reader takes it, the others get a copy. That is
//! [`StorageLevel::Memory`]. With [`StorageLevel::MemoryAndDisk`], a batch whose bincode
//! encoding is larger than the threshold is written to a spill file under
//! `<checkpoint>/spill/` instead of being kept, and each reader decodes it from the file (a
//! buffered stream, never the whole file in memory) when its turn comes, so the batch is not
//! held in memory while its readers run. The file is removed after the last reader has read it,
//! and in any case when the batch ends or fails; files a crash left behind are removed when the
//! next run starts. Spill files are scratch: they are not fsynced and never recovered.

use std::any::Any;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

pub(crate) use crate::checkpoint::SPILL_DIR;
use crate::error::{Error, Result};
use crate::plan::BatchTime;

use super::dstream::{DStream, Data, Persist};
use super::graph::{Batch, Node, NodeId, Step};

/// Where a persisted stream keeps its batch while the outputs that read it run (Spark's storage
/// levels).
///
/// - [`Memory`](Self::Memory) (Spark's `MEMORY_ONLY`): the batch stays in memory and each
///   reader but the last gets a copy. The fastest; right for batches that fit in memory
///   several times over, which the rate caps (`max_rate_per_partition`) usually ensure.
/// - [`MemoryAndDisk`](Self::MemoryAndDisk) (Spark's `MEMORY_AND_DISK`): a batch whose
///   encoding exceeds `max_in_memory_bytes` goes to a spill file in the checkpoint directory
///   and each reader reads it back from there, so that a large batch (a backlog after downtime,
///   a wide window) shared by several outputs does not sit in memory between them. Smaller
///   batches stay in memory as with `Memory`. Costs an encoding and a file write per large
///   batch, and a decoding per reader.
///
/// In both cases the batch is computed once, however many outputs read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageLevel {
    /// Keep every batch in memory.
    Memory,
    /// Keep batches up to `max_in_memory_bytes` (bincode-encoded) in memory, and spill larger
    /// ones to disk.
    MemoryAndDisk {
        /// The largest encoded batch kept in memory, in bytes.
        max_in_memory_bytes: usize,
    },
}

impl<T: Data> DStream<T> {
    /// Marks the stream as reused by several outputs, in memory (Spark's `persist()`). Every
    /// stream's batch is computed once per batch time and shared by its readers, so this only
    /// documents the intent; it returns the same stream. See
    /// [`persist_with`](Self::persist_with) for batches too large to keep in memory.
    #[must_use]
    pub fn persist(&self) -> DStream<T> {
        self.clone()
    }
}

impl<T: Persist> DStream<T> {
    /// The stream, computed once per batch and kept for its readers at `level`: in memory, or
    /// on disk when a batch is large (see [`StorageLevel`]).
    ///
    /// ```
    /// use weir::stream::{DStream, StorageLevel};
    ///
    /// # fn example(lines: DStream<String>) {
    /// let words = lines
    ///     .flat_map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
    ///     .persist_with(StorageLevel::MemoryAndDisk { max_in_memory_bytes: 64 << 20 });
    /// words.count_by_value().print();
    /// words.foreach_batch(|t, words| {
    ///     println!("{t}: {} words", words.len());
    ///     Ok(())
    /// });
    /// # }
    /// ```
    #[must_use]
    pub fn persist_with(&self, level: StorageLevel) -> DStream<T> {
        match level {
            StorageLevel::Memory => self.persist(),
            StorageLevel::MemoryAndDisk {
                max_in_memory_bytes,
            } => self.then(
                SpillLarge::<T> {
                    input: self.node,
                    max_in_memory_bytes,
                    _items: PhantomData,
                },
                self.layout(),
                &[],
            ),
        }
    }
}

/// Passes its input's batch on, spilling it when its encoding exceeds the threshold.
struct SpillLarge<T> {
    input: NodeId,
    max_in_memory_bytes: usize,
    _items: PhantomData<fn() -> T>,
}

impl<T: Persist> Node for SpillLarge<T> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let Some(batch) = step.take::<T>(self.input)? else {
            step.put::<T>(None);
            return Ok(());
        };
        let t = step.input.batch_time;
        if !encodes_larger_than(&batch, self.max_in_memory_bytes, t)? {
            step.put(Some(batch));
            return Ok(());
        }
        let path = step.spill_dir.join(format!("{t}-{}.bin", step.node()));
        let spilled = Spilled::write(path, &batch, t)?;
        tracing::debug!(
            message = "Spilled a persisted batch to disk.",
            batch_time = %t,
            file = %spilled.path.display(),
            threshold = self.max_in_memory_bytes,
        );
        step.put_spilled(spilled);
        Ok(())
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A writer that counts bytes and refuses more than `max`: encoding into it measures a batch
/// without keeping its bytes, and stops as soon as the batch is known to be too large.
struct Measure {
    written: usize,
    max: usize,
}

impl Write for Measure {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(bytes.len());
        if self.written > self.max {
            return Err(io::Error::other("larger than the threshold"));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether `batch`'s encoding is longer than `max` bytes.
fn encodes_larger_than<T: Persist>(batch: &Batch<T>, max: usize, t: BatchTime) -> Result<bool> {
    let mut measure = Measure { written: 0, max };
    match bincode::serde::encode_into_std_write(batch, &mut measure, bincode_config()) {
        Ok(_) => Ok(false),
        Err(_) if measure.written > max => Ok(true),
        Err(e) => Err(cannot_encode::<T>(t, &e)),
    }
}

fn cannot_encode<T>(t: BatchTime, e: &bincode::error::EncodeError) -> Error {
    Error::Batch {
        batch_time: t,
        message: format!(
            "persist_with cannot encode a batch of {} ({e}); items must be plain serde data (no #[serde(flatten)], no sequences of unknown length), or use StorageLevel::Memory",
            std::any::type_name::<T>()
        ),
    }
}

/// A batch in a spill file, removed when this is dropped.
pub(crate) struct Spilled {
    path: PathBuf,
    decode: fn(&Path) -> Result<Box<dyn Any + Send>>,
}

impl Spilled {
    /// Writes `batch` to `path`.
    fn write<T: Persist>(path: PathBuf, batch: &Batch<T>, t: BatchTime) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // From here on, dropping `spilled` removes whatever was written.
        let spilled = Self {
            path,
            decode: decode::<T>,
        };
        let file = File::create(&spilled.path).map_err(|e| Error::io(&spilled.path, e))?;
        let mut out = BufWriter::new(file);
        bincode::serde::encode_into_std_write(batch, &mut out, bincode_config()).map_err(|e| {
            match e {
                bincode::error::EncodeError::Io { inner, .. } => Error::io(&spilled.path, inner),
                other => cannot_encode::<T>(t, &other),
            }
        })?;
        out.flush().map_err(|e| Error::io(&spilled.path, e))?;
        Ok(spilled)
    }

    /// The batch, decoded from the file, as the `Option<Batch<T>>` a node's slot holds.
    pub(crate) fn read(&self) -> Result<Box<dyn Any + Send>> {
        (self.decode)(&self.path)
    }
}

fn decode<T: Persist>(path: &Path) -> Result<Box<dyn Any + Send>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let batch: Batch<T> = bincode::serde::decode_from_std_read(
        &mut BufReader::new(file),
        bincode_config(),
    )
    .map_err(|e| {
        Error::checkpoint(
            path,
            format!(
                "a spill file written in this batch cannot be read back ({e}); is the disk failing?"
            ),
        )
    })?;
    Ok(Box::new(Some(batch)))
}

impl Drop for Spilled {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "Cannot remove a spill file.");
            }
        }
    }
}

/// Removes the spill files a crash left in `dir`.
pub(crate) fn clear(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}
