//! Why a scan failed, and the Lambda `errorType` each failure is reported as.

use super::summary::ScanSummary;
use crate::arcgis;
use crate::credits::classify::ThresholdError;
use crate::ledger::LedgerError;

/// Why a scan failed. Each message names the step and what to do; [`ScanError::kind`] is the
/// Lambda `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The schedule Input's threshold overrides are unusable; nothing was read. (The
    /// configured thresholds are checked at cold start.)
    #[error("invalid thresholds in the schedule Input: {0}")]
    InvalidInput(#[source] ThresholdError),
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
    /// A repeated delivery of a run found the first delivery's top-up possibly still running
    /// (its lease has not ended): failing makes Lambda retry later, when it can be finished.
    #[error(
        "run {run_key}: the automatic top-up of the first delivery may still be running (its lease ends \
        at {until}); nothing was done: the invocation fails so that Lambda retries it after that"
    )]
    TopUpInProgress {
        /// The run.
        run_key: String,
        /// When the first delivery's lease ends.
        until: chrono::DateTime<chrono::Utc>,
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
    /// The admin alert went out and is recorded, but some members' own notices could not be
    /// sent (or recorded): those stay unrecorded, so the next scheduled run sends them.
    #[error(
        "run {}: member notices incomplete: {reason}. The admin alert went out and is recorded; \
        the next scheduled run sends the notices that failed",
        summary.run_key
    )]
    MemberNoticesFailed {
        /// What failed.
        reason: String,
        /// Everything the run found and did.
        summary: Box<ScanSummary>,
    },
    /// The alert went out and is recorded, but one or more of the other channels (SNS,
    /// Slack, Teams, webhook) could not deliver: what they owe is kept, and the next
    /// scheduled run delivers it.
    #[error(
        "run {}: alert channels incomplete: {reason}. The ArcGIS alert and the other channels \
        went out and are recorded",
        summary.run_key
    )]
    ChannelsFailed {
        /// Each channel's failure (named by channel, never by URL).
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
            ScanError::InvalidInput(_) => "InvalidInput",
            ScanError::Arcgis { source, .. } => match source.root() {
                arcgis::Error::MissingPrivileges { .. } | arcgis::Error::NotAdminView { .. } => "MissingPrivilege",
                arcgis::Error::SignIn { .. } => "SignInRefused",
                _ => "ArcgisUnavailable",
            },
            ScanError::Ledger { .. } => "LedgerUnavailable",
            ScanError::TopUpInProgress { .. } => "TopUpInProgress",
            ScanError::NotificationFailed { .. } => "NotificationFailed",
            ScanError::RecordsIncomplete { .. } => "RecordsIncomplete",
            ScanError::MemberNoticesFailed { .. } => "MemberNoticesFailed",
            ScanError::ChannelsFailed { .. } => "ChannelFailed",
        }
    }

    /// The summary of a run that got as far as side effects, so metrics and logs still show
    /// what it found.
    pub fn summary(&self) -> Option<&ScanSummary> {
        match self {
            ScanError::NotificationFailed { summary, .. }
            | ScanError::RecordsIncomplete { summary, .. }
            | ScanError::MemberNoticesFailed { summary, .. }
            | ScanError::ChannelsFailed { summary, .. } => Some(summary),
            _ => None,
        }
    }

    /// Whether ArcGIS refused the credentials, so the caller can drop a cached secret and
    /// pick up a rotated one on the next invocation.
    pub fn is_sign_in_refused(&self) -> bool {
        matches!(self, ScanError::Arcgis { source, .. } if matches!(source.root(), arcgis::Error::SignIn { .. }))
    }
}
