//! The alert email to the admin contacts: the crossings of this run with each member's
//! figures, the org's position and what the top-up did.
//!
//! Member-supplied text (full names) is made one safe line ([`safe_one_line`]) before it is
//! placed in the email: members edit their own names, and a newline in a name must not
//! forge a paragraph of an email administrators act on.

use std::fmt::Write as _;

use chrono::SecondsFormat;

use super::summary::{Budgeting, FlaggedMember, ForecastStatus, OrgFloor, ScanSummary, TopUp};
use super::{FORECAST_DAYS, ScanRequest};
use crate::arcgis::{Notification, NotifyChannel};
use crate::credits::amount::Credits;
use crate::credits::classify::{Level, SkipReason};
use crate::member_text::{EMAIL_MAX_CHARS, safe_one_line};

/// Members listed per level in the email. A first run in a large org can flag thousands; the
/// email stays readable and the complete list is in the summary.
pub const EMAIL_MEMBERS_PER_LEVEL: usize = 200;

/// Credits for people: two decimals, thousands grouped.
fn credits(value: Credits) -> String {
    value.grouped(2)
}

/// The alert email: subject with the new crossings' counts, and a plain-text body naming each
/// newly reported member with their figures (skipped members are only counted).
pub(super) fn compose_email(s: &ScanSummary, channel: NotifyChannel, req: &ScanRequest) -> Notification {
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
            applied,
            not_applied,
            incomplete,
            ..
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
            if *incomplete {
                let _ = writeln!(
                    body,
                    "The top-up could not finish in this run; a retry of the run finishes it."
                );
            }
            for a in &s.allocations_applied {
                let _ = writeln!(
                    body,
                    "- {}: allocation {} → {}",
                    safe_one_line(&a.username, EMAIL_MAX_CHARS),
                    credits(a.assigned_before),
                    credits(a.assigned_after)
                );
            }
        }
        TopUp::Refused { reason } => {
            let _ = writeln!(body, "Automatic top-up not done: {reason}");
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
        .map(|n| safe_one_line(n, EMAIL_MAX_CHARS))
        .filter(|n| !n.is_empty())
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let left = if m.available.is_negative() {
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
        safe_one_line(&m.username, EMAIL_MAX_CHARS),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::percent::Percent;
    use crate::scan::summary::{NotificationOutcome, Skipped, ThresholdsUsed};
    use crate::schedule::ScanInput;
    use chrono::Utc;

    fn c(x: f64) -> Credits {
        Credits::from_f64(x).unwrap()
    }

    fn summary_with(critical: Vec<FlaggedMember>) -> ScanSummary {
        ScanSummary {
            run_key: "2026-11-26T06:00:00Z".into(),
            dry_run: false,
            duplicate_of: None,
            org_available_credits: c(1234.5),
            budgeting: Budgeting::Enabled,
            thresholds: ThresholdsUsed {
                critical_percent: Percent::whole(10).unwrap(),
                warning_percent: Percent::whole(50).unwrap(),
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
                min_credits: c(5000.0),
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
            assigned: c(assigned),
            available: c(available),
            consumed: c(assigned - available),
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
            deadline: crate::apply::Deadline::after(std::time::Duration::from_secs(60), Utc::now()),
        };
        let n = compose_email(&s, NotifyChannel::Email, &req);
        assert_eq!(
            n.subject,
            "ArcGIS Online credits: 2 critical, 0 warning, org below 5,000.00 credits"
        );
        let body = &n.message;
        assert!(
            body.contains(
                "- jdoe (Jane Doe): consumed 950.00 of 1,000.00 assigned, 50.00 remaining (5.0% left), about 10 days until empty"
            ),
            "{body}"
        );
        assert!(
            body.contains("- amy (Jane Doe): consumed 105.00 of 100.00 assigned, overspent by 5.00, out of credits")
        );
        assert!(!body.contains("- old"), "{body}");
        assert!(body.contains("Organization: 1,234.50 credits available."));
        assert!(body.contains("BELOW the minimum of 5,000.00 credits"));
        assert!(body.contains("forecasts are unavailable this run: HTTP 503"));
    }

    #[test]
    fn a_full_name_cannot_forge_a_paragraph() {
        // Members edit their own full names: a newline used to start a fake paragraph.
        let mut forged = member("mallory", 1000.0, 50.0, true);
        forged.full_name = Some("Mallory\n\nACTION REQUIRED: wire credits to \u{202E}lkj.exe\r\nnow".into());
        let s = summary_with(vec![forged]);
        let req = ScanRequest {
            run_key: s.run_key.clone(),
            request_id: "r".into(),
            input: ScanInput::default(),
            as_of: Utc::now(),
            now: Utc::now(),
            deadline: crate::apply::Deadline::after(std::time::Duration::from_secs(60), Utc::now()),
        };
        let n = compose_email(&s, NotifyChannel::Email, &req);
        let line = n
            .message
            .lines()
            .find(|l| l.starts_with("- mallory"))
            .expect("the member's line");
        assert!(
            line.contains("(Mallory ACTION REQUIRED: wire credits to lkj.exe now)"),
            "{line}"
        );
        assert!(
            !n.message.lines().any(|l| l.starts_with("ACTION REQUIRED")),
            "{}",
            n.message
        );
        assert!(!n.message.contains('\u{202E}'));
    }
}
