//! The status page in a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/chromium` when missing) during a real run: the charts draw the batches, and the
//! screenshot (`$CARGO_TARGET_TMPDIR/status-page.png`) is not blank.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::common::TestEnv;
use crate::ops_support::{free_port, wait_for};
use crate::pipeline_support::{Running, TABLE, pipeline_toml, produce, send};
use crate::sink_support::TestDb;

const PARTITIONS: i32 = 3;

/// Runs `scripts/chromium` headless on `url` with `args`; its stdout.
fn chromium(url: &str, profile: &Path, args: &[&str]) -> Result<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/chromium");
    let output = Command::new(script)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1100",
            // Lets the page's fetch and timers run before the dump or screenshot.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .context("running scripts/chromium")?;
    ensure!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_status_page_draws_the_batches_in_chromium() -> Result<()> {
    let env = TestEnv::get().await;
    let topic = env.topic("ops-page", PARTITIONS).await?;
    let db = TestDb::Postgres(env.postgres_schema().await?);
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    // 50 records per partition per 100 ms batch: the orders spread over many batches.
    let toml = pipeline_toml(
        env,
        &topic,
        db.url(),
        dir.path(),
        "max_rate_per_partition = 500",
    )
    .replacen(
        "[source]",
        &format!("http = \"127.0.0.1:{port}\"\n\n[source]"),
        1,
    )
    .replacen(
        "create_table = true",
        "create_table = true\non_error = \"dead_letter\"",
        1,
    );
    let running = Running::start(&toml)?;
    wait_for(port, "/health/ready", Duration::from_secs(60), |code, _| {
        code == 200
    })
    .await?;
    let producer = env.producer()?;
    let mut total = 0;
    for wave in [1500, 600, 2400] {
        produce(&producer, &topic, total..total + wave, PARTITIONS).await?;
        total += wave;
        if wave == 600 {
            // One record that is not an order: a dead letter the page lists.
            send(
                &producer,
                &topic,
                [(0, None, Some(r#"{"id":"bad"}"#.to_owned()))],
            )
            .await?;
        }
        let read = total + 1;
        crate::ops_support::wait_for(port, "/api/status", Duration::from_secs(60), |_, body| {
            body.contains(&format!("\"records\":{read},"))
                || (wave == 1500 && body.contains(&format!("\"records\":{total},")))
        })
        .await?;
    }
    ensure!(db.count(TABLE).await? == total, "the table misses orders");

    let url = format!("http://127.0.0.1:{port}/");
    let profile = tempfile::tempdir()?;
    let (url_dom, profile_dom) = (url.clone(), profile.path().to_owned());
    let dom =
        tokio::task::spawn_blocking(move || chromium(&url_dom, &profile_dom, &["--dump-dom"]))
            .await??;
    let batches: usize = dom
        .split("data-batches=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the page never drew: no data-batches")?
        .parse()?;
    ensure!(batches > 10, "the charts drew {batches} batches");
    ensure!(
        dom.contains(&topic.name),
        "the lag table does not name the topic"
    );
    ensure!(dom.contains(">ready<"), "the page does not say ready");
    ensure!(
        dom.contains(&format!("{}/0@", topic.name)) && dom.contains("expected a 64-bit integer"),
        "the page does not list the dead letter"
    );

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let profile_shot = profile.path().to_owned();
    tokio::task::spawn_blocking(move || chromium(&url, &profile_shot, &[&arg])).await??;
    let png =
        std::fs::read(&shot).with_context(|| format!("no screenshot at {}", shot.display()))?;
    ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    // A blank 1280x1100 page compresses to a few KB; charts, tables and text do not.
    ensure!(
        png.len() > 40_000,
        "the screenshot is {} bytes: blank?",
        png.len()
    );
    running.stop().await?;
    Ok(())
}
