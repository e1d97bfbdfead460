//! scan-credits' workflow: find the members (and the org) running out of credits, tell the
//! org's administrative contacts once per threshold crossing, and optionally top up critical
//! members. Everything here is testable without Lambda: [`scan`] takes the ArcGIS client, the
//! ledger and the configuration as arguments and returns a [`ScanSummary`].
//!
//! This replaces steps 2, 4 and 5 of the notebook (`original-workflow.md`): it reads the org's
//! credits fresh, lists every member once (no 1000-member cap, no fuzzy search), classifies
//! them with [`crate::credits::classify`] (unlimited, disabled, viewers and zero allocations
//! are skipped, not flagged), and emails the admin contacts in batches of 25 without blind
//! retries. With budgeting off it reports the org's remaining credits, as the notebook did.
//!
//! # Steps, in order
//!
//! 1. **Read** (no side effects): thresholds, `portals/self`, the privilege check, the member
//!    listing (abandoned with budgeting off: every member reads as unlimited then), one usage
//!    call for the forecasts, the org floor, the alert state, the top-up plan. The reads run
//!    concurrently: after the sign-in, `portals/self`, the usage, the alert state and the
//!    listing all start at once, and the listing requests every page the last run's member
//!    count implies without waiting for the first page's total. A dry run stops
//!    here and returns what it would send and allocate (it reads the alert state, never
//!    writes it, and does not claim the run). A failure while reading fails the invocation
//!    *before* the run is claimed, so Lambda's retry of the same event does the whole run
//!    again: nothing was sent yet.
//! 2. **Claim** the run: [`Ledger::claim_run`]`("scan-credits", run_key)`, a conditional put.
//!    If another invocation already claimed it, this one is a duplicate delivery: it sends
//!    nothing, allocates nothing, writes nothing, and says so in [`ScanSummary::duplicate_of`].
//! 3. **Top up** critical members (only with `AUTO_TOP_UP_TO`), each change audited.
//! 4. **Notify** the admin contacts about the *crossings*: members (and the org floor) whose
//!    level now differs from the level last reported, as kept by [`Ledger::alert_levels`].
//! 5. **Record** the reported levels, delete the records of members back to ok, and keep the
//!    org's member count for the next run's listing.
//! 6. **Finish** the run record with its status and a compact summary.
//!
//! # Why this order sends at most one email per run and per crossing
//!
//! - *Per run*: every side effect (top-up, email, alert-state write) comes after the claim,
//!   and the claim is a conditional write that exactly one invocation wins. A redelivered
//!   schedule, a Lambda retry after an error or a timeout, or a manual re-invoke with the same
//!   run key all lose the claim and send nothing, whatever state the first attempt ended in
//!   (`claimed` after a crash, `failed`, `done`). The run key is the schedule time, so retries
//!   of one firing share it. The client never blindly retries `createNotification` either,
//!   so one run makes at most one delivery attempt per batch of 25 recipients.
//! - *Per crossing*: a crossing is reported when the current level differs from the recorded
//!   one, and the recorded level is written only *after* the email went out. So the next run
//!   sees the crossing as already reported and stays silent; a member back to ok loses their
//!   record, so a later crossing is new again.
//! - *When sending fails*, the alert state is left untouched and the run is finished as
//!   `failed` (the function returns an error, so the failure is visible): the next scheduled
//!   run, with a new run key, finds the same crossings unrecorded and sends them. A failed
//!   batch may still have been delivered (a timeout after ArcGIS accepted it), and with more
//!   than 25 contacts the batches that succeeded were delivered; those are the cases where a
//!   crossing can be emailed again, by a *later* run, and never by a retry of the same run.
//!   Likewise, if the alert-state write itself fails after a successful email, the run
//!   finishes `failed` with [`ScanError::RecordsIncomplete`] and the next run reports those
//!   crossings again. The alternative (record first, send after) would lose alerts instead of
//!   repeating them, which is worse for a watchdog.
//! - A manual invocation without a schedule time is keyed by its Lambda request id, which
//!   Lambda's own retries keep; invoking it again by hand is a new run.
//!
//! A member whose level changes because of a top-up (critical → warning when 200 credits are
//! less than half of the raised allocation) is a crossing like any other and is reported once,
//! marked "(was critical)". With budgeting off, members are not classified at all, so their
//! alert records are left as they are (unknown, not ok).
//!
//! # The org floor in the alert state
//!
//! The org's own crossing of `ORG_MIN_CREDITS` is kept in the same alert state, under the
//! reserved key [`ORG_ALERT_KEY`] (`#org-floor`). ArcGIS usernames cannot contain `#`, so the
//! key can never collide with a member. Below the floor is recorded as `critical`; back at or
//! above the floor (or with the floor unset) the record is deleted.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use chrono::{DateTime, NaiveTime, SecondsFormat, Utc};
use futures_util::future::{Aborted, abortable};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};

use crate::arcgis::{
    self, Capability, Client, CreditAssignment, Notification, NotifyChannel, OrgProperties, UsagePeriod, UsageQuery,
};
use crate::config::Config;
use crate::credits::classify::{ClassifiedOrg, Level, Limit, RatedMember, SkipReason, ThresholdError, Thresholds};
use crate::credits::forecast::{self, Runway};
use crate::credits::member::{Balance, Credits, Member};
use crate::credits::plan::{self, Guardrails, Outcome, Plan, PlanError, critical_top_up};
use crate::credits::usage::{TimeWindow, UsageSeries};
use crate::ledger::{AuditEntry, Ledger, LedgerError, RunClaim, RunStatus};
use crate::schedule::ScanInput;
use crate::telemetry::{Metric, Unit};

/// The job name under which runs are claimed (`RUN#scan-credits` in the ledger).
pub const JOB: &str = "scan-credits";

/// The alert-state key for the org floor. `#` is not allowed in ArcGIS usernames, so no
/// member can ever have this key.
pub const ORG_ALERT_KEY: &str = "#org-floor";

/// The `source` of audit entries written by the automatic top-up, so auditors can tell
/// policy changes from people's requests.
pub const AUDIT_SOURCE: &str = "scan-credits auto top-up";

/// The `caller` of audit entries written by the automatic top-up.
pub const AUDIT_CALLER: &str = "scan-credits";

/// The burn rate is measured over this many whole days before the scan day (today's usage is
/// incomplete and would lower the rate).
pub const FORECAST_DAYS: u32 = 30;

/// Members listed per level in the email. A first run in a large org can flag thousands; the
/// email stays readable and the complete list is in the summary.
pub const EMAIL_MEMBERS_PER_LEVEL: usize = 200;

/// Members listed per level in the run record kept in the ledger (a DynamoDB item is at most
/// 400 KB); the counts are always complete.
pub const RECORD_MEMBERS_PER_LIST: usize = 50;

/// Alert-state writes in flight at once: a first run may record thousands of members, and
/// one DynamoDB write at a time would take minutes.
const LEDGER_WRITE_CONCURRENCY: usize = 16;

/// What [`scan`] works with, borrowed from the Lambda's cold-start state (or a test).
#[derive(Debug, Clone, Copy)]
pub struct ScanDeps<'a> {
    /// The ArcGIS client, signed in as an org administrator (or a role with the privileges).
    pub client: &'a Client,
    /// Run claims, alert state and the audit trail.
    pub ledger: &'a Ledger,
    /// Thresholds, org floor, channel, top-up and guardrail settings.
    pub config: &'a Config,
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
}

/// Why a scan failed. Each message names the step and what to do; [`ScanError::kind`] is the
/// Lambda `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The thresholds (from the Input or the environment) are unusable; nothing was read.
    #[error("invalid thresholds from {origin}: {source}")]
    InvalidThresholds {
        /// `the schedule Input` or `CRITICAL_PERCENT/WARNING_PERCENT`.
        origin: &'static str,
        /// What is wrong.
        #[source]
        source: ThresholdError,
    },
    /// A setting the scan needs is unusable (e.g. a guardrail that is not a finite number).
    #[error("invalid {variable}: {reason}")]
    InvalidConfig {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// ArcGIS could not be read (or refused the account) before anything was sent; the run
    /// was not claimed, so a retry of the same event starts over.
    #[error("scan-credits could not {step}: {source}")]
    Arcgis {
        /// The step that failed.
        step: &'static str,
        /// The client's error (it names the operation and what to do).
        #[source]
        source: arcgis::Error,
    },
    /// The ledger could not be read or the run could not be claimed; nothing was sent.
    #[error("scan-credits could not {step}: {source}")]
    Ledger {
        /// The step that failed.
        step: &'static str,
        /// The ledger's error (it names the table and the IAM action).
        #[source]
        source: LedgerError,
    },
    /// The alert email could not be sent. The alert state was left unchanged, so the next
    /// scheduled run sends it; this run is recorded as failed and its retries send nothing.
    #[error(
        "run {}: the alert email could not be sent: {reason}. The alert state is unchanged, so \
        the next scheduled run sends these alerts again; this run is recorded as failed and \
        retries of it send nothing",
        summary.run_key
    )]
    NotificationFailed {
        /// Why, per failed batch.
        reason: String,
        /// Everything the run found and did.
        summary: Box<ScanSummary>,
    },
    /// The side effects happened but recording them (alert state, audit trail, run record)
    /// failed: the next run may repeat an alert, and an auditor should look.
    #[error(
        "run {}: the alerts/top-ups happened but recording them failed: {}. The next run may \
        repeat these alerts; check the ledger table",
        summary.run_key, problems.join("; ")
    )]
    RecordsIncomplete {
        /// Each failed write.
        problems: Vec<String>,
        /// Everything the run found and did.
        summary: Box<ScanSummary>,
    },
}

impl ScanError {
    /// A stable category for Lambda's `errorType` (and alarms on it).
    pub fn kind(&self) -> &'static str {
        match self {
            ScanError::InvalidThresholds { origin, .. } if *origin == INPUT_ORIGIN => "InvalidInput",
            ScanError::InvalidThresholds { .. } | ScanError::InvalidConfig { .. } => "InvalidConfig",
            ScanError::Arcgis { source, .. } => match source.root() {
                arcgis::Error::MissingPrivileges { .. } | arcgis::Error::NotAdminView { .. } => "MissingPrivilege",
                arcgis::Error::SignIn { .. } => "SignInRefused",
                _ => "ArcgisUnavailable",
            },
            ScanError::Ledger { .. } => "LedgerUnavailable",
            ScanError::NotificationFailed { .. } => "NotificationFailed",
            ScanError::RecordsIncomplete { .. } => "RecordsIncomplete",
        }
    }

    /// The summary of a run that got as far as side effects, so metrics and logs still show
    /// what it found.
    pub fn summary(&self) -> Option<&ScanSummary> {
        match self {
            ScanError::NotificationFailed { summary, .. } | ScanError::RecordsIncomplete { summary, .. } => {
                Some(summary)
            }
            _ => None,
        }
    }

    /// Whether ArcGIS refused the credentials, so the caller can drop a cached secret and
    /// pick up a rotated one on the next invocation.
    pub fn is_sign_in_refused(&self) -> bool {
        matches!(self, ScanError::Arcgis { source, .. } if matches!(source.root(), arcgis::Error::SignIn { .. }))
    }
}

const INPUT_ORIGIN: &str = "the schedule Input";

/// Whether the org budgets credits per member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budgeting {
    /// Members have allocations: they are classified.
    Enabled,
    /// No allocations: only the org's credits are checked.
    Disabled,
}

/// The thresholds a run used, after Input overrides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdsUsed {
    /// Critical below this share of the allocation, in percent.
    pub critical_percent: f64,
    /// Warning below this share, in percent.
    pub warning_percent: f64,
}

/// A member below a threshold, with the figures an administrator acts on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlaggedMember {
    /// Exact username.
    pub username: String,
    /// Display name, for the email only (kept out of the JSON summary and logs).
    #[serde(skip)]
    pub full_name: Option<String>,
    /// The allocation.
    pub assigned: f64,
    /// What is left; negative when overspent.
    pub available: f64,
    /// `assigned − available`.
    pub consumed: f64,
    /// `available / assigned × 100`; `None` when nothing is assigned.
    pub percent_left: Option<f64>,
    /// Mean credits per day over the forecast window; `None` when forecasts are unavailable.
    pub credits_per_day: Option<f64>,
    /// Days until `available` reaches 0 at that rate; `None` when unknown or not running out.
    pub days_until_empty: Option<f64>,
    /// The level recorded as last reported, if any.
    pub previously_reported: Option<Level>,
    /// True when this run reports the member (a new or changed level).
    pub newly_reported: bool,
}

/// Members left out of the ranking, grouped by reason.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Skipped {
    /// How many in all.
    pub total: usize,
    /// Per reason: the count and the usernames.
    pub by_reason: BTreeMap<SkipReason, SkippedGroup>,
}

/// The members skipped for one reason.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SkippedGroup {
    /// How many.
    pub count: usize,
    /// Who, sorted.
    pub usernames: Vec<String>,
}

/// Whether days-until-empty could be computed, and the org's own runway.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ForecastStatus {
    /// Usage history was read.
    Available {
        /// The window the burn rates were measured over, in days.
        window_days: f64,
        /// The org's mean credits per day over the window.
        org_credits_per_day: f64,
        /// Days until the org's credits run out at that rate; `None` when not running out.
        org_days_until_empty: Option<f64>,
    },
    /// The usage call failed: the scan went on without forecasts.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// The org floor (`ORG_MIN_CREDITS`) and where the org stands against it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OrgFloor {
    /// `ORG_MIN_CREDITS` is not set.
    NotConfigured,
    /// The org has at least the floor.
    Ok {
        /// The floor.
        min_credits: f64,
    },
    /// The org has fewer credits than the floor.
    Below {
        /// The floor.
        min_credits: f64,
        /// True when this run reports it (first run below, or after recovering).
        newly_reported: bool,
    },
}

/// What happened to the alert email.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NotificationOutcome {
    /// Sent to the admin contacts.
    Sent {
        /// Subject line.
        subject: String,
        /// `email` or `builtin`.
        channel: String,
        /// Members ArcGIS accepted it for.
        recipients: Vec<String>,
    },
    /// No crossing: nothing to say.
    NothingNew,
    /// Crossings, but the org has no administrative contacts: nobody to tell (and the
    /// crossings stay unrecorded, so they are sent once contacts exist).
    NoContacts,
    /// Dry run: what would have been sent.
    DryRun {
        /// Whether an email would have gone out.
        would_send: bool,
        /// Who would have received it.
        recipients: Vec<String>,
        /// The subject, when an email would go out.
        subject: Option<String>,
        /// The body, when an email would go out.
        message: Option<String>,
    },
    /// A duplicate delivery of a claimed run: nothing sent.
    Duplicate,
    /// Sending failed (some or all batches).
    Failed {
        /// Subject line.
        subject: String,
        /// Why, per failed batch.
        reason: String,
        /// Recipients whose batch succeeded anyway.
        delivered_to: Vec<String>,
        /// Recipients whose batch failed (it may still have been delivered after a timeout).
        not_delivered: Vec<String>,
    },
}

/// What the automatic top-up did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TopUp {
    /// `AUTO_TOP_UP_TO` is not set.
    Off,
    /// Configured, but not possible in this org now.
    NotPossible {
        /// Why.
        reason: String,
    },
    /// No critical member needs a change.
    NothingToDo,
    /// Planned but deliberately not applied (dry run, duplicate delivery).
    Planned {
        /// Why it was not applied.
        reason: String,
        /// The plan.
        plan: Box<Plan>,
    },
    /// Applied through `assignUserCredits`.
    Applied {
        /// Changes the plan asked for.
        requested: usize,
        /// Changes ArcGIS applied (listed in [`ScanSummary::allocations_applied`]).
        applied: usize,
        /// Members not changed, with why.
        not_applied: Vec<String>,
    },
    /// The plan broke the guardrails (or could not be made): nothing was allocated.
    Refused {
        /// The planner's message.
        reason: String,
        /// The planner's error, structured.
        error: PlanError,
    },
}

/// One allocation the top-up changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedAllocation {
    /// Exact username.
    pub username: String,
    /// The allocation before.
    pub assigned_before: f64,
    /// Available before.
    pub available_before: f64,
    /// The allocation set.
    pub assigned_after: f64,
    /// Expected available afterwards.
    pub available_after: Option<f64>,
}

/// The first attempt of a run this invocation is a duplicate of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateOf {
    /// The run key.
    pub run_key: String,
    /// What the first attempt recorded (`claimed` while running or after a crash).
    pub status: RunStatus,
    /// When it claimed the run.
    pub claimed_at: DateTime<Utc>,
    /// Its recorded (compact) summary, once finished.
    pub summary: Option<Value>,
}

/// Everything one scan found and did; the function's JSON result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanSummary {
    /// The run's business key.
    pub run_key: String,
    /// Nothing sent, allocated or recorded.
    pub dry_run: bool,
    /// Set when this invocation was a repeat delivery of an already claimed run.
    pub duplicate_of: Option<DuplicateOf>,
    /// The org's credits, read fresh.
    pub org_available_credits: f64,
    /// Whether members have allocations.
    pub budgeting: Budgeting,
    /// The thresholds used.
    pub thresholds: ThresholdsUsed,
    /// Members listed (0 with budgeting off: there is nothing to classify).
    pub members_scanned: usize,
    /// Critical members, most urgent first.
    pub critical: Vec<FlaggedMember>,
    /// Warning members, most urgent first.
    pub warning: Vec<FlaggedMember>,
    /// Members not rated.
    pub skipped: Skipped,
    /// Per-member listing problems (the scan may have missed these members).
    pub member_errors: Vec<String>,
    /// Days-until-empty availability.
    pub forecast: ForecastStatus,
    /// The org floor.
    pub org_floor: OrgFloor,
    /// Members reported by this run (new or changed level; in a dry run, those that would
    /// be); the org floor is in `org_floor`.
    pub newly_reported: usize,
    /// Members still flagged at the level already reported: not repeated.
    pub already_reported: usize,
    /// Alert records deleted (members back to ok, gone, or the org back above its floor).
    pub cleared: usize,
    /// Who the alert email reached.
    pub recipients_notified: Vec<String>,
    /// The email's fate.
    pub notification: NotificationOutcome,
    /// The automatic top-up.
    pub top_up: TopUp,
    /// Allocations changed by the top-up.
    pub allocations_applied: Vec<AppliedAllocation>,
    /// Informational remarks (budgeting off…).
    pub notes: Vec<String>,
    /// Things an administrator should look at (no contacts, forecasts unavailable, failures).
    pub problems: Vec<String>,
    /// HTTP requests this run made to ArcGIS (sign-in and retries included).
    pub arcgis_requests: u64,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// Of which reading ArcGIS (sign-in, org, member listing, usage), the part that scales
    /// with the org: compare it with the paging floor. The rest is the ledger and the email.
    pub arcgis_read_ms: u64,
}

impl ScanSummary {
    /// The CloudWatch metrics of this run (see [`crate::telemetry`]).
    pub fn metrics(&self) -> Vec<Metric> {
        vec![
            Metric::new("OrgAvailableCredits", Unit::None, self.org_available_credits),
            Metric::new("MembersCritical", Unit::Count, self.critical.len() as f64),
            Metric::new("MembersWarning", Unit::Count, self.warning.len() as f64),
            Metric::new("MembersScanned", Unit::Count, self.members_scanned as f64),
            Metric::new("ArcgisRequests", Unit::Count, self.arcgis_requests as f64),
            Metric::new("DurationMs", Unit::Milliseconds, self.duration_ms as f64),
            Metric::new("ArcgisReadMs", Unit::Milliseconds, self.arcgis_read_ms as f64),
        ]
    }

    /// The summary as kept in the run record: member lists cut to
    /// [`RECORD_MEMBERS_PER_LIST`] (with their full counts), so the item stays far below
    /// DynamoDB's 400 KB limit whatever the org's size.
    pub fn record(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or_else(
            |e| json!({"run_key": self.run_key, "problems": [format!("summary not serializable: {e}")]}),
        );
        if let Value::Object(map) = &mut value {
            for key in ["critical", "warning", "recipients_notified"] {
                truncate_list(map, key);
            }
            if let Some(Value::Object(by_reason)) = map.get_mut("skipped").and_then(|s| s.get_mut("by_reason")) {
                for group in by_reason.values_mut() {
                    if let Value::Object(g) = group {
                        truncate_list(g, "usernames");
                    }
                }
            }
            if let Some(Value::Object(top_up)) = map.get_mut("top_up") {
                top_up.remove("plan");
            }
            if let Some(Value::Object(n)) = map.get_mut("notification") {
                n.remove("message");
            }
        }
        value
    }
}

fn truncate_list(map: &mut serde_json::Map<String, Value>, key: &str) {
    if let Some(Value::Array(items)) = map.get_mut(key)
        && items.len() > RECORD_MEMBERS_PER_LIST
    {
        let total = items.len();
        items.truncate(RECORD_MEMBERS_PER_LIST);
        map.insert(format!("{key}_total"), json!(total));
    }
}

/// Which alert records change: the pure core of "one alert per crossing".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertPlan {
    /// Keys whose level differs from the recorded one: report, then record.
    pub report: Vec<(String, Level)>,
    /// Keys flagged at the level already recorded: stay silent.
    pub already_reported: Vec<String>,
    /// Recorded keys now known to be ok (or gone): delete, so a later crossing alerts again.
    pub clear: Vec<String>,
}

impl AlertPlan {
    /// Compares the `current` flagged levels (warning/critical only) with the `recorded` ones.
    /// A recorded key that is not flagged now is cleared only when `known_ok(key)`: a member
    /// missing from an incomplete listing, or any member while budgeting is off, is unknown,
    /// and their record stays.
    pub fn new(
        current: &BTreeMap<String, Level>,
        recorded: &HashMap<String, Level>,
        known_ok: impl Fn(&str) -> bool,
    ) -> Self {
        let mut plan = AlertPlan::default();
        for (key, level) in current {
            if recorded.get(key) == Some(level) {
                plan.already_reported.push(key.clone());
            } else {
                plan.report.push((key.clone(), *level));
            }
        }
        let mut clear: Vec<String> = recorded
            .keys()
            .filter(|k| !current.contains_key(k.as_str()) && known_ok(k))
            .cloned()
            .collect();
        clear.sort();
        plan.clear = clear;
        plan
    }

    /// Whether `key` is reported by this run.
    pub fn reports(&self, key: &str) -> bool {
        self.report.iter().any(|(k, _)| k == key)
    }
}

/// Runs one scan; see the module documentation for the steps and the ordering guarantees.
pub async fn scan(deps: &ScanDeps<'_>, req: &ScanRequest) -> Result<ScanSummary, ScanError> {
    let clock = RunClock::start(deps.client);

    // 1. Read. Nothing may write until the run is claimed.
    let Observed {
        mut summary,
        alerts,
        top_up,
        contacts,
        org_size,
    } = observe(deps, req).await?;

    if req.input.dry_run {
        let email = (!alerts.report.is_empty()).then(|| compose_email(&summary, deps.config.notify_channel, req));
        summary.notification = NotificationOutcome::DryRun {
            would_send: email.is_some() && !contacts.is_empty(),
            recipients: contacts,
            subject: email.as_ref().map(|e| e.subject.clone()),
            message: email.map(|e| e.message),
        };
        summary.top_up = top_up.into_summary("dry run: nothing is allocated");
        clock.stop(&mut summary);
        tracing::info!(run_key = %summary.run_key, "dry run: nothing sent, allocated or recorded");
        return Ok(summary);
    }

    // 2. Claim: the single point after which side effects are allowed.
    let claim = deps
        .ledger
        .claim_run(JOB, &req.run_key, req.now)
        .await
        .map_err(|source| ScanError::Ledger {
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
        summary.top_up = top_up.into_summary("duplicate delivery: the first attempt owns the run");
        clock.stop(&mut summary);
        return Ok(summary);
    }

    // 3. Top up (before the email, so the email can say what was done).
    let mut record_problems = Vec::new();
    summary.top_up = match top_up {
        TopUpDecision::Apply { plan, target } => {
            let (top_up, applied, audit_problems) = apply_top_up(deps, req, &plan, target).await;
            summary.allocations_applied = applied;
            record_problems.extend(audit_problems);
            top_up
        }
        other => other.into_summary("not applied"),
    };
    if let TopUp::Applied { not_applied, .. } = &summary.top_up
        && !not_applied.is_empty()
    {
        summary
            .problems
            .push(format!("automatic top-up: {} member(s) not changed", not_applied.len()));
    }

    // 4. Notify about the crossings. On failure: record the run as failed, leave the alert
    // state alone, fail visibly.
    let notified = match notify_admins(deps, req, &mut summary, &alerts, &contacts).await {
        Ok(notified) => notified,
        Err(reason) => {
            summary.problems.push(format!("the alert email failed: {reason}"));
            clock.stop(&mut summary);
            if let Err(e) = deps
                .ledger
                .finish_run(JOB, &req.run_key, RunStatus::Failed, &summary.record())
                .await
            {
                tracing::error!(run_key = %req.run_key, error = %e, "could not record the failed run");
                summary
                    .problems
                    .push(format!("the run record could not be finished: {e}"));
            }
            tracing::error!(run_key = %req.run_key, reason = %reason, "alert email failed; alert state unchanged");
            return Err(ScanError::NotificationFailed {
                reason,
                summary: Box::new(summary),
            });
        }
    };

    // 5. Record what was reported (only once it was sent) and clear members back to ok.
    record_problems.extend(record_alert_levels(deps, req, &alerts, notified, &mut summary).await);
    // And the org's size, so the next run requests every page at once. Only a speed-up rides
    // on it: failing to record it is reported without failing the run.
    if let Some(count) = org_size
        && let Err(e) = deps.ledger.set_member_count(count, &req.run_key).await
    {
        tracing::warn!(error = %e, "the member count was not recorded");
        summary.problems.push(format!(
            "the member count was not recorded, so the next scan lists one round trip slower: {e}"
        ));
    }

    // 6. Finish the run record.
    summary.problems.extend(record_problems.iter().cloned());
    clock.stop(&mut summary);
    let status = if record_problems.is_empty() {
        RunStatus::Done
    } else {
        RunStatus::Failed
    };
    if let Err(e) = deps
        .ledger
        .finish_run(JOB, &req.run_key, status, &summary.record())
        .await
    {
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
    if record_problems.is_empty() {
        Ok(summary)
    } else {
        Err(ScanError::RecordsIncomplete {
            problems: record_problems,
            summary: Box::new(summary),
        })
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

/// What the read phase found: the summary so far, the crossings, the top-up decision and who
/// to tell.
struct Observed {
    summary: ScanSummary,
    alerts: AlertPlan,
    top_up: TopUpDecision,
    contacts: Vec<String>,
    /// The org's member count, when the listing was complete.
    org_size: Option<u64>,
}

/// Step 1: everything that only reads (ArcGIS and the alert state).
async fn observe(deps: &ScanDeps<'_>, req: &ScanRequest) -> Result<Observed, ScanError> {
    let config = deps.config;
    let (thresholds, thresholds_used) = thresholds(config, &req.input)?;
    let top_up_settings = top_up_settings(config)?;
    let started = Instant::now();

    // Every read needs only a token, so they all start at once: a run costs the sign-in and
    // the paging floor, not a chain of round trips. The listing is abandoned (at most its
    // first page read) when portals/self says it is not needed.
    let (listing, abandon_listing) = abortable(async {
        let expected = deps.ledger.member_count().await.unwrap_or_else(|e| {
            // Only a speed-up is lost: the listing finds the count itself.
            tracing::warn!(error = %e, "no member count from the last run; listing without it");
            None
        });
        deps.client.list_members_expecting(expected).await
    });
    let org = async {
        let org = deps.client.org_properties().await;
        if !org.as_ref().is_ok_and(listing_needed) {
            abandon_listing.abort();
        }
        org
    };
    // The usage answer is one large document: decoded on this task it would stall the
    // listing; on its own task it decodes on another core while the pages arrive.
    let usage = Background(tokio::spawn(usage_for_forecast(deps.client.clone(), req.as_of)));
    let arcgis = async {
        let read = tokio::join!(org, listing, usage.join());
        (read, started.elapsed())
    };
    let (((org, listing, usage), arcgis_read), recorded) = tokio::join!(arcgis, deps.ledger.alert_levels());
    let usage = usage.unwrap_or_else(|stopped| Err(format!("the usage read stopped: {stopped}")));

    let org = org.map_err(|source| ScanError::Arcgis {
        step: "read the org's properties (portals/self)",
        source,
    })?;
    org.ensure(Capability::ManageCredits)
        .map_err(|source| ScanError::Arcgis {
            step: "check the signed-in account's privileges",
            source,
        })?;
    let recorded = recorded.map_err(|source| ScanError::Ledger {
        step: "read the alert state",
        source,
    })?;

    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let budgeting = org.budgeting_enabled;
    let (members, member_errors, listing_complete, org_size) = if listing_needed(&org) {
        let list = listing
            .map_err(|Aborted| arcgis::Error::Unexpected {
                what: "the member listing".into(),
                reason: "it was abandoned although budgeting is on".into(),
            })
            .and_then(|listed| listed)
            .map_err(|source| ScanError::Arcgis {
                step: "list the org's members",
                source,
            })?;
        let errors: Vec<String> = list.problems.iter().map(ToString::to_string).collect();
        let complete = list.is_complete();
        (list.members, errors, complete, complete.then_some(list.reported_total))
    } else {
        notes.push(format!(
            "credit budgeting is off: members have no allocations to check; the org has {} credits left",
            credits(org.available_credits)
        ));
        (Vec::new(), Vec::new(), false, None)
    };
    if !member_errors.is_empty() {
        problems.push(format!(
            "{} member(s) could not be read and were not classified (see member_errors)",
            member_errors.len()
        ));
    }
    let classified = ClassifiedOrg::from_members(&members, &thresholds);

    let (forecast, runways) = forecast_flagged(usage, &members, &classified, org.available_credits);
    if let ForecastStatus::Unavailable { reason } = &forecast {
        problems.push(format!("days-until-empty forecasts are unavailable: {reason}"));
    }

    let below_floor = config.org_min_credits.filter(|min| org.available_credits < *min);
    let mut current: BTreeMap<String, Level> = BTreeMap::new();
    for m in &classified.critical {
        current.insert(m.username.clone(), Level::Critical);
    }
    for m in &classified.warning {
        current.insert(m.username.clone(), Level::Warning);
    }
    if below_floor.is_some() {
        current.insert(ORG_ALERT_KEY.to_owned(), Level::Critical);
    }

    let listed: HashSet<&str> = members.iter().map(|m| m.username.as_str()).collect();
    let alerts = AlertPlan::new(&current, &recorded, |key| {
        key == ORG_ALERT_KEY || (budgeting && (listed.contains(key) || listing_complete))
    });

    let top_up = plan_top_up(top_up_settings, budgeting, &members, &thresholds, org.available_credits);

    let flagged = |list: &[RatedMember]| -> Vec<FlaggedMember> {
        list.iter()
            .map(|m| flagged_member(m, &recorded, &alerts, runways.as_ref()))
            .collect()
    };
    let summary = ScanSummary {
        run_key: req.run_key.clone(),
        dry_run: req.input.dry_run,
        duplicate_of: None,
        org_available_credits: org.available_credits,
        budgeting: if budgeting {
            Budgeting::Enabled
        } else {
            Budgeting::Disabled
        },
        thresholds: thresholds_used,
        members_scanned: members.len(),
        critical: flagged(&classified.critical),
        warning: flagged(&classified.warning),
        skipped: skipped(&classified),
        member_errors,
        forecast,
        org_floor: match (config.org_min_credits, below_floor) {
            (None, _) => OrgFloor::NotConfigured,
            (Some(min_credits), None) => OrgFloor::Ok { min_credits },
            (Some(min_credits), Some(_)) => OrgFloor::Below {
                min_credits,
                newly_reported: alerts.reports(ORG_ALERT_KEY),
            },
        },
        newly_reported: alerts.report.iter().filter(|(k, _)| k != ORG_ALERT_KEY).count(),
        already_reported: alerts
            .already_reported
            .iter()
            .filter(|k| k.as_str() != ORG_ALERT_KEY)
            .count(),
        cleared: 0,
        recipients_notified: Vec::new(),
        notification: NotificationOutcome::NothingNew,
        top_up: TopUp::Off,
        allocations_applied: Vec::new(),
        notes,
        problems,
        arcgis_requests: 0,
        duration_ms: 0,
        arcgis_read_ms: u64::try_from(arcgis_read.as_millis()).unwrap_or(u64::MAX),
    };
    Ok(Observed {
        summary,
        alerts,
        top_up,
        contacts: org.admin_contacts,
        org_size,
    })
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
    for m in summary.critical.iter_mut().chain(summary.warning.iter_mut()) {
        m.newly_reported = false;
    }
    if let OrgFloor::Below { newly_reported, .. } = &mut summary.org_floor {
        *newly_reported = false;
    }
}

/// Step 4: emails the crossings to the admin contacts. `Ok(true)` when sent, `Ok(false)` when
/// there was nothing to send or nobody to send it to, `Err(reason)` when any batch failed
/// (the summary's `notification` says which recipients it reached).
async fn notify_admins(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    summary: &mut ScanSummary,
    alerts: &AlertPlan,
    contacts: &[String],
) -> Result<bool, String> {
    if alerts.report.is_empty() {
        summary.notification = NotificationOutcome::NothingNew;
        return Ok(false);
    }
    if contacts.is_empty() {
        summary.notification = NotificationOutcome::NoContacts;
        summary.problems.push(format!(
            "{} crossing(s) to report but the org has no administrative contacts: nobody was told. \
             Add contacts in the org settings; the alerts are sent by the first run after that",
            alerts.report.len()
        ));
        return Ok(false);
    }
    let email = compose_email(summary, deps.config.notify_channel, req);
    let (delivered_to, not_delivered, reason) = match deps.client.notify(contacts, &email).await {
        Ok(outcome) if outcome.failed.is_empty() => {
            summary.recipients_notified = outcome.succeeded.clone();
            summary.notification = NotificationOutcome::Sent {
                subject: email.subject,
                channel: email.channel.to_string(),
                recipients: outcome.succeeded,
            };
            return Ok(true);
        }
        Ok(outcome) => {
            let reason = outcome
                .failed
                .iter()
                .map(|f| f.error.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let failed = outcome.not_applied().map(str::to_owned).collect();
            (outcome.succeeded, failed, reason)
        }
        Err(e) => (Vec::new(), contacts.to_vec(), e.to_string()),
    };
    summary.recipients_notified = delivered_to.clone();
    summary.notification = NotificationOutcome::Failed {
        subject: email.subject,
        reason: reason.clone(),
        delivered_to,
        not_delivered,
    };
    Err(reason)
}

/// Step 5: records the reported levels (only when the email went out) and deletes the records
/// of keys back to ok, [`LEDGER_WRITE_CONCURRENCY`] writes at a time. Returns the failed
/// writes; counts successful deletions in `summary.cleared`.
async fn record_alert_levels(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    alerts: &AlertPlan,
    notified: bool,
    summary: &mut ScanSummary,
) -> Vec<String> {
    let mut writes: Vec<(&str, Option<Level>)> = Vec::new();
    if notified {
        writes.extend(alerts.report.iter().map(|(k, l)| (k.as_str(), Some(*l))));
    }
    writes.extend(alerts.clear.iter().map(|k| (k.as_str(), None)));
    let results: Vec<(Option<Level>, Result<(), String>)> = stream::iter(writes)
        .map(|(key, level)| async move {
            let result = deps
                .ledger
                .set_alert_level(key, level, &req.run_key)
                .await
                .map_err(|e| format!("alert state for {key}: {e}"));
            (level, result)
        })
        .buffer_unordered(LEDGER_WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut problems = Vec::new();
    for (level, result) in results {
        match result {
            Ok(()) if level.is_none() => summary.cleared += 1,
            Ok(()) => {}
            Err(problem) => problems.push(problem),
        }
    }
    problems
}

/// The thresholds: `CRITICAL_PERCENT`/`WARNING_PERCENT`, each overridable by the Input.
fn thresholds(config: &Config, input: &ScanInput) -> Result<(Thresholds, ThresholdsUsed), ScanError> {
    let used = ThresholdsUsed {
        critical_percent: input.critical_percent.unwrap_or(config.critical_percent),
        warning_percent: input.warning_percent.unwrap_or(config.warning_percent),
    };
    let origin = if input.critical_percent.is_some() || input.warning_percent.is_some() {
        INPUT_ORIGIN
    } else {
        "CRITICAL_PERCENT/WARNING_PERCENT"
    };
    Thresholds::new(
        Limit::Percent(used.critical_percent),
        Limit::Percent(used.warning_percent),
    )
    .map(|t| (t, used))
    .map_err(|source| ScanError::InvalidThresholds { origin, source })
}

/// The top-up target and guardrails, when `AUTO_TOP_UP_TO` is set.
fn top_up_settings(config: &Config) -> Result<Option<(Credits, Guardrails)>, ScanError> {
    let Some(target) = config.auto_top_up_to else {
        return Ok(None);
    };
    let credits = |variable: &'static str, value: f64| {
        Credits::new(value).map_err(|e| ScanError::InvalidConfig {
            variable,
            reason: e.to_string(),
        })
    };
    let g = &config.guardrails;
    Ok(Some((
        credits("AUTO_TOP_UP_TO", target)?,
        Guardrails {
            max_per_member: credits("MAX_CREDITS_PER_MEMBER", g.max_per_member)?,
            max_total: credits("MAX_CREDITS_PER_PLAN", g.max_total)?,
            org_reserve_floor: credits("ORG_RESERVE_CREDITS", g.org_reserve)?,
            // A policy must never impose a limit on an unlimited member (critical_top_up
            // never names one anyway).
            allow_unlimited_change: false,
        },
    )))
}

/// What the top-up will do, decided before the claim (planning is pure).
enum TopUpDecision {
    Off,
    NotPossible(String),
    NothingToDo,
    Refused(PlanError),
    Apply { plan: Box<Plan>, target: Credits },
}

impl TopUpDecision {
    /// The summary entry for a decision that is not applied in this invocation.
    fn into_summary(self, why_not_applied: &str) -> TopUp {
        match self {
            TopUpDecision::Off => TopUp::Off,
            TopUpDecision::NotPossible(reason) => TopUp::NotPossible { reason },
            TopUpDecision::NothingToDo => TopUp::NothingToDo,
            TopUpDecision::Refused(error) => TopUp::Refused {
                reason: format!("nothing was allocated: {error}"),
                error,
            },
            TopUpDecision::Apply { plan, .. } => TopUp::Planned {
                reason: why_not_applied.to_owned(),
                plan,
            },
        }
    }
}

fn plan_top_up(
    settings: Option<(Credits, Guardrails)>,
    budgeting: bool,
    members: &[Member],
    thresholds: &Thresholds,
    org_available: f64,
) -> TopUpDecision {
    let Some((target, guardrails)) = settings else {
        return TopUpDecision::Off;
    };
    if !budgeting {
        return TopUpDecision::NotPossible("credit budgeting is off: ArcGIS has no allocations to raise".to_owned());
    }
    let requests = critical_top_up(members, thresholds, target);
    if requests.is_empty() {
        return TopUpDecision::NothingToDo;
    }
    match plan::plan(&requests, members, org_available, &guardrails) {
        Ok(p) if p.assignments().next().is_none() => TopUpDecision::NothingToDo,
        Ok(p) => TopUpDecision::Apply {
            plan: Box::new(p),
            target,
        },
        Err(e) => TopUpDecision::Refused(e),
    }
}

/// Applies the plan and audits each applied change. Returns the summary entry, the applied
/// changes, and audit-trail failures (the allocation happened; the record of it did not).
async fn apply_top_up(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    plan: &Plan,
    target: Credits,
) -> (TopUp, Vec<AppliedAllocation>, Vec<String>) {
    let assignments: Vec<CreditAssignment> = plan
        .assignments()
        .map(|a| CreditAssignment {
            username: a.username.to_owned(),
            credits: a.credits,
        })
        .collect();
    let requested = assignments.len();
    let outcome = match deps.client.assign_credits(&assignments).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let reason = format!("nothing was allocated: {e}");
            return (
                TopUp::Applied {
                    requested,
                    applied: 0,
                    not_applied: assignments
                        .iter()
                        .map(|a| format!("{}: {reason}", a.username))
                        .collect(),
                },
                Vec::new(),
                Vec::new(),
            );
        }
    };
    let succeeded: HashSet<&str> = outcome.succeeded.iter().map(String::as_str).collect();
    let mut not_applied: Vec<String> = outcome
        .rejected
        .iter()
        .map(|u| format!("{u}: refused by ArcGIS (notAssignedUsers)"))
        .collect();
    for failed in &outcome.failed {
        for u in &failed.usernames {
            not_applied.push(format!("{u}: {}", failed.error));
        }
    }
    let mut applied = Vec::new();
    let mut audit_problems = Vec::new();
    for entry in &plan.entries {
        let Outcome::Change {
            before,
            after,
            available_after,
            ..
        } = &entry.outcome
        else {
            continue;
        };
        if !succeeded.contains(entry.username.as_str()) {
            continue;
        }
        let Balance::Limited {
            assigned: assigned_before,
            available: available_before,
        } = *before
        else {
            continue;
        };
        let assigned_after = after.credits().unwrap_or(assigned_before);
        let audit = AuditEntry {
            at: req.now,
            request_id: req.request_id.clone(),
            caller: AUDIT_CALLER.to_owned(),
            reason: Some(format!(
                "critical in run {}: {} of {} credits left; topped up so that {} are available",
                req.run_key,
                credits(available_before),
                credits(assigned_before),
                credits(target.get())
            )),
            source: AUDIT_SOURCE.to_owned(),
            username: entry.username.clone(),
            before: serde_json::to_value(before).unwrap_or(Value::Null),
            // The same shapes as allocate's audit entries: the balance before, and
            // `{"allocation", "available"}` after (available as expected).
            after: json!({ "allocation": after.credits(), "available": available_after }),
        };
        if let Err(e) = deps.ledger.record_change(&audit).await {
            tracing::error!(username = %entry.username, error = %e, "top-up applied but not audited");
            audit_problems.push(format!("audit entry for {}'s top-up: {e}", entry.username));
        }
        applied.push(AppliedAllocation {
            username: entry.username.clone(),
            assigned_before,
            available_before,
            assigned_after,
            available_after: *available_after,
        });
    }
    (
        TopUp::Applied {
            requested,
            applied: applied.len(),
            not_applied,
        },
        applied,
        audit_problems,
    )
}

/// A spawned task that is aborted when dropped, so an early return leaves nothing running.
struct Background<T>(tokio::task::JoinHandle<T>);

impl<T> Background<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the member listing is worth reading: members have allocations only with budgeting
/// on, and without the privileges the run fails anyway.
fn listing_needed(org: &OrgProperties) -> bool {
    org.budgeting_enabled && org.ensure(Capability::ManageCredits).is_ok()
}

/// One usage series per member over the [`FORECAST_DAYS`] before `as_of`'s day, or why not.
/// Read concurrently with the member listing, so it costs no extra round trip.
async fn usage_for_forecast(client: Client, as_of: DateTime<Utc>) -> Result<(TimeWindow, Vec<UsageSeries>), String> {
    let day_start = as_of.date_naive().and_time(NaiveTime::MIN).and_utc();
    let window = TimeWindow::last_days(day_start, FORECAST_DAYS)
        .map_err(|e| format!("no forecast window before {day_start}: {e}"))?;
    match client.usage(&UsageQuery::by_member(window, UsagePeriod::Day)).await {
        Ok(series) => Ok((window, series)),
        Err(e) => {
            tracing::warn!(error = %e, "usage unavailable: no forecasts this run");
            Err(e.to_string())
        }
    }
}

/// Applies the usage rates to the flagged members. A failed usage read is reported, never fatal.
fn forecast_flagged(
    usage: Result<(TimeWindow, Vec<UsageSeries>), String>,
    members: &[Member],
    classified: &ClassifiedOrg,
    org_available: f64,
) -> (ForecastStatus, Option<HashMap<String, Runway>>) {
    let (window, series) = match usage {
        Ok(found) => found,
        Err(reason) => return (ForecastStatus::Unavailable { reason }, None),
    };
    let flagged: HashSet<&str> = classified
        .critical
        .iter()
        .chain(&classified.warning)
        .map(|m| m.username.as_str())
        .collect();
    let subjects: Vec<Member> = members
        .iter()
        .filter(|m| flagged.contains(m.username.as_str()))
        .cloned()
        .collect();
    let f = forecast::forecast(&subjects, org_available, &series, &window);
    let runways = f.members.into_iter().map(|m| (m.username, m.runway)).collect();
    (
        ForecastStatus::Available {
            window_days: f.window_days,
            org_credits_per_day: f.org.credits_per_day,
            org_days_until_empty: f.org.days_until_empty,
        },
        Some(runways),
    )
}

fn flagged_member(
    m: &RatedMember,
    recorded: &HashMap<String, Level>,
    alerts: &AlertPlan,
    runways: Option<&HashMap<String, Runway>>,
) -> FlaggedMember {
    let runway = runways.and_then(|r| r.get(&m.username));
    FlaggedMember {
        username: m.username.clone(),
        full_name: m.full_name.clone(),
        assigned: m.figures.assigned,
        available: m.figures.available,
        consumed: m.figures.consumed,
        percent_left: m.figures.percent_left,
        credits_per_day: runway.map(|r| r.credits_per_day),
        days_until_empty: runway.and_then(|r| r.days_until_empty),
        previously_reported: recorded.get(&m.username).copied(),
        newly_reported: alerts.reports(&m.username),
    }
}

fn skipped(classified: &ClassifiedOrg) -> Skipped {
    let mut s = Skipped {
        total: classified.skipped.len(),
        by_reason: BTreeMap::new(),
    };
    for m in &classified.skipped {
        let group = s.by_reason.entry(m.reason).or_default();
        group.count += 1;
        group.usernames.push(m.username.clone());
    }
    s
}

/// Credits for people: two decimals, no trailing noise.
fn credits(value: f64) -> String {
    format!("{value:.2}")
}

/// The alert email: subject with the new crossings' counts, and a plain-text body naming each
/// newly reported member with their figures (skipped members are only counted).
fn compose_email(s: &ScanSummary, channel: NotifyChannel, req: &ScanRequest) -> Notification {
    let new_critical: Vec<&FlaggedMember> = s.critical.iter().filter(|m| m.newly_reported).collect();
    let new_warning: Vec<&FlaggedMember> = s.warning.iter().filter(|m| m.newly_reported).collect();
    let floor_new = matches!(
        s.org_floor,
        OrgFloor::Below {
            newly_reported: true,
            ..
        }
    );
    let mut subject = format!(
        "ArcGIS Online credits: {} critical, {} warning",
        new_critical.len(),
        new_warning.len()
    );
    if let OrgFloor::Below { min_credits, .. } = s.org_floor
        && floor_new
    {
        let _ = write!(subject, ", org below {} credits", credits(min_credits));
    }

    let mut body = String::new();
    let _ = writeln!(
        body,
        "Credit scan for {} (run {}).",
        req.as_of.to_rfc3339_opts(SecondsFormat::Secs, true),
        s.run_key
    );
    let _ = writeln!(body);
    let _ = writeln!(
        body,
        "Organization: {} credits available.",
        credits(s.org_available_credits)
    );
    match s.org_floor {
        OrgFloor::NotConfigured => {}
        OrgFloor::Ok { min_credits } => {
            let _ = writeln!(
                body,
                "Org floor: at or above the minimum of {} credits (ORG_MIN_CREDITS).",
                credits(min_credits)
            );
        }
        OrgFloor::Below { min_credits, .. } => {
            let _ = writeln!(
                body,
                "Org floor: BELOW the minimum of {} credits (ORG_MIN_CREDITS). Buy credits or reduce usage.",
                credits(min_credits)
            );
        }
    }
    if let ForecastStatus::Available {
        org_days_until_empty: Some(days),
        ..
    } = s.forecast
    {
        let _ = writeln!(
            body,
            "At the last {FORECAST_DAYS} days' rate the org's credits last about {days:.0} more days."
        );
    }
    if s.budgeting == Budgeting::Disabled {
        let _ = writeln!(
            body,
            "Credit budgeting is off: members have no allocations, so only the org's credits were checked."
        );
    }
    let sections = [
        (
            "Newly critical",
            s.thresholds.critical_percent,
            &new_critical,
            s.critical.len(),
        ),
        (
            "Newly below the warning threshold",
            s.thresholds.warning_percent,
            &new_warning,
            s.warning.len(),
        ),
    ];
    for (title, percent, list, total) in sections {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(body);
        let _ = writeln!(
            body,
            "{title} (less than {percent}% of their allocation left): {} new, {total} in all",
            list.len()
        );
        for m in list.iter().take(EMAIL_MEMBERS_PER_LEVEL) {
            let _ = writeln!(body, "{}", member_line(m));
        }
        if list.len() > EMAIL_MEMBERS_PER_LEVEL {
            let _ = writeln!(
                body,
                "… and {} more (the complete list is in the scan summary).",
                list.len() - EMAIL_MEMBERS_PER_LEVEL
            );
        }
    }
    let _ = writeln!(body);
    if s.already_reported > 0 {
        let _ = writeln!(
            body,
            "Still below a threshold and already reported: {} member(s) (not repeated).",
            s.already_reported
        );
    }
    if s.skipped.total > 0 {
        let reasons: Vec<String> = s
            .skipped
            .by_reason
            .iter()
            .map(|(reason, g)| format!("{} {}", g.count, skip_label(*reason)))
            .collect();
        let _ = writeln!(
            body,
            "Not rated: {} member(s) ({}).",
            s.skipped.total,
            reasons.join(", ")
        );
    }
    if !s.member_errors.is_empty() {
        let _ = writeln!(
            body,
            "Could not be read: {} member(s); see the scan summary.",
            s.member_errors.len()
        );
    }
    if let ForecastStatus::Unavailable { reason } = &s.forecast {
        let _ = writeln!(body, "Days-until-empty forecasts are unavailable this run: {reason}");
    }
    match &s.top_up {
        TopUp::Applied {
            applied, not_applied, ..
        } => {
            let _ = writeln!(
                body,
                "Automatic top-up: {applied} member(s) topped up{}.",
                if not_applied.is_empty() {
                    String::new()
                } else {
                    format!(", {} not changed", not_applied.len())
                }
            );
            for a in &s.allocations_applied {
                let _ = writeln!(
                    body,
                    "- {}: allocation {} → {}",
                    a.username,
                    credits(a.assigned_before),
                    credits(a.assigned_after)
                );
            }
        }
        TopUp::Refused { reason, .. } => {
            let _ = writeln!(body, "Automatic top-up refused by the guardrails: {reason}");
        }
        _ => {}
    }
    let _ = writeln!(body);
    let _ = writeln!(
        body,
        "Sent by credit-steward (scan-credits). Each member is reported once per threshold \
         crossing; members back above the thresholds are reported again if they fall below later."
    );
    Notification {
        subject,
        message: body,
        channel,
    }
}

fn member_line(m: &FlaggedMember) -> String {
    let name = m
        .full_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let left = if m.available < 0.0 {
        format!("overspent by {}", credits(-m.available))
    } else {
        match m.percent_left {
            Some(p) => format!("{} remaining ({p:.1}% left)", credits(m.available)),
            None => format!("{} remaining", credits(m.available)),
        }
    };
    let days = match (m.days_until_empty, m.credits_per_day) {
        (Some(d), _) if d <= 0.0 => ", out of credits".to_owned(),
        (Some(d), _) => format!(", about {d:.0} days until empty"),
        (None, Some(_)) => ", no recent spending".to_owned(),
        (None, None) => String::new(),
    };
    let was = match m.previously_reported {
        Some(Level::Critical) => " (was critical)",
        Some(Level::Warning) => " (was warning)",
        _ => "",
    };
    format!(
        "- {}{name}: consumed {} of {} assigned, {left}{days}{was}",
        m.username,
        credits(m.consumed),
        credits(m.assigned)
    )
}

fn skip_label(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Disabled => "disabled",
        SkipReason::Viewer => "viewers",
        SkipReason::Unlimited => "unlimited",
        SkipReason::ZeroAllocation => "with a zero allocation",
        SkipReason::InvalidBalance => "with an unreadable balance",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(pairs: &[(&str, Level)]) -> BTreeMap<String, Level> {
        pairs.iter().map(|(k, l)| (k.to_string(), *l)).collect()
    }

    #[test]
    fn alert_plan_reports_crossings_once_and_clears_members_back_to_ok() {
        let current = levels(&[
            ("new", Level::Warning),
            ("same", Level::Critical),
            ("worse", Level::Critical),
            ("better", Level::Warning),
        ]);
        let recorded: HashMap<String, Level> = [
            ("same", Level::Critical),
            ("worse", Level::Warning),
            ("better", Level::Critical),
            ("recovered", Level::Warning),
            ("unknown", Level::Critical),
        ]
        .into_iter()
        .map(|(k, l)| (k.to_owned(), l))
        .collect();
        let plan = AlertPlan::new(&current, &recorded, |k| k != "unknown");
        assert_eq!(
            plan.report,
            [
                ("better".to_owned(), Level::Warning),
                ("new".to_owned(), Level::Warning),
                ("worse".to_owned(), Level::Critical)
            ]
        );
        assert_eq!(plan.already_reported, ["same"]);
        assert_eq!(plan.clear, ["recovered"]);
        assert!(plan.reports("new") && !plan.reports("same"));
    }

    #[test]
    fn the_org_key_cannot_be_a_username() {
        // ArcGIS usernames allow letters, digits, `_`, `.`, `@` (and `-` in some orgs).
        assert!(ORG_ALERT_KEY.contains('#'));
    }

    fn summary_with(critical: Vec<FlaggedMember>) -> ScanSummary {
        ScanSummary {
            run_key: "2026-11-26T06:00:00Z".into(),
            dry_run: false,
            duplicate_of: None,
            org_available_credits: 1234.5,
            budgeting: Budgeting::Enabled,
            thresholds: ThresholdsUsed {
                critical_percent: 10.0,
                warning_percent: 50.0,
            },
            members_scanned: 3,
            critical,
            warning: Vec::new(),
            skipped: Skipped::default(),
            member_errors: Vec::new(),
            forecast: ForecastStatus::Unavailable {
                reason: "HTTP 503".into(),
            },
            org_floor: OrgFloor::Below {
                min_credits: 5000.0,
                newly_reported: true,
            },
            newly_reported: 1,
            already_reported: 0,
            cleared: 0,
            recipients_notified: Vec::new(),
            notification: NotificationOutcome::NothingNew,
            top_up: TopUp::Off,
            allocations_applied: Vec::new(),
            notes: Vec::new(),
            problems: Vec::new(),
            arcgis_requests: 7,
            duration_ms: 12,
            arcgis_read_ms: 10,
        }
    }

    fn member(username: &str, assigned: f64, available: f64, newly: bool) -> FlaggedMember {
        FlaggedMember {
            username: username.into(),
            full_name: Some("Jane Doe".into()),
            assigned,
            available,
            consumed: assigned - available,
            percent_left: Some(available / assigned * 100.0),
            credits_per_day: Some(5.0),
            days_until_empty: Some(available.max(0.0) / 5.0),
            previously_reported: None,
            newly_reported: newly,
        }
    }

    #[test]
    fn the_email_names_new_crossings_with_their_figures() {
        let s = summary_with(vec![
            member("jdoe", 1000.0, 50.0, true),
            member("amy", 100.0, -5.0, true),
            member("old", 100.0, 1.0, false),
        ]);
        let req = ScanRequest {
            run_key: s.run_key.clone(),
            request_id: "r".into(),
            input: ScanInput::default(),
            as_of: Utc::now(),
            now: Utc::now(),
        };
        let n = compose_email(&s, NotifyChannel::Email, &req);
        assert_eq!(
            n.subject,
            "ArcGIS Online credits: 2 critical, 0 warning, org below 5000.00 credits"
        );
        let body = &n.message;
        assert!(
            body.contains(
                "- jdoe (Jane Doe): consumed 950.00 of 1000.00 assigned, 50.00 remaining (5.0% left), about 10 days until empty"
            ),
            "{body}"
        );
        assert!(
            body.contains("- amy (Jane Doe): consumed 105.00 of 100.00 assigned, overspent by 5.00, out of credits")
        );
        assert!(!body.contains("- old"), "{body}");
        assert!(body.contains("Organization: 1234.50 credits available."));
        assert!(body.contains("BELOW the minimum of 5000.00 credits"));
        assert!(body.contains("forecasts are unavailable this run: HTTP 503"));
    }

    #[test]
    fn the_run_record_is_compact() {
        let many: Vec<FlaggedMember> = (0..120)
            .map(|i| member(&format!("u{i:03}"), 100.0, 1.0, true))
            .collect();
        let record = summary_with(many).record();
        assert_eq!(
            record["critical"].as_array().map(Vec::len),
            Some(RECORD_MEMBERS_PER_LIST)
        );
        assert_eq!(record["critical_total"], 120);
        assert!(record["critical"][0].get("full_name").is_none());
        assert_eq!(record["org_floor"]["status"], "below");
    }
}
