//! What scan-credits uses from the configuration, validated once at cold start.

use std::time::Duration;

use crate::apply::Applier;
use crate::arcgis::NotifyChannel;
use crate::config::{Config, MemberNotices, ReportLinks};
use crate::credits::amount::Credits;
use crate::credits::classify::{Limit, Thresholds};
use crate::credits::usage::BucketLabel;
use crate::i18n::Lang;
use crate::startup::StartupError;

/// The template's timeout for scan-credits: the deadline used when the invocation's context
/// does not carry a plausible one (local emulators).
pub const FALLBACK_TIMEOUT: Duration = Duration::from_secs(300);

/// The automatic top-up, when `AUTO_TOP_UP_TO` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpSettings {
    /// Critical members are topped up so that this many credits are available.
    pub target: Credits,
    /// The guardrails and limits every allocation is held to (shared with allocate).
    pub applier: Applier,
}

/// Everything scan-credits needs, in domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSettings {
    /// `CRITICAL_PERCENT` / `WARNING_PERCENT` (each run's Input may override them).
    pub thresholds: Thresholds,
    /// `ORG_MIN_CREDITS`.
    pub org_min_credits: Option<Credits>,
    /// `NOTIFY_CHANNEL`.
    pub notify_channel: NotifyChannel,
    /// `AUTO_TOP_UP_TO` with the guardrails.
    pub top_up: Option<TopUpSettings>,
    /// `LEDGER_TABLE`.
    pub ledger_table: String,
    /// `USAGE_BUCKET_LABEL`: how the forecast's usage timestamps are read into days.
    pub bucket_label: BucketLabel,
    /// `REPORT_BUCKET`: where a real run writes its complete member lists
    /// (`scans/YYYY-MM-DD/...`); without it the function's result holds the first members
    /// of each list only.
    pub lists_bucket: Option<String>,
    /// `LANGUAGE`: the alert email's language, unless the run's Input names another.
    pub language: Lang,
    /// `REPORT_LINKS`: whether the email links to the complete lists.
    pub links: ReportLinks,
    /// `FORECAST_DAYS`: alert when a member or the org will run out within this many days at
    /// the recent rate, even above the thresholds; `None` when set to 0 (off).
    pub forecast_alert_days: Option<u32>,
    /// `NOTIFY_MEMBERS`: which crossings members are told about themselves.
    pub member_notices: MemberNotices,
    /// `NOTIFY_MEMBERS_CONTACT`: who a member's notice says to ask; `None`: the org's
    /// administrative contacts.
    pub member_contact: Option<String>,
    /// `ALERT_TOPIC_ARN`: the SNS topic alerts are also published to.
    pub alert_topic_arn: Option<String>,
}

impl ScanSettings {
    /// Builds the settings; the ledger is required (run claims and alert state make each
    /// alert go out once).
    pub fn from_config(config: &Config) -> Result<ScanSettings, StartupError> {
        let ledger_table = config.ledger_table.clone().ok_or(StartupError::Required {
            variable: "LEDGER_TABLE",
            function: "scan-credits",
            why: "run claims and alert state make each alert email go out once",
        })?;
        let thresholds = Thresholds::new(
            Limit::Percent(config.critical_percent),
            Limit::Percent(config.warning_percent),
        )
        .map_err(|e| StartupError::Invalid(format!("CRITICAL_PERCENT / WARNING_PERCENT: {e}")))?;
        Ok(ScanSettings {
            thresholds,
            org_min_credits: config.org_min_credits,
            notify_channel: config.notify_channel,
            top_up: config.auto_top_up_to.map(|target| TopUpSettings {
                target,
                applier: Applier::from_config(config),
            }),
            ledger_table,
            bucket_label: config.usage_bucket_label,
            lists_bucket: config.report_bucket.clone(),
            language: config.language,
            links: config.report_links,
            forecast_alert_days: (config.forecast_days > 0).then_some(config.forecast_days),
            member_notices: config.notify_members,
            member_contact: config.notify_members_contact.clone(),
            alert_topic_arn: config.alert_topic_arn.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_is_required_and_the_top_up_optional() {
        let config = |vars: &[(&str, &str)]| {
            Config::from_lookup(|name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
                    .or_else(|| (name == "ARCGIS_SECRET_ID").then(|| "s".to_owned()))
            })
            .unwrap()
        };
        let err = ScanSettings::from_config(&config(&[])).unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_TABLE: required by scan-credits"),
            "{err}"
        );
        let s = ScanSettings::from_config(&config(&[("LEDGER_TABLE", "t")])).unwrap();
        assert_eq!(s.top_up, None);
        assert_eq!(s.bucket_label, BucketLabel::Start);
        assert_eq!(s.forecast_alert_days, Some(7));
        let off = ScanSettings::from_config(&config(&[("LEDGER_TABLE", "t"), ("FORECAST_DAYS", "0")])).unwrap();
        assert_eq!(off.forecast_alert_days, None, "0 turns the forecast alerts off");
        let s = ScanSettings::from_config(&config(&[("LEDGER_TABLE", "t"), ("USAGE_BUCKET_LABEL", "end")])).unwrap();
        assert_eq!(s.bucket_label, BucketLabel::End);
        let s = ScanSettings::from_config(&config(&[("LEDGER_TABLE", "t"), ("AUTO_TOP_UP_TO", "200")])).unwrap();
        let top_up = s.top_up.unwrap();
        assert_eq!(top_up.target, Credits::whole(200));
        assert_eq!(top_up.applier.guardrails.max_per_day, Credits::whole(20_000));
    }
}
