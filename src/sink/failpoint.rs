//! Failpoints at each step of the commit protocol, compiled in with the `failpoints` feature.
//!
//! Names: `sink::before_begin`, `sink::after_commit_row_before_data`, `sink::mid_data_write`,
//! `sink::after_data_before_commit`, `sink::commit_sent_reply_unread` (COMMIT done, the reply
//! "lost": the outcome must be resolved from the commit table), `sink::after_commit`, and in a
//! streamed write (`Sink::write_stream`) `sink::stream_chunk_received` (a chunk taken, not yet
//! written) and `sink::between_chunks` (a chunk written, the next not yet taken). Configure
//! them with `fail::cfg(name, "return")` (an injected, retryable connection error), `"panic"`,
//! or `"sleep(ms)"`.

use crate::error::Result;

/// Returns the injected error when failpoint `name` is set to `return`.
pub(crate) fn failpoint(name: &str) -> Result<()> {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        return Err(crate::error::Error::database(
            format!("failpoint {name}"),
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "injected by a failpoint",
            )),
        ));
    }
    let _ = name;
    Ok(())
}
