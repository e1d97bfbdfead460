//! When and how long to wait before repeating a failed request.
//!
//! Exponential backoff with jitter, bounded by attempts and by an overall deadline, honouring
//! `Retry-After`. Whether a call may be repeated at all is a property of the operation
//! ([`Idempotency`]), fixed where the endpoint is declared, never decided at a call site: a
//! retried `createNotification` sends the same email twice.
//!
//! Every duration here may come from a server (`Retry-After`) or from configuration, so all
//! arithmetic is checked: an absurd value means "give up now", never a panic or a sleep of
//! centuries.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::{Error, TransportKind};

/// The longest `Retry-After` taken at face value. A server may send any number (`1e30`,
/// `18446744073709551615`); anything longer is read as one day, which no call's deadline
/// reaches, so the call ends at once with the server's error instead of sleeping.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether repeating an operation is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads, and writes whose repeat changes nothing (deleting a deleted item): retried on
    /// throttling, gateway errors, timeouts and dropped connections.
    Idempotent,
    /// Writes that set an absolute value (`assignUserCredits`, `unassignUserCredits`): retried
    /// only when the request provably never left (connection refused). Such a set is
    /// idempotent in isolation, but once it may have been applied a resend is a new write:
    /// if another administrator changed the member in between, it would silently undo that
    /// change, and every write must be journaled and audited by the caller. So after an
    /// ambiguous failure (throttling, gateway error, timeout) the caller re-reads the member
    /// and decides.
    AbsoluteWrite,
    /// Side effects that would happen twice (`createNotification`, report creation): retried
    /// only when the request provably never left (connection refused).
    NotIdempotent,
}

/// Bounds on automatic retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = never retry).
    pub max_attempts: u32,
    /// The first backoff step; each further step doubles it.
    pub base_delay: Duration,
    /// The largest backoff step (a server's `Retry-After` may ask for more).
    pub max_delay: Duration,
    /// Overall time budget for one call, waits included: no retry starts a wait that would
    /// end past it.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `failed_attempt + 1`, for a uniform random `jitter` in
    /// `[0, 1)`: "equal jitter", i.e. between half and all of `min(max, base·2^(n-1))`, so
    /// concurrent clients spread out but every wait is at least half the step. A jitter
    /// outside `[0, 1]` (or NaN) is clamped, never a panic.
    pub fn backoff(&self, failed_attempt: u32, jitter: f64) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(30);
        let step = self.base_delay.saturating_mul(1u32 << exp).min(self.max_delay);
        (step / 2).saturating_add(scaled(step, unit(jitter) / 2.0))
    }

    /// How long to wait before retrying, or `None` to give up: attempts exhausted, or the
    /// wait would end past the deadline (an end that overflows counts as past it).
    /// `retry_after` (from the server) wins over a shorter backoff.
    pub fn delay_before_retry(
        &self,
        failed_attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if failed_attempt >= self.max_attempts {
            return None;
        }
        let delay = match retry_after {
            // A small jitter on top keeps a throttled fleet from returning in lockstep.
            Some(ra) => ra.checked_add(scaled(self.base_delay, unit(jitter) / 2.0))?,
            None => self.backoff(failed_attempt, jitter),
        };
        let ends = elapsed.checked_add(delay)?;
        (ends <= self.deadline).then_some(delay)
    }
}

/// `jitter` as a factor in `[0, 1]`; NaN (which `clamp` passes through) counts as 0.
fn unit(jitter: f64) -> f64 {
    if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) }
}

/// `d × factor` for a factor in `[0, 1]`, without `Duration::mul_f64`'s panic on overflow.
fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor)
        .unwrap_or(d)
        .min(d)
}

/// Whether an error is worth retrying for an operation of the given idempotency.
pub(crate) fn is_transient(error: &Error, idempotency: Idempotency) -> bool {
    match (error, idempotency) {
        // Never sent: repeating cannot duplicate or overwrite anything.
        (
            Error::Transport {
                kind: TransportKind::Connect,
                ..
            },
            _,
        ) => true,
        (_, Idempotency::NotIdempotent | Idempotency::AbsoluteWrite) => false,
        (Error::Transport { .. }, Idempotency::Idempotent) => true,
        (Error::Http { status, .. }, Idempotency::Idempotent) => {
            matches!(status, 429 | 502 | 503 | 504)
        }
        // ArcGIS sometimes wraps throttling/unavailability in the 200 envelope.
        (Error::Api { api, .. }, Idempotency::Idempotent) => matches!(api.code, Some(429 | 502 | 503 | 504)),
        // A truncated or garbled body from a proxy is usually transient; bounded by the policy.
        (Error::Decode { status, .. }, Idempotency::Idempotent) => (200..300).contains(status),
        _ => false,
    }
}

/// The `Retry-After` the server asked for: delay-seconds (an integer of any size, or a
/// decimal number), or an HTTP date. At most [`MAX_RETRY_AFTER`]; `None` for anything else
/// (negative, NaN, not a date), which leaves the wait to the backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        // Too large for a Duration (1e30, inf, more digits than a u64 holds): as long as the
        // longest wait we accept.
        return Some(Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    // In integer milliseconds: converting a far-off date to `SystemTime` could overflow.
    let now_ms = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_millis()).unwrap_or(i128::MAX),
    };
    let wait_ms = i128::from(when.timestamp_millis()).saturating_sub(now_ms);
    Some(u64::try_from(wait_ms).map_or_else(
        |_| if wait_ms < 0 { Duration::ZERO } else { MAX_RETRY_AFTER },
        |ms| Duration::from_millis(ms).min(MAX_RETRY_AFTER),
    ))
}

/// A uniform value in `[0, 1)` for jitter. `RandomState` is randomly keyed per instance, which
/// is all the randomness jitter needs, without a dependency on an RNG crate.
pub(crate) fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let p = policy();
        for (attempt, step_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1600), (6, 2000), (40, 2000)] {
            let lo = p.backoff(attempt, 0.0);
            let hi = p.backoff(attempt, 0.999_999);
            assert_eq!(lo, Duration::from_millis(step_ms / 2), "attempt {attempt}");
            assert!(hi <= Duration::from_millis(step_ms), "attempt {attempt}: {hi:?}");
            assert!(hi >= lo);
        }
        for _ in 0..1000 {
            let d = p.backoff(3, jitter());
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }

    #[test]
    fn jitter_is_in_unit_interval_and_varies() {
        let samples: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        let distinct = samples
            .iter()
            .map(|j| j.to_bits())
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() > 150);
    }

    #[test]
    fn gives_up_after_max_attempts_or_past_deadline() {
        let p = policy();
        assert!(p.delay_before_retry(5, Duration::ZERO, None, 0.5).is_some());
        assert!(p.delay_before_retry(6, Duration::ZERO, None, 0.5).is_none());
        assert!(
            p.delay_before_retry(1, Duration::from_millis(9_990), None, 0.5)
                .is_none()
        );
        // Retry-After longer than what is left of the deadline: give up now, don't sleep.
        assert!(
            p.delay_before_retry(1, Duration::from_secs(5), Some(Duration::from_secs(30)), 0.0)
                .is_none()
        );
    }

    #[test]
    fn retry_after_wins_over_shorter_backoff() {
        let p = policy();
        let d = p
            .delay_before_retry(1, Duration::ZERO, Some(Duration::from_secs(2)), 0.0)
            .unwrap();
        assert_eq!(d, Duration::from_secs(2));
        let d = p
            .delay_before_retry(1, Duration::ZERO, Some(Duration::from_secs(2)), 0.99)
            .unwrap();
        assert!(d >= Duration::from_secs(2) && d < Duration::from_millis(2_050), "{d:?}");
    }

    #[test]
    fn retry_after_formats() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn only_idempotent_operations_retry_after_the_request_was_sent() {
        let http = |status| Error::Http {
            what: "x".into(),
            status,
            excerpt: String::new(),
            retry_after: None,
        };
        for status in [429, 502, 503, 504] {
            assert!(is_transient(&http(status), Idempotency::Idempotent));
            assert!(!is_transient(&http(status), Idempotency::NotIdempotent));
        }
        assert!(!is_transient(&http(500), Idempotency::Idempotent));
        assert!(!is_transient(&http(400), Idempotency::Idempotent));
        let t = |kind| Error::Transport {
            what: "x".into(),
            kind,
            detail: String::new(),
        };
        assert!(is_transient(&t(TransportKind::Connect), Idempotency::NotIdempotent));
        assert!(!is_transient(&t(TransportKind::Timeout), Idempotency::NotIdempotent));
        assert!(!is_transient(
            &t(TransportKind::Interrupted),
            Idempotency::NotIdempotent
        ));
        assert!(is_transient(&t(TransportKind::Timeout), Idempotency::Idempotent));
        assert!(is_transient(&t(TransportKind::Interrupted), Idempotency::Idempotent));
    }

    #[test]
    fn absolute_writes_are_retried_only_when_never_sent() {
        let http = |status| Error::Http {
            what: "x".into(),
            status,
            excerpt: String::new(),
            retry_after: None,
        };
        let t = |kind| Error::Transport {
            what: "x".into(),
            kind,
            detail: String::new(),
        };
        assert!(is_transient(&t(TransportKind::Connect), Idempotency::AbsoluteWrite));
        for maybe_applied in [
            http(429),
            http(502),
            http(503),
            http(504),
            t(TransportKind::Timeout),
            t(TransportKind::Interrupted),
        ] {
            assert!(
                !is_transient(&maybe_applied, Idempotency::AbsoluteWrite),
                "{maybe_applied:?}"
            );
        }
    }

    #[test]
    fn retry_after_1e30_does_not_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        for huge in ["1e30", "1E300", "inf", "Infinity", "1e19", "18446744073709551616.5"] {
            assert_eq!(parse_retry_after(huge, now), Some(MAX_RETRY_AFTER), "{huge}");
        }
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("-inf", now), None);
        // Longer than any deadline: give up at once, don't sleep.
        let ra = parse_retry_after("1e30", now);
        assert_eq!(policy().delay_before_retry(1, Duration::ZERO, ra, 0.5), None);
    }

    #[test]
    fn retry_after_u64_max_does_not_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let max = u64::MAX.to_string();
        assert_eq!(parse_retry_after(&max, now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("123456789012345678901234567890", now),
            Some(MAX_RETRY_AFTER)
        );
        // Whatever a caller passes, the end of the wait is checked, not added blindly.
        let p = policy();
        assert_eq!(p.delay_before_retry(1, Duration::ZERO, Some(Duration::MAX), 0.99), None);
        assert_eq!(p.delay_before_retry(1, Duration::MAX, None, 0.5), None);
        assert_eq!(
            p.delay_before_retry(1, Duration::MAX, Some(Duration::from_secs(u64::MAX)), 0.5),
            None
        );
        let unbounded = RetryPolicy {
            deadline: Duration::MAX,
            ..p
        };
        assert_eq!(
            unbounded.delay_before_retry(1, Duration::from_secs(1), Some(Duration::MAX), 0.0),
            None
        );
    }

    #[test]
    fn a_retry_after_date_centuries_ahead_is_clamped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", before_epoch),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_nan_jitter_or_an_unbounded_policy_does_not_panic() {
        let p = policy();
        assert_eq!(p.backoff(3, f64::NAN), Duration::from_millis(200));
        assert_eq!(p.backoff(3, f64::INFINITY), Duration::from_millis(400));
        assert_eq!(p.backoff(3, -1.0), Duration::from_millis(200));
        assert!(
            p.delay_before_retry(1, Duration::ZERO, Some(Duration::from_secs(1)), f64::NAN)
                .is_some()
        );
        let huge = RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
            deadline: Duration::MAX,
        };
        for attempt in [1, 2, 40, u32::MAX - 1] {
            let d = huge.backoff(attempt, 0.999_999);
            assert!(d >= Duration::MAX / 2, "{d:?}");
            let _ = huge.delay_before_retry(attempt, Duration::from_secs(1), None, 0.999_999);
            let _ = huge.delay_before_retry(attempt, Duration::ZERO, Some(Duration::MAX), 0.999_999);
        }
    }
}
