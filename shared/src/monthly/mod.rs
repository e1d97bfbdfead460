//! The monthly credits report (monthly-report's logic; the Lambda handler only wires it up).
//!
//! The report covers the previous full calendar month in UTC (never "the current month": on
//! the 1st it is empty, and off UTC it is another month), reads the figures from the usage
//! API or the credits report item ([`source`]), and archives CSV, JSON and HTML in S3
//! ([`store`], [`render`]) before mailing a plain-text summary to the org's admin contacts.
//!
//! # Flow and idempotency
//! 1. [`resolve_month`]: decode the event and pick the month ([`month`]). Pure: bad input fails here,
//!    before any request, so nothing is read, written, mailed or claimed.
//! 2. Compute: org properties, the month's figures, the report ([`report`]).
//! 3. Write `reports/YYYY-MM/credits.{csv,html,json}`. The keys depend on the month only and
//!    the content on the month's data only (the balance snapshot of the first run is read back
//!    from `credits.json` and reused), so a retried run — on the 1st after a timeout, or on the
//!    3rd — overwrites the objects with the same bytes. S3 writes are therefore safe to repeat
//!    and need no guard; doing them before the claim means a run that failed half-way still
//!    leaves the report in place when retried, even though its email was sent.
//! 4. Claim `RUN#monthly-report / YYYY-MM` in the ledger (conditional put). Only the claimant
//!    goes on to email: the email is the one side effect that must not repeat.
//! 5. Email the admin contacts (`createNotification`, never retried automatically by the
//!    client).
//! 6. Finish the run record with the summary (`done`, or `failed` if the email failed: a later
//!    run then reports that instead of mailing again; deleting the record allows a resend).

#![warn(missing_docs)]

pub mod month;
pub mod render;
pub mod report;
pub mod source;
pub mod store;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arcgis::{Capability, Client, Notification, NotifyChannel};
use crate::config::{Config, ReportLinks, ReportSource};
use crate::credits::amount::Credits;
use crate::credits::usage::BucketLabel;
use crate::i18n::Lang;
use crate::ledger::{Ledger, LedgerError, RunClaim, RunStatus};
use crate::schedule::{self, EventError, ReportInput};
use crate::startup::StartupError;

pub use month::{Month, MonthError, MonthFrom, ResolvedMonth};
pub use report::{
    BalanceSnapshot, MemberLine, MonthlyReport, OperationTypeCredits, OrgRunway, PreviousMonth, ReportInputs,
    SourceKind,
};
pub use source::ReportItemOutcome;
pub use store::{ReportKeys, ReportStore, StoreError};

/// The job name in the ledger (`RUN#monthly-report`).
pub const JOB: &str = "monthly-report";

/// What monthly-report uses from the configuration, validated once at cold start.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSettings {
    /// `REPORT_BUCKET`: where reports are written.
    pub bucket: String,
    /// `LEDGER_TABLE`: the month's run claim makes the email go out once.
    pub ledger_table: String,
    /// `REPORT_SOURCE`.
    pub source: ReportSource,
    /// `KEEP_REPORT_ITEMS`.
    pub keep_report_items: bool,
    /// `REPORT_TOP_N`.
    pub top_n: usize,
    /// `NOTIFY_CHANNEL`.
    pub notify_channel: NotifyChannel,
    /// `USAGE_BUCKET_LABEL`: how usage timestamps are read into days.
    pub bucket_label: BucketLabel,
    /// `LANGUAGE`: the report's and the email's language, unless the run's Input names another.
    pub language: Lang,
    /// `REPORT_LINKS`: whether the email links to the HTML report.
    pub links: ReportLinks,
}

impl ReportSettings {
    /// The report's settings out of the validated configuration; the bucket and the ledger
    /// are required.
    pub fn from_config(config: &Config) -> Result<ReportSettings, StartupError> {
        let bucket = config.report_bucket.clone().ok_or(StartupError::Required {
            variable: "REPORT_BUCKET",
            function: JOB,
            why: "the S3 bucket that receives reports/YYYY-MM/credits.csv, .json and .html",
        })?;
        let ledger_table = config.ledger_table.clone().ok_or(StartupError::Required {
            variable: "LEDGER_TABLE",
            function: JOB,
            why: "the month's run claim makes the report email go out once",
        })?;
        Ok(ReportSettings {
            bucket,
            ledger_table,
            ..ReportSettings::for_compute_only(config)
        })
    }

    /// The settings [`compute`] reads, for a run that stores and mails nothing (the command
    /// line's `report`): bucket and ledger table are left empty, and such a run never calls
    /// [`execute`], the only reader of either.
    pub fn for_compute_only(config: &Config) -> ReportSettings {
        ReportSettings {
            bucket: String::new(),
            ledger_table: String::new(),
            source: config.report_source,
            keep_report_items: config.keep_report_items,
            top_n: config.report_top_n,
            notify_channel: config.notify_channel,
            bucket_label: config.usage_bucket_label,
            language: config.language,
            links: config.report_links,
        }
    }
}

/// What a run works with; built once per container by the handler and borrowed per run.
#[derive(Debug, Clone, Copy)]
pub struct Deps<'a> {
    /// The ArcGIS client.
    pub client: &'a Client,
    /// The reports bucket.
    pub store: &'a ReportStore,
    /// The ledger holding the run records.
    pub ledger: &'a Ledger,
    /// The report settings.
    pub settings: &'a ReportSettings,
}

/// Why a run failed. [`MonthlyError::kind`] is the Lambda `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum MonthlyError {
    /// The event is not one of the accepted shapes (unknown keys, wrong types, not an object).
    #[error("invalid monthly-report event: {0}. Accepted: {{\"month\": \"YYYY-MM\"}}, {{}} or a scheduled event")]
    Event(#[from] EventError),
    /// The month is malformed, incomplete, in the future or past the usage retention.
    #[error("{0}")]
    Month(#[from] MonthError),
    /// An ArcGIS call failed.
    #[error("{step}: {source}")]
    ArcGis {
        /// What the run was doing.
        step: &'static str,
        /// The client's error (says what to do).
        source: Box<crate::arcgis::Error>,
    },
    /// The report item could not be awaited or downloaded (timeouts included).
    #[error("{step} ({item_id}): {source}")]
    ReportItem {
        /// What the run was doing.
        step: &'static str,
        /// The item.
        item_id: String,
        /// The client's error.
        source: Box<crate::arcgis::Error>,
    },
    /// The report item's CSV could not be read.
    #[error("the credits report item {item_id}: {source}")]
    ReportCsv {
        /// The item.
        item_id: String,
        /// The parser's error (names line and column).
        source: crate::credits::report_csv::ReportCsvError,
    },
    /// `REPORT_SOURCE=report-item` with an app or API-key token: a report item needs an owner.
    #[error(
        "REPORT_SOURCE=report-item needs a member's sign-in (the report item is created in the \
        signed-in member's content), but the secret holds an app or API-key credential; use an \
        administrator's username and password, or REPORT_SOURCE=usage"
    )]
    ReportItemNeedsUser,
    /// The report could not be rendered (should not happen; kept typed rather than panicking).
    #[error("rendering the {what} failed: {detail}")]
    Render {
        /// Which file.
        what: &'static str,
        /// The serializer's error.
        detail: String,
    },
    /// S3 failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The report was written but the email failed. It is not retried automatically: part of
    /// it may have been delivered.
    #[error(
        "the {month} report is in {location}, but emailing the admin contacts failed: {detail}. \
        The email is not resent automatically (part of it may have been delivered); to resend, \
        delete the ledger record RUN#{JOB}/{month} and invoke with {{\"month\": \"{month}\"}}"
    )]
    Email {
        /// The month.
        month: Month,
        /// Where the report is.
        location: String,
        /// What failed.
        detail: String,
    },
}

impl MonthlyError {
    /// A stable, meaningful Lambda `errorType`.
    pub fn kind(&self) -> &'static str {
        use crate::arcgis::Error as E;
        match self {
            MonthlyError::Event(_) => "InvalidEvent",
            MonthlyError::Month(MonthError::Malformed(_) | MonthError::OutOfRange(_)) => "InvalidMonth",
            MonthlyError::Month(MonthError::Future { .. } | MonthError::Incomplete { .. }) => "MonthNotComplete",
            MonthlyError::Month(MonthError::TooOld { .. }) => "MonthOutsideUsageRetention",
            MonthlyError::ArcGis { source, .. } => match **source {
                E::MissingPrivileges { .. } | E::NotAdminView { .. } => "ArcGisPermissionDenied",
                E::SignIn { .. } => "ArcGisSignInFailed",
                _ => "ArcGisError",
            },
            MonthlyError::ReportItem { source, .. } => match **source {
                E::Timeout { .. } => "ReportItemTimeout",
                E::JobFailed { .. } => "ReportItemFailed",
                _ => "ReportItemError",
            },
            MonthlyError::ReportCsv { .. } => "ReportCsvUnreadable",
            MonthlyError::ReportItemNeedsUser => "ReportItemNeedsUser",
            MonthlyError::Render { .. } => "RenderFailed",
            MonthlyError::Store(_) => "ReportStorageFailed",
            MonthlyError::Ledger(_) => "LedgerError",
            MonthlyError::Email { .. } => "EmailFailed",
        }
    }

    /// True when the input was at fault: retrying the same event cannot succeed.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, MonthlyError::Event(_) | MonthlyError::Month(_))
    }

    /// True when ArcGIS refused the credentials (the handler then forgets the cached secret,
    /// so a rotated password is picked up by the next invocation).
    pub fn is_sign_in_failure(&self) -> bool {
        matches!(self, MonthlyError::ArcGis { source, .. } if matches!(**source, crate::arcgis::Error::SignIn { .. }))
    }

    /// Wraps an ArcGIS failure with what the run was doing (for `map_err`).
    pub(crate) fn arcgis(step: &'static str) -> impl FnOnce(crate::arcgis::Error) -> MonthlyError {
        move |source| MonthlyError::ArcGis {
            step,
            source: Box::new(source),
        }
    }
}

/// Whether the balance was read now or reused from the month's first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotOrigin {
    /// Read from `portals/self` by this run (first run for the month).
    Fresh,
    /// Reused from the stored `credits.json`, so the rewritten objects are unchanged.
    ReusedFromFirstRun,
    /// Read fresh because the stored report could not be read (logged).
    FreshStoredUnreadable,
}

/// What happened to the month's email.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EmailOutcome {
    /// Sent to every admin contact.
    Sent {
        /// The admin contacts (usernames).
        recipients: Vec<String>,
        /// The subject line.
        subject: String,
    },
    /// The org has no admin contacts: nobody to mail (the report is in S3 all the same).
    NoRecipients,
    /// An earlier run claimed this month: no second email.
    AlreadyHandled {
        /// When the first run claimed it.
        first_claimed_at: DateTime<Utc>,
        /// How it ended (`claimed` = still running, or it died mid-way).
        first_status: RunStatus,
    },
    /// Some or all of the email did not go out; not retried.
    Failed {
        /// The admin contacts.
        recipients: Vec<String>,
        /// Those whose batch failed.
        not_sent_to: Vec<String>,
        /// Why.
        error: String,
    },
}

/// The function's result: the report's headline figures and what the run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The month reported.
    pub month: Month,
    /// Where the month came from.
    pub month_from: MonthFrom,
    /// The schedule time, when the event had one.
    pub scheduled_time: Option<DateTime<Utc>>,
    /// Set when the month was taken from the invocation time (manual `{}` invoke).
    pub warning: Option<String>,
    /// Where the figures came from.
    pub source: SourceKind,
    /// Credits used in the month.
    pub total_credits: Credits,
    /// The month-over-month comparison.
    pub previous: Option<PreviousMonth>,
    /// Credits per operation type, descending.
    pub operation_types: Vec<OperationTypeCredits>,
    /// The top `REPORT_TOP_N` members.
    pub top_members: Vec<MemberLine>,
    /// How many members used credits (all are in the stored report).
    pub members_with_credits: usize,
    /// Credits charged to no member.
    pub unattributed_credits: Credits,
    /// Remaining credits and the runway.
    pub balance: OrgRunway,
    /// Whether the balance was read now or reused.
    pub balance_snapshot: SnapshotOrigin,
    /// The report's notes.
    pub notes: Vec<String>,
    /// The objects written (`s3://…`).
    pub objects: Vec<String>,
    /// The report item, for the `report-item` source.
    pub report_item: Option<ReportItemOutcome>,
    /// The email.
    pub email: EmailOutcome,
}

/// Decodes `event` and picks the month to report (no I/O; see the module docs).
pub fn resolve_month(event: Value, now: DateTime<Utc>) -> Result<ResolvedMonth, MonthlyError> {
    let run = schedule::decode::<ReportInput>(event)?;
    Ok(month::resolve(&run, now)?)
}

/// [`resolve_month`] then [`execute`].
pub async fn run(event: Value, deps: Deps<'_>, now: DateTime<Utc>) -> Result<RunSummary, MonthlyError> {
    let resolved = resolve_month(event, now)?;
    execute(resolved, deps, now).await
}

/// Produces, stores and mails the report for a resolved month (flow in the module docs).
pub async fn execute(resolved: ResolvedMonth, deps: Deps<'_>, now: DateTime<Utc>) -> Result<RunSummary, MonthlyError> {
    let month = resolved.month;
    let settings = deps.settings;
    let lang = resolved.language.unwrap_or(settings.language);
    let warning = (resolved.from == MonthFrom::Now).then(|| {
        format!(
            "the event named no month and no schedule time, so the month before the invocation \
             time ({}) was reported; schedules should pass scheduled_time so retries report the \
             same month",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    });
    tracing::info!(%month, from = ?resolved.from, source = ?settings.source, "monthly report starting");
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }

    // Compute.
    let keys = ReportKeys::for_month(month);
    let Computed {
        props,
        report,
        report_item,
        snapshot_origin,
    } = compute(deps.client, settings, month, Some(deps.store), now).await?;

    // Write (idempotent overwrites).
    let csv = render::csv(&report, lang).map_err(|e| MonthlyError::Render {
        what: "CSV",
        detail: e.to_string(),
    })?;
    let json = render::json(&report).map_err(|e| MonthlyError::Render {
        what: "JSON",
        detail: e.to_string(),
    })?;
    let html = render::html(&report, lang).into_bytes();
    deps.store.put(&keys.csv, csv, store::CSV_CONTENT_TYPE).await?;
    deps.store.put(&keys.html, html, store::HTML_CONTENT_TYPE).await?;
    deps.store.put(&keys.json, json, store::JSON_CONTENT_TYPE).await?;
    let objects = [&keys.csv, &keys.html, &keys.json]
        .iter()
        .map(|k| deps.store.uri(k))
        .collect();
    tracing::info!(%month, total = %report.total_credits, bucket = deps.store.bucket(), "report written");

    let mut summary = RunSummary {
        month,
        month_from: resolved.from,
        scheduled_time: resolved.scheduled_time,
        warning,
        source: report.source,
        total_credits: report.total_credits,
        previous: report.previous.clone(),
        operation_types: report.operation_types.clone(),
        top_members: report.top_members.clone(),
        members_with_credits: report.members.len(),
        unattributed_credits: report.unattributed_credits,
        balance: report.balance.clone(),
        balance_snapshot: snapshot_origin,
        notes: report.notes.clone(),
        objects,
        report_item,
        email: EmailOutcome::NoRecipients,
    };

    // Claim, then the one guarded side effect.
    let run_key = month.to_string();
    match deps.ledger.claim_run(JOB, &run_key, now).await? {
        RunClaim::AlreadyClaimed { status, claimed_at, .. } => {
            tracing::info!(%month, first_status = %status, %claimed_at, "month already claimed; not mailing again");
            summary.email = EmailOutcome::AlreadyHandled {
                first_claimed_at: claimed_at,
                first_status: status,
            };
            Ok(summary)
        }
        RunClaim::Claimed => {
            let location = match deps.settings.links {
                ReportLinks::Presigned(lifetime) => match deps.store.link(&keys.html, lifetime).await {
                    Ok(link) => link,
                    Err(e) => {
                        tracing::warn!(error = %e, "no link to the report could be made; the email names its S3 key");
                        deps.store.uri(&keys.html)
                    }
                },
                ReportLinks::Off => deps.store.uri(&keys.html),
            };
            summary.email = send_email(deps, &props.admin_contacts, &report, &location, lang).await;
            let status = match summary.email {
                EmailOutcome::Failed { .. } => RunStatus::Failed,
                _ => RunStatus::Done,
            };
            let record = serde_json::to_value(&summary).unwrap_or(Value::Null);
            deps.ledger.finish_run(JOB, &run_key, status, &record).await?;
            match &summary.email {
                EmailOutcome::Failed { error, .. } => Err(MonthlyError::Email {
                    month,
                    location,
                    detail: error.clone(),
                }),
                _ => Ok(summary),
            }
        }
    }
}

/// A month's report, computed: nothing written or mailed yet.
#[derive(Debug)]
pub struct Computed {
    /// The org's properties, read now (contacts, credits, who is signed in).
    pub props: crate::arcgis::OrgProperties,
    /// The report.
    pub report: MonthlyReport,
    /// The report item, for the `report-item` source.
    pub report_item: Option<ReportItemOutcome>,
    /// Whether the balance was read now or reused from the month's first run.
    pub snapshot_origin: SnapshotOrigin,
}

/// Reads the month's figures and builds its report, writing nothing (the CLI's `report`
/// stops here). The balance is the one the month's first run stored in `store`, when there
/// is a store and it holds one, else the org's credits now.
pub async fn compute(
    client: &Client,
    settings: &ReportSettings,
    month: Month,
    store: Option<&ReportStore>,
    now: DateTime<Utc>,
) -> Result<Computed, MonthlyError> {
    let props = client
        .org_properties()
        .await
        .map_err(MonthlyError::arcgis("reading the org's properties"))?;
    let previous = Some(month.previous()).filter(|p| month::within_retention(*p, now));
    let source_kind = SourceKind::from(settings.source);
    let figures = match settings.source {
        ReportSource::Usage => source::from_usage(client, month, previous, settings.bucket_label).await?,
        ReportSource::ReportItem => {
            props.ensure(Capability::CreateReports).map_err(MonthlyError::arcgis(
                "checking the privilege to create the credits report",
            ))?;
            let owner = props.username().ok_or(MonthlyError::ReportItemNeedsUser)?;
            let keep = settings.keep_report_items;
            source::from_report_item(client, owner, month, previous, keep, settings.bucket_label).await?
        }
    };
    let (snapshot, snapshot_origin) = match store {
        Some(store) => {
            balance_snapshot(
                store,
                &ReportKeys::for_month(month),
                month,
                props.available_credits,
                now,
            )
            .await
        }
        None => (
            BalanceSnapshot {
                available_credits: props.available_credits,
                as_of: now,
            },
            SnapshotOrigin::Fresh,
        ),
    };
    let mut notes = figures.notes;
    if previous.is_none() {
        notes.push(format!(
            "No month-over-month change: {} is past ArcGIS Online's usage retention.",
            month.previous()
        ));
    }
    let report = MonthlyReport::build(ReportInputs {
        month,
        source: source_kind,
        org_name: props.name.clone(),
        by_service: &figures.by_service,
        by_member: figures.by_member.as_ref().unwrap_or(&figures.by_service),
        previous_total: figures.previous_total.map(|t| (t, SourceKind::Usage)),
        balance: snapshot,
        top_n: settings.top_n,
        notes,
    });
    // The per-member sums are dropped on return, before rendering: the report holds what it shows.
    Ok(Computed {
        props,
        report,
        report_item: figures.report_item,
        snapshot_origin,
    })
}

/// The balance to report: the one stored by the month's first run when there is one (so a
/// retry rewrites identical objects), else `available` now. The read is only an optimisation:
/// when it fails (no `s3:ListBucket` makes a missing key a 403, for one) the balance is read
/// fresh and the failure logged.
async fn balance_snapshot(
    store: &ReportStore,
    keys: &ReportKeys,
    month: Month,
    available: Credits,
    now: DateTime<Utc>,
) -> (BalanceSnapshot, SnapshotOrigin) {
    #[derive(Deserialize)]
    struct Stored {
        month: Month,
        balance: BalanceSnapshot,
    }
    let fresh = BalanceSnapshot {
        available_credits: available,
        as_of: now,
    };
    match store.get(&keys.json).await {
        Ok(None) => (fresh, SnapshotOrigin::Fresh),
        Ok(Some(bytes)) => match serde_json::from_slice::<Stored>(&bytes) {
            Ok(stored) if stored.month == month => (stored.balance, SnapshotOrigin::ReusedFromFirstRun),
            Ok(_) | Err(_) => {
                tracing::warn!(key = %keys.json, "stored report unreadable; balance read fresh");
                (fresh, SnapshotOrigin::FreshStoredUnreadable)
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not read the stored report; balance read fresh");
            (fresh, SnapshotOrigin::FreshStoredUnreadable)
        }
    }
}

/// Mails the summary to the admin contacts; never errors, the outcome says what happened.
async fn send_email(
    deps: Deps<'_>,
    contacts: &[String],
    report: &MonthlyReport,
    location: &str,
    lang: Lang,
) -> EmailOutcome {
    if contacts.is_empty() {
        tracing::warn!(month = %report.month, "the org has no admin contacts; report not mailed");
        return EmailOutcome::NoRecipients;
    }
    let (subject, message) = render::email(report, location, lang);
    let notification = Notification {
        subject: subject.clone(),
        message,
        channel: deps.settings.notify_channel,
    };
    match deps.client.notify(contacts, &notification).await {
        Ok(outcome) if outcome.is_complete() => {
            tracing::info!(month = %report.month, recipients = contacts.len(), "report mailed");
            EmailOutcome::Sent {
                recipients: contacts.to_vec(),
                subject,
            }
        }
        Ok(outcome) => {
            let error = outcome
                .failed
                .first()
                .map(|f| f.error.to_string())
                .unwrap_or_else(|| "ArcGIS refused some recipients".to_owned());
            tracing::error!(month = %report.month, %error, "report email failed");
            EmailOutcome::Failed {
                recipients: contacts.to_vec(),
                not_sent_to: outcome.not_applied().map(str::to_owned).collect(),
                error,
            }
        }
        Err(e) => {
            tracing::error!(month = %report.month, error = %e, "report email refused");
            EmailOutcome::Failed {
                recipients: contacts.to_vec(),
                not_sent_to: contacts.to_vec(),
                error: e.to_string(),
            }
        }
    }
}
