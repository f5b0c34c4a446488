//! Retrying a write after a transient failure, and resolving a COMMIT whose outcome is unknown.
//!
//! Retrying is safe because of the commit row: an attempt whose COMMIT did land turns the next
//! attempt into [`WriteOutcome::AlreadyCommitted`]. A COMMIT whose reply was lost is resolved by
//! reading the commit row for the key, never by guessing.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ops::metrics as m;
use crate::ops::status::status;
use crate::plan::OffsetRange;
use crate::sink::CommitKey;
use crate::sink::WriteOutcome;
use crate::sink::conn::SinkPool;
use crate::sink::protocol::{
    AttemptError, SELECT_COMMIT, check_same_ranges, describe, key_parameters,
};

/// How often and how patiently a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled each time.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 12 attempts over about a minute: long enough for a database restart.
    fn default() -> Self {
        Self {
            max_attempts: 12,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The longest wait after failed attempt `attempt` (1-based): doubled each time, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The wait after failed attempt `attempt`: between half of [`backoff`](Self::backoff) and
    /// all of it, at random, so that writers that failed together (a database restart) do not
    /// all come back at the same instant.
    pub fn jittered_backoff(&self, attempt: u32) -> Duration {
        jitter(self.backoff(attempt))
    }
}

/// A random duration in `[wait / 2, wait]`. The randomness comes from the standard library's
/// per-map random keys: retry timing is not output, so invariant 3 is not concerned.
pub(crate) fn jitter(wait: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let half = wait / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    half + Duration::from_nanos(random % span.saturating_add(1))
}

/// Runs `attempt` until it succeeds, fails for good, or the attempts run out.
pub(crate) async fn with_retries<F, Fut>(
    policy: &RetryPolicy,
    pool: &SinkPool,
    key: &CommitKey,
    ranges: &[OffsetRange],
    mut attempt: F,
) -> Result<WriteOutcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<WriteOutcome, AttemptError>>,
{
    let mut n = 0;
    // Held while this write waits to retry: the pipeline is not ready meanwhile.
    let mut _failing = None;
    loop {
        n += 1;
        let error = match attempt().await {
            Ok(outcome) => return Ok(outcome),
            Err(AttemptError::Failed(e)) => e,
            Err(AttemptError::CommitUnknown { error, counts }) => {
                tracing::warn!(write = %describe(key), %error, "COMMIT outcome unknown; reading the commit table");
                if resolve(policy, pool, key, ranges).await? {
                    return Ok(WriteOutcome::committed(counts));
                }
                error
            }
        };
        if !error.is_retryable() || n >= policy.max_attempts {
            return Err(error);
        }
        let wait = policy.jittered_backoff(n);
        _failing = Some(note_retry(key, &error, n, policy.max_attempts));
        tracing::warn!(write = %describe(key), attempt = n, ?wait, %error, "Sink write failed; retrying.");
        tokio::time::sleep(wait).await;
    }
}

/// Counts a retry of the write of `key` after failed attempt `attempt`, and marks the pipeline not
/// ready until the returned guard is dropped (the write got through or gave up).
pub(crate) fn note_retry(
    key: &CommitKey,
    error: &Error,
    attempt: u32,
    max_attempts: u32,
) -> crate::ops::status::Retrying {
    let cause = m::retry_cause(error);
    metrics::counter!(m::SINK_RETRIES, "pipeline" => key.pipeline.clone(), "cause" => cause)
        .increment(1);
    status(&key.pipeline).sink_retrying(format!(
        "a write failed ({cause}); retrying, attempt {} of {max_attempts}",
        attempt + 1
    ))
}

/// Whether the commit row of `key` exists (with these ranges), waiting out transient errors.
pub(crate) async fn resolve(
    policy: &RetryPolicy,
    pool: &SinkPool,
    key: &CommitKey,
    ranges: &[OffsetRange],
) -> Result<bool> {
    let sql = pool.dialect().placeholders(SELECT_COMMIT);
    let mut n = 0;
    loop {
        n += 1;
        match pool
            .fetch_optional::<(String,)>(sql.clone(), &key_parameters(key))
            .await
        {
            Ok(Some((stored,))) => {
                check_same_ranges(key, &stored, ranges)?;
                return Ok(true);
            }
            Ok(None) => return Ok(false),
            Err(e) => {
                let error = Error::database(
                    format!(
                        "{}: reading the commit row after an unknown COMMIT outcome",
                        describe(key)
                    ),
                    e,
                );
                if !error.is_retryable() || n >= policy.max_attempts {
                    return Err(error);
                }
                tokio::time::sleep(policy.jittered_backoff(n)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all_of_the_wait_and_varies() {
        let p = RetryPolicy::default();
        let waits: Vec<Duration> = (0..64).map(|_| p.jittered_backoff(4)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_millis(400) && *w <= Duration::from_millis(800))
        );
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "every wait was {:?}",
            waits[0]
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(30), Duration::from_secs(10));
        assert_eq!(p.backoff(200), Duration::from_secs(10));
    }
}
