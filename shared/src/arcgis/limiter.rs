//! How many requests one org gets at once: an adaptive limit, shared by every call of a
//! client, that halves when ArcGIS throttles and grows back by one after a full window of
//! successes (additive increase, multiplicative decrease, as TCP does).
//!
//! ArcGIS Online publishes no rate limit for the endpoints we call; throttling shows as HTTP
//! 429 (and, on bulk operations, as 403). A fixed concurrency is either too timid for a quiet
//! org or too aggressive for a busy one, and a 100,000-member listing sends a thousand pages:
//! the limit starts at the configured ceiling (`LIST_CONCURRENCY`) and finds what the org
//! tolerates. Retries keep their own backoff and `Retry-After` waits; the limiter only
//! decides how many requests are in flight.

use std::sync::Mutex;

use tokio::sync::Notify;

/// The adaptive limit of one org (one [`super::Client`] and its clones).
#[derive(Debug)]
pub struct Limiter {
    ceiling: usize,
    state: Mutex<State>,
    /// Woken when a permit is released or the limit grows.
    freed: Notify,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    /// Successes since the limit last changed.
    successes: usize,
    /// Bumped at each decrease: the throttled answers of requests sent before it are the same
    /// signal, not new ones, and do not halve the limit again.
    epoch: u64,
}

/// Leave to send one request; released when dropped or when the answer arrives
/// ([`Permit::answered`], whose handle reports it as a success or as throttling; a permit
/// dropped unreported is neutral: transport failures say nothing about load).
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    epoch: u64,
}

impl Limiter {
    /// A limiter allowing at most `ceiling` requests at once (at least 1), starting there.
    pub fn new(ceiling: usize) -> Limiter {
        let ceiling = ceiling.max(1);
        Limiter {
            ceiling,
            state: Mutex::new(State {
                limit: ceiling,
                in_flight: 0,
                successes: 0,
                epoch: 0,
            }),
            freed: Notify::new(),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// The configured ceiling.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Waits until fewer than the limit are in flight, then takes a place.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Registered before checking, so a release between the check and the wait is seen.
            let freed = self.freed.notified();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    return Permit {
                        limiter: self,
                        epoch: s.epoch,
                    };
                }
            }
            freed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few counters, consistent after every statement: a panic elsewhere
        // while holding the lock leaves nothing to repair.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<'a> Permit<'a> {
    /// The answer has arrived: its place goes to the next request now, and what the answer
    /// said is reported once it is read ([`Answered`]). Decoding a 100-member listing page
    /// is CPU, not load on ArcGIS; holding the place meanwhile would delay every round of
    /// requests by it.
    pub fn answered(self) -> Answered<'a> {
        Answered {
            limiter: self.limiter,
            epoch: self.epoch,
        }
        // `self` is dropped here, which frees the place.
    }
}

/// An answer whose place in flight was given back ([`Permit::answered`]), still to be
/// reported as a success or as throttling (dropped unreported: neutral).
#[derive(Debug)]
pub struct Answered<'a> {
    limiter: &'a Limiter,
    epoch: u64,
}

impl Answered<'_> {
    /// The request was answered normally: one step towards a larger limit.
    pub fn succeeded(self) {
        let mut s = self.limiter.lock();
        s.successes += 1;
        if s.successes >= s.limit && s.limit < self.limiter.ceiling {
            s.limit += 1;
            s.successes = 0;
            drop(s);
            self.limiter.freed.notify_waiters();
        }
    }

    /// The request was throttled: the limit halves, once per burst of throttled answers.
    pub fn throttled(self) {
        let mut s = self.limiter.lock();
        if self.epoch == s.epoch {
            s.limit = (s.limit / 2).max(1);
            s.successes = 0;
            s.epoch += 1;
            tracing::warn!(limit = s.limit, "ArcGIS is throttling: fewer requests at once");
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.lock().in_flight -= 1;
        self.limiter.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn throttling_halves_once_per_burst_and_successes_win_it_back() {
        let limiter = Limiter::new(8);
        let permits: Vec<Permit> = futures_util::future::join_all((0..8).map(|_| limiter.acquire())).await;
        assert_eq!(limiter.limit(), 8);
        // Eight requests sent together are throttled together: one signal, one halving.
        for p in permits {
            p.answered().throttled();
        }
        assert_eq!(limiter.limit(), 4);
        // A request sent after the halving and throttled again halves it again.
        limiter.acquire().await.answered().throttled();
        assert_eq!(limiter.limit(), 2);
        limiter.acquire().await.answered().throttled();
        limiter.acquire().await.answered().throttled();
        assert_eq!(limiter.limit(), 1, "never below one");
        // A window of successes (as many as the limit) adds one, up to the ceiling.
        let mut grown = vec![limiter.limit()];
        for _ in 0..40 {
            limiter.acquire().await.answered().succeeded();
            grown.push(limiter.limit());
        }
        assert_eq!(
            grown.iter().max(),
            Some(&8),
            "back to the ceiling, not above: {grown:?}"
        );
        assert!(grown.windows(2).all(|w| w[1] >= w[0] && w[1] - w[0] <= 1), "{grown:?}");
    }

    #[tokio::test]
    async fn no_more_than_the_limit_are_in_flight() {
        let limiter = Limiter::new(3);
        let held: Vec<Permit> = futures_util::future::join_all((0..3).map(|_| limiter.acquire())).await;
        let waiting = limiter.acquire();
        tokio::pin!(waiting);
        // The fourth waits while three are out...
        assert!(futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none());
        // ...and gets a place as soon as one comes back.
        drop(held);
        let fourth = waiting.await;
        fourth.answered().succeeded();
        assert_eq!(limiter.lock().in_flight, 0);
    }

    #[tokio::test]
    async fn an_answered_request_frees_its_place_and_still_counts() {
        let limiter = Limiter::new(2);
        let held: Vec<Permit> = futures_util::future::join_all((0..2).map(|_| limiter.acquire())).await;
        let mut held = held.into_iter();
        let (first, second) = (held.next().unwrap(), held.next().unwrap());
        // Answered, not yet decoded: the place is free for the next request...
        let answered = first.answered();
        let third = futures_util::FutureExt::now_or_never(limiter.acquire());
        assert!(third.is_some(), "the answered request's place was not freed");
        assert_eq!(limiter.lock().in_flight, 2);
        // ...and its throttling, reported after decoding, still halves the limit.
        answered.throttled();
        assert_eq!(limiter.limit(), 1);
        drop((second, third));
        assert_eq!(limiter.lock().in_flight, 0);
    }
}
