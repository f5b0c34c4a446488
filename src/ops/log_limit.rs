//! Rate limiting of per-record warnings, so that a topic full of bad records does not flood the
//! log: a few lines per window, then one line that counts what was left out.
//!
//! Reads the clock: when a warning is logged is not output of any batch (invariant 3 is not
//! concerned).
#![allow(clippy::disallowed_methods)]

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines logged per window.
const PER_WINDOW: u32 = 5;
/// The window.
const WINDOW: Duration = Duration::from_secs(10);

/// The limit of one warning (a `static` at its call site).
#[derive(Debug)]
pub(crate) struct LogLimit(Mutex<Window>);

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(Window {
            start: None,
            logged: 0,
            suppressed: 0,
        }))
    }

    /// `Some(n)` when this occurrence may be logged, `n` being how many were left out since the
    /// last one logged; `None` when it must be left out (it is counted).
    pub(crate) fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if window
            .start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            window.start = Some(now);
            window.logged = 0;
        }
        if window.logged < PER_WINDOW {
            window.logged += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_and_counted() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        let logged: Vec<Option<u64>> = (0..100).map(|_| limit.check_at(t0)).collect();
        assert_eq!(logged.iter().filter(|l| l.is_some()).count(), 5);
        assert!(logged[..5].iter().all(|l| *l == Some(0)));
        // The next window's first line says how many were left out.
        assert_eq!(limit.check_at(t0 + WINDOW), Some(95));
        assert_eq!(limit.check_at(t0 + WINDOW), Some(0));
    }
}
