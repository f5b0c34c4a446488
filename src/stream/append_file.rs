//! [`AppendFile`]: a text file a streaming program appends one line per batch to, exactly once
//! per batch time (RecoverableNetworkWordCount's output file, without the duplicates).
//!
//! An output runs again when its batch is replayed after a crash, so a plain append writes the
//! batch's line twice. Before its first append, `AppendFile` cuts a line torn by a crash (the
//! bytes after the last newline: the batch that wrote them appends its line whole when it is
//! replayed) and reads the batch time of the last complete line; from then on it skips every
//! batch at or before the last line's. Each line is fsynced before `append` returns, so it is
//! on disk before the checkpoint says its batch is done.
//!
//! The file belongs to the program: one writer (the checkpoint's lock sees to that), lines in
//! batch-time order, each with its batch time where `batch_time_of` finds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::BatchTime;

/// How a line's batch time is read back.
type BatchTimeOf = Box<dyn Fn(&str) -> Option<BatchTime> + Send>;

/// A file with one line per batch time, appended from an output such as
/// [`DStream::foreach_batch`](super::DStream::foreach_batch).
///
/// ```
/// use weir::plan::BatchTime;
/// use weir::stream::AppendFile;
///
/// # fn main() -> weir::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("counts.txt");
/// let time_of = |line: &str| {
///     let millis = line.strip_prefix("t=")?.split(' ').next()?.parse().ok()?;
///     Some(BatchTime::from_millis(millis))
/// };
/// let mut file = AppendFile::new(&path, time_of);
/// assert!(file.append(BatchTime::from_millis(1_000), "t=1000 hello")?);
///
/// // A restarted program replays batch 1000: its line is there already.
/// let mut file = AppendFile::new(&path, time_of);
/// assert!(!file.append(BatchTime::from_millis(1_000), "t=1000 hello")?);
/// assert!(file.append(BatchTime::from_millis(2_000), "t=2000 world")?);
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "t=1000 hello\nt=2000 world\n");
/// # Ok(()) }
/// ```
pub struct AppendFile {
    path: PathBuf,
    batch_time_of: BatchTimeOf,
    /// The file, positioned at its end; `None` until the first append, and again after a
    /// failed write (the next append cuts what the failure left).
    file: Option<File>,
    /// The batch time of the file's last line.
    last: Option<BatchTime>,
}

impl std::fmt::Debug for AppendFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendFile")
            .field("path", &self.path)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl AppendFile {
    /// The file at `path` (created at the first append), whose lines carry their batch time
    /// where `batch_time_of` finds it. Nothing is read until the first append.
    pub fn new(
        path: impl Into<PathBuf>,
        batch_time_of: impl Fn(&str) -> Option<BatchTime> + Send + 'static,
    ) -> Self {
        Self {
            path: path.into(),
            batch_time_of: Box::new(batch_time_of),
            file: None,
            last: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` as batch `t`'s line, durably, unless the file already holds a line of
    /// batch `t` or a later one; returns whether it appended. `line` must not contain a
    /// newline. Blocking I/O: call it from an output, which runs on a blocking thread.
    pub fn append(&mut self, t: BatchTime, line: &str) -> Result<bool> {
        if line.contains('\n') {
            return Err(self.batch_error(t, "the line contains a newline; give one line per batch"));
        }
        if self.file.is_none() {
            self.open(t)?;
        }
        if self.last.is_some_and(|last| last >= t) {
            return Ok(false);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        let written = file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            self.file = None;
            return Err(Error::io(&self.path, e));
        }
        self.last = Some(t);
        Ok(true)
    }

    /// Opens the file, cuts a torn last line and reads the last line's batch time.
    fn open(&mut self, t: BatchTime) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        let created = !self.path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io)?;
        let (complete, last_line) = last_complete_line(&mut file).map_err(io)?;
        file.set_len(complete)
            .and_then(|()| file.seek(SeekFrom::End(0)))
            .map_err(io)?;
        if created && let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(dir, e))?;
        }
        self.last = match last_line {
            None => None,
            Some(line) => match (self.batch_time_of)(&line) {
                Some(last) => Some(last),
                None => {
                    return Err(self.batch_error(
                        t,
                        &format!("its last line {line:?} carries no batch time; the file must be written by this program only (move it away to start a new one)"),
                    ));
                }
            },
        };
        self.file = Some(file);
        Ok(())
    }

    fn batch_error(&self, t: BatchTime, reason: &str) -> Error {
        Error::Batch {
            batch_time: t,
            message: format!("cannot append to {}: {reason}", self.path.display()),
        }
    }
}

/// The length of `file` up to and including its last newline, and its last complete line.
fn last_complete_line(file: &mut File) -> std::io::Result<(u64, Option<String>)> {
    let len = file.metadata()?.len();
    let mut window: u64 = 4096;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        Read::by_ref(file)
            .take(len - start)
            .read_to_end(&mut tail)?;
        let newlines: Vec<usize> = tail
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .take(2)
            .collect();
        let at = |i: usize| start + u64::try_from(i).unwrap_or(u64::MAX);
        let line = |from: usize, to: usize| String::from_utf8_lossy(&tail[from..to]).into_owned();
        match newlines[..] {
            [end, before, ..] => return Ok((at(end) + 1, Some(line(before + 1, end)))),
            [end] if start == 0 => return Ok((at(end) + 1, Some(line(0, end)))),
            [] if start == 0 => return Ok((0, None)),
            // The last line, or the torn bytes after it, are longer than the window.
            _ => window = window.saturating_mul(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time_of(line: &str) -> Option<BatchTime> {
        let millis = line.split(' ').next()?.parse().ok()?;
        Some(BatchTime::from_millis(millis))
    }

    fn file(path: &Path) -> AppendFile {
        AppendFile::new(path, time_of)
    }

    const fn t(millis: i64) -> BatchTime {
        BatchTime::from_millis(millis)
    }

    #[test]
    fn replays_are_skipped_and_a_torn_line_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut out = file(&path);
        assert!(out.append(t(1_000), "1000 a").unwrap());
        assert!(out.append(t(2_000), "2000 b").unwrap());
        assert!(!out.append(t(2_000), "2000 b").unwrap());

        // A crash tore batch 3000's line; the restarted program replays 2000 and 3000.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"3000 c-to")
            .unwrap();
        let mut out = file(&path);
        assert!(!out.append(t(1_000), "1000 a").unwrap());
        assert!(!out.append(t(2_000), "2000 b").unwrap());
        assert!(out.append(t(3_000), "3000 c-torn-no-more").unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "1000 a\n2000 b\n3000 c-torn-no-more\n"
        );
    }

    #[test]
    fn long_lines_are_found_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let long = format!("5000 {}", "x".repeat(10_000));
        std::fs::write(&path, format!("4000 short\n{long}\n{}", "y".repeat(9_000))).unwrap();
        let mut out = file(&path);
        assert!(!out.append(t(5_000), &long).unwrap());
        assert!(out.append(t(6_000), "6000 z").unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(&format!("{long}\n6000 z\n")),
            "{}",
            &text[..20]
        );
    }

    #[test]
    fn a_foreign_file_and_a_line_with_a_newline_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "shopping list\n").unwrap();
        let e = file(&path)
            .append(t(1_000), "1000 a")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("notes.txt") && e.contains("\"shopping list\" carries no batch time"),
            "{e}"
        );
        let e = file(&dir.path().join("new.txt"))
            .append(t(1_000), "1000 a\n1000 b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("contains a newline"), "{e}");
    }
}
