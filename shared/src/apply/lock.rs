//! Waiting for the org-wide allocation lock.
//!
//! Two writers planning from the same balances lose each other's changes (two `add 100`
//! both computed 1000 → 1100), so every allocation takes the lock before it reads the members
//! it plans from, and keeps it until its writes are read back and recorded. The lock is a
//! lease in the ledger that ends with the holder's invocation deadline, so a holder that
//! crashed or was killed cannot block the org for longer than one invocation. A second
//! writer waits a little (most allocations take a second or two) and otherwise answers
//! "allocation in progress, retry after …" without having written anything.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::deadline::Deadline;
use crate::ledger::{Ledger, LedgerError, LockAttempt, Scope};

/// The longest a writer waits for another to finish.
pub const WAIT: Duration = Duration::from_secs(5);

/// The first pause between attempts; each further one doubles, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_millis(800);

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another allocation holds it past what this one may wait.
    Busy {
        /// When the holder's lease ends at the latest.
        until: DateTime<Utc>,
    },
    /// The ledger could not be read or written.
    Ledger(LedgerError),
}

/// Takes the lock for `owner` until `until`, waiting at most [`WAIT`] (and never past the
/// deadline's working time).
pub async fn acquire(
    ledger: &Ledger,
    owner: &Scope,
    deadline: &Deadline,
    until: DateTime<Utc>,
) -> Result<(), LockError> {
    let started = Instant::now();
    let budget = WAIT.min(deadline.working_time());
    let mut pause = FIRST_PAUSE;
    loop {
        match ledger
            .acquire_lock(owner.as_str(), Utc::now(), until)
            .await
            .map_err(LockError::Ledger)?
        {
            LockAttempt::Acquired => return Ok(()),
            LockAttempt::Held(holder) => {
                // Spread concurrent waiters so they do not retry in lockstep.
                let step = pause + pause.mul_f64(crate::arcgis::retry::jitter() / 2.0);
                if started.elapsed() + step > budget {
                    tracing::warn!(holder_until = %holder.until, "the allocation lock is held; giving up waiting");
                    return Err(LockError::Busy { until: holder.until });
                }
                tokio::time::sleep(step).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// Releases the lock; a failure is logged and reported, never fatal (the lease expires).
pub async fn release(ledger: &Ledger, owner: &Scope) -> Option<String> {
    match ledger.release_lock(owner.as_str()).await {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(error = %e, "the allocation lock was not released; it expires with its lease");
            Some(format!(
                "the allocation lock could not be released ({e}); other allocations wait until its lease ends"
            ))
        }
    }
}
