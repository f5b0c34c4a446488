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

/// Runs CPU-heavy work that borrows from its caller (mapping a chunk of records onto rows): on a
/// multi-threaded runtime the worker first hands its other tasks to the rest of the pool
/// ([`tokio::task::block_in_place`]), so that they keep running meanwhile; on a current-thread
/// runtime, where that is not possible, it runs inline.
pub(crate) fn cpu_bound<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cpu_bound_work_runs_on_a_multi_threaded_runtime() {
        assert_eq!(cpu_bound(|| 2 + 2), 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn cpu_bound_work_runs_inline_on_a_current_thread_runtime() {
        assert_eq!(cpu_bound(|| 2 + 2), 4);
    }
}
