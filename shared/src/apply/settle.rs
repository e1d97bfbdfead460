//! Settling earlier requests whose invocations stopped before they finished.
//!
//! A request is listed as pending (`LOCK`/`PENDING`) from just before its first batch is sent
//! until it is done. If its invocation is killed, or it stops with changes left, its writes may
//! or may not have landed, and nobody has read them back. The next allocation to take the lock
//! must not plan from those balances as if nothing had happened: it would count the earlier
//! request's landed change as its own starting point without an audit entry for it, and the
//! earlier request, resumed later, would mistake the new request's change for its own.
//!
//! So whoever takes the lock first settles every other pending request: it takes the request
//! over, reads its unsettled members back, and records each outcome for good: at the target →
//! applied (and audited); unchanged → not applied, superseded (a retry with its key replays
//! that, and the caller sends a new request if the change is still wanted); anything else → a
//! conflict. The earlier request is then done: a retry with its key replays what was settled,
//! never resumes over balances others have changed since.

use chrono::Utc;

use super::journal::{EntryState, Record};
use super::observe;
use super::{Applier, ApplyError, Books, Job, LEASE_SLACK, all_pending};
use crate::ledger::{Claim, RequestClaim, RequestStatus, Scope};

/// Why a settled change is reported as not applied.
const SUPERSEDED: &str = "not applied: this request's invocation stopped before the change was sent or confirmed, \
                          and a later allocation settled it; send a new request if the change is still wanted";

impl Applier {
    /// Settles every pending request but the job's own (step 2 of the module documentation of
    /// [`crate::apply`], right after the lock is taken).
    pub(super) async fn settle_others(&self, job: &Job<'_>) -> Result<(), ApplyError> {
        let pending = job.ledger.pending_requests().await.map_err(ApplyError::Ledger)?;
        for scope in pending.iter().filter(|s| **s != job.scope) {
            self.settle_one(job, scope).await?;
        }
        Ok(())
    }

    async fn settle_one(&self, job: &Job<'_>, scope: &Scope) -> Result<(), ApplyError> {
        let ledger = job.ledger;
        let stored = ledger.load_request(scope).await.map_err(ApplyError::Ledger)?;
        let head = match stored {
            // Done, or never got as far as sending: nothing to settle.
            Some(s) if !matches!(s.head.status, RequestStatus::Done | RequestStatus::Claimed) => s.head,
            _ => return ledger.clear_pending(scope).await.map_err(ApplyError::Ledger),
        };
        let now = Utc::now();
        let lease = job.deadline.wall() + LEASE_SLACK;
        let claim = Claim::new(&head.body_hash, &job.who.request_id, now, lease);
        let stored = match ledger.claim_request(scope, claim).await.map_err(ApplyError::Ledger)? {
            RequestClaim::Resume(stored) => *stored,
            RequestClaim::InProgress { lease_until } => return Err(ApplyError::Busy { until: lease_until }),
            RequestClaim::Fresh => {
                // It vanished meanwhile; the claim just made is not a request of anyone's.
                ledger
                    .abandon_request(scope, &job.who.request_id)
                    .await
                    .map_err(ApplyError::Ledger)?;
                return ledger.clear_pending(scope).await.map_err(ApplyError::Ledger);
            }
            RequestClaim::Replay(_) | RequestClaim::Mismatch => {
                return ledger.clear_pending(scope).await.map_err(ApplyError::Ledger);
            }
        };
        tracing::warn!(
            settled = scope.as_str(),
            by = %job.who.request_id,
            "settling an allocation request whose invocation stopped before it finished"
        );
        let mut record = Record::from_stored(&stored).map_err(ApplyError::JournalUnreadable)?;
        let client = job.client.until(job.deadline.work_until());
        let unsettled = all_pending(&record);
        let readings = self.read_back(&client, &record, &unsettled).await;
        for entry in record.entries.iter_mut().filter(|e| unsettled.contains(&e.index)) {
            let Some((before, target, _)) = entry.change() else {
                continue;
            };
            let observed = match readings.get(&entry.username) {
                Some(Ok(observed)) => *observed,
                Some(Err(error)) => return Err(ApplyError::Unsettled(format!("{}: {error}", entry.username))),
                None => return Err(ApplyError::Unsettled(format!("{}: not read back", entry.username))),
            };
            entry.state =
                Some(
                    observe::settled(&observed, &before, target).unwrap_or_else(|| EntryState::NotApplied {
                        error: SUPERSEDED.to_owned(),
                        observed,
                    }),
                );
        }
        record.meta.unfinished = None;
        record.meta.invocations += 1;
        record.meta.record_problems.push(format!(
            "settled by a later allocation (request {}) after this request's invocation stopped",
            job.who.request_id
        ));
        let books = Books {
            ledger,
            scope,
            owner: &job.who.request_id,
        };
        self.finish(books, record).await.map(|_| ())
    }
}
