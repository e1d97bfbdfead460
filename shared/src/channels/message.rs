//! What every channel carries about one run: [`AlertMessage`], built once per run from the
//! alert the admin contacts get, kept in the ledger's outbox while a channel owes it, and
//! rendered per channel (SNS subject and text, Slack `text`, a Teams Adaptive Card, the
//! webhook's versioned JSON).
//!
//! The webhook's JSON is this struct as serialized: its field names are a contract with
//! receivers, versioned by [`SCHEMA`]. Fields may be added within a version; renaming or
//! removing one makes a new version.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::credits::amount::Credits;
use crate::credits::classify::Level;
use crate::i18n::Lang;
use crate::scan::alerts::{Crossings, ORG_ALERT_KEY, ORG_FORECAST_KEY, forecast_member};
use crate::scan::summary::{FlaggedMember, ForecastStatus, OrgFloor, ScanSummary};

/// The version of the webhook payload, its first field (`schema`).
pub const SCHEMA: &str = "credit-steward.alert.v1";

/// The most crossings one message lists (a first run in a large org can have thousands):
/// `crossings_total` says how many there were, the complete lists are behind `lists_link`.
/// Also keeps an owed message far below DynamoDB's 400 KB item limit.
pub const CROSSINGS_MAX: usize = 500;

/// SNS refuses subjects of 100 characters or more, or with line breaks.
pub const SNS_SUBJECT_MAX: usize = 99;

/// One run's alert, as every channel carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    /// [`SCHEMA`].
    pub schema: String,
    /// The run's business key: a receiver's idempotency key (one message per run).
    pub run_key: String,
    /// When the run was for (the schedule time).
    pub as_of: DateTime<Utc>,
    /// The language of `subject` and `text`.
    pub language: Lang,
    /// The alert email's subject: the totals at every level.
    pub subject: String,
    /// The alert email's plain-text body (at most about 60 lines).
    pub text: String,
    /// The run's totals (the state, not only what changed).
    pub totals: Totals,
    /// What this run reports: each crossing, most urgent first, at most [`CROSSINGS_MAX`].
    pub crossings: Vec<Crossing>,
    /// How many crossings the run reports in all.
    pub crossings_total: usize,
    /// A link to the run's complete lists (CSV), when the run wrote them and could sign one.
    pub lists_link: Option<String>,
    /// Set on delivery: a later run delivers it, because the channel failed when it was due.
    #[serde(default)]
    pub late: bool,
}

/// The totals of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Members below the critical threshold.
    pub critical: usize,
    /// Of which reported by this run.
    pub critical_new: usize,
    /// Members below the warning threshold (not critical).
    pub warning: usize,
    /// Of which reported by this run.
    pub warning_new: usize,
    /// Members above the thresholds who run out within `running_out_within_days`.
    pub running_out: usize,
    /// `FORECAST_DAYS`, when forecast alerts are on.
    pub running_out_within_days: Option<u32>,
    /// Members scanned.
    pub members_scanned: usize,
    /// The org's credits left (exact decimal).
    pub org_available_credits: Credits,
    /// The org's floor (`ORG_MIN_CREDITS`), when set.
    pub org_min_credits: Option<Credits>,
    /// Days until the org's credits run out at the recent rate, when known.
    pub org_days_until_empty: Option<f64>,
}

/// What a crossing is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrossingKind {
    /// A member fell below a threshold (or moved between levels).
    MemberLevel,
    /// A member above the thresholds runs out within `FORECAST_DAYS`.
    MemberForecast,
    /// The org fell below `ORG_MIN_CREDITS`.
    OrgFloor,
    /// The org runs out within `FORECAST_DAYS`.
    OrgForecast,
}

/// One crossing a run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    /// What it is about.
    pub kind: CrossingKind,
    /// The member's username (`None` for the org).
    pub member: Option<String>,
    /// `critical` or `warning` (`critical` for the org floor, `warning` for forecasts).
    pub level: Level,
    /// Credits left (the member's, or the org's).
    pub available: Credits,
    /// The member's allocation.
    pub assigned: Option<Credits>,
    /// Percent of the allocation left.
    pub percent_left: Option<f64>,
    /// Credits a day at the recent rate.
    pub credits_per_day: Option<f64>,
    /// Days until empty at that rate.
    pub days_until_empty: Option<f64>,
}

impl AlertMessage {
    /// The message of a run reporting `alerts`, from its summary and the admin alert's
    /// subject and text (so every channel says what the email says).
    pub fn new(
        summary: &ScanSummary,
        alerts: &Crossings,
        language: Lang,
        as_of: DateTime<Utc>,
        subject: &str,
        text: &str,
        lists_link: Option<String>,
    ) -> AlertMessage {
        let find = |list: &[FlaggedMember], name: &str| list.iter().find(|m| m.username == name).cloned();
        let member = |kind, level, m: FlaggedMember| Crossing {
            kind,
            member: Some(m.username),
            level,
            available: m.available,
            assigned: Some(m.assigned),
            percent_left: m.percent_left,
            credits_per_day: m.credits_per_day,
            days_until_empty: m.days_until_empty,
        };
        let org_rate = match &summary.forecast {
            ForecastStatus::Available {
                org_credits_per_day,
                org_days_until_empty,
                ..
            } => (Some(*org_credits_per_day), *org_days_until_empty),
            ForecastStatus::Unavailable { .. } => (None, None),
        };
        let org = |kind, level| Crossing {
            kind,
            member: None,
            level,
            available: summary.org_available_credits,
            assigned: None,
            percent_left: None,
            credits_per_day: org_rate.0,
            days_until_empty: org_rate.1,
        };
        let mut crossings: Vec<Crossing> = alerts
            .report
            .iter()
            .filter_map(|(key, level)| match key.as_str() {
                ORG_ALERT_KEY => Some(org(CrossingKind::OrgFloor, Level::Critical)),
                ORG_FORECAST_KEY => Some(org(CrossingKind::OrgForecast, Level::Warning)),
                k => match forecast_member(k) {
                    Some(name) => find(&summary.running_out.members, name)
                        .map(|m| member(CrossingKind::MemberForecast, Level::Warning, m)),
                    None => find(&summary.critical, k)
                        .or_else(|| find(&summary.warning, k))
                        .map(|m| member(CrossingKind::MemberLevel, *level, m)),
                },
            })
            .collect();
        // The org first, then critical before warning, then the least left in percent.
        crossings.sort_by(|a, b| {
            let rank = |c: &Crossing| (c.member.is_some(), c.level != Level::Critical);
            rank(a).cmp(&rank(b)).then(
                a.percent_left
                    .unwrap_or(f64::MAX)
                    .total_cmp(&b.percent_left.unwrap_or(f64::MAX)),
            )
        });
        let crossings_total = crossings.len();
        crossings.truncate(CROSSINGS_MAX);
        let new = |list: &[FlaggedMember]| list.iter().filter(|m| m.newly_reported).count();
        AlertMessage {
            schema: SCHEMA.to_owned(),
            run_key: summary.run_key.clone(),
            as_of,
            language,
            subject: subject.to_owned(),
            text: text.to_owned(),
            totals: Totals {
                critical: summary.critical.len(),
                critical_new: new(&summary.critical),
                warning: summary.warning.len(),
                warning_new: new(&summary.warning),
                running_out: summary.running_out.members.len(),
                running_out_within_days: summary.running_out.within_days,
                members_scanned: summary.members_scanned,
                org_available_credits: summary.org_available_credits,
                org_min_credits: match summary.org_floor {
                    OrgFloor::NotConfigured => None,
                    OrgFloor::Ok { min_credits } | OrgFloor::Below { min_credits, .. } => Some(min_credits),
                },
                org_days_until_empty: org_rate.1,
            },
            crossings,
            crossings_total,
            lists_link,
            late: false,
        }
    }

    /// The text a chat or email channel shows: the alert's text, preceded by a line saying
    /// it is late when delivered by a later run (the channel was down when it was due).
    pub fn display_text(&self, late: bool) -> String {
        if late {
            let date = self.language.date(self.as_of.date_naive());
            let note = self.language.f("channel.late", &[("date", &date)]);
            format!("{note}\n\n{}", self.text)
        } else {
            self.text.clone()
        }
    }

    /// The day the run was for.
    pub fn day(&self) -> NaiveDate {
        self.as_of.date_naive()
    }

    /// The SNS subject: one line, under 100 characters. A longer subject (the totals at
    /// every level often are) loses its last ` · ` parts, then, if still too long, is cut;
    /// an ellipsis says so. The message repeats the whole subject's figures.
    pub fn sns_subject(&self) -> String {
        let one_line: String = self
            .subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if one_line.chars().count() <= SNS_SUBJECT_MAX {
            return one_line;
        }
        let room = SNS_SUBJECT_MAX - 2;
        let mut kept = String::new();
        for part in one_line.split(" · ") {
            let next = if kept.is_empty() {
                part.to_owned()
            } else {
                format!("{kept} · {part}")
            };
            if next.chars().count() > room {
                break;
            }
            kept = next;
        }
        if kept.is_empty() {
            kept = one_line.chars().take(room).collect();
        }
        format!("{kept} …")
    }

    /// Slack's incoming-webhook body: `{"text": …}` with the subject in bold. Slack reads
    /// `<…>` as links and mentions (`<!channel>`), so `&`, `<` and `>` are escaped as its
    /// documentation asks: a member's display name cannot ping a channel.
    pub fn slack_body(&self, late: bool) -> Value {
        let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        json!({
            "text": format!("*{}*\n{}", escape(&self.subject), escape(&self.display_text(late))),
        })
    }

    /// The body Teams accepts from a Workflows "post to a channel when a webhook request is
    /// received" flow (and from the older incoming webhooks): a message with one Adaptive
    /// Card. Workflows accept Adaptive Cards only, not the older connector message cards.
    pub fn teams_body(&self, late: bool) -> Value {
        let mut body = vec![json!({
            "type": "TextBlock",
            "text": self.subject,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": true,
        })];
        // One block per paragraph: Adaptive Card text is markdown, where one newline is none.
        for paragraph in self.display_text(late).split("\n\n").filter(|p| !p.trim().is_empty()) {
            body.push(json!({
                "type": "TextBlock",
                "text": paragraph.lines().collect::<Vec<_>>().join("\n\n"),
                "wrap": true,
                "spacing": "Medium",
            }));
        }
        let mut card = json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
        });
        if let Some(link) = &self.lists_link {
            card["actions"] = json!([{
                "type": "Action.OpenUrl",
                "title": self.language.t("channel.open_lists"),
                "url": link,
            }]);
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        })
    }

    /// The generic webhook's body: this message as JSON (fields in declaration order,
    /// `schema` first), with `late` set.
    pub fn webhook_body(&self, late: bool) -> Vec<u8> {
        let mut body = self.clone();
        body.late = late;
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str) -> AlertMessage {
        AlertMessage {
            schema: SCHEMA.into(),
            run_key: "2026-11-02T06:00:00Z".into(),
            as_of: "2026-11-02T06:00:00Z".parse().unwrap(),
            language: Lang::En,
            subject: subject.into(),
            text: "line 1\nline 2\n\nafter".into(),
            totals: Totals {
                critical: 1,
                critical_new: 1,
                warning: 0,
                warning_new: 0,
                running_out: 0,
                running_out_within_days: Some(7),
                members_scanned: 3,
                org_available_credits: Credits::whole(100),
                org_min_credits: None,
                org_days_until_empty: None,
            },
            crossings: Vec::new(),
            crossings_total: 0,
            lists_link: None,
            late: false,
        }
    }

    #[test]
    fn the_sns_subject_is_one_line_under_100_characters() {
        let long = format!("a\nb {}", "é".repeat(200));
        let subject = message(&long).sns_subject();
        assert!(subject.chars().count() < 100, "{}", subject.chars().count());
        assert!(!subject.contains('\n') && subject.ends_with(" …"));
        assert_eq!(message("short").sns_subject(), "short");
        // Whole ` · ` parts are dropped before anything is cut.
        let totals = "Crédits ArcGIS Online : 11 critiques (11 nouveaux), 12 en alerte (12 nouveaux) \
                      · organisation 160 501 crédits restants · ~847 jours";
        assert_eq!(
            message(totals).sns_subject(),
            "Crédits ArcGIS Online : 11 critiques (11 nouveaux), 12 en alerte (12 nouveaux) …"
        );
    }

    #[test]
    fn slack_text_cannot_mention_or_link() {
        let body = message("<!channel> & co").slack_body(false);
        assert_eq!(body["text"], "*&lt;!channel&gt; &amp; co*\nline 1\nline 2\n\nafter");
    }

    #[test]
    fn a_late_message_says_so_in_its_language() {
        let mut m = message("s");
        assert!(
            m.display_text(true).starts_with("Delivered late"),
            "{}",
            m.display_text(true)
        );
        m.language = Lang::Fr;
        assert!(
            m.display_text(true).starts_with("Envoyé en retard"),
            "{}",
            m.display_text(true)
        );
        assert_eq!(m.display_text(false), m.text);
    }

    #[test]
    fn the_webhook_body_round_trips_and_names_its_schema() {
        let m = message("s");
        let bytes = m.webhook_body(true);
        assert!(bytes.starts_with(br#"{"schema":"credit-steward.alert.v1","#));
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["late"], true);
        assert_eq!(body["totals"]["org_available_credits"], json!(100));
        let back: AlertMessage = serde_json::from_value(body).unwrap();
        assert_eq!(back, AlertMessage { late: true, ..m });
    }
}
