//! Shared helpers of the operations tests: a free port, a plain HTTP GET, polling, and reading
//! Prometheus samples.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A password: it must never show in logs, metrics or the status page.
pub const SECRET: &str = "Sup3rSECRETpw";

/// A port nobody listens on now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `GET path` on `127.0.0.1:port`: the status code and the body.
pub async fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("a response without a header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .context("a response without a status")?
        .parse()?;
    Ok((code, body.to_owned()))
}

/// Polls `GET path` until `done(code, body)`, for at most `timeout`.
pub async fn wait_for(
    port: u16,
    path: &str,
    timeout: Duration,
    done: impl Fn(u16, &str) -> bool,
) -> Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = get(port, path).await;
        if let Ok((code, body)) = &last
            && done(*code, body)
        {
            return Ok((*code, body.clone()));
        }
        if Instant::now() > deadline {
            bail!("GET {path}: still {last:?} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of the samples of `metric` (exact name) whose labels include `pipeline="name"` and
/// every one of `labels`.
pub fn sample_sum(metrics: &str, metric: &str, pipeline: &str, labels: &[&str]) -> f64 {
    let pipeline = format!("pipeline=\"{pipeline}\"");
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric && rest.contains(&pipeline) && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The `name` of a pipeline file.
pub fn pipeline_name(toml: &str) -> Result<String> {
    let line = toml
        .lines()
        .find(|l| l.trim_start().starts_with("name = "))
        .context("no pipeline name")?;
    Ok(line.split('"').nth(1).context("no quoted name")?.to_owned())
}
