//! The status line of `weir run` on a terminal: one line at the bottom of the screen, redrawn
//! after every batch and every lag measurement (about once a second), with the last batch time,
//! records per second, rows written and the total lag. Log lines are printed above it.
//!
//! The numbers come from the pipeline's progress events (tracing target `weir::progress`, see
//! `weir::runtime::run_pipeline`); the per-batch INFO log lines ("Planned batch.", "Batch
//! done."), which say the same at more length, are left out on a terminal.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, Layer};

/// The tracing target of the pipeline's progress events.
pub const PROGRESS_TARGET: &str = "weir::progress";

/// The records/s figure is taken over this much batch time.
const RATE_WINDOW_MS: i64 = 5_000;

/// The status line, shared by its layer ([`StatusLine::layer`]) and the log writer
/// ([`StatusLine::stderr`]).
#[derive(Debug, Default)]
pub struct StatusLine {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The line on screen now, empty before the first batch.
    line: String,
    last_batch_ms: Option<i64>,
    rows: u64,
    lag: Option<u64>,
    /// `(batch time, records)` of the batches in the rate window.
    window: VecDeque<(i64, u64)>,
}

impl State {
    fn batch(&mut self, batch_ms: i64, records: u64, rows: u64) {
        if self.last_batch_ms.is_some_and(|last| batch_ms < last) {
            // Replayed plans after a restart: an older clock, start the window afresh.
            self.window.clear();
        }
        self.last_batch_ms = Some(batch_ms);
        self.rows += rows;
        self.window.push_back((batch_ms, records));
        while self
            .window
            .front()
            .is_some_and(|&(t, _)| batch_ms - t > RATE_WINDOW_MS)
        {
            self.window.pop_front();
        }
    }

    /// Records per second over the window: the records after its first batch, over the time
    /// from that batch to the last one. Batch times are wall-clock times, one interval apart
    /// while the pipeline keeps up and further apart when it does not.
    fn rate(&self) -> Option<u64> {
        let (&(first, _), &(last, _)) = (self.window.front()?, self.window.back()?);
        let span = u64::try_from(last - first).ok().filter(|&ms| ms > 0)?;
        let records: u64 = self.window.iter().skip(1).map(|&(_, r)| r).sum();
        Some(records.saturating_mul(1_000) / span)
    }

    fn render(&mut self) {
        let Some(batch_ms) = self.last_batch_ms else {
            return;
        };
        let time = chrono::DateTime::from_timestamp_millis(batch_ms).map_or_else(
            || batch_ms.to_string(),
            |t| t.format("%H:%M:%S%.3f").to_string(),
        );
        let mut line = format!("batch {time} UTC | ");
        match self.rate() {
            Some(rate) => {
                let _ = write!(line, "{} records/s", grouped(rate));
            }
            None => line.push_str("- records/s"),
        }
        let _ = write!(line, " | {} rows written | lag ", grouped(self.rows));
        match self.lag {
            Some(lag) => line.push_str(&grouped(lag)),
            None => line.push('-'),
        }
        self.line = line;
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl StatusLine {
    /// A status line, not drawn until the first batch.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log writer for a terminal: each log line is printed above the status line.
    pub fn stderr(self: &Arc<Self>) -> impl for<'a> MakeWriter<'a> + 'static {
        let status = Arc::clone(self);
        move || LogLine {
            status: Arc::clone(&status),
            buffer: Vec::new(),
        }
    }

    /// The layer that feeds the status line.
    pub fn layer(self: &Arc<Self>) -> StatusLayer {
        StatusLayer(Arc::clone(self))
    }

    /// Leaves the last status on screen and moves to the next line, before the process exits.
    pub fn finish(&self) {
        let state = self.state();
        if !state.line.is_empty() {
            let _ = writeln!(std::io::stderr().lock());
        }
    }

    fn draw(&self, state: &State, log: &[u8]) {
        let mut err = std::io::stderr().lock();
        // \r and "erase to the end of the line": the log line or the new status replaces it.
        let _ = err.write_all(b"\r\x1b[K");
        let _ = err.write_all(log);
        let _ = err.write_all(state.line.as_bytes());
        let _ = err.flush();
    }
}

/// One log line on its way to the terminal; written out, with the status line after it, when
/// the log layer is done with it.
struct LogLine {
    status: Arc<StatusLine>,
    buffer: Vec<u8>,
}

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let state = self.status.state();
        self.status.draw(&state, &self.buffer);
    }
}

/// The status line's [`Layer`] ([`StatusLine::layer`]): give it the events of
/// [`PROGRESS_TARGET`] at debug level.
pub struct StatusLayer(Arc<StatusLine>);

impl<S: Subscriber> Layer<S> for StatusLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut state = self.0.state();
        match fields.message.as_deref() {
            Some("Batch written.") => state.batch(
                fields.batch_time.unwrap_or_default(),
                fields.records.unwrap_or_default(),
                fields.rows.unwrap_or_default(),
            ),
            Some("Lag.") => state.lag = fields.total_lag,
            _ => return,
        }
        state.render();
        self.0.draw(&state, b"");
    }
}

/// A filter for the log layer on a terminal: leaves out the per-batch progress lines (INFO
/// events that carry a `batch_time`, such as "Planned batch." and "Batch done."), which the
/// status line replaces. Warnings and errors always pass.
pub struct WithoutBatchLines;

impl<S> Filter<S> for WithoutBatchLines {
    fn enabled(&self, _meta: &tracing::Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        if *event.metadata().level() < tracing::Level::INFO {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.batch_time.is_none()
    }
}

/// The fields of a progress event.
#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    /// Epoch ms; `Some(0)` when the field is there but not a number.
    batch_time: Option<i64>,
    records: Option<u64>,
    rows: Option<u64>,
    total_lag: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "batch_time" => self.batch_time = Some(value.parse().unwrap_or_default()),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "batch_time" => self.batch_time = Some(value),
            _ => self.record_u64(field, u64::try_from(value).unwrap_or(0)),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "batch_time" => self.batch_time = Some(i64::try_from(value).unwrap_or_default()),
            "records" => self.records = Some(value),
            "rows" => self.rows = Some(value),
            "total_lag" => self.total_lag = Some(value),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "batch_time" => {
                self.batch_time = Some(format!("{value:?}").parse().unwrap_or_default());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_time_rate_rows_and_lag() {
        let mut state = State::default();
        state.batch(1_000, 100, 100);
        state.render();
        assert_eq!(
            state.line,
            "batch 00:00:01.000 UTC | - records/s | 100 rows written | lag -"
        );
        state.batch(1_200, 400, 400);
        state.batch(1_400, 400, 399);
        state.lag = Some(1_234_567);
        state.render();
        assert_eq!(
            state.line,
            "batch 00:00:01.400 UTC | 2,000 records/s | 899 rows written | lag 1,234,567"
        );
        // Batches older than the window leave it.
        state.batch(10_000, 0, 0);
        assert_eq!(state.window.len(), 1);
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
    }
}
