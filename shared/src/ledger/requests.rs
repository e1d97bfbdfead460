//! Allocation requests, the org-wide allocation lock and the allocation budget, as stored.
//!
//! An allocation request (an `allocate` call with its Idempotency-Key, or one scheduled run's
//! automatic top-up) owns one partition, `REQ#<scope>`:
//! - `HEAD`: the claim: body hash, status, the invocation working on it (`owner`) and until
//!   when (`lease_until`); once finished, the reply's top-level fields;
//! - `PAGE#0000`, …: the write-ahead journal, written before anything is sent: the plan's
//!   entries (each member's balance before and absolute target), 100 per page, and later what
//!   was observed for each. A replay rebuilds the reply from these, so no item ever has to hold
//!   a reply for thousands of members.
//!
//! `LOCK`/`ALLOCATIONS` is a lease: one allocation at a time per org, so every plan is made
//! from balances nobody else is changing. `BUDGET` holds one item per grant (what a request
//! added to allocations), summed over the last 24 hours for the daily limit.
//!
//! The shapes of head replies and pages belong to the apply path; the ledger stores them as
//! JSON and only interprets the claim fields.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// How long a finished request is remembered for replay: clients retry within minutes, an
/// operator may re-run a script the next day or after a weekend.
pub const REQUEST_RETENTION: TimeDelta = TimeDelta::days(7);

/// How long journal pages are kept: far longer than any request can stay unfinished, so an
/// unfinished request never loses its journal (its head has no expiry until it is done).
pub const JOURNAL_RETENTION: TimeDelta = TimeDelta::days(35);

/// How long a grant is kept: the budget window is 24 hours; the rest is for people reading it.
pub const GRANT_RETENTION: TimeDelta = TimeDelta::days(3);

/// The budget's window.
pub const BUDGET_WINDOW: TimeDelta = TimeDelta::hours(24);

/// A request's identity in the ledger: a SHA-256 of who asked and their key, so one caller's
/// Idempotency-Key never meets another's, and the key itself is not stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope(String);

impl Scope {
    /// The scope of `key` sent by the caller with principal `principal`, vouched for by
    /// `authority` ([`Caller::authority`](super::Caller::authority): the account or the
    /// token's issuer).
    pub fn of_key(authority: Option<&str>, principal: &str, key: &str) -> Scope {
        Scope::hash(&["key", authority.unwrap_or("-"), principal, key])
    }

    /// The scope of a scheduled job's run (its automatic top-up).
    pub fn of_run(job: &str, run_key: &str) -> Scope {
        Scope::hash(&["run", job, run_key])
    }

    fn hash(parts: &[&str]) -> Scope {
        let mut h = sha2::Sha256::new();
        for p in parts {
            // Length-prefixed, so no two part lists hash alike.
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        Scope(format!("{:x}", h.finalize()))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A scope read back from the ledger.
    pub fn from_stored(hex: String) -> Scope {
        Scope(hex)
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Claimed; nothing has been sent (a crash here changed nothing).
    Claimed,
    /// The journal is written and batches may have been sent.
    Applying,
    /// Stopped with work left (time ran out, or results could not be read back): a retry with
    /// the same key resumes from the journal, never re-plans.
    Incomplete,
    /// Finished: a retry replays the reply.
    Done,
}

impl RequestStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Claimed => "claimed",
            RequestStatus::Applying => "applying",
            RequestStatus::Incomplete => "incomplete",
            RequestStatus::Done => "done",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<RequestStatus> {
        match s {
            "claimed" => Some(RequestStatus::Claimed),
            "applying" => Some(RequestStatus::Applying),
            "incomplete" => Some(RequestStatus::Incomplete),
            "done" => Some(RequestStatus::Done),
            _ => None,
        }
    }
}

/// Who claims a request, for what body and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// SHA-256 of what the request asks.
    pub body_hash: &'a str,
    /// The invocation (request id) claiming it.
    pub owner: &'a str,
    /// The claim's time.
    pub now: DateTime<Utc>,
    /// Until when the claimant may work on it (its invocation deadline).
    pub lease_until: DateTime<Utc>,
}

impl<'a> Claim<'a> {
    /// `owner`'s claim of a request asking `body_hash`, at `now`, until `lease_until`.
    pub fn new(body_hash: &'a str, owner: &'a str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Claim<'a> {
        Claim {
            body_hash,
            owner,
            now,
            lease_until,
        }
    }
}

/// A request's `HEAD` item.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead {
    /// SHA-256 of the body the key was first used with.
    pub body_hash: String,
    /// Where it stands.
    pub status: RequestStatus,
    /// The invocation (request id) working on it, or that finished it.
    pub owner: String,
    /// Until when `owner` may work on it; after that another invocation may resume it.
    pub lease_until: DateTime<Utc>,
    /// When it was first claimed.
    pub created_at: DateTime<Utc>,
    /// The reply's top-level fields, once there is a reply (done or incomplete).
    pub reply: Option<serde_json::Value>,
}

/// A request as stored: its head and its journal pages in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRequest {
    /// The claim.
    pub head: RequestHead,
    /// `(page number, page)`, in page order.
    pub pages: Vec<(u32, serde_json::Value)>,
}

/// The outcome of [`crate::ledger::Ledger::claim_request`].
#[derive(Debug, Clone, PartialEq)]
pub enum RequestClaim {
    /// First use of the scope: claimed, status `Claimed`, owned by the caller.
    Fresh,
    /// Finished earlier with the same body: answer from the stored reply, write nothing.
    Replay(Box<StoredRequest>),
    /// Another invocation is working on it right now.
    InProgress {
        /// When its lease ends (a retry after that resumes it).
        lease_until: DateTime<Utc>,
    },
    /// Unfinished and nobody is working on it (the lease expired, or it stopped as
    /// `Incomplete`): now owned by the caller, who must resume it from the journal.
    Resume(Box<StoredRequest>),
    /// The scope was used with a different body.
    Mismatch,
}

/// What a request's owner changes in its head.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadUpdate {
    /// The new status.
    pub status: RequestStatus,
    /// The new lease end (set to now when letting go).
    pub lease_until: DateTime<Utc>,
    /// The reply's top-level fields, when there is a reply.
    pub reply: Option<serde_json::Value>,
    /// When the update is made (a `Done` head is kept for [`REQUEST_RETENTION`] from then).
    pub at: DateTime<Utc>,
}

/// Who holds the allocation lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's request scope.
    pub owner: String,
    /// Until when (the holder's invocation deadline).
    pub until: DateTime<Utc>,
}

/// The outcome of [`crate::ledger::Ledger::acquire_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// The caller holds the lock until the requested time.
    Acquired,
    /// Someone else does.
    Held(LockHolder),
}

/// The budget item's sort key: time first, so the window is one range query.
pub fn grant_sort_key(at: DateTime<Utc>, scope: &Scope) -> String {
    format!(
        "{}#{}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        scope.as_str()
    )
}

/// The lower bound of the budget window's sort keys at `now`.
pub fn window_start_key(now: DateTime<Utc>) -> String {
    (now - BUDGET_WINDOW).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A page's sort key.
pub fn page_sort_key(index: u32) -> String {
    format!("PAGE#{index:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_separate_callers_and_keys() {
        let a = Scope::of_key(Some("111"), "AROA1:alice", "k1");
        assert_eq!(a, Scope::of_key(Some("111"), "AROA1:alice", "k1"));
        assert_ne!(a, Scope::of_key(Some("111"), "AROA1:bob", "k1"));
        assert_ne!(a, Scope::of_key(Some("222"), "AROA1:alice", "k1"));
        assert_ne!(a, Scope::of_key(Some("111"), "AROA1:alice", "k2"));
        // Length prefixes: moving a character between parts changes the scope.
        assert_ne!(Scope::of_key(None, "ab", "c"), Scope::of_key(None, "a", "bc"));
        assert_ne!(Scope::of_run("scan-credits", "k1"), a);
        assert_eq!(a.as_str().len(), 64);
        assert!(!a.as_str().contains("k1"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            RequestStatus::Claimed,
            RequestStatus::Applying,
            RequestStatus::Incomplete,
            RequestStatus::Done,
        ] {
            assert_eq!(RequestStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RequestStatus::parse("in_progress"), None);
    }
}
