//! Retrying a write after a transient failure, and resolving a COMMIT whose outcome is unknown.
//!
//! Retrying is safe because of the commit row: an attempt whose COMMIT did land turns the next
//! attempt into [`WriteOutcome::AlreadyCommitted`]. A COMMIT whose reply was lost is resolved by
//! reading the commit row for the key, never by guessing.

use std::time::Duration;

use crate::error::{Error, Result};
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
    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
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
        let wait = policy.backoff(n);
        tracing::warn!(write = %describe(key), attempt = n, ?wait, %error, "sink write failed; retrying");
        tokio::time::sleep(wait).await;
    }
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
                tokio::time::sleep(policy.backoff(n)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(30), Duration::from_secs(10));
        assert_eq!(p.backoff(200), Duration::from_secs(10));
    }
}
