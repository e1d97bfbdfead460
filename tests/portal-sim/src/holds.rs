//! Hold points: park one chosen request at an exact moment of its handling until a test lets
//! it go.
//!
//! The fault matrix kills a real function process at exact moments of a write: before ArcGIS
//! processed an `assignUserCredits` call, after it processed it but before the reply reached
//! the client, during a later read. Latency and faults cannot aim that precisely; a hold can.
//! A test sets a [`HoldSpec`] ("the Nth request to endpoint E, at phase P"), awaits
//! [`Hold::reached`], does what it wants to the client (kill it, inspect the world, start a
//! competing writer), then [`Hold::release`]s it.
//!
//! Where a held request waits (see `Sim::handle`): after its inbound latency, outside the
//! world lock, in the handler future itself. So a client that disconnects while its request
//! is held before processing makes the server drop that future, and the request is never
//! processed: exactly what ArcGIS does with a request it never read. The request log shows
//! what happened ([`crate::RequestRecord::held`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Where in its handling a request is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldPhase {
    /// Arrived, not processed: the world is unchanged while held. A client that leaves
    /// meanwhile means the request is never processed.
    BeforeProcessing,
    /// Processed (the world changed, the request is logged), reply withheld until release.
    AfterProcessing,
}

/// Which request to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldSpec {
    /// Endpoint name as [`crate::Endpoint::name`], e.g. `portals/self/assignUserCredits`
    /// (`sharing/rest` requests only; storage downloads cannot be held).
    pub endpoint: String,
    /// 1-based position among the requests to `endpoint` that arrive after the hold is set.
    pub nth: u64,
    /// Where the request waits.
    pub phase: HoldPhase,
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HoldStatus {
    /// The Nth matching request has not reached the hold point yet.
    Waiting,
    /// The request with this sequence number is parked at the hold point.
    Held {
        /// The request's sequence number ([`crate::RequestRecord::seq`]).
        seq: u64,
    },
    /// Released, and the request went on.
    Resumed {
        /// The request's sequence number.
        seq: u64,
    },
    /// The client left (or the simulator stopped) while the request was held: before
    /// processing, it was never processed; after, the reply was never sent.
    Abandoned {
        /// The request's sequence number.
        seq: u64,
    },
}

impl HoldStatus {
    /// The held request's sequence number, once one was held.
    pub fn seq(&self) -> Option<u64> {
        match *self {
            HoldStatus::Waiting => None,
            HoldStatus::Held { seq } | HoldStatus::Resumed { seq } | HoldStatus::Abandoned { seq } => Some(seq),
        }
    }

    /// Whether the held request is done with the hold (resumed or abandoned).
    pub fn settled(&self) -> bool {
        matches!(self, HoldStatus::Resumed { .. } | HoldStatus::Abandoned { .. })
    }
}

/// One hold as the simulator keeps it: shared by the registry, the [`Hold`] handle and the
/// held request, so that neither side outliving the other loses a wake-up.
#[derive(Debug)]
pub(crate) struct HoldState {
    id: u64,
    spec: HoldSpec,
    /// Matching requests counted so far.
    seen: AtomicU64,
    status: watch::Sender<HoldStatus>,
    released: watch::Sender<bool>,
}

impl HoldState {
    /// Counts a request to `endpoint`; true if it is the one to hold.
    fn claims(&self, endpoint: &str) -> bool {
        if self.spec.endpoint != endpoint || self.seen.load(Ordering::Relaxed) >= self.spec.nth {
            return false;
        }
        self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.spec.nth
    }

    /// Records where the held request stands.
    pub(crate) fn set(&self, status: HoldStatus) {
        self.status.send_replace(status);
    }

    /// Resolves once the hold is released (at once if it already was).
    pub(crate) async fn wait_released(&self) {
        let mut rx = self.released.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// What the control API shows.
    pub(crate) fn view(&self) -> HoldView {
        HoldView {
            id: self.id,
            spec: self.spec.clone(),
            status: *self.status.borrow(),
            released: *self.released.borrow(),
        }
    }
}

/// A hold as the control API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldView {
    /// Id for `/_sim/holds/{id}/...`.
    pub id: u64,
    /// What it holds.
    #[serde(flatten)]
    pub spec: HoldSpec,
    /// Where it stands.
    pub status: HoldStatus,
    /// Whether `release` was called.
    pub released: bool,
}

/// The holds set on one simulator. They are not world state: `reset` keeps them, and a hold
/// whose [`Hold`] was dropped keeps holding until released by id or the simulator stops.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    all: Mutex<Vec<Arc<HoldState>>>,
}

/// The holds a request matched, by phase.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    pub(crate) before: Vec<Arc<HoldState>>,
    pub(crate) after: Vec<Arc<HoldState>>,
}

impl Holds {
    fn all(&self) -> std::sync::MutexGuard<'_, Vec<Arc<HoldState>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a hold. `nth` is 1-based: 0 is a caller's bug.
    pub(crate) fn add(&self, spec: HoldSpec) -> Result<Arc<HoldState>, String> {
        if spec.nth == 0 {
            return Err("nth is 1-based: 0 would never hold anything".into());
        }
        let mut all = self.all();
        let state = Arc::new(HoldState {
            id: all.len() as u64 + 1,
            spec,
            seen: AtomicU64::new(0),
            status: watch::Sender::new(HoldStatus::Waiting),
            released: watch::Sender::new(false),
        });
        all.push(state.clone());
        Ok(state)
    }

    /// Counts an arriving request against every hold and returns those it is the Nth for.
    /// Called under the world lock, so counting follows request sequence numbers.
    pub(crate) fn claim(&self, endpoint: &str) -> Claimed {
        let mut claimed = Claimed::default();
        for h in self.all().iter().filter(|h| h.claims(endpoint)) {
            match h.spec.phase {
                HoldPhase::BeforeProcessing => claimed.before.push(h.clone()),
                HoldPhase::AfterProcessing => claimed.after.push(h.clone()),
            }
        }
        claimed
    }

    /// A hold by id.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<HoldState>> {
        self.all().iter().find(|h| h.id == id).cloned()
    }

    /// Every hold, for the control API.
    pub(crate) fn views(&self) -> Vec<HoldView> {
        self.all().iter().map(|h| h.view()).collect()
    }
}

/// A test's grip on one hold (from [`crate::SimHandle::hold`]).
///
/// Dropping it does not release the request: a held request stays held, as one whose client
/// was killed stays unanswered, until [`Hold::release`] or the simulator stops (then it is
/// abandoned: never processed, or its reply never sent), so nothing outlives the simulator.
#[derive(Debug, Clone)]
pub struct Hold {
    state: Arc<HoldState>,
}

impl Hold {
    pub(crate) fn new(state: Arc<HoldState>) -> Hold {
        Hold { state }
    }

    /// Id for the control API (`/_sim/holds/{id}`).
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// What this hold holds.
    pub fn spec(&self) -> &HoldSpec {
        &self.state.spec
    }

    /// Where it stands now.
    pub fn status(&self) -> HoldStatus {
        *self.state.status.borrow()
    }

    /// Resolves once the request is parked at the hold point (or already went past it),
    /// with its sequence number. Never resolves if no such request comes: tests wrap it in a
    /// timeout.
    pub async fn reached(&self) -> u64 {
        self.wait(|s| s.seq().is_some()).await.seq().unwrap_or_default()
    }

    /// Resolves once the held request resumed after release or was abandoned by its client.
    pub async fn settled(&self) -> HoldStatus {
        self.wait(HoldStatus::settled).await
    }

    /// Lets the request continue (if its client is still there). Idempotent; releasing before
    /// the request arrives means it will not wait at all.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    async fn wait(&self, done: impl Fn(&HoldStatus) -> bool) -> HoldStatus {
        let mut rx = self.state.status.subscribe();
        // The sender lives in `self.state`: the wait cannot fail.
        match rx.wait_for(|s| done(s)).await {
            Ok(s) => *s,
            Err(_) => *self.state.status.borrow(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(endpoint: &str, nth: u64, phase: HoldPhase) -> HoldSpec {
        HoldSpec {
            endpoint: endpoint.into(),
            nth,
            phase,
        }
    }

    #[test]
    fn a_hold_claims_exactly_the_nth_matching_request() {
        let holds = Holds::default();
        holds.add(spec("a", 2, HoldPhase::BeforeProcessing)).unwrap();
        holds.add(spec("a", 3, HoldPhase::AfterProcessing)).unwrap();
        let claimed: Vec<(usize, usize)> = ["a", "b", "a", "a", "a"]
            .iter()
            .map(|e| holds.claim(e))
            .map(|c| (c.before.len(), c.after.len()))
            .collect();
        assert_eq!(claimed, [(0, 0), (0, 0), (1, 0), (0, 1), (0, 0)]);
        assert!(holds.add(spec("a", 0, HoldPhase::BeforeProcessing)).is_err());
    }

    #[test]
    fn hold_status_serializes_with_a_state_tag() {
        let v = serde_json::to_value(HoldStatus::Held { seq: 4 }).unwrap();
        assert_eq!(v, serde_json::json!({"state": "held", "seq": 4}));
    }
}
