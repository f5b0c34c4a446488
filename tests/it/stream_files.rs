//! HDFSWordCount (`examples/hdfs_word_count.rs`) over a real directory, with a 100 ms batch
//! interval: every file that appears is counted in exactly one batch, also through a crash
//! between a batch's logged plan and its sink commit; a file that is not UTF-8, or that changed
//! after it was listed, stops the program with the file's name. No service is needed: the sink is
//! a SQLite file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir::runtime::RunSummary;
use weir::sink::SqlSinkConfig;
use weir::stream::{DStream, StreamConfig, StreamingContext};

use crate::common::TestEnv;
use crate::stream_support::{Collected, INTERVAL, word_counts};

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/hdfs_word_count.rs"]
mod hdfs_word_count;

/// How long a program may take to count a file or to stop.
const DEADLINE: Duration = Duration::from_secs(60);

/// A test's input directory and checkpoint, and the program's name (the same for every run).
struct Dirs {
    root: tempfile::TempDir,
    input: PathBuf,
    checkpoint: PathBuf,
    name: String,
}

impl Dirs {
    fn new() -> Result<Self> {
        let root = tempfile::tempdir()?;
        let input = root.path().join("in");
        std::fs::create_dir(&input)?;
        Ok(Self {
            input,
            checkpoint: root.path().join("checkpoint"),
            root,
            name: TestEnv::unique_name("files"),
        })
    }

    /// Puts a file into the input directory complete, as a writer must: written under a name
    /// starting with `_`, then renamed in.
    fn put(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let partial = self.input.join(format!("_{name}"));
        let path = self.input.join(name);
        std::fs::write(&partial, contents)?;
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }

    /// Starts the program over the input directory; `build` adds the operators and outputs.
    fn start(&self, build: impl FnOnce(&DStream<String>)) -> Result<Running> {
        let ssc = StreamingContext::get_or_create(&self.checkpoint, || {
            let ssc = StreamingContext::new(StreamConfig::new(self.name.clone(), ""), INTERVAL);
            build(&ssc.text_file_stream(&self.input));
            Ok(ssc)
        })?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(ssc.run(stop.clone(), None));
        Ok(Running { stop, task })
    }
}

/// A program running in the background.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<weir::Result<RunSummary>>,
}

impl Running {
    /// Waits until `done` holds; fails when the program stops first or `DEADLINE` passes.
    async fn wait_until(&mut self, what: &str, done: impl Fn() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + DEADLINE;
        while !done()? {
            if self.task.is_finished() {
                let ended = (&mut self.task).await?;
                bail!("the program stopped before {what}: {ended:?}");
            }
            ensure!(Instant::now() < deadline, "no {what} after {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the program gracefully.
    async fn stop(self) -> Result<RunSummary> {
        self.stop.cancel();
        Ok(self.task.await??)
    }

    /// Waits for the program to stop by itself, with the error the test expects.
    async fn failure(self) -> Result<String> {
        let ended = tokio::time::timeout(DEADLINE, self.task)
            .await
            .context("the program did not fail")??;
        match ended {
            Ok(summary) => bail!("the program should have failed, but ended with {summary:?}"),
            Err(e) => Ok(e.to_string()),
        }
    }
}

/// The items of the batches that have any, in batch order, sorted within each batch.
fn non_empty<T: weir::stream::Data + PartialEq + Ord + std::fmt::Debug>(
    collected: &Collected<T>,
) -> Result<Vec<(i64, Vec<T>)>> {
    Ok(collected
        .batches()?
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(t, mut items)| {
            items.sort();
            (t, items)
        })
        .collect())
}

/// The word counts of a file's text, in word order.
fn counts_of(text: &str) -> Vec<(String, u64)> {
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    word_counts(&lines).into_iter().collect()
}

/// An output that fails the batch reading `word`, once, after recording its batch time: a crash
/// after the batch's plan was logged and before its sink committed.
fn crash_on(lines: &DStream<String>, word: &'static str, crashed: &Arc<Mutex<Option<i64>>>) {
    let crashed = Arc::clone(crashed);
    lines.foreach_batch(move |t, lines| {
        if lines
            .iter()
            .any(|l| l.split_whitespace().any(|w| w == word))
        {
            *crashed.lock().unwrap_or_else(PoisonError::into_inner) = Some(t.as_millis());
            return Err(format!("injected crash at the batch reading {word:?}").into());
        }
        Ok(())
    });
}

const FILES: [(&str, &str); 3] = [
    ("a.txt", "alpha beta\nalpha gamma\n"),
    ("b.txt", "bravo bravo\n\ndelta  über\n"),
    ("c.txt", "charlie echo echo\nalpha"),
];

#[tokio::test(flavor = "multi_thread")]
async fn hdfs_word_count_counts_every_new_file_once() -> Result<()> {
    let dirs = Dirs::new()?;
    // Already there at the first start: read too, unlike Spark.
    dirs.put(FILES[0].0, FILES[0].1)?;
    // In progress, hidden, or a directory: never read.
    std::fs::write(dirs.input.join("_d.txt"), "ignored")?;
    std::fs::write(dirs.input.join(".d.txt.swp"), "ignored")?;
    std::fs::create_dir(dirs.input.join("sub"))?;
    std::fs::write(dirs.input.join("sub/e.txt"), "ignored")?;

    let counts = Collected::default();
    let mut running =
        dirs.start(|lines| counts.attach(&hdfs_word_count::word_counts(lines), |_| {}))?;
    for (i, (name, text)) in FILES.iter().enumerate() {
        if i > 0 {
            dirs.put(name, text)?;
        }
        running
            .wait_until(&format!("counts of {name}"), || {
                Ok(non_empty(&counts)?.len() > i)
            })
            .await?;
    }
    let summary = running.stop().await?;

    let got: Vec<Vec<(String, u64)>> = non_empty(&counts)?.into_iter().map(|(_, c)| c).collect();
    let expected: Vec<Vec<(String, u64)>> = FILES.iter().map(|(_, text)| counts_of(text)).collect();
    ensure!(got == expected, "batches {got:?}\n!= files {expected:?}");
    ensure!(summary.records == 3, "3 files read, once each: {summary:?}");
    Ok(())
}

/// A row of the words table: a word's count in the batch that read it.
#[derive(Debug, Clone, Serialize)]
struct WordRow {
    batch_time: i64,
    word: String,
    count: u64,
}

fn words_table(url: &str) -> Result<SqlSinkConfig> {
    let mut config: SqlSinkConfig = toml::from_str(
        r#"
        table = "file_words"
        create_table = true
        columns = [
            { name = "batch_time", type = "bigint", nullable = false },
            { name = "word", type = "text", nullable = false },
            { name = "count", type = "bigint", nullable = false },
        ]
        "#,
    )?;
    config.url = url.to_owned();
    Ok(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn hdfs_word_count_lands_each_file_once_through_a_crash() -> Result<()> {
    let dirs = Dirs::new()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dirs.root.path().join("words.db").display()
    );
    let table = words_table(&url)?;
    let counts = Collected::default();
    let crashed = Arc::new(Mutex::new(None));
    let build = |lines: &DStream<String>, crash: bool| {
        let words = hdfs_word_count::word_counts(lines);
        counts.attach(&words, |_| {});
        if crash {
            crash_on(lines, "bravo", &crashed);
        }
        words
            .map_partitions(|cx, counts| {
                let batch_time = cx.batch_time.as_millis();
                counts
                    .into_iter()
                    .map(|(word, count)| WordRow {
                        batch_time,
                        word,
                        count,
                    })
                    .collect()
            })
            .sink(table.clone());
    };

    dirs.put(FILES[0].0, FILES[0].1)?;
    let mut running = dirs.start(|l| build(l, true))?;
    running
        .wait_until("counts of a.txt", || Ok(!non_empty(&counts)?.is_empty()))
        .await?;
    dirs.put(FILES[1].0, FILES[1].1)?;
    let error = running.failure().await?;
    ensure!(error.contains("injected crash"), "{error}");
    // Arrives while the program is down.
    dirs.put(FILES[2].0, FILES[2].1)?;

    let mut running = dirs.start(|l| build(l, false))?;
    running
        .wait_until("counts of c.txt", || Ok(non_empty(&counts)?.len() == 3))
        .await?;
    running.stop().await?;

    let crashed = crashed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .context("the crash did not happen")?;
    let batches = non_empty(&counts)?;
    let times: Vec<i64> = batches.iter().map(|(t, _)| *t).collect();
    ensure!(
        times.len() == 3 && times[1] == crashed,
        "b.txt must be counted once, in the batch logged before the crash ({crashed}): batches at {times:?}"
    );
    let got: Vec<Vec<(String, u64)>> = batches.iter().map(|(_, c)| c.clone()).collect();
    let expected: Vec<Vec<(String, u64)>> = FILES.iter().map(|(_, text)| counts_of(text)).collect();
    ensure!(got == expected, "batches {got:?}\n!= files {expected:?}");

    let pool = sqlx::SqlitePool::connect(&url).await?;
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT batch_time, word, count FROM file_words ORDER BY batch_time, word")
            .fetch_all(&pool)
            .await?;
    let mut expected_rows = Vec::new();
    for (t, counts) in &batches {
        for (word, count) in counts {
            expected_rows.push((*t, word.clone(), i64::try_from(*count)?));
        }
    }
    ensure!(
        rows == expected_rows,
        "table {rows:?}\n!= {expected_rows:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_utf8_stops_the_program_with_its_name() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.put("good.txt", "fine words\n")?;
    let bad = dirs.put("bad.txt", b"ok \xff\xfe\n")?;
    let counts = Collected::default();
    let running =
        dirs.start(|lines| counts.attach(&hdfs_word_count::word_counts(lines), |_| {}))?;
    let error = running.failure().await?;
    ensure!(
        error.contains(&format!("file {} is not UTF-8 text", bad.display())),
        "{error}"
    );
    ensure!(
        non_empty(&counts)?.is_empty(),
        "the batch holding the bad file must not be counted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_after_it_was_listed_is_named() -> Result<()> {
    let dirs = Dirs::new()?;
    let path = dirs.put("x.txt", "bravo\n")?;
    let crashed = Arc::new(Mutex::new(None));
    let running = dirs.start(|lines| crash_on(lines, "bravo", &crashed))?;
    let error = running.failure().await?;
    ensure!(error.contains("injected crash"), "{error}");

    // The batch that lists x.txt is logged; the file grows before the replay reads it again.
    append(&path, "more\n")?;
    let running = dirs.start(|_| {})?;
    let error = running.failure().await?;
    ensure!(
        error.contains(&format!(
            "file {} had 6 bytes when listed and has 11 now",
            path.display()
        )),
        "{error}"
    );
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
