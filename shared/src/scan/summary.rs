//! What a scan found and did: the function's JSON result ([`ScanSummary`]), its CloudWatch
//! metrics, and the compact [`RunRecord`] kept in the ledger's run record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::arcgis::NotifyChannel;
use crate::config::MemberNotices;
use crate::credits::amount::Credits;
use crate::credits::classify::{Level, SkipReason};
use crate::credits::percent::Percent;
use crate::credits::plan::Plan;
use crate::ledger::RunStatus;

use super::lists::Lists;
use crate::telemetry::{Metric, Unit};

/// Members listed per level in the run record kept in the ledger (a DynamoDB item is at most
/// 400 KB); the counts are always complete.
pub const RECORD_MEMBERS_PER_LIST: usize = 50;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThresholdsUsed {
    /// Critical below this share of the allocation, in percent.
    pub critical_percent: Percent,
    /// Warning below this share, in percent.
    pub warning_percent: Percent,
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
    pub assigned: Credits,
    /// What is left; negative when overspent.
    pub available: Credits,
    /// `assigned − available`.
    pub consumed: Credits,
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

/// Who runs out of credits within `FORECAST_DAYS` at the recent rate while still above the
/// thresholds: the threshold lists miss them, the forecast does not.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RunningOut {
    /// `FORECAST_DAYS`; `None` when these alerts are off (or a dry run's settings turn them off).
    pub within_days: Option<u32>,
    /// Members above the thresholds who run out within `within_days`, soonest first, with
    /// the burn rate that predicts it.
    pub members: Vec<FlaggedMember>,
    /// The org, when it runs out within `within_days`.
    pub org: Option<OrgRunningOut>,
    /// Members of `members` reported by this run (a new crossing); the org's is in `org`.
    pub newly_reported: usize,
}

/// The org running out within `FORECAST_DAYS`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OrgRunningOut {
    /// The org's mean credits per day over the burn-rate window.
    pub credits_per_day: f64,
    /// Days until its credits run out at that rate.
    pub days_until_empty: f64,
    /// True when this run reports it (a new crossing).
    pub newly_reported: bool,
}

/// What became of the members' own notices (`NOTIFY_MEMBERS`): who was told, who is told by
/// a later run, and why.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MemberNoticesOutcome {
    /// The setting: which crossings members are told about.
    pub notify: MemberNotices,
    /// Members with a crossing to be told about (in a dry run, those that would be).
    pub due: usize,
    /// Members ArcGIS accepted their notice for (recorded: never sent again for this crossing).
    pub sent: Vec<String>,
    /// Members whose notice failed: unrecorded, so the next run sends it.
    pub not_sent: Vec<String>,
    /// Members left for the next runs (more than one run sends).
    pub deferred: usize,
    /// Why notices failed, when some did.
    pub failure: Option<String>,
}

/// The org floor (`ORG_MIN_CREDITS`) and where the org stands against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OrgFloor {
    /// `ORG_MIN_CREDITS` is not set.
    NotConfigured,
    /// The org has at least the floor.
    Ok {
        /// The floor.
        min_credits: Credits,
    },
    /// The org has fewer credits than the floor.
    Below {
        /// The floor.
        min_credits: Credits,
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
        /// Where it went.
        channel: NotifyChannel,
        /// Members ArcGIS accepted it for.
        recipients: Vec<String>,
    },
    /// No crossing: nothing to say.
    NothingNew,
    /// Crossings, but the org has no administrative contacts: no email. Without another
    /// alert channel the crossings stay unrecorded, so they are sent once contacts exist;
    /// with one, that channel carried them and they are recorded.
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

/// Why a planned top-up was not applied by this invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotApplied {
    /// A dry run allocates nothing.
    DryRun,
    /// A repeated delivery of a run: the first attempt owns its top-up.
    DuplicateDelivery,
}

/// What became of one member the top-up planned to change, when not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberNotTopped {
    /// Exact username.
    pub username: String,
    /// What happened (`not_assigned`, `failed`, `conflict`, `unknown`, `pending`).
    pub status: &'static str,
    /// The details.
    pub detail: String,
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
    /// Planned but deliberately not applied.
    Planned {
        /// Why it was not applied.
        not_applied: NotApplied,
        /// The plan, made from this run's listing.
        plan: Box<Plan>,
    },
    /// Applied through the apply path (the lock, a fresh read, the journal, the audit).
    Applied {
        /// Changes the plan made under the lock asked for.
        requested: usize,
        /// Changes read back applied (listed in [`ScanSummary::allocations_applied`]).
        applied: usize,
        /// Members not changed, with why.
        not_applied: Vec<MemberNotTopped>,
        /// The request stopped with work left: the next delivery of this run resumes it.
        incomplete: bool,
        /// Whether this invocation finished an earlier attempt's top-up (a redelivered run).
        resumed: bool,
    },
    /// Refused (guardrails, another allocation in progress, ArcGIS unreadable): nothing
    /// was allocated.
    Refused {
        /// Why, with the numbers.
        reason: String,
    },
}

/// One allocation the top-up changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedAllocation {
    /// Exact username.
    pub username: String,
    /// The allocation before.
    pub assigned_before: Credits,
    /// Available before.
    pub available_before: Credits,
    /// The allocation read back.
    pub assigned_after: Credits,
    /// Available read back.
    pub available_after: Credits,
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
    pub org_available_credits: Credits,
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
    /// Members (and the org) running out within `FORECAST_DAYS`, above the thresholds.
    pub running_out: RunningOut,
    /// Members reported by this run (new or changed level; in a dry run, those that would
    /// be); the org floor is in `org_floor`, forecast alerts in `running_out`.
    pub newly_reported: usize,
    /// Members still flagged at the level already reported: not repeated.
    pub already_reported: usize,
    /// Alert records deleted (members back to ok, gone, or the org back above its floor).
    pub cleared: usize,
    /// Who the alert email reached.
    pub recipients_notified: Vec<String>,
    /// The email's fate.
    pub notification: NotificationOutcome,
    /// The members' own notices.
    pub member_notices: MemberNoticesOutcome,
    /// The other alert channels (SNS, Slack, Teams, webhook), one entry per channel that had
    /// something to deliver.
    pub channels: Vec<super::channels::ChannelOutcome>,
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
    /// What became of the complete lists: the result shows it beside the cut lists
    /// ([`ScanSummary::into_result`]), not inside the summary.
    #[serde(skip)]
    pub lists: Lists,
}

/// A list cut for the run record, with its full length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample<T> {
    /// The first [`RECORD_MEMBERS_PER_LIST`] items.
    pub first: Vec<T>,
    /// How many there were in all.
    pub total: usize,
}

impl<T: Clone> Sample<T> {
    fn of(items: &[T]) -> Sample<T> {
        Sample {
            first: items.iter().take(RECORD_MEMBERS_PER_LIST).cloned().collect(),
            total: items.len(),
        }
    }
}

/// What the ledger keeps of a run (shown to later deliveries of the same run): the summary
/// with every list cut to [`RECORD_MEMBERS_PER_LIST`], no plan and no email body, so the item
/// stays far below DynamoDB's 400 KB whatever the org's size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run's business key.
    pub run_key: String,
    /// The org's credits.
    pub org_available_credits: Credits,
    /// Members listed.
    pub members_scanned: usize,
    /// Critical members (usernames).
    pub critical: Sample<String>,
    /// Warning members (usernames).
    pub warning: Sample<String>,
    /// Members running out within `FORECAST_DAYS` above the thresholds (usernames).
    pub running_out: Sample<String>,
    /// Members reported by the run.
    pub newly_reported: usize,
    /// Members flagged but already reported.
    pub already_reported: usize,
    /// Alert records deleted.
    pub cleared: usize,
    /// Who the email reached.
    pub recipients_notified: Sample<String>,
    /// Members told themselves.
    pub member_notices_sent: Sample<String>,
    /// Members whose notice failed (sent by the next run).
    pub member_notices_not_sent: Sample<String>,
    /// The email's fate (`sent`, `failed`, …).
    pub notification: &'static str,
    /// The top-up's fate (`off`, `applied`, …).
    pub top_up: &'static str,
    /// Allocations changed.
    pub allocations_applied: Sample<String>,
    /// The org floor.
    pub org_floor: OrgFloor,
    /// Problems.
    pub problems: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// Every metric a scan publishes, in namespace [`crate::telemetry::NAMESPACE`]: the SAM
/// template's alarms and dashboard may name only these (the infra drift test reads this list
/// through the manifest example).
pub const METRIC_NAMES: &[&str] = &[
    "OrgDaysUntilEmpty",
    "OrgAvailableCredits",
    "MembersCritical",
    "MembersWarning",
    "MembersRunningOut",
    "MemberNoticesSent",
    "MemberNoticesFailed",
    "MembersScanned",
    "ArcgisRequests",
    "DurationMs",
    "ArcgisReadMs",
];

impl ScanSummary {
    /// The CloudWatch metrics of this run (see [`crate::telemetry`]), named as in
    /// [`METRIC_NAMES`]. `OrgDaysUntilEmpty` is left out when the org is not running out or
    /// the forecast could not be made.
    pub fn metrics(&self) -> Vec<Metric> {
        let org_days = match self.forecast {
            ForecastStatus::Available {
                org_days_until_empty, ..
            } => org_days_until_empty,
            ForecastStatus::Unavailable { .. } => None,
        };
        vec![
            Metric::new("OrgDaysUntilEmpty", Unit::None, org_days.unwrap_or(f64::NAN)),
            Metric::new("OrgAvailableCredits", Unit::None, self.org_available_credits.to_f64()),
            Metric::new("MembersCritical", Unit::Count, self.critical.len() as f64),
            Metric::new("MembersWarning", Unit::Count, self.warning.len() as f64),
            Metric::new("MembersRunningOut", Unit::Count, self.running_out.members.len() as f64),
            Metric::new("MemberNoticesSent", Unit::Count, self.member_notices.sent.len() as f64),
            Metric::new(
                "MemberNoticesFailed",
                Unit::Count,
                self.member_notices.not_sent.len() as f64,
            ),
            Metric::new("MembersScanned", Unit::Count, self.members_scanned as f64),
            Metric::new("ArcgisRequests", Unit::Count, self.arcgis_requests as f64),
            Metric::new("DurationMs", Unit::Milliseconds, self.duration_ms as f64),
            Metric::new("ArcgisReadMs", Unit::Milliseconds, self.arcgis_read_ms as f64),
        ]
    }

    /// The compact record kept in the ledger.
    pub fn record(&self) -> RunRecord {
        let names = |list: &[FlaggedMember]| list.iter().map(|m| m.username.clone()).collect::<Vec<_>>();
        RunRecord {
            run_key: self.run_key.clone(),
            org_available_credits: self.org_available_credits,
            members_scanned: self.members_scanned,
            critical: Sample::of(&names(&self.critical)),
            warning: Sample::of(&names(&self.warning)),
            running_out: Sample::of(&names(&self.running_out.members)),
            newly_reported: self.newly_reported,
            already_reported: self.already_reported,
            cleared: self.cleared,
            recipients_notified: Sample::of(&self.recipients_notified),
            member_notices_sent: Sample::of(&self.member_notices.sent),
            member_notices_not_sent: Sample::of(&self.member_notices.not_sent),
            notification: match self.notification {
                NotificationOutcome::Sent { .. } => "sent",
                NotificationOutcome::NothingNew => "nothing_new",
                NotificationOutcome::NoContacts => "no_contacts",
                NotificationOutcome::DryRun { .. } => "dry_run",
                NotificationOutcome::Duplicate => "duplicate",
                NotificationOutcome::Failed { .. } => "failed",
            },
            top_up: match self.top_up {
                TopUp::Off => "off",
                TopUp::NotPossible { .. } => "not_possible",
                TopUp::NothingToDo => "nothing_to_do",
                TopUp::Planned { .. } => "planned",
                TopUp::Applied { incomplete: true, .. } => "incomplete",
                TopUp::Applied { .. } => "applied",
                TopUp::Refused { .. } => "refused",
            },
            allocations_applied: Sample::of(
                &self
                    .allocations_applied
                    .iter()
                    .map(|a| a.username.clone())
                    .collect::<Vec<_>>(),
            ),
            org_floor: self.org_floor,
            problems: self.problems.clone(),
            duration_ms: self.duration_ms,
        }
    }

    /// The record as JSON, for the ledger.
    pub fn record_json(&self) -> Value {
        serde_json::to_value(self.record()).unwrap_or(Value::Null)
    }
}
