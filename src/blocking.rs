//! Blocking work (fsyncs, librdkafka's synchronous requests) runs on tokio's blocking threads,
//! never on the runtime's workers.

use crate::error::{Error, Result};

/// Runs `f` on a blocking thread; `what` names the work if the thread panics.
///
/// # Cancel safety
///
/// Cancelling the returned future does not stop `f`: it runs to completion, and its result is
/// dropped.
pub(crate) async fn run_blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::TaskFailed {
            what: what.to_owned(),
            message: e.to_string(),
        })?
}
