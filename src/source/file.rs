//! [`FileSource`]: the text files that appear in a directory, exactly once (Spark's
//! `textFileStream`, without its gaps).
//!
//! Files are numbered in the order they are first seen, and that numbering, the file list, is
//! the partition's log: a batch's range `[from, until)` is files `from` to `until - 1`. The list
//! lives in the checkpoint directory (`sources/files-<crc>.list`, one JSON line per file) and is
//! appended and fsynced before a watermark that counts the new files is returned, so a logged
//! plan always names the same files and a replay reads them again.
//!
//! The contract with whoever writes the directory is Spark's: a file must be complete when it
//! appears (write it elsewhere and rename it in), and must not change afterwards. Names that
//! start with `.` or `_` are ignored, as are subdirectories, so a writer may use such names for
//! files in progress. A listed file that changed size or vanished before its batch read it is
//! an error that names the file. Unlike Spark (`newFilesOnly`), files already in the directory
//! at the first start are read too: nothing a user put there is silently skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{PartitionBatch, Record, Source, Watermarks};
use crate::blocking::run_blocking;
use crate::checkpoint::SOURCES_DIR;
use crate::error::{Error, Result};
use crate::plan::{BatchPlan, TopicPartition};

/// A file as it was listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Listed {
    /// Its name in the directory.
    name: String,
    /// Its length when listed.
    len: u64,
    /// Its modification time when listed, in nanoseconds since the epoch, where the file
    /// system has one (lists written before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified_ns: Option<u64>,
}

/// A file's modification time in nanoseconds since the epoch.
fn modified_ns(metadata: &fs::Metadata) -> Option<u64> {
    let since_epoch = metadata.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_nanos()).ok()
}

/// A directory of text files as a one-partition source.
#[derive(Debug)]
pub struct FileSource {
    topic: String,
    dir: PathBuf,
    list_path: PathBuf,
    /// Every file listed so far, in list order; `Arc` so a listing can run off the runtime.
    listed: Arc<Vec<Listed>>,
    assigned: Option<i64>,
    /// Names that are not UTF-8, already reported.
    unreadable_names: BTreeSet<String>,
}

impl FileSource {
    /// A source of the files that appear in `dir`, keeping its file list under
    /// `checkpoint_dir`. The list is read now; nothing is written until files are found.
    pub fn open(dir: &Path, checkpoint_dir: &Path) -> Result<Self> {
        let topic = super::SourceKind::file_topic(dir);
        let list_path = checkpoint_dir.join(SOURCES_DIR).join(format!(
            "files-{:08x}.list",
            crc32c::crc32c(topic.as_bytes())
        ));
        let listed = read_list(&list_path)?;
        Ok(Self {
            topic,
            dir: dir.to_path_buf(),
            list_path,
            listed: Arc::new(listed),
            assigned: None,
            unreadable_names: BTreeSet::new(),
        })
    }

    /// The topic name of the source's one partition, `file:<dir>`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), 0)
    }

    /// Lists the directory and appends the files not seen before to the durable list.
    async fn list_new_files(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let list_path = self.list_path.clone();
        let listed = Arc::clone(&self.listed);
        let (found, not_utf8) = run_blocking("listing a source directory", move || {
            let (new, not_utf8) = new_files(&dir, &listed)?;
            if !new.is_empty() {
                append_list(&list_path, &new)?;
            }
            Ok((new, not_utf8))
        })
        .await?;
        for name in not_utf8 {
            if self.unreadable_names.insert(name.clone()) {
                warn!(message = "Skipping a file whose name is not UTF-8; rename it to have it read.", directory = %self.dir.display(), file = %name);
            }
        }
        if !found.is_empty() {
            info!(message = "Found new files.", directory = %self.dir.display(), files = found.len());
            Arc::make_mut(&mut self.listed).extend(found);
        }
        Ok(())
    }

    fn end(&self) -> i64 {
        i64::try_from(self.listed.len()).unwrap_or(i64::MAX)
    }
}

impl Source for FileSource {
    async fn discover(&mut self) -> Result<BTreeSet<TopicPartition>> {
        if !self.dir.is_dir() {
            return Err(Error::SourceVanished {
                what: format!("directory {}", self.dir.display()),
            });
        }
        Ok(BTreeSet::from([self.partition()]))
    }

    async fn watermarks(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Watermarks>> {
        self.list_new_files().await?;
        let watermarks = Watermarks {
            log_start: 0,
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
        self.assigned = positions.get(&self.partition()).copied();
        Ok(())
    }

    fn assigned(&self) -> BTreeSet<TopicPartition> {
        self.assigned
            .map(|_| self.partition())
            .into_iter()
            .collect()
    }

    async fn fetch(&mut self, plan: &BatchPlan, _replay: bool) -> Result<Vec<PartitionBatch>> {
        let mut batches = Vec::new();
        for range in plan.ranges.iter().filter(|r| r.tp.topic == self.topic) {
            let first = usize::try_from(range.from).unwrap_or(usize::MAX);
            let last = usize::try_from(range.until).unwrap_or(usize::MAX);
            let Some(files) = self.listed.get(first..last) else {
                return Err(Error::Checkpoint {
                    path: self.list_path.clone(),
                    message: format!(
                        "a logged plan reads files {}..{} but the file list holds {}; the list does not belong to this checkpoint. Reset the checkpoint",
                        range.from,
                        range.until,
                        self.listed.len()
                    ),
                });
            };
            let files = files.to_vec();
            let dir = self.dir.clone();
            let tp = range.tp.clone();
            let from = range.from;
            let records = run_blocking("reading source files", move || {
                read_files(&dir, &tp, from, &files)
            })
            .await?;
            debug!(partition = %range.tp, files = records.len(), "Read files.");
            self.assigned = Some(range.until);
            batches.push(PartitionBatch {
                range: range.clone(),
                records,
            });
        }
        Ok(batches)
    }
}

/// The files of `dir` that are not in `listed`, by name, and the names that are not UTF-8
/// (left out, to be reported); hidden (`.`) and temporary (`_`) names and anything but regular
/// files are left out too.
fn new_files(dir: &Path, listed: &[Listed]) -> Result<(Vec<Listed>, Vec<String>)> {
    let known: BTreeSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    let mut new = Vec::new();
    let mut not_utf8 = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(name) => {
                not_utf8.push(name.to_string_lossy().into_owned());
                continue;
            }
        };
        if name.starts_with('.') || name.starts_with('_') || known.contains(name.as_str()) {
            continue;
        }
        let metadata = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
        if metadata.is_file() {
            new.push(Listed {
                name,
                len: metadata.len(),
                modified_ns: modified_ns(&metadata),
            });
        }
    }
    new.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((new, not_utf8))
}

/// Each file as a record: offset = its number in the list, key = its path, value = its bytes.
fn read_files(dir: &Path, tp: &TopicPartition, from: i64, files: &[Listed]) -> Result<Vec<Record>> {
    let mut records = Vec::with_capacity(files.len());
    for (offset, file) in (from..).zip(files) {
        let path = dir.join(&file.name);
        let read = fs::read(&path).and_then(|bytes| Ok((bytes, fs::metadata(&path)?)));
        let (bytes, metadata) = read.map_err(|e| Error::Record {
            tp: tp.clone(),
            offset,
            reason: format!(
                "file {} was listed but cannot be read now ({e}); files of a source directory must stay until the checkpoint is reset",
                path.display()
            ),
        })?;
        if u64::try_from(bytes.len()).ok() != Some(file.len) {
            return Err(Error::Record {
                tp: tp.clone(),
                offset,
                reason: format!(
                    "file {} had {} bytes when listed and has {} now; write files elsewhere and rename them into the directory when complete",
                    path.display(),
                    file.len,
                    bytes.len()
                ),
            });
        }
        if file.modified_ns.is_some() && modified_ns(&metadata) != file.modified_ns {
            return Err(Error::Record {
                tp: tp.clone(),
                offset,
                reason: format!(
                    "file {} was modified after it was listed; files of a source directory must not change: write new data to a new file",
                    path.display()
                ),
            });
        }
        records.push(Record {
            offset,
            timestamp: None,
            key: Some(path.to_string_lossy().into_owned().into_bytes()),
            value: Some(bytes),
            headers: Vec::new(),
        });
    }
    Ok(records)
}

/// The list as written; a torn last line (a crash during an append) is not part of it, since
/// no plan was logged against it.
fn read_list(path: &Path) -> Result<Vec<Listed>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("line {} of the file list is damaged: {e}", i + 1),
            })
        })
        .collect()
}

/// Appends `files` to the list and makes them durable.
fn append_list(path: &Path, files: &[Listed]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let created = !path.exists();
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut text = String::new();
    for file in files {
        let line = serde_json::to_string(file).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("cannot encode a file list entry: {e}"),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    let mut list = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    // A torn line left by a crash was never part of the list (no plan was logged against it):
    // cut it off so the new entries start on a line of their own.
    let mut existing = Vec::new();
    list.read_to_end(&mut existing)
        .map_err(|e| Error::io(path, e))?;
    let valid = existing
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    let valid = u64::try_from(valid).unwrap_or(0);
    list.set_len(valid)
        .and_then(|()| list.seek(SeekFrom::Start(valid)))
        .and_then(|_| list.write_all(text.as_bytes()))
        .and_then(|()| list.sync_all())
        .map_err(|e| Error::io(path, e))?;
    if created {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BatchTime, OffsetRange};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weir-file-source-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn files_are_listed_once_and_read_again_on_replay() {
        let root = temp_dir("replay");
        let (input, checkpoint) = (root.join("in"), root.join("ckpt"));
        fs::create_dir_all(&input).unwrap();
        fs::write(input.join("b.txt"), "b1\nb2\n").unwrap();
        fs::write(input.join("a.txt"), "a1\n").unwrap();
        fs::write(input.join(".partial"), "ignored").unwrap();
        fs::write(input.join("_COPYING_"), "ignored").unwrap();

        let mut source = FileSource::open(&input, &checkpoint).unwrap();
        let tp = source.partition();
        let parts = source.discover().await.unwrap();
        let w = source.watermarks(&parts).await.unwrap();
        assert_eq!(w[&tp].stable_end, 2);
        fs::write(input.join("0-late.txt"), "late\n").unwrap();
        let w = source.watermarks(&parts).await.unwrap();
        assert_eq!(
            w[&tp].stable_end, 3,
            "a late file with an early name comes last"
        );

        let plan = BatchPlan::new(
            BatchTime::from_millis(0),
            vec![OffsetRange::new(tp.clone(), 0, 3)],
        );
        let batch = source.fetch(&plan, false).await.unwrap();
        let values: Vec<&[u8]> = batch[0]
            .records
            .iter()
            .map(|r| r.value.as_deref().unwrap())
            .collect();
        assert_eq!(values, [&b"a1\n"[..], b"b1\nb2\n", b"late\n"]);

        // A new process reads the same list back.
        let mut again = FileSource::open(&input, &checkpoint).unwrap();
        let replayed = again.fetch(&plan, true).await.unwrap();
        assert_eq!(replayed, batch);
        let w = again.watermarks(&parts).await.unwrap();
        assert_eq!(w[&tp].stable_end, 3, "nothing is listed twice");
    }

    /// Lists a directory holding `a.txt`, lets `change` alter the file, then reads it: the error.
    async fn read_after(name: &str, change: impl FnOnce(&Path)) -> (PathBuf, String) {
        let root = temp_dir(name);
        let (input, checkpoint) = (root.join("in"), root.join("ckpt"));
        fs::create_dir_all(&input).unwrap();
        fs::write(input.join("a.txt"), "a\n").unwrap();
        let mut source = FileSource::open(&input, &checkpoint).unwrap();
        let parts = source.discover().await.unwrap();
        source.watermarks(&parts).await.unwrap();
        change(&input.join("a.txt"));
        let plan = BatchPlan::new(
            BatchTime::from_millis(0),
            vec![OffsetRange::new(source.partition(), 0, 1)],
        );
        let e = source.fetch(&plan, false).await.unwrap_err().to_string();
        (input, e)
    }

    #[tokio::test]
    async fn a_changed_file_is_named() {
        let (input, e) = read_after("changed", |a| fs::write(a, "a\nmore\n").unwrap()).await;
        assert!(
            e.contains("a.txt had 2 bytes when listed and has 7 now"),
            "{e}"
        );
        assert!(
            e.starts_with(&format!("record file:{}/0@0", input.display())),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_file_rewritten_at_the_same_size_is_named() {
        let (_, e) = read_after("rewritten", |a| {
            let file = File::options().write(true).open(a).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, b"b\n", 0).unwrap();
            file.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000))
                .unwrap();
        })
        .await;
        assert!(e.contains("a.txt was modified after it was listed"), "{e}");
    }

    #[test]
    fn a_torn_list_line_is_not_part_of_the_list() {
        let root = temp_dir("torn");
        let path = root.join("files.list");
        append_list(
            &path,
            &[Listed {
                name: "a".into(),
                len: 1,
                modified_ns: None,
            }],
        )
        .unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"name\":\"b\",\"le").unwrap();
        assert_eq!(read_list(&path).unwrap().len(), 1);
        append_list(
            &path,
            &[Listed {
                name: "c".into(),
                len: 2,
                modified_ns: Some(7),
            }],
        )
        .unwrap();
        let names: Vec<String> = read_list(&path)
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["a", "c"]);
    }
}
