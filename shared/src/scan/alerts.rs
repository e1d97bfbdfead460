//! One alert per threshold crossing: which members (and the org floor) to report, the email
//! to the admin contacts, and the alert state recorded once the email went out.
//!
//! A crossing is reported when the current level differs from the level recorded in the
//! ledger. The run stages the new levels before its email and commits them only *after* the
//! email went out (see [`crate::ledger::alerts`]): the next run sees the crossing as reported
//! and stays silent; a member back to ok loses their record, so a later crossing is new
//! again. When sending fails nothing is committed and the next scheduled run sends the alert
//! again (a repeated alert is better than a lost one).

use std::collections::{BTreeMap, HashMap};

use super::email::{EmailContext, compose_email};
use super::summary::{NotificationOutcome, ScanSummary};
use super::{ScanDeps, ScanRequest};
use crate::credits::classify::Level;
use crate::ledger::StagedAlerts;

/// The alert-state key for the org floor. `#` is not allowed in ArcGIS usernames, so no
/// member can ever have this key.
pub const ORG_ALERT_KEY: &str = "#org-floor";

/// The alert-state key for the org running out within `FORECAST_DAYS`: apart from the floor,
/// so each is reported once per its own crossing.
pub const ORG_FORECAST_KEY: &str = "#org-forecast";

/// Prefix of a member's forecast alert key: kept apart from the member's level, so a member
/// reported as running out soon is reported again when they also cross a threshold.
const FORECAST_PREFIX: &str = "#forecast/";

/// The alert-state key recording that `username` was reported as running out soon. `#` cannot
/// start a username, so it never collides with a member's own key.
pub fn forecast_key(username: &str) -> String {
    format!("{FORECAST_PREFIX}{username}")
}

/// The member a forecast key is about, or `None` for any other key.
pub fn forecast_member(key: &str) -> Option<&str> {
    key.strip_prefix(FORECAST_PREFIX)
}

/// Whether `key` records a forecast alert (a member's or the org's), not a threshold level.
pub fn is_forecast_key(key: &str) -> bool {
    key == ORG_FORECAST_KEY || forecast_member(key).is_some()
}

/// The crossings of a run, and the alert records they change: the pure core of "one alert
/// per crossing".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Crossings {
    /// Keys whose level differs from the recorded one: report, then record. Sorted by key.
    pub report: Vec<(String, Level)>,
    /// Keys flagged at the level already recorded: stay silent.
    pub already_reported: Vec<String>,
    /// Recorded keys now known to be ok (or gone): delete, so a later crossing alerts again.
    pub clear: Vec<String>,
}

impl Crossings {
    /// Compares the `current` flagged levels (warning/critical only) with the `recorded` ones.
    /// A recorded key that is not flagged now is cleared only when `known_ok(key)`: a member
    /// missing from an incomplete listing, or any member while budgeting is off, is unknown,
    /// and their record stays.
    pub fn new(
        current: &BTreeMap<String, Level>,
        recorded: &HashMap<String, Level>,
        known_ok: impl Fn(&str) -> bool,
    ) -> Self {
        let mut crossings = Crossings::default();
        for (key, level) in current {
            if recorded.get(key) == Some(level) {
                crossings.already_reported.push(key.clone());
            } else {
                crossings.report.push((key.clone(), *level));
            }
        }
        let mut clear: Vec<String> = recorded
            .keys()
            .filter(|k| !current.contains_key(k.as_str()) && known_ok(k))
            .cloned()
            .collect();
        clear.sort();
        crossings.clear = clear;
        crossings
    }

    /// Whether `key` is reported by this run. A search, not a scan: it is asked for every
    /// flagged member, and a first run reports them all.
    pub fn reports(&self, key: &str) -> bool {
        self.report.binary_search_by(|(k, _)| k.as_str().cmp(key)).is_ok()
    }
}

/// Emails the crossings to the admin contacts. `Ok(true)` when sent, `Ok(false)` when there
/// was nothing to send or nobody to send it to, `Err(reason)` when any batch failed (the
/// summary's `notification` says which recipients it reached).
pub(super) async fn notify_admins(
    deps: &ScanDeps<'_>,
    email_context: &EmailContext,
    summary: &mut ScanSummary,
    alerts: &Crossings,
    contacts: &[String],
    other_channels: bool,
) -> Result<bool, String> {
    if alerts.report.is_empty() {
        summary.notification = NotificationOutcome::NothingNew;
        return Ok(false);
    }
    if contacts.is_empty() {
        summary.notification = NotificationOutcome::NoContacts;
        summary.problems.push(if other_channels {
            format!(
                "{} crossing(s) to report but the org has no administrative contacts: they went to the \
                 other alert channels only. Add contacts in the org settings",
                alerts.report.len()
            )
        } else {
            format!(
                "{} crossing(s) to report but the org has no administrative contacts: nobody was told. \
                 Add contacts in the org settings; the alerts are sent by the first run after that",
                alerts.report.len()
            )
        });
        return Ok(false);
    }
    let email = compose_email(summary, email_context);
    let (delivered_to, not_delivered, reason) = match deps.client.notify(contacts, &email).await {
        Ok(outcome) if outcome.failed.is_empty() => {
            summary.recipients_notified = outcome.succeeded.clone();
            summary.notification = NotificationOutcome::Sent {
                subject: email.subject,
                channel: email.channel,
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

/// The alert-state changes a run records: the levels it reports (when its email is to go
/// out) and the keys back to ok.
pub(super) fn changes(alerts: &Crossings, sending: bool) -> Vec<(String, Option<Level>)> {
    let mut changes: Vec<(String, Option<Level>)> = Vec::new();
    if sending {
        changes.extend(alerts.report.iter().map(|(k, l)| (k.clone(), Some(*l))));
    }
    changes.extend(alerts.clear.iter().map(|k| (k.clone(), None)));
    changes
}

/// Commits what the run staged, once its email went out (or when it had nothing to send):
/// the problems, if any; counts the keys cleared in `summary.cleared`.
pub(super) async fn commit_alert_levels(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    staged: &StagedAlerts,
    alerts: &Crossings,
    summary: &mut ScanSummary,
) -> Vec<String> {
    match deps.ledger.commit_alerts(staged, req.now).await {
        Ok(()) => {
            summary.cleared = alerts.clear.len();
            Vec::new()
        }
        Err(e) => vec![format!("alert state of run {}: {e}", staged.run_key)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(pairs: &[(&str, Level)]) -> BTreeMap<String, Level> {
        pairs.iter().map(|(k, l)| (k.to_string(), *l)).collect()
    }

    #[test]
    fn crossings_are_reported_once_and_members_back_to_ok_are_cleared() {
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
        let crossings = Crossings::new(&current, &recorded, |k| k != "unknown");
        assert_eq!(
            crossings.report,
            [
                ("better".to_owned(), Level::Warning),
                ("new".to_owned(), Level::Warning),
                ("worse".to_owned(), Level::Critical)
            ]
        );
        assert_eq!(crossings.already_reported, ["same"]);
        assert_eq!(crossings.clear, ["recovered"]);
        assert!(crossings.reports("new") && !crossings.reports("same"));
    }

    #[test]
    fn the_org_key_cannot_be_a_username() {
        // ArcGIS usernames allow letters, digits, `_`, `.`, `@` (and `-` in some orgs).
        assert!(ORG_ALERT_KEY.contains('#'));
        assert!(ORG_FORECAST_KEY.contains('#'));
    }

    #[test]
    fn forecast_keys_are_apart_from_levels_and_name_their_member() {
        let key = forecast_key("j.doe@acme");
        assert_eq!(forecast_member(&key), Some("j.doe@acme"));
        assert!(is_forecast_key(&key) && is_forecast_key(ORG_FORECAST_KEY));
        assert!(!is_forecast_key("j.doe@acme") && !is_forecast_key(ORG_ALERT_KEY));
        assert_eq!(forecast_member("j.doe@acme"), None);
        // A member running out soon, then also below a threshold: two crossings, each once.
        let recorded: HashMap<String, Level> = [(key.clone(), Level::Warning)].into_iter().collect();
        let current = levels(&[("j.doe@acme", Level::Warning)]);
        let crossings = Crossings::new(&current, &recorded, |_| true);
        assert_eq!(crossings.report, [("j.doe@acme".to_owned(), Level::Warning)]);
        assert_eq!(crossings.clear, [key]);
    }
}
