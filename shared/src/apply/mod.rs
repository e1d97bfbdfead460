//! The one path that changes money: `allocate` and scan-credits' automatic top-up both apply
//! allocations here, so they share every guarantee.
//!
//! # Steps
//!
//! 1. **Claim** the request in the ledger (`REQ#<scope>`, a conditional put): a finished
//!    request with the same body is replayed, another body is refused, a request another
//!    invocation is working on is "in progress", and an unfinished one nobody works on any
//!    more (its lease expired, or it stopped as incomplete) is **resumed** (step 7).
//! 2. Take the org-wide **allocation lock** ([`lock`]): one allocation at a time, so no plan is
//!    made from balances someone else is changing. A writer that cannot get it within a few
//!    seconds gives the claim back and answers "in progress, retry after". Then every other
//!    request left in doubt by a stopped invocation is **settled** ([`settle`]): read back and
//!    recorded for good before anyone plans from the balances it may have changed.
//! 3. **Read** the org after taking the lock: privileges, budgeting, every member's balance
//!    (the named members and what all limited members were already promised), and what was
//!    granted in the last 24 hours. **Plan** from that read ([`crate::credits::plan`]): every
//!    guardrail, the cumulative ones included, is checked here. Anything refused so far gives
//!    the claim and the lock back: nothing was written.
//! 4. **Write ahead**: the journal (every entry with its balance before and *absolute*
//!    target), the grant against the daily budget, the request's mark in the ledger's pending
//!    set (cleared when it is done), and the head as `Applying`, all before anything is sent.
//! 5. **Send** in batches of 100, each preceded by an audit *intent* record, each started only
//!    when the invocation's deadline leaves time to finish and record it ([`deadline`]).
//! 6. **Read back** the members and settle each change ([`observe`]): at the target → applied;
//!    unchanged → not applied (kept for a retry when the failure was transient); anything else
//!    → a conflict, never re-sent. Then the audit entries (append-only, at most once per key),
//!    the grant corrected to what was applied, the journal, and the head as `Done`, or as
//!    `Incomplete` when something is left; then the lock is released.
//! 7. **Resume** (a retry with the same key, or a redelivered scheduled run): take the lock,
//!    read back every change not yet settled, re-send only the stored absolute targets of the
//!    members still at their balance before, then step 6. A resumed request is never
//!    re-planned, so an `add` can never be applied twice.

pub mod deadline;
pub mod journal;
pub mod lock;
pub mod observe;
mod read;
mod send;
mod settle;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, stream};

use crate::arcgis::{self, Client};
use crate::config::Config;
use crate::credits::amount::Credits;
use crate::credits::classify::Thresholds;
use crate::credits::plan::{Breach, Guardrails, Plan, PlanError, Request};
use crate::ledger::{
    Appended, AuditEntry, Caller, Claim, HeadUpdate, Ledger, LedgerError, RequestClaim, RequestStatus, Scope,
    StoredRequest,
};

pub use deadline::Deadline;
pub use journal::{EntryState, JournalEntry, Record, RecordMeta, Unfinished};

/// How long after its deadline an invocation's lease lasts: Lambda has stopped it by then.
const LEASE_SLACK: TimeDelta = TimeDelta::seconds(2);

/// Time one batch needs to be sent: an `assignUserCredits` call at its slowest.
const BATCH_TIME: Duration = Duration::from_secs(2);

/// Time the reads before planning need (sign-in, org, listing).
const READ_TIME: Duration = Duration::from_secs(2);

/// Audit entries written at once: enough that 100 changes cost a few round trips, few enough
/// to stay far below a table's per-partition write limit.
const AUDIT_WRITES: usize = 16;

/// The SHA-256 (hex) of what a request asks, in whatever bytes stand for it (an HTTP body, a
/// run's settings): a key reused with other bytes is refused instead of replayed.
pub fn body_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Explicit per-member requests, in order.
    Explicit(Vec<Request>),
    /// Top every critical member up so that `top_up_to` credits are available.
    CriticalPolicy {
        /// The credits each critical member should have available afterwards.
        top_up_to: Credits,
        /// Who is critical: the configured thresholds, or a scheduled run's own.
        thresholds: Thresholds,
    },
}

/// Who asks and why, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The authenticated caller.
    pub caller: Caller,
    /// The invocation's request id.
    pub request_id: String,
    /// The caller's reason.
    pub reason: Option<String>,
    /// Which path (`allocate`, `scan-credits auto top-up`).
    pub source: &'static str,
}

/// One request to apply.
#[derive(Debug)]
pub struct Job<'a> {
    /// ArcGIS.
    pub client: &'a Client,
    /// The ledger.
    pub ledger: &'a Ledger,
    /// The request's identity.
    pub scope: Scope,
    /// SHA-256 of what was asked (a key reused with another body is refused).
    pub body_hash: String,
    /// What is asked.
    pub ask: &'a Ask,
    /// Who and why.
    pub who: Who,
    /// When the invocation must be done.
    pub deadline: Deadline,
}

/// Whose journal is being written, by which invocation: usually the job's own request, but
/// also an earlier request this invocation settles (see [`settle`]).
#[derive(Debug, Clone, Copy)]
struct Books<'a> {
    ledger: &'a Ledger,
    scope: &'a Scope,
    owner: &'a str,
}

impl<'a> Books<'a> {
    fn of(job: &'a Job<'_>) -> Books<'a> {
        Books {
            ledger: job.ledger,
            scope: &job.scope,
            owner: &job.who.request_id,
        }
    }
}

/// What [`Applier::apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The request had finished before: its record, nothing sent.
    Replayed(Record),
    /// Applied (or resumed) now; `meta.unfinished` says whether something is left.
    Applied(Record),
}

/// Why nothing (more) was applied. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The key was used with another body.
    #[error(
        "this Idempotency-Key was already used with a different body: use a new key for a new request, \
         or resend the original body exactly"
    )]
    KeyReused,
    /// Another invocation is working on this request.
    #[error("this request is still being applied: retry after {lease_until} with the same key and body")]
    InProgress {
        /// When that invocation's lease ends.
        lease_until: DateTime<Utc>,
    },
    /// Another allocation holds the org-wide lock.
    #[error(
        "another allocation is being applied in this organization: nothing was changed; retry after \
         {until} with the same key and body"
    )]
    Busy {
        /// When the holder's lease ends at the latest.
        until: DateTime<Utc>,
    },
    /// The signed-in ArcGIS account may not manage credits.
    #[error("credit-steward's ArcGIS account cannot do this: {0}")]
    MissingPrivileges(arcgis::Error),
    /// Budgeting is off: there are no allocations.
    #[error(
        "credit budgeting is off in this ArcGIS organization, so allocations cannot be set; an \
         administrator must enable it (Organization > Settings > Credits) first"
    )]
    BudgetingDisabled,
    /// Reading ArcGIS failed; nothing was written.
    #[error("reading from ArcGIS failed, nothing was changed: {0}")]
    Arcgis(arcgis::Error),
    /// Guardrails refuse the plan; nothing was written.
    #[error("the allocation breaks {} guardrail(s); nothing was changed", .0.len())]
    Guardrails(Vec<Breach>),
    /// The requests cannot be planned.
    #[error("the allocation cannot be planned: {0}")]
    Plan(PlanError),
    /// The policy selects more members than one allocation may change.
    #[error(
        "the policy selects {selected} members, above the limit of {cap} per allocation \
         (MAX_MEMBERS_PER_REQUEST); nothing was changed: raise the limit or allocate explicitly in parts"
    )]
    TooManyMembers {
        /// Members selected.
        selected: usize,
        /// The limit.
        cap: usize,
    },
    /// The invocation's time ran out before anything was sent.
    #[error("the invocation ran out of time before anything was changed; it can be retried as it is")]
    OutOfTime,
    /// The ledger failed before anything was sent.
    #[error("the ledger is unavailable, nothing was changed: {0}")]
    Ledger(LedgerError),
    /// An earlier request left unsettled could not be read back; nothing was planned from the
    /// balances it may have changed.
    #[error(
        "an earlier allocation stopped before its changes were read back, and they cannot be read now \
         ({0}); nothing was changed: retry shortly"
    )]
    Unsettled(String),
    /// An unfinished request's journal cannot be read: it is never re-planned.
    #[error(
        "this request was partly applied but its journal cannot be read ({0}); nothing more was \
         changed. Check the members in ArcGIS Online and the audit trail before sending a new request"
    )]
    JournalUnreadable(String),
}

/// The settings every application uses, validated once at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applier {
    /// The guardrails.
    pub guardrails: Guardrails,
    /// The most members one allocation may change.
    pub max_members: usize,
    /// Member lookups in flight at once.
    pub lookup_concurrency: usize,
}

/// A plan and what was noticed while reading for it.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// Warnings for the caller.
    pub warnings: Vec<String>,
}

impl Applier {
    /// The guardrails and limits of `config`, shared by allocate and the top-up.
    pub fn from_config(config: &Config) -> Applier {
        Applier {
            guardrails: config.guardrails.guardrails(),
            max_members: config.max_members_per_request,
            lookup_concurrency: config.list_concurrency,
        }
    }

    /// Reads the org and plans `ask` without the lock or the ledger's claim: a dry run.
    pub async fn preview(&self, client: &Client, ledger: &Ledger, ask: &Ask) -> Result<Planned, ApplyError> {
        self.read_and_plan(client, ledger, ask).await
    }

    /// Applies (or replays, or resumes) one request; see the module documentation.
    pub async fn apply(&self, job: &Job<'_>) -> Result<Applied, ApplyError> {
        let (claim, lease) = self.claim(job).await?;
        self.proceed(job, claim, lease).await
    }

    /// Finishes `job` if an earlier invocation left it unfinished (or replays it if it
    /// finished); `None` when there is nothing of it: a redelivered scheduled run never starts
    /// an allocation its first delivery did not.
    pub async fn resume(&self, job: &Job<'_>) -> Result<Option<Applied>, ApplyError> {
        let (claim, lease) = self.claim(job).await?;
        if matches!(claim, RequestClaim::Fresh) {
            self.give_back(job).await;
            return Ok(None);
        }
        self.proceed(job, claim, lease).await.map(Some)
    }

    /// Step 1: the request's claim in the ledger, and the lease it holds if it is this
    /// invocation's to apply.
    async fn claim(&self, job: &Job<'_>) -> Result<(RequestClaim, DateTime<Utc>), ApplyError> {
        let now = Utc::now();
        let lease = job.deadline.wall() + LEASE_SLACK;
        let claim = job
            .ledger
            .claim_request(&job.scope, Claim::new(&job.body_hash, &job.who.request_id, now, lease))
            .await
            .map_err(ApplyError::Ledger)?;
        Ok((claim, lease))
    }

    /// What the claim says to do: apply, resume, replay or refuse.
    async fn proceed(&self, job: &Job<'_>, claim: RequestClaim, lease: DateTime<Utc>) -> Result<Applied, ApplyError> {
        match claim {
            RequestClaim::Fresh => self.locked(job, lease, None).await,
            RequestClaim::Replay(stored) => Record::from_stored(&stored)
                .map(Applied::Replayed)
                .map_err(ApplyError::JournalUnreadable),
            RequestClaim::InProgress { lease_until } => Err(ApplyError::InProgress { lease_until }),
            RequestClaim::Mismatch => Err(ApplyError::KeyReused),
            RequestClaim::Resume(stored) => self.locked(job, lease, Some(*stored)).await,
        }
    }

    /// Steps 2–7 under the lock, which is released whatever happens.
    async fn locked(
        &self,
        job: &Job<'_>,
        lease: DateTime<Utc>,
        resumed: Option<StoredRequest>,
    ) -> Result<Applied, ApplyError> {
        if let Err(e) = lock::acquire(job.ledger, &job.scope, &job.deadline, lease).await {
            self.let_go(job, resumed.as_ref()).await;
            return Err(match e {
                lock::LockError::Busy { until } => ApplyError::Busy { until },
                lock::LockError::Ledger(e) => ApplyError::Ledger(e),
            });
        }
        // Earlier requests whose invocations stopped mid-way are settled first: their writes
        // must be read back and recorded before anyone plans from these balances again.
        let result = match self.settle_others(job).await {
            Err(e) => {
                self.let_go(job, resumed.as_ref()).await;
                Err(e)
            }
            // Claimed before, but nothing was written: nothing can have been sent.
            Ok(()) => match resumed {
                Some(stored) if stored.head.status == RequestStatus::Claimed => self.fresh(job).await,
                Some(stored) => self.resume_from(job, &stored).await,
                None => self.fresh(job).await,
            },
        };
        let released = lock::release(job.ledger, &job.scope).await;
        match (result, released) {
            (Ok(Applied::Applied(mut record)), Some(problem)) => {
                record.meta.record_problems.push(problem);
                Ok(Applied::Applied(record))
            }
            (result, _) => result,
        }
    }

    /// Gives the claim back when nothing was sent, so a retry with the same key starts over.
    async fn give_back(&self, job: &Job<'_>) {
        if let Err(e) = job.ledger.abandon_request(&job.scope, &job.who.request_id).await {
            tracing::error!(error = %e, "the request's claim was not released; retries answer in progress until its lease ends");
        }
    }

    /// Lets go of a request this invocation could not work on: a fresh claim is given back, a
    /// resumed one keeps its state and gets its lease ended, so the next retry resumes it.
    async fn let_go(&self, job: &Job<'_>, resumed: Option<&StoredRequest>) {
        match resumed {
            None => self.give_back(job).await,
            Some(stored) if stored.head.status == RequestStatus::Claimed => self.give_back(job).await,
            Some(stored) => {
                let update = HeadUpdate {
                    status: stored.head.status,
                    lease_until: Utc::now(),
                    reply: None,
                    at: Utc::now(),
                };
                if let Err(e) = job
                    .ledger
                    .update_request(&job.scope, &job.who.request_id, &update)
                    .await
                {
                    tracing::error!(error = %e, "could not end the lease of a resumed request; it resumes after the lease");
                }
            }
        }
    }

    /// Steps 3–6 for a request nothing was sent for yet.
    async fn fresh(&self, job: &Job<'_>) -> Result<Applied, ApplyError> {
        if !job.deadline.allows(READ_TIME) {
            self.give_back(job).await;
            return Err(ApplyError::OutOfTime);
        }
        let client = job.client.until(job.deadline.work_until());
        let planned = match self.read_and_plan(&client, job.ledger, job.ask).await {
            Ok(planned) => planned,
            Err(e) => {
                self.give_back(job).await;
                return Err(e);
            }
        };
        let mut record = new_record(job, planned);
        let has_changes = record.entries.iter().any(JournalEntry::pending);
        if has_changes && !job.deadline.allows(BATCH_TIME) {
            self.give_back(job).await;
            return Err(ApplyError::OutOfTime);
        }
        // Write ahead: the journal and the grant, then the head; a failure here sent nothing.
        let now = Utc::now();
        let written = async {
            job.ledger.put_pages(&job.scope, &record.pages(), now).await?;
            if has_changes {
                job.ledger
                    .record_grant(&job.scope, record.meta.planned_at, record.meta.total_increase)
                    .await?;
                job.ledger.mark_pending(&job.scope).await?;
            }
            let update = HeadUpdate {
                status: RequestStatus::Applying,
                lease_until: job.deadline.wall() + LEASE_SLACK,
                reply: Some(meta_json(&record.meta)),
                at: now,
            };
            job.ledger
                .update_request(&job.scope, &job.who.request_id, &update)
                .await
        };
        if let Err(e) = written.await {
            self.give_back(job).await;
            return Err(ApplyError::Ledger(e));
        }
        let pending = all_pending(&record);
        let sent = self.send(job, &client, &mut record, &pending).await;
        self.settle(job, &client, &mut record, &sent).await;
        self.finish(Books::of(job), record).await
    }

    /// Step 7: read back what is unsettled, re-send what is still at its balance before.
    async fn resume_from(&self, job: &Job<'_>, stored: &StoredRequest) -> Result<Applied, ApplyError> {
        let mut record = match Record::from_stored(stored) {
            Ok(r) if !r.entries.is_empty() => r,
            Ok(_) => return Err(ApplyError::JournalUnreadable("the journal has no entries".into())),
            Err(e) => return Err(ApplyError::JournalUnreadable(e)),
        };
        record.meta.invocations += 1;
        record.meta.unfinished = None;
        tracing::info!(scope = job.scope.as_str(), "resuming an unfinished allocation request");
        let client = job.client.until(job.deadline.work_until());
        let unsettled = all_pending(&record);
        let readings = self.read_back(&client, &record, &unsettled).await;
        let mut resend = Vec::new();
        for entry in record.entries.iter_mut().filter(|e| unsettled.contains(&e.index)) {
            let Some((before, target, _)) = entry.change() else {
                continue;
            };
            entry.state = Some(match readings.get(&entry.username) {
                Some(Ok(observed)) => observe::settled(observed, &before, target).unwrap_or_else(|| {
                    resend.push(entry.index);
                    EntryState::Planned
                }),
                Some(Err(error)) => EntryState::Unknown { error: error.clone() },
                None => EntryState::Unknown {
                    error: "not read back".into(),
                },
            });
        }
        let sent = self.send(job, &client, &mut record, &resend).await;
        self.settle(job, &client, &mut record, &sent).await;
        self.finish(Books::of(job), record).await
    }

    /// Step 6's second half: audit, grant, journal, head.
    async fn finish(&self, books: Books<'_>, mut record: Record) -> Result<Applied, ApplyError> {
        let now = Utc::now();
        if record.meta.unfinished.is_none() && record.entries.iter().any(JournalEntry::pending) {
            record.meta.unfinished = Some(Unfinished::Unobserved);
        }
        let problems = self.audit(books, &record, now).await;
        record.meta.record_problems.extend(problems);
        let changed: Vec<u32> = record
            .entries
            .iter()
            .filter(|e| e.state.is_some())
            .map(|e| e.index)
            .collect();
        let ledger = books.ledger;
        // Only a request with changes has a grant and a pending mark (see `fresh`).
        let has_changes = record.entries.iter().any(|e| e.change().is_some());
        if has_changes
            && let Err(e) = ledger
                .record_grant(books.scope, record.meta.planned_at, record.granted())
                .await
        {
            record
                .meta
                .record_problems
                .push(format!("the daily budget was not corrected to what was applied: {e}"));
        }
        if let Err(e) = ledger.put_pages(books.scope, &record.pages_of(&changed), now).await {
            record.meta.record_problems.push(format!(
                "the journal was not updated ({e}); a replay may show these members as still planned"
            ));
        }
        record.meta.bound_lists();
        let update = HeadUpdate {
            status: if record.meta.unfinished.is_some() {
                RequestStatus::Incomplete
            } else {
                RequestStatus::Done
            },
            lease_until: now,
            reply: Some(meta_json(&record.meta)),
            at: now,
        };
        match ledger.update_request(books.scope, books.owner, &update).await {
            Err(e) => {
                tracing::error!(error = %e, "the request's outcome was not recorded");
                record.meta.record_problems.push(format!(
                    "the request's outcome could not be stored under its key ({e}); a retry with the same key \
                     resumes it from the journal instead of replaying this answer"
                ));
            }
            // Settled for good: the next lock holder has nothing of it to settle.
            Ok(()) if update.status == RequestStatus::Done && has_changes => {
                if let Err(e) = ledger.clear_pending(books.scope).await {
                    tracing::warn!(error = %e, "a finished request is still listed as pending; the next allocation clears it");
                }
            }
            Ok(()) => {}
        }
        Ok(Applied::Applied(record))
    }

    /// Appends an audit entry for every change read back (applied, or changed otherwise).
    async fn audit(&self, books: Books<'_>, record: &Record, now: DateTime<Utc>) -> Vec<String> {
        let entries: Vec<AuditEntry> = record
            .entries
            .iter()
            .filter_map(|entry| {
                let (before, target, _) = entry.change()?;
                let observed = match &entry.state {
                    Some(EntryState::Applied { observed } | EntryState::Conflict { observed }) => *observed,
                    _ => return None,
                };
                Some(AuditEntry {
                    at: now,
                    planned_at: record.meta.planned_at,
                    scope: books.scope.as_str().to_owned(),
                    request_id: books.owner.to_owned(),
                    caller: record.meta.caller.clone(),
                    reason: record.meta.reason.clone(),
                    source: record.meta.source.clone(),
                    username: entry.username.clone(),
                    before,
                    planned: target,
                    observed,
                    matches_plan: matches!(entry.state, Some(EntryState::Applied { .. })),
                })
            })
            .collect();
        // Each put is conditional under a key of its own, so they may go out together; in
        // order, so problems are reported in the request's order. Owned entries: a closure
        // over borrowed ones makes the future not `Send` for every lifetime, which the Lambda
        // runtime requires.
        let ledger = books.ledger;
        let results: Vec<_> = stream::iter(entries)
            .map(|audit| async move {
                let result = record_change(ledger, &audit).await;
                (audit.username, result)
            })
            .buffered(AUDIT_WRITES)
            .collect()
            .await;
        let mut problems = Vec::new();
        for (username, result) in results {
            if let Err(e) = result {
                tracing::error!(username = %username, error = %e, "allocation changed but not audited");
                problems.push(format!("{username}: the audit entry was not recorded: {e}"));
            }
        }
        problems
    }
}

/// Logs one change and appends its audit entry.
async fn record_change(ledger: &Ledger, audit: &AuditEntry) -> Result<Appended, LedgerError> {
    tracing::info!(
        caller = audit.caller.display(),
        request_id = %audit.request_id,
        source = %audit.source,
        username = %audit.username,
        planned = %audit.planned,
        matches_plan = audit.matches_plan,
        "credit allocation changed"
    );
    ledger.record_change(audit).await
}

fn all_pending(record: &Record) -> Vec<u32> {
    record.entries.iter().filter(|e| e.pending()).map(|e| e.index).collect()
}

fn meta_json(meta: &RecordMeta) -> serde_json::Value {
    serde_json::to_value(meta).unwrap_or(serde_json::Value::Null)
}

/// The record of a fresh plan: every change planned, nothing settled.
fn new_record(job: &Job<'_>, planned: Planned) -> Record {
    let mut record = preview_record(&job.who, job.ask, planned);
    for entry in &mut record.entries {
        if entry.change().is_some() {
            entry.state = Some(EntryState::Planned);
        }
    }
    record.meta.invocations = 1;
    record
}

/// The record of a dry run (nothing stored).
pub fn preview_record(who: &Who, ask: &Ask, planned: Planned) -> Record {
    let Planned { plan, warnings } = planned;
    // A plan is capped far below u32::MAX entries.
    let entry_count = u32::try_from(plan.entries.len()).unwrap_or(u32::MAX);
    Record {
        meta: RecordMeta {
            request_id: who.request_id.clone(),
            caller: who.caller.clone(),
            reason: who.reason.clone(),
            source: who.source.to_owned(),
            policy_top_up_to: match ask {
                Ask::CriticalPolicy { top_up_to, .. } => Some(*top_up_to),
                Ask::Explicit(_) => None,
            },
            planned_at: Utc::now(),
            org: plan.org,
            total_increase: plan.total_increase,
            total_decrease: plan.total_decrease,
            guardrails: plan.guardrails,
            warnings,
            record_problems: Vec::new(),
            unfinished: None,
            invocations: 0,
            entry_count,
        },
        entries: plan
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| JournalEntry {
                index: i as u32,
                username: e.username,
                request: e.request,
                plan: e.outcome,
                state: None,
            })
            .collect(),
    }
}
