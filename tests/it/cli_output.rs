//! What the `weir` binary prints: no password in its logs or errors, whatever the log level
//! (issue 11, point 5), and a reader that goes away early (`weir verify … | head`) ends it
//! quietly, never with a panic (point 13).

use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};

use crate::common::TestEnv;
use crate::pipeline_support::{pipeline_file, pipeline_toml, produce};

/// The `weir` binary with `args`, its output captured.
fn weir(args: &[&str], log: &str) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("WEIR_LOG", log)
        .env("WEIR_LOG_FORMAT", "text")
        .output()?)
}

/// stdout and stderr as one text.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `url` (`scheme://user:password@rest`) with its password moved into the query string
/// (`scheme://user@rest&password=…`), and the password.
fn password_in_query(url: &str) -> Result<(String, String)> {
    let (scheme, rest) = url.split_once("://").context("a URL")?;
    let (userinfo, host) = rest.split_once('@').context("a URL with user info")?;
    let (user, password) = userinfo.split_once(':').context("a URL with a password")?;
    let separator = if host.contains('?') { '&' } else { '?' };
    Ok((
        format!("{scheme}://{user}@{host}{separator}password={password}"),
        password.to_owned(),
    ))
}

/// Kafka properties that hold secrets; librdkafka's errors about them must not print them.
const KAFKA_SECRETS: [(&str, &str); 3] = [
    ("sasl.password", "kafka-secret-sasl-6c1e"),
    ("ssl.key.password", "kafka-secret-key-93b0"),
    ("ssl.keystore.password", "kafka-secret-keystore-27fd"),
];

/// `[source.properties]` with the first `n` of [`KAFKA_SECRETS`].
fn kafka_properties(n: usize) -> String {
    let mut toml = String::from("[source.properties]\n\"sasl.username\" = \"weir\"\n");
    for (key, value) in &KAFKA_SECRETS[..n] {
        toml.push_str(&format!("{key:?} = {value:?}\n"));
    }
    toml
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_run_prints_no_password() -> Result<()> {
    let env = TestEnv::get().await;
    let schema = env.postgres_schema().await?;
    let topic = env.topic("cli-secrets", 1).await?;
    produce(&env.producer()?, &topic, 0..10, 1).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("pipeline.toml");
    let run_with = |url: &str, secret_properties: usize, extra: &str| -> Result<Output> {
        let toml = pipeline_toml(
            env,
            &topic,
            url,
            &dir.path().join("checkpoint"),
            &format!("{}{extra}", kafka_properties(secret_properties)),
        );
        std::fs::write(&file, toml)?;
        // DEBUG too: Debug output of the configuration must not hold a secret either.
        let path = file.to_str().context("a UTF-8 path")?;
        weir(&["run", "--max-batches", "2", path], "debug")
    };
    let run = |url: &str| run_with(url, 1, "");
    let leaks = |text: &str, secrets: &[&str]| -> Vec<String> {
        secrets
            .iter()
            .chain(KAFKA_SECRETS.iter().map(|(_, secret)| secret))
            .filter(|secret| text.contains(*secret))
            .map(|secret| (*secret).to_owned())
            .collect()
    };

    // The right password, in the query string: the pipeline runs and logs its URL masked.
    let (url, password) = password_in_query(&schema.url)?;
    let ok = run(&url)?;
    let text = printed(&ok);
    ensure!(ok.status.success(), "{text}");
    ensure!(
        text.contains("password=***"),
        "the sink's URL is logged: {text}"
    );
    let in_query = format!("password={password}");
    let found = leaks(&text, &[&in_query]);
    ensure!(found.is_empty(), "{found:?} printed: {text}");

    // A wrong one: the error says what failed, not with what.
    let wrong = "wrong-secret-4f1a";
    let (url, _) = password_in_query(&schema.url.replacen(
        &format!(":{password}@"),
        &format!(":{wrong}@"),
        1,
    ))?;
    let failed = run(&url)?;
    let text = printed(&failed);
    ensure!(!failed.status.success(), "{text}");
    ensure!(text.contains("password authentication failed"), "{text}");
    let found = leaks(&text, &[wrong]);
    ensure!(found.is_empty(), "{found:?} printed: {text}");

    // A keystore librdkafka cannot open, with its secret passwords: the error names the
    // keystore and prints no password.
    let (url, _) = password_in_query(&schema.url)?;
    let missing = dir.path().join("missing.p12");
    let keystore = format!(
        "\"security.protocol\" = \"ssl\"\n\"ssl.keystore.location\" = {:?}\n",
        missing.display().to_string()
    );
    let refused = run_with(&url, KAFKA_SECRETS.len(), &keystore)?;
    let text = printed(&refused);
    ensure!(!refused.status.success(), "{text}");
    ensure!(text.contains("ssl.keystore.location"), "{text}");
    let found = leaks(&text, &[]);
    ensure!(found.is_empty(), "{found:?} printed: {text}");

    // A secret parameter the driver would ignore (and sqlx would log) is refused, masked.
    let ignored = format!("{url}&sslpassword={wrong}");
    let refused = run(&ignored)?;
    let text = printed(&refused);
    ensure!(!refused.status.success(), "{text}");
    ensure!(text.contains("sink.url"), "{text}");
    let found = leaks(&text, &[wrong]);
    ensure!(found.is_empty(), "{found:?} printed: {text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_errors_say_their_cause_once() -> Result<()> {
    let env = TestEnv::get().await;
    let schema = env.postgres_schema().await?;
    let topic = env.topic("cli-errors", 1).await?;
    let dir = tempfile::tempdir()?;
    let missing = TestEnv::unique_name("no_such_schema");
    let sink = format!(
        "schema = \"{missing}\"\ntable = \"t\"\ncreate_table = true\n[[sink.columns]]\nname = \"id\"\ntype = \"bigint\"\n"
    );
    let file = dir.path().join("pipeline.toml");
    let toml = pipeline_file(
        env,
        &topic,
        &schema.url,
        &dir.path().join("checkpoint"),
        "",
        &sink,
    );
    std::fs::write(&file, toml)?;
    let failed = weir(&["run", file.to_str().context("UTF-8")?], "info")?;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    ensure!(!failed.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .context("an error line")?;
    // PostgreSQL's message once, with its SQLSTATE, without the server's own source line
    // ("at line 3099") or sqlx's wrapping.
    let said = format!("schema \"{missing}\" does not exist");
    ensure!(line.matches(&said).count() == 1, "{line}");
    ensure!(line.contains("SQLSTATE 3F000"), "{line}");
    ensure!(
        !line.contains(" at line ") && !line.contains("error returned from database"),
        "{line}"
    );
    Ok(())
}

/// Runs `weir args` with its stdout a pipe whose reader is already gone, as `weir … | head`
/// does once `head` has its lines; stderr is captured.
fn weir_into_closed_pipe(args: &[&std::ffi::OsStr]) -> Result<Output> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    Ok(Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("WEIR_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()?)
}

fn assert_quiet(what: &str, output: &Output, success: bool) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!stderr.contains("panicked"), "{what}: {stderr}");
    ensure!(output.status.code() != Some(101), "{what}: {stderr}");
    ensure!(
        output.status.success() == success,
        "{what}: {:?}: {stderr}",
        output.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_output_into_a_closed_pipe_ends_quietly() -> Result<()> {
    let env = TestEnv::get().await;
    let lite = env.sqlite()?;
    let topic = env.topic("cli-pipe", 1).await?;
    produce(&env.producer()?, &topic, 0..20, 1).await?;
    let dir = tempfile::tempdir()?;
    let checkpoint = dir.path().join("checkpoint");
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        pipeline_toml(env, &topic, &lite.url, &checkpoint, ""),
    )?;
    let path = file.as_os_str();
    let ran = weir(
        &["run", "--max-batches", "2", file.to_str().context("UTF-8")?],
        "info",
    )?;
    ensure!(ran.status.success(), "{}", printed(&ran));

    let inspect = weir_into_closed_pipe(&[
        "checkpoint".as_ref(),
        "inspect".as_ref(),
        checkpoint.as_os_str(),
    ])?;
    assert_quiet("weir checkpoint inspect", &inspect, true)?;
    let verify = weir_into_closed_pipe(&["verify".as_ref(), path])?;
    assert_quiet("weir verify", &verify, true)?;
    let json = weir_into_closed_pipe(&["verify".as_ref(), "--json".as_ref(), path])?;
    assert_quiet("weir verify --json", &json, true)?;
    let help = weir_into_closed_pipe(&["--help".as_ref()])?;
    assert_quiet("weir --help", &help, true)?;
    // A failed verification still says so by its exit status.
    let pool = sqlx::SqlitePool::connect(&lite.url).await?;
    sqlx::query("DELETE FROM orders WHERE id < 3")
        .execute(&pool)
        .await?;
    pool.close().await;
    let failed = weir_into_closed_pipe(&["verify".as_ref(), path])?;
    assert_quiet("weir verify of a damaged table", &failed, false)?;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    ensure!(stderr.contains("3 missing"), "{stderr}");
    Ok(())
}
