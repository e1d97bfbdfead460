//! The automatic top-up (`AUTO_TOP_UP_TO`): critical members topped up so that the target is
//! available, through the one apply path allocate uses ([`crate::apply`]): the same lock,
//! fresh read, guardrails (the daily budget included), journal and audit.
//!
//! The scan decides from its own listing whether there is anything to do (and shows that plan
//! in a dry run); the real plan is made by the apply path from a fresh read under the lock.
//! Its request is keyed by the run (`Scope::of_run`), so a redelivered run resumes an
//! unfinished top-up instead of starting another, and never starts one its first delivery did
//! not.

use super::settings::TopUpSettings;
use super::summary::{AppliedAllocation, MemberNotTopped, NotApplied, TopUp};
use super::{JOB, ScanDeps, ScanError, ScanRequest};
use crate::apply::{Applied, ApplyError, Ask, EntryState, Job, Record, Who};
use crate::credits::amount::Credits;
use crate::credits::classify::Thresholds;
use crate::credits::member::{Balance, Member};
use crate::credits::plan::{self, OrgPosition, Plan, critical_top_up};
use crate::ledger::{Caller, Scope};

/// The longest a top-up may take (its lease on the run's request and the allocation lock end
/// with it): short enough that Lambda's retry of a killed scan finds the lease over and
/// finishes the top-up, long enough for reads, a few batches and the read-back.
pub const TOP_UP_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// The `source` of audit entries written by the automatic top-up, so auditors can tell
/// policy changes from people's requests.
pub const AUDIT_SOURCE: &str = "scan-credits auto top-up";

/// What the top-up will do, decided before the run is claimed (planning is pure).
#[derive(Debug)]
pub(super) enum TopUpDecision {
    Off,
    NotPossible(String),
    NothingToDo,
    Refused(String),
    Apply(Box<Plan>),
}

impl TopUpDecision {
    /// The summary entry for a decision that is not applied by this invocation.
    pub(super) fn into_summary(self, not_applied: NotApplied) -> TopUp {
        match self {
            TopUpDecision::Off => TopUp::Off,
            TopUpDecision::NotPossible(reason) => TopUp::NotPossible { reason },
            TopUpDecision::NothingToDo => TopUp::NothingToDo,
            TopUpDecision::Refused(reason) => TopUp::Refused { reason },
            TopUpDecision::Apply(plan) => TopUp::Planned { not_applied, plan },
        }
    }
}

/// Decides from the scan's own listing (no extra request) whether a top-up is needed.
pub(super) fn decide(
    settings: Option<&TopUpSettings>,
    budgeting: bool,
    members: &[Member],
    thresholds: &Thresholds,
    org_available: Credits,
    granted_last_24h: Option<Credits>,
) -> TopUpDecision {
    let Some(settings) = settings else {
        return TopUpDecision::Off;
    };
    if !budgeting {
        return TopUpDecision::NotPossible("credit budgeting is off: ArcGIS has no allocations to raise".to_owned());
    }
    let requests = critical_top_up(members, thresholds, settings.target);
    if requests.is_empty() {
        return TopUpDecision::NothingToDo;
    }
    if requests.len() > settings.applier.max_members {
        return TopUpDecision::Refused(format!(
            "{} critical members, above the limit of {} per allocation (MAX_MEMBERS_PER_REQUEST): nothing was \
             allocated; top members up explicitly, or raise the limit",
            requests.len(),
            settings.applier.max_members
        ));
    }
    let position = OrgPosition::from_members(org_available, members, granted_last_24h.unwrap_or_default());
    match plan::plan(&requests, members, &position, &settings.applier.guardrails) {
        Ok(p) if p.assignments().next().is_none() => TopUpDecision::NothingToDo,
        Ok(p) => TopUpDecision::Apply(Box::new(p)),
        Err(e) => TopUpDecision::Refused(format!("nothing was allocated: {e}")),
    }
}

/// What the top-up of a run asks: its target, and the run's thresholds.
fn ask(settings: &TopUpSettings, thresholds: Thresholds) -> Ask {
    Ask::CriticalPolicy {
        top_up_to: settings.target,
        thresholds,
    }
}

/// The top-up's request: keyed by the run, bound to what it asks (so a setting changed
/// between deliveries is refused rather than resumed with another meaning).
fn job<'a>(
    deps: &ScanDeps<'a>,
    req: &ScanRequest,
    settings: &TopUpSettings,
    thresholds: Thresholds,
    ask: &'a Ask,
) -> Job<'a> {
    let what = format!(
        "top_up_to={};critical={};warning={}",
        settings.target,
        thresholds.critical(),
        thresholds.warning()
    );
    Job {
        client: deps.client,
        ledger: deps.ledger,
        scope: Scope::of_run(JOB, &req.run_key),
        body_hash: crate::apply::body_hash(what.as_bytes()),
        ask,
        who: Who {
            caller: Caller::job(JOB),
            request_id: req.request_id.clone(),
            reason: Some(format!(
                "critical members in run {}: topped up so that {} credits are available",
                req.run_key, settings.target
            )),
            source: AUDIT_SOURCE,
        },
        deadline: req.deadline.capped(TOP_UP_TIME),
    }
}

/// Applies the top-up of a claimed run.
pub(super) async fn apply(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    settings: &TopUpSettings,
    thresholds: Thresholds,
) -> (TopUp, Vec<AppliedAllocation>, Vec<String>) {
    let ask = ask(settings, thresholds);
    let job = job(deps, req, settings, thresholds, &ask);
    summarize(settings.applier.apply(&job).await, false)
}

/// A redelivered run: finishes the first delivery's top-up if it was left unfinished.
/// `None` when there was nothing to finish (the first delivery finished it, or never started
/// one): the redelivery then changes nothing.
/// While the first delivery's top-up may still be running (its lease is live) this fails, so
/// Lambda retries the invocation later instead of taking it as done.
pub(super) async fn resume(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    settings: &TopUpSettings,
    thresholds: Thresholds,
) -> Result<Option<(TopUp, Vec<AppliedAllocation>, Vec<String>)>, ScanError> {
    let ask = ask(settings, thresholds);
    let job = job(deps, req, settings, thresholds, &ask);
    match settings.applier.resume(&job).await {
        Ok(None | Some(Applied::Replayed(_))) => Ok(None),
        Ok(Some(applied)) => Ok(Some(summarize(Ok(applied), true))),
        Err(ApplyError::InProgress { lease_until } | ApplyError::Busy { until: lease_until }) => {
            Err(ScanError::TopUpInProgress {
                run_key: req.run_key.clone(),
                until: lease_until,
            })
        }
        Err(e) => Ok(Some(summarize(Err(e), true))),
    }
}

fn summarize(result: Result<Applied, ApplyError>, resumed: bool) -> (TopUp, Vec<AppliedAllocation>, Vec<String>) {
    match result {
        Ok(Applied::Replayed(record) | Applied::Applied(record)) => {
            let (top_up, applied) = from_record(&record, resumed);
            (top_up, applied, record.meta.record_problems.clone())
        }
        Err(e) => {
            tracing::warn!(error = %e, "automatic top-up not done");
            (TopUp::Refused { reason: e.to_string() }, Vec::new(), Vec::new())
        }
    }
}

/// The summary entries for what the apply path did.
fn from_record(record: &Record, resumed: bool) -> (TopUp, Vec<AppliedAllocation>) {
    let mut applied = Vec::new();
    let mut not_applied = Vec::new();
    let mut requested = 0;
    for entry in &record.entries {
        let Some((before, _, _)) = entry.change() else { continue };
        requested += 1;
        let (status, detail) = match &entry.state {
            Some(EntryState::Applied { observed }) => {
                if let (
                    Balance::Limited {
                        assigned: assigned_before,
                        available: available_before,
                    },
                    Balance::Limited { assigned, available },
                ) = (before, observed)
                {
                    applied.push(AppliedAllocation {
                        username: entry.username.clone(),
                        assigned_before,
                        available_before,
                        assigned_after: *assigned,
                        available_after: *available,
                    });
                }
                continue;
            }
            Some(EntryState::NotAssigned) => ("not_assigned", "refused by ArcGIS (notAssignedUsers)".to_owned()),
            Some(EntryState::NotApplied { error, .. }) => ("failed", error.clone()),
            Some(EntryState::Conflict { .. }) => ("conflict", "changed elsewhere meanwhile: left as it is".to_owned()),
            Some(EntryState::Unknown { error }) => ("unknown", error.clone()),
            Some(EntryState::Planned) | None => (
                "pending",
                "not applied yet: the next delivery of this run finishes it".to_owned(),
            ),
        };
        not_applied.push(MemberNotTopped {
            username: entry.username.clone(),
            status,
            detail,
        });
    }
    (
        TopUp::Applied {
            requested,
            applied: applied.len(),
            not_applied,
            incomplete: record.meta.unfinished.is_some(),
            resumed,
        },
        applied,
    )
}
