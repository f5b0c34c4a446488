//! RecoverableNetworkWordCount (`examples/recoverable_network_word_count.rs`) as a user runs it:
//! the example binary reads lines from a TCP server the test opens, is SIGKILLed, rebuilt with
//! an unrelated change (another build tag) and started again, and stopped with SIGTERM. Lines are sent only while the program is
//! connected, each once the previous one is in the output file, and the kill comes a batch after
//! the last one, so no line may legitimately be lost: the output file must hold each batch time
//! at most once, every line's counts exactly, and a dropped-words total that carries on across
//! the kill.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::stream_support::word_counts;

const EXAMPLE: &str = "recoverable_network_word_count";
/// The example's blacklist.
const BLACKLIST: [&str; 3] = ["a", "b", "c"];
// The lines sent to the first run, then to the restarted one: 4 blacklisted words each.
const BEFORE_KILL: [&str; 3] = ["hello world a", "hello weir b c", "spark a weir weir"];
const AFTER_RESTART: [&str; 3] = ["hello again a", "b b world", "kafka c weir"];
/// How long the program may take to connect, to count a line or to stop.
const DEADLINE: Duration = Duration::from_secs(60);

/// The example's binary, built by cargo (or found up to date) in this test binary's target
/// directory and profile, with `tag` as its build tag (`WEIR_EXAMPLE_BUILD`).
fn example_binary(name: &str, tag: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/it-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary is not in <target>/<profile>/deps")?;
    let target_dir = profile_dir.parent().context("no target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!("no profile directory in {}", exe.display()),
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--example",
            name,
            "--profile",
            profile,
            "--target-dir",
        ])
        .arg(target_dir)
        .env("WEIR_EXAMPLE_BUILD", tag)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build --example {name}: {status}");
    Ok(profile_dir.join("examples").join(name))
}

/// One run of the example binary; killed when dropped.
struct Example {
    child: Child,
    log: PathBuf,
}

impl Example {
    fn start(binary: &Path, port: u16, dir: &Path, output: &Path, run: u32) -> Result<Self> {
        let log = dir.join(format!("run-{run}.log"));
        let child = Command::new(binary)
            .args(["127.0.0.1", &port.to_string()])
            .arg(dir.join("checkpoint"))
            .arg(output)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, log })
    }

    /// Fails, with the end of the log, when the program has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the program exited ({status}):\n{}", self.log_tail()),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn sigkill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for the graceful stop.
    async fn sigterm(&mut self) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM: {status}");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "no exit {DEADLINE:?} after SIGTERM:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Accepts the program's connection.
    async fn accept(&mut self, listener: &TcpListener) -> Result<TcpStream> {
        match tokio::time::timeout(DEADLINE, listener.accept()).await {
            Ok(accepted) => Ok(accepted?.0),
            Err(_) => {
                self.check_running()?;
                bail!("no connection within {DEADLINE:?}:\n{}", self.log_tail())
            }
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of the output file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    batch_time: i64,
    counts: BTreeMap<String, u64>,
    dropped: u64,
}

/// `Counts at time <t> ms [(word,n), ...], dropped <d> word(s) in total`.
fn parse(line: &str) -> Option<Report> {
    let (time, rest) = line.strip_prefix("Counts at time ")?.split_once(" ms [")?;
    let (counts, rest) = rest.split_once("], dropped ")?;
    let dropped = rest.strip_suffix(" word(s) in total")?.parse().ok()?;
    let mut parsed = BTreeMap::new();
    for pair in counts.split(", ").filter(|p| !p.is_empty()) {
        let (word, n) = pair
            .strip_prefix('(')?
            .strip_suffix(')')?
            .rsplit_once(',')?;
        parsed.insert(word.to_owned(), n.parse().ok()?);
    }
    Some(Report {
        batch_time: time.parse().ok()?,
        counts: parsed,
        dropped,
    })
}

/// The complete lines of the output file (the program may be writing the last one).
fn reports(output: &Path) -> Result<Vec<Report>> {
    let text = match std::fs::read_to_string(output) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| parse(line).with_context(|| format!("a line of the output file: {line:?}")))
        .collect()
}

/// The counts a line must give: its words that are not blacklisted.
fn kept_counts(line: &str) -> BTreeMap<String, u64> {
    let kept: Vec<String> = line
        .split_whitespace()
        .filter(|w| !BLACKLIST.contains(w))
        .map(str::to_owned)
        .collect();
    word_counts(&kept)
}

fn dropped_in(line: &str) -> u64 {
    let dropped = line
        .split_whitespace()
        .filter(|w| BLACKLIST.contains(w))
        .count();
    u64::try_from(dropped).unwrap_or(u64::MAX)
}

/// The lines sent so far and where their counts must show.
struct Session {
    dir: PathBuf,
    output: PathBuf,
    sent: Vec<&'static str>,
}

impl Session {
    /// The reports with counts, each of which must be a sent line's, in order.
    fn counted(&self) -> Result<Vec<Report>> {
        let counted: Vec<Report> = reports(&self.output)?
            .into_iter()
            .filter(|r| !r.counts.is_empty())
            .collect();
        ensure!(
            counted.len() <= self.sent.len(),
            "more batches with counts than lines sent: {counted:?}"
        );
        for (report, line) in counted.iter().zip(&self.sent) {
            ensure!(
                report.counts == kept_counts(line),
                "line {line:?} gave {report:?}"
            );
        }
        Ok(counted)
    }

    /// Waits until `done` holds for the output file's reports.
    async fn wait(
        &self,
        program: &mut Example,
        what: &str,
        done: impl Fn(&[Report]) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + DEADLINE;
        while !done(&reports(&self.output)?)? {
            program.check_running()?;
            ensure!(
                Instant::now() < deadline,
                "no {what} in the output file after {DEADLINE:?}:\n{}",
                program.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Sends each line once the previous one is counted, and waits for the last one.
    async fn send(
        &mut self,
        program: &mut Example,
        conn: &mut TcpStream,
        lines: &[&'static str],
    ) -> Result<()> {
        for line in lines {
            conn.write_all(format!("{line}\n").as_bytes()).await?;
            self.sent.push(line);
            let want = self.sent.len();
            self.wait(program, &format!("counts of {line:?}"), |_| {
                Ok(self.counted()?.len() == want)
            })
            .await?;
        }
        Ok(())
    }

    /// Starts the program (its `run`-th run), accepts its connection, sends `lines` and waits
    /// until the batch after the last one is written.
    async fn run(
        &mut self,
        binary: &Path,
        listener: &TcpListener,
        run: u32,
        lines: &[&'static str],
    ) -> Result<(Example, TcpStream)> {
        let port = listener.local_addr()?.port();
        let mut program = Example::start(binary, port, &self.dir, &self.output, run)?;
        let mut conn = program.accept(listener).await?;
        self.send(&mut program, &mut conn, lines).await?;
        self.settle(&mut program).await?;
        Ok((program, conn))
    }

    /// Waits for a batch after the last counted one: that batch and its snapshot are done, so
    /// nothing sent is in flight.
    async fn settle(&self, program: &mut Example) -> Result<()> {
        let last = self.counted()?.last().map_or(0, |r| r.batch_time);
        self.wait(program, "batch after the last line", |reports| {
            Ok(reports.last().is_some_and(|r| r.batch_time > last))
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recoverable_network_word_count_survives_sigkill() -> Result<()> {
    let binary = tokio::task::spawn_blocking(|| example_binary(EXAMPLE, "first")).await??;
    let first_build = std::fs::read(&binary)?;
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut session = Session {
        dir: dir.path().to_owned(),
        output: dir.path().join("counts.txt"),
        sent: Vec::new(),
    };

    let (mut first, conn) = session.run(&binary, &listener, 1, &BEFORE_KILL).await?;
    first.sigkill()?;
    // Only now: a connection closed earlier would make the program reconnect, and its dead
    // connection would wait in the listener's backlog for the restarted one's accept.
    drop(conn);
    let before_kill = reports(&session.output)?;

    let binary = tokio::task::spawn_blocking(|| example_binary(EXAMPLE, "rebuilt")).await??;
    ensure!(
        std::fs::read(&binary)? != first_build,
        "the rebuild must give another binary"
    );

    let (mut second, _conn) = session.run(&binary, &listener, 2, &AFTER_RESTART).await?;
    ensure!(
        std::fs::read_to_string(&second.log)?.contains("rebuilt"),
        "the restarted program is not the rebuilt one: {}",
        second.log_tail()
    );
    let status = second.sigterm().await?;
    ensure!(
        status.success(),
        "SIGTERM must stop the program cleanly: {status}"
    );

    let text = std::fs::read_to_string(&session.output)?;
    ensure!(
        text.ends_with('\n'),
        "a torn last line after a graceful stop"
    );
    let all = reports(&session.output)?;
    ensure!(
        all.starts_with(&before_kill) && all.len() > before_kill.len(),
        "the restarted program must append after the lines written before the kill"
    );
    for pair in all.windows(2) {
        ensure!(
            pair[0].batch_time < pair[1].batch_time,
            "batch times out of order or repeated: {pair:?}"
        );
    }
    let counted = session.counted()?;
    ensure!(
        counted.len() == session.sent.len(),
        "{} lines sent, {} counted",
        session.sent.len(),
        counted.len()
    );
    // The dropped-words total after every batch: carried on across the kill, not restarted.
    let mut dropped = 0;
    let mut sent = session.sent.iter();
    for report in &all {
        if !report.counts.is_empty() {
            dropped += sent.next().map_or(0, |line| dropped_in(line));
        }
        ensure!(
            report.dropped == dropped,
            "batch {} reports {} dropped words, {dropped} were sent: {report:?}",
            report.batch_time,
            report.dropped
        );
    }
    ensure!(
        dropped == 8,
        "the lines hold 8 blacklisted words: {dropped}"
    );
    Ok(())
}
