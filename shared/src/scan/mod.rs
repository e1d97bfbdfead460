//! scan-credits' workflow: find the members (and the org) running out of credits, tell the
//! org's administrative contacts once per threshold crossing, and optionally top up critical
//! members. Everything here is testable without Lambda: [`scan`] takes the ArcGIS client, the
//! ledger and the settings as arguments and returns a [`ScanSummary`].
//!
//! # Steps, in order
//!
//! 1. **Read** ([`observe`]): no side effects, every read at once, including who runs out
//!    within `FORECAST_DAYS` at the recent rate (alerted like a crossing, under its own key). A dry run stops here and
//!    returns what it would send and allocate. A failure fails the invocation *before* the
//!    run is claimed, so a retry of the same event starts over: nothing was sent yet.
//! 2. **Claim** the run (`RUN#scan-credits`/run key, a conditional put), sent once every read
//!    succeeded, while what was read is assessed. A later delivery of the same run loses the
//!    claim: it sends nothing and records nothing, and only finishes a top-up the first
//!    delivery left unfinished ([`top_up`]).
//! 3. **Top up** critical members (with `AUTO_TOP_UP_TO`), through the apply path.
//! 4. **Stage** the alert-state changes (the levels about to be reported, the members back
//!    to ok): written, but counting for nothing until committed.
//! 5. **Notify** the admin contacts about the crossings ([`alerts`]).
//! 6. **Commit** the staged changes (only once the email went out), then, with
//!    `NOTIFY_MEMBERS`, tell each member crossing a level themselves ([`notices`]: its own
//!    stage, send, commit), deliver the alert on the other channels ([`channels`]: staged
//!    with step 4 in the ledger's outbox, each channel on its own), and keep the org's
//!    member count for the next run's listing.
//! 7. **Finish** the run record with its status and a compact [`summary::RunRecord`], and
//!    write the complete lists to S3 at the same time ([`lists`]; a later delivery of the
//!    run writes what it found over them).
//!
//! Why this order sends at most one email per run and per crossing is set out in
//! `docs/architecture.md` ("scan-credits: once per run, once per crossing").

#![warn(missing_docs)]

pub mod alerts;
pub mod channels;
pub mod email;
pub mod error;
pub mod lists;
pub mod notices;
mod observe;
pub mod settings;
pub mod summary;
pub mod top_up;

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::apply::Deadline;
use crate::arcgis::Client;
use crate::channels::{AlertMessage, Channels};
use crate::config::ReportLinks;
use crate::ledger::{Ledger, RunClaim, RunStatus};
use crate::monthly::store::ReportStore;
use crate::schedule::ScanInput;

pub use alerts::{Crossings, ORG_ALERT_KEY, ORG_FORECAST_KEY, forecast_key};
pub use error::ScanError;
pub use lists::{Lists, ScanResult};
pub use settings::{ScanSettings, TopUpSettings};
pub use summary::{
    AppliedAllocation, Budgeting, DuplicateOf, FlaggedMember, ForecastStatus, NotificationOutcome, OrgFloor,
    OrgRunningOut, RunRecord, RunningOut, ScanSummary, TopUp,
};

use alerts::{commit_alert_levels, notify_admins};
use email::{EmailContext, ListsPlace, compose_email};
use observe::Observed;
use summary::NotApplied;
use top_up::TopUpDecision;

/// The job name under which runs are claimed (`RUN#scan-credits` in the ledger).
pub const JOB: &str = "scan-credits";

/// The burn rate is measured over this many whole days before the scan day (today's usage is
/// incomplete and would lower the rate).
pub const BURN_RATE_WINDOW_DAYS: u32 = 30;

/// What [`scan`] works with, borrowed from the Lambda's cold-start state (or a test).
#[derive(Debug, Clone, Copy)]
pub struct ScanDeps<'a> {
    /// The ArcGIS client, signed in as an org administrator (or a role with the privileges).
    pub client: &'a Client,
    /// Run claims, alert state, allocation requests and the audit trail.
    pub ledger: &'a Ledger,
    /// Thresholds, org floor, channel and top-up.
    pub settings: &'a ScanSettings,
    /// The bucket of the complete lists, when configured: the email links to them.
    pub lists: Option<&'a ReportStore>,
    /// The other alert channels (SNS, Slack, Teams, webhook); [`Channels::none`] for the
    /// ArcGIS notification only.
    pub channels: &'a Channels,
}

/// One invocation's parameters, decoded from the schedule's event by the handler.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRequest {
    /// The business key shared by every delivery of one scheduled firing
    /// ([`crate::schedule::ScheduledRun::run_key`]).
    pub run_key: String,
    /// The Lambda request id, recorded in audit entries.
    pub request_id: String,
    /// The schedule's input (dry run, threshold overrides).
    pub input: ScanInput,
    /// When the run is for: the schedule time, else the invocation time. The forecast window
    /// ends at the start of this UTC day, so a retry measures the same days.
    pub as_of: DateTime<Utc>,
    /// The invocation's clock: claim time and audit timestamps.
    pub now: DateTime<Utc>,
    /// When the invocation must be done (the top-up works to it).
    pub deadline: Deadline,
}

/// Runs one scan; see the module documentation for the steps and the ordering guarantees.
pub async fn scan(deps: &ScanDeps<'_>, req: &ScanRequest) -> Result<ScanSummary, ScanError> {
    let clock = RunClock::start(deps.client);

    // 1. Read. Nothing may write until the run is claimed.
    let reads = observe::read(deps, req).await?;
    if req.input.dry_run {
        let observed = observe::assess(deps.settings, req, reads);
        return Ok(dry_run(deps, req, observed, &clock).await);
    }
    // 2. Claim: the single point after which side effects are allowed. It needs only the
    // reads to have succeeded, so it is sent while they are assessed.
    let (claim, observed) = tokio::join!(deps.ledger.claim_run(JOB, &req.run_key, req.now), async {
        observe::assess(deps.settings, req, reads)
    });
    let Observed {
        mut summary,
        alerts,
        notices,
        alert_state,
        top_up,
        thresholds,
        contacts,
        listing_hint,
        recorded_hint,
        org_home,
    } = observed;
    let email_context = linked_email_context(deps, req, &alerts, org_home).await;
    let claim = claim.map_err(|source| ScanError::Ledger {
        step: "claim the run",
        source,
    })?;
    if let RunClaim::AlreadyClaimed {
        status,
        claimed_at,
        summary: first,
    } = claim
    {
        tracing::warn!(run_key = %req.run_key, first_status = %status, "duplicate delivery: nothing sent");
        mark_duplicate(
            &mut summary,
            DuplicateOf {
                run_key: req.run_key.clone(),
                status,
                claimed_at,
                summary: first,
            },
        );
        // The first delivery owns the run; only a top-up it left unfinished is finished here.
        let resumed = match &deps.settings.top_up {
            Some(settings) => top_up::resume(deps, req, settings, thresholds).await?,
            None => None,
        };
        summary.top_up = match resumed {
            Some((top_up, applied, problems)) => {
                summary.allocations_applied = applied;
                summary.problems.extend(problems);
                top_up
            }
            None => top_up.into_summary(NotApplied::DuplicateDelivery),
        };
        clock.stop(&mut summary);
        // What this delivery found, over the first one's lists (the keys are the run's).
        summary.lists = publish_lists(deps, &mut summary, req).await;
        return Ok(summary);
    }

    // 3. Top up (before the email, so the email can say what was done).
    let mut record_problems = Vec::new();
    summary.top_up = match (top_up, &deps.settings.top_up) {
        (TopUpDecision::Apply(_), Some(settings)) => {
            let (top_up, applied, audit_problems) = top_up::apply(deps, req, settings, thresholds).await;
            summary.allocations_applied = applied;
            record_problems.extend(audit_problems);
            top_up
        }
        (other, _) => other.into_summary(NotApplied::DryRun),
    };
    if let TopUp::Applied { not_applied, .. } = &summary.top_up
        && !not_applied.is_empty()
    {
        summary
            .problems
            .push(format!("automatic top-up: {} member(s) not changed", not_applied.len()));
    }

    // 4. Stage what the run will record: the crossings it reports (when there is someone to
    // tell: the admin contacts or another channel) and the members back to ok, and what each
    // other channel will owe. Staged levels and messages count for nothing until committed.
    let has_channels = deps.channels.any();
    let sending = !alerts.report.is_empty() && (!contacts.is_empty() || has_channels);
    let staged = alert_state.stage(&alerts::changes(&alerts, sending), &req.run_key);
    let outbox = if sending && has_channels {
        let email = compose_email(&summary, &email_context);
        let link = email_context.lists.as_ref().and_then(|l| l.link.clone());
        let message = AlertMessage::new(
            &summary,
            &alerts,
            email_context.lang,
            req.as_of,
            &email.subject,
            &email.message,
            link,
        );
        channels::entries(deps, &message, req.now).unwrap_or_else(|problem| {
            tracing::error!(run_key = %req.run_key, problem = %problem, "alert channels skipped");
            summary.problems.push(problem);
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let staged_all = match deps.ledger.stage_alerts(&staged).await {
        Ok(()) => channels::stage(deps, &outbox).await,
        Err(e) => Err(e),
    };
    let notified = match staged_all {
        Err(e) => Err(format!("the alert state could not be staged, so nothing was sent: {e}")),
        // 5. Notify about the crossings.
        Ok(()) => notify_admins(deps, &email_context, &mut summary, &alerts, &contacts, has_channels)
            .await
            .map_err(|reason| format!("the alert email failed: {reason}")),
    };
    // On failure: record the run as failed, commit nothing, fail visibly.
    if let Err(reason) = notified {
        summary.problems.push(reason.clone());
        clock.stop(&mut summary);
        if let Err(e) = deps
            .ledger
            .finish_run(JOB, &req.run_key, RunStatus::Failed, &summary.record_json())
            .await
        {
            tracing::error!(run_key = %req.run_key, error = %e, "could not record the failed run");
            summary
                .problems
                .push(format!("the run record could not be finished: {e}"));
        }
        tracing::error!(run_key = %req.run_key, reason = %reason, "nothing sent; alert state unchanged");
        return Err(ScanError::NotificationFailed {
            reason,
            summary: Box::new(summary),
        });
    }

    // 6. Commit what was reported (now that it was sent) and the members back to ok.
    record_problems.extend(commit_alert_levels(deps, req, &staged, &alerts, &mut summary).await);
    // 6b. The members' own notices, each staged, sent and committed after the admin alert's
    // commit, so a notice failure never sends the admin email again.
    let mut notice_failure = None;
    if record_problems.is_empty() {
        let lang = email_context.lang;
        if let Err(reason) = notices::notify_members(deps, req, &notices, lang, &contacts, &mut summary).await {
            tracing::error!(run_key = %req.run_key, reason = %reason, "member notices incomplete");
            summary.problems.push(reason.clone());
            notice_failure = Some(reason);
        }
    } else if !notices.report.is_empty() {
        summary
            .problems
            .push("member notices not sent: the admin alert's state was not recorded; the next run sends them".into());
    }
    // 6c. The other channels: what earlier runs' failures left owed, then this run's message.
    let mut channel_problems = Vec::new();
    if record_problems.is_empty() {
        channel_problems = channels::deliver(deps, req, alert_state.owed(), &outbox, &mut summary).await;
        summary.problems.extend(channel_problems.iter().cloned());
    } else if !outbox.is_empty() {
        summary
            .problems
            .push("alert channels not sent: the alert state was not recorded; the next run sends them".into());
    }
    // And what the listing found (the org's size, its parts'), so the next run requests
    // every page at once; an org whose sizes did not change costs no write. Only a speed-up
    // rides on it: failing to record it is reported without failing the run.
    if let Some(hint) = &listing_hint
        && listing_hint != recorded_hint
        && let Err(e) = deps.ledger.set_listing_hint(hint, &req.run_key).await
    {
        tracing::warn!(error = %e, "the listing's sizes were not recorded");
        summary.problems.push(format!(
            "the member count was not recorded, so the next scan lists a round trip or two slower: {e}"
        ));
    }

    // 7. Finish the run record.
    summary.problems.extend(record_problems.iter().cloned());
    clock.stop(&mut summary);
    let status = if record_problems.is_empty() && notice_failure.is_none() && channel_problems.is_empty() {
        RunStatus::Done
    } else {
        RunStatus::Failed
    };
    // The complete lists go out while the record is written: the email already links to
    // them, and the record does not depend on them.
    let record = summary.record_json();
    let (finished, lists) = tokio::join!(
        deps.ledger.finish_run(JOB, &req.run_key, status, &record),
        publish_lists(deps, &mut summary, req)
    );
    summary.lists = lists;
    if let Err(e) = finished {
        let problem = format!("the run record could not be finished: {e}");
        summary.problems.push(problem.clone());
        record_problems.push(problem);
    }
    tracing::info!(
        run_key = %summary.run_key,
        critical = summary.critical.len(),
        warning = summary.warning.len(),
        newly_reported = summary.newly_reported,
        notified = summary.recipients_notified.len(),
        allocations = summary.allocations_applied.len(),
        problems = summary.problems.len(),
        "scan finished"
    );
    match notice_failure {
        _ if !record_problems.is_empty() => Err(ScanError::RecordsIncomplete {
            problems: record_problems,
            summary: Box::new(summary),
        }),
        Some(reason) => Err(ScanError::MemberNoticesFailed {
            reason,
            summary: Box::new(summary),
        }),
        None if !channel_problems.is_empty() => Err(ScanError::ChannelsFailed {
            reason: channel_problems.join("; "),
            summary: Box::new(summary),
        }),
        None => Ok(summary),
    }
}

/// A dry run's summary: what the run would send and allocate, nothing sent, allocated or
/// recorded.
async fn dry_run(deps: &ScanDeps<'_>, req: &ScanRequest, observed: Observed, clock: &RunClock<'_>) -> ScanSummary {
    let Observed {
        mut summary,
        alerts,
        top_up,
        contacts,
        org_home,
        ..
    } = observed;
    let email_context = linked_email_context(deps, req, &alerts, org_home).await;
    let email = (!alerts.report.is_empty()).then(|| compose_email(&summary, &email_context));
    summary.notification = NotificationOutcome::DryRun {
        would_send: email.is_some() && !contacts.is_empty(),
        recipients: contacts,
        subject: email.as_ref().map(|e| e.subject.clone()),
        message: email.map(|e| e.message),
    };
    summary.top_up = top_up.into_summary(NotApplied::DryRun);
    summary.lists = Lists::DryRun;
    clock.stop(&mut summary);
    tracing::info!(run_key = %summary.run_key, "dry run: nothing sent, allocated or recorded");
    summary
}

/// [`email_context`] with a presigned link to the complete lists, when links are presigned.
async fn linked_email_context(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    alerts: &Crossings,
    org_home: Option<String>,
) -> EmailContext {
    let mut context = email_context(deps.settings, req, alerts, org_home);
    if let (Some(place), Some(store), ReportLinks::Presigned(lifetime)) =
        (context.lists.as_mut(), deps.lists, deps.settings.links)
    {
        // Signed before the lists are written: a link is a signature, not a read.
        match store.link(&place.csv_key, lifetime).await {
            Ok(link) => place.link = Some(link),
            Err(e) => {
                tracing::warn!(error = %e, "no link to the complete lists could be made; the email names the S3 key")
            }
        }
    }
    context
}

/// Writes the run's complete lists when a bucket is configured (see [`lists::publish`]).
async fn publish_lists(deps: &ScanDeps<'_>, summary: &mut ScanSummary, req: &ScanRequest) -> Lists {
    match deps.lists {
        Some(store) => lists::publish(store, summary, req.as_of).await,
        None => Lists::NotConfigured,
    }
}

/// What the alert email says besides the summary: the run's language (its Input's, else the
/// configured one), the org's home for member links, where the complete lists go (a dry run
/// writes none), and the members back to ok.
fn email_context(
    settings: &ScanSettings,
    req: &ScanRequest,
    alerts: &Crossings,
    org_home: Option<String>,
) -> EmailContext {
    let lists = settings
        .lists_bucket
        .as_ref()
        .filter(|_| !req.input.dry_run)
        .map(|bucket| ListsPlace {
            bucket: bucket.clone(),
            csv_key: lists::ListKeys::for_run(req.as_of, &req.run_key).csv,
            link: None,
        });
    EmailContext {
        channel: settings.notify_channel,
        lang: req.input.language.unwrap_or(settings.language),
        date: req.as_of.date_naive(),
        org_home,
        lists,
        back_to_ok: alerts
            .clear
            .iter()
            .filter(|k| k.as_str() != ORG_ALERT_KEY && !alerts::is_forecast_key(k))
            .count(),
        top_up_target: settings.top_up.as_ref().map(|t| t.target),
    }
}

/// Measures a run: wall time and the ArcGIS requests it made (the client may be shared
/// across invocations, so its counter is read as a difference).
struct RunClock<'a> {
    client: &'a Client,
    started: Instant,
    requests_before: u64,
}

impl<'a> RunClock<'a> {
    fn start(client: &'a Client) -> Self {
        RunClock {
            client,
            started: Instant::now(),
            requests_before: client.requests_made(),
        }
    }

    fn stop(&self, summary: &mut ScanSummary) {
        summary.arcgis_requests = self.client.requests_made().saturating_sub(self.requests_before);
        summary.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    }
}

/// A duplicate delivery reports nothing as newly reported: the first attempt owns the run.
fn mark_duplicate(summary: &mut ScanSummary, first: DuplicateOf) {
    summary.notes.push(format!(
        "duplicate delivery of run {}: the first attempt (claimed {}, status {}) owns it; \
         nothing was sent, allocated or recorded",
        first.run_key,
        first.claimed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        first.status
    ));
    summary.duplicate_of = Some(first);
    summary.notification = NotificationOutcome::Duplicate;
    summary.newly_reported = 0;
    for m in summary
        .critical
        .iter_mut()
        .chain(summary.warning.iter_mut())
        .chain(summary.running_out.members.iter_mut())
    {
        m.newly_reported = false;
    }
    summary.running_out.newly_reported = 0;
    summary.member_notices.due = 0;
    if let Some(org) = &mut summary.running_out.org {
        org.newly_reported = false;
    }
    if let OrgFloor::Below { newly_reported, .. } = &mut summary.org_floor {
        *newly_reported = false;
    }
}
