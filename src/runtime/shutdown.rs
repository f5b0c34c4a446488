//! Shutdown on signals: the first SIGINT or SIGTERM asks for a graceful stop (finish the running
//! batch, snapshot, exit 0); a second one exits at once, which the invariants make safe.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The exit code of a process stopped by a second signal, as shells report SIGINT.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Listens for SIGINT and SIGTERM in a background task and returns the token that the first one
/// cancels. The second one ends the process immediately.
///
/// Must be called from within a tokio runtime.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if n == 0 {
                info!(
                    message = "Stopping gracefully: finishing the running batch. Signal again to exit at once."
                );
                cancel.cancel();
            } else {
                warn!(message = "Exiting at once; the next start recovers from the checkpoint.");
                std::process::exit(FORCED_EXIT_CODE);
            }
        }
    });
    Ok(token)
}
