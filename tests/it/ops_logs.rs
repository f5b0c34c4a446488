//! `weir run`'s log on a pipe: no colour codes, no sqlx INFO notices, no line twice at start, and
//! no password (in the sink URL, `?password=`, or `sasl.password`) in the log, the errors,
//! `/metrics` or `/api/status`.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::common::TestEnv;
use crate::ops_support::{SECRET, free_port, get, wait_for};
use crate::pipeline_support::{LogCapture, Running, TABLE, pipeline_toml, produce, send};
use crate::sink_support::TestDb;

/// Runs `weir run --log-format text` on `toml` with `args`, stdout and stderr piped.
fn weir_run(toml: &str, dir: &std::path::Path, args: &[&str]) -> Result<std::process::Child> {
    let file = dir.join(format!("pipeline-{}.toml", TestEnv::unique_name("p")));
    std::fs::write(&file, toml)?;
    Ok(Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--log-format", "text", "run"])
        .arg(&file)
        .args(args)
        .env_remove("WEIR_LOG")
        .env_remove("WEIR_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_logs_are_plain_quiet_and_free_of_secrets() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("ops-logs", 2).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    produce(&env.producer()?, &topic, 0..20, 2).await?;
    let properties = format!("[source.properties]\n\"sasl.password\" = \"{SECRET}\"\n");
    let toml = pipeline_toml(env, &topic, db.url(), &dir.path().join("cp"), &properties);
    // Twice: a restart finds the tables there, which sqlx reports in INFO notices.
    for run in 0..2 {
        let port = free_port()?;
        let http = format!("127.0.0.1:{port}");
        let child = weir_run(&toml, dir.path(), &["--http", &http, "--max-batches", "20"])?;
        wait_for(port, "/health/ready", Duration::from_secs(60), |code, _| {
            code == 200
        })
        .await?;
        let mut shown = String::new();
        for path in ["/metrics", "/api/status"] {
            shown.push_str(&get(port, path).await?.1);
        }
        let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        let log = String::from_utf8(output.stderr)?;
        ensure!(
            output.status.success(),
            "run {run}: weir run failed:\n{log}"
        );
        check_log(&log, &shown)?;
    }

    // A wrong password, in the URL and as a parameter: the error must not repeat it.
    let url = db.url();
    let at = url.find('@').context("a URL without credentials")?;
    let scheme_end = url.find("://").context("no scheme")? + 3;
    let user = url[scheme_end..at].split(':').next().unwrap_or_default();
    let rest = &url[at..];
    let separator = if rest.contains('?') { '&' } else { '?' };
    for bad in [
        format!("{}{user}:{SECRET}{rest}", &url[..scheme_end]),
        format!(
            "{}{user}{rest}{separator}password={SECRET}",
            &url[..scheme_end]
        ),
    ] {
        let toml = pipeline_toml(env, &topic, &bad, &dir.path().join("cp2"), "");
        let output = weir_run(&toml, dir.path(), &["--max-batches", "1"])?.wait_with_output()?;
        let log = String::from_utf8(output.stderr)?;
        ensure!(!output.status.success(), "a wrong password was accepted");
        ensure!(!log.contains(SECRET), "the sink password shows:\n{log}");
    }
    Ok(())
}

/// The checks on one run's log (and what its server showed).
fn check_log(log: &str, shown: &str) -> Result<()> {
    ensure!(!log.contains('\x1b'), "colour codes on a pipe:\n{log}");
    ensure!(
        !log.contains(SECRET) && !shown.contains(SECRET),
        "the Kafka password shows:\n{log}"
    );
    ensure!(
        !log.lines()
            .any(|l| l.contains("INFO") && l.contains("sqlx")),
        "sqlx INFO noise:\n{log}"
    );
    // Until the first batch, every line says something new.
    let start: Vec<&str> = log
        .lines()
        .take_while(|l| !l.contains("batch"))
        .filter_map(|l| l.split_once("INFO ").map(|(_, rest)| rest))
        .collect();
    for (i, line) in start.iter().enumerate() {
        let message = line.split(": ").nth(1).unwrap_or(line);
        let message = message.split('.').next().unwrap_or(message);
        ensure!(
            !start[..i].iter().any(|earlier| earlier.contains(message)),
            "said twice at start: {message:?}\n{log}"
        );
    }
    Ok(())
}

/// 60 bad records under `on_error = "skip"`: a handful of warnings, not 60.
#[tokio::test(flavor = "current_thread")]
async fn ops_per_record_warnings_are_rate_limited() -> Result<()> {
    const BAD: i64 = 60;
    let env = TestEnv::get().await;
    let topic = env.topic("ops-skip", 1).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    let sink = format!(
        "table = \"{TABLE}\"\ncreate_table = true\non_error = \"skip\"\n[[sink.columns]]\nname = \"id\"\ntype = \"bigint\"\nnullable = false\n"
    );
    let toml = crate::pipeline_support::pipeline_file(env, &topic, db.url(), dir.path(), "", &sink);
    let records = (0..=BAD).map(|i| {
        // Every record but the last has an id that is not a number.
        let value = if i < BAD {
            format!("{{\"id\":\"x{i}\"}}")
        } else {
            format!("{{\"id\":{i}}}")
        };
        (0, None, Some(value))
    });
    send(&env.producer()?, &topic, records).await?;
    let log = LogCapture::start();
    Running::start(&toml)?
        .stop_at(&db, 1, Duration::from_secs(60))
        .await?;
    let text = log.text();
    let warnings = text
        .lines()
        .filter(|l| l.contains("Skipped a record"))
        .count();
    ensure!(
        warnings <= 5,
        "{warnings} warnings for {BAD} skipped records:\n{text}"
    );
    Ok(())
}
