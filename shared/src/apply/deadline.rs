//! When an invocation must have finished its work.
//!
//! Lambda kills an invocation at its deadline, wherever it is: mid-way through a batch of
//! writes, before the audit entries. Writing money safely therefore means working to a
//! deadline taken from the invocation's context, minus a margin kept for what must happen
//! after the last ArcGIS call (reading the members back, the audit trail, the journal): a
//! batch is only started when there is time to finish it and record what it did.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// Time kept after the last ArcGIS call for the ledger writes that record it.
pub const MARGIN: Duration = Duration::from_secs(3);

/// How far in the future a context deadline may plausibly be (Lambda's longest timeout).
const LONGEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// An invocation's deadline, on both clocks: the monotonic one for waiting, the wall clock
/// for leases stored in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    wall: DateTime<Utc>,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration, now: DateTime<Utc>) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
            wall: now + TimeDelta::from_std(budget).unwrap_or(TimeDelta::MAX),
        }
    }

    /// The deadline in the Lambda context (epoch milliseconds), or `fallback` from now when
    /// the context's value is not a plausible instant (in the past, or further than Lambda's
    /// longest timeout: local emulators send placeholders).
    pub fn from_context(deadline_ms: u64, now: DateTime<Utc>, fallback: Duration) -> Deadline {
        let now_ms = now.timestamp_millis();
        let left = i64::try_from(deadline_ms)
            .ok()
            .and_then(|d| d.checked_sub(now_ms))
            .filter(|left| *left > 0)
            .map(|left| Duration::from_millis(left as u64))
            .filter(|left| *left <= LONGEST_TIMEOUT);
        match left {
            Some(left) => Deadline::after(left, now),
            None => {
                tracing::warn!(
                    deadline_ms,
                    fallback_secs = fallback.as_secs(),
                    "the invocation's deadline is not a plausible time; working to the fallback"
                );
                Deadline::after(fallback, now)
            }
        }
    }

    /// This deadline, or `budget` from now if that is earlier: a part of an invocation that
    /// must not hold its lease for the whole invocation (a scan's top-up).
    pub fn capped(self, budget: Duration) -> Deadline {
        let other = Deadline::after(budget, Utc::now());
        if other.at < self.at { other } else { self }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Time left for ArcGIS calls: the deadline minus [`MARGIN`].
    pub fn working_time(&self) -> Duration {
        self.remaining().saturating_sub(MARGIN)
    }

    /// The instant ArcGIS calls must end by.
    pub fn work_until(&self) -> Instant {
        self.at.checked_sub(MARGIN).unwrap_or(self.at)
    }

    /// The deadline on the wall clock, for leases.
    pub fn wall(&self) -> DateTime<Utc> {
        self.wall
    }

    /// Whether `needed` still fits before the working time runs out.
    pub fn allows(&self, needed: Duration) -> bool {
        self.working_time() >= needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plausible_context_deadline_is_used() {
        let now = Utc::now();
        let d = Deadline::from_context((now.timestamp_millis() + 20_000) as u64, now, Duration::from_secs(5));
        assert!(d.remaining() > Duration::from_secs(15) && d.remaining() <= Duration::from_secs(20));
        assert!(d.working_time() <= d.remaining() - MARGIN + Duration::from_millis(1));
    }

    #[test]
    fn placeholders_fall_back() {
        let now = Utc::now();
        // A local emulator sends 600000 (ten minutes as a duration, i.e. 1970).
        for placeholder in [600_000, 0, u64::MAX, (now.timestamp_millis() + 3_600_000) as u64] {
            let d = Deadline::from_context(placeholder, now, Duration::from_secs(5));
            assert!(d.remaining() <= Duration::from_secs(5), "{placeholder}");
            assert!(d.remaining() > Duration::from_secs(4), "{placeholder}");
        }
    }

    #[test]
    fn a_capped_deadline_is_the_earlier_one() {
        let long = Deadline::after(Duration::from_secs(300), Utc::now());
        assert!(long.capped(Duration::from_secs(60)).remaining() <= Duration::from_secs(60));
        let short = Deadline::after(Duration::from_secs(10), Utc::now());
        assert_eq!(short.capped(Duration::from_secs(60)), short);
    }

    #[test]
    fn time_runs_out() {
        let d = Deadline::after(Duration::from_secs(2), Utc::now());
        assert!(
            !d.allows(Duration::from_millis(1)),
            "the margin is longer than the budget"
        );
        assert_eq!(d.working_time(), Duration::ZERO);
    }
}
