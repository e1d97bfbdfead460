//! The alert email to the admin contacts, built to be read in ten seconds: a subject with the
//! current totals, then the totals and what changed since the last alert, the most urgent
//! members with a link to their page, what to do, and where the complete list is. Whatever
//! the org's size it stays under [`EMAIL_MAX_LINES`] lines; the complete lists are written
//! beside the reports ([`super::lists`]).
//!
//! Every sentence comes from the message catalogue ([`crate::i18n`]), in the run's language.
//! Plain text only: ArcGIS notifications carry a plain-text `message` (docs/arcgis.md,
//! "Notifications"), so there is no HTML part to match.
//!
//! Member-supplied text (full names) is made one safe line ([`safe_one_line`]) before it is
//! placed in the email: members edit their own names, and a newline in a name must not
//! forge a paragraph of an email administrators act on.

use std::fmt::Write as _;

use super::BURN_RATE_WINDOW_DAYS;
use super::summary::{Budgeting, FlaggedMember, ForecastStatus, OrgFloor, ScanSummary, TopUp};
use crate::arcgis::{Notification, NotifyChannel};
use crate::credits::amount::Credits;
use crate::credits::classify::{Level, SkipReason};
use crate::i18n::Lang;
use crate::member_text::{EMAIL_MAX_CHARS, safe_one_line};

/// Members shown in the email, most urgent first (critical, then warning); the complete list
/// is in the reports bucket.
pub const EMAIL_MOST_URGENT: usize = 10;

/// Members running out within `FORECAST_DAYS` (above the thresholds) shown in the email,
/// soonest first; the count covers the rest.
pub const EMAIL_RUNNING_OUT: usize = 3;

/// Newly flagged usernames named in the "since the last alert" line.
pub const EMAIL_NEW_NAMES: usize = 5;

/// The email never has more lines than this, whatever the org's size.
pub const EMAIL_MAX_LINES: usize = 60;

/// Where the run's complete lists are, said in the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListsPlace {
    /// The reports bucket.
    pub bucket: String,
    /// The CSV of every flagged member (`scans/YYYY-MM-DD/<run>/members.csv`).
    pub csv_key: String,
    /// A link people can open without AWS access, once one is made for them; until then the
    /// email names the bucket and the file.
    pub link: Option<String>,
}

/// What the email needs besides the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailContext {
    /// How ArcGIS delivers it.
    pub channel: NotifyChannel,
    /// The language it is written in.
    pub lang: Lang,
    /// The run's day (the schedule's), for the title and the example's reason.
    pub date: chrono::NaiveDate,
    /// The org's home (`https://acme.maps.arcgis.com`), for links to members' pages.
    pub org_home: Option<String>,
    /// Where the complete lists are, when the run writes them.
    pub lists: Option<ListsPlace>,
    /// Members back above the thresholds since the last alert.
    pub back_to_ok: usize,
    /// The automatic top-up's target, used in the example when set.
    pub top_up_target: Option<Credits>,
}

/// The alert email (layout in the module docs).
pub fn compose_email(s: &ScanSummary, ctx: &EmailContext) -> Notification {
    Notification {
        subject: subject(s, ctx),
        message: body(s, ctx),
        channel: ctx.channel,
    }
}

fn new_count(list: &[FlaggedMember]) -> usize {
    list.iter().filter(|m| m.newly_reported).count()
}

/// The org's days until empty, when forecasts ran and it is running out.
fn org_days(s: &ScanSummary) -> Option<f64> {
    match s.forecast {
        ForecastStatus::Available {
            org_days_until_empty, ..
        } => org_days_until_empty,
        ForecastStatus::Unavailable { .. } => None,
    }
}

/// "ArcGIS Online credits: 3 critical (1 new), 12 warning · org 41,250 credits left · ~63 days"
fn subject(s: &ScanSummary, ctx: &EmailContext) -> String {
    let lang = ctx.lang;
    let mut parts = Vec::new();
    if s.budgeting == Budgeting::Enabled {
        let level = |key: &str, list: &[FlaggedMember]| {
            let (n, new) = (list.len(), new_count(list));
            let count = lang.count(n);
            if new == 0 {
                lang.p(key, n, &[("count", &count)])
            } else {
                let with_new = lang.p("scan.subject.new", new, &[("new", &lang.count(new))]);
                format!("{} {with_new}", lang.p(key, n, &[("count", &count)]))
            }
        };
        let mut levels = format!(
            "{}, {}",
            level("scan.subject.critical", &s.critical),
            level("scan.subject.warning", &s.warning)
        );
        if let (Some(within), false) = (s.running_out.within_days, s.running_out.members.is_empty()) {
            let n = s.running_out.members.len();
            let count = lang.count(n);
            let within = within.to_string();
            let _ = write!(
                levels,
                ", {}",
                lang.p("scan.subject.running_out", n, &[("count", &count), ("within", &within)])
            );
            let new = s.running_out.newly_reported;
            if new > 0 {
                let _ = write!(
                    levels,
                    " {}",
                    lang.p("scan.subject.new", new, &[("new", &lang.count(new))])
                );
            }
        }
        parts.push(levels);
    }
    let credits = lang.credits_short(s.org_available_credits);
    parts.push(match s.org_floor {
        OrgFloor::Below { min_credits, .. } => lang.f(
            "scan.subject.org_below",
            &[("credits", &credits), ("min", &lang.credits_short(min_credits))],
        ),
        _ => lang.f("scan.subject.org", &[("credits", &credits)]),
    });
    if let Some(days) = org_days(s).filter(|d| *d > 0.0) {
        let rounded = days.round().max(1.0);
        parts.push(lang.p(
            "scan.subject.days",
            rounded as usize,
            &[("days", &lang.number(rounded, 0))],
        ));
    }
    format!("{} {}", lang.t("scan.subject.prefix"), parts.join(" · "))
}

fn body(s: &ScanSummary, ctx: &EmailContext) -> String {
    let lang = ctx.lang;
    let mut b = String::new();
    let _ = writeln!(b, "{}", lang.f("scan.title", &[("date", &lang.date(ctx.date))]));
    let _ = writeln!(b);

    // The totals.
    if s.budgeting == Budgeting::Enabled {
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "scan.totals",
                &[
                    ("critical", &lang.count(s.critical.len())),
                    ("warning", &lang.count(s.warning.len())),
                    ("scanned", &lang.count(s.members_scanned)),
                ]
            )
        );
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "scan.levels",
                &[
                    ("critical", &lang.percent(s.thresholds.critical_percent.to_f64())),
                    ("warning", &lang.percent(s.thresholds.warning_percent.to_f64())),
                ]
            )
        );
    } else {
        let _ = writeln!(b, "{}", lang.t("scan.budgeting_off"));
    }
    let credits = lang.credits_short(s.org_available_credits);
    match (org_days(s), &s.forecast) {
        (Some(days), _) if days > 0.0 => {
            let rounded = days.round().max(1.0);
            let _ = writeln!(
                b,
                "{}",
                lang.p(
                    "scan.org_days",
                    rounded as usize,
                    &[
                        ("credits", &credits),
                        ("days", &lang.number(rounded, 0)),
                        ("window", &BURN_RATE_WINDOW_DAYS.to_string()),
                    ]
                )
            );
        }
        (_, ForecastStatus::Unavailable { reason }) => {
            let _ = writeln!(b, "{}", lang.f("scan.org", &[("credits", &credits)]));
            let reason = safe_one_line(reason, 120);
            let _ = writeln!(b, "{}", lang.f("scan.forecast_unavailable", &[("reason", &reason)]));
        }
        _ => {
            let _ = writeln!(b, "{}", lang.f("scan.org", &[("credits", &credits)]));
        }
    }
    if let OrgFloor::Below { min_credits, .. } = s.org_floor {
        let _ = writeln!(
            b,
            "{}",
            lang.f("scan.floor_below", &[("min", &lang.credits_short(min_credits))])
        );
    }
    if let (Some(org), Some(within)) = (&s.running_out.org, s.running_out.within_days) {
        let rounded = org.days_until_empty.round().max(1.0);
        let _ = writeln!(
            b,
            "{}",
            lang.p(
                "scan.org_running_out",
                rounded as usize,
                &[
                    ("days", &lang.number(rounded, 0)),
                    ("within", &within.to_string()),
                    ("rate", &rate(lang, org.credits_per_day)),
                ]
            )
        );
    }

    // What changed.
    let _ = writeln!(b);
    if s.budgeting == Budgeting::Enabled {
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "scan.changes",
                &[
                    ("critical", &lang.count(new_count(&s.critical))),
                    ("warning", &lang.count(new_count(&s.warning))),
                    ("back", &lang.count(ctx.back_to_ok)),
                ]
            )
        );
    }
    if matches!(
        s.org_floor,
        OrgFloor::Below {
            newly_reported: true,
            ..
        }
    ) {
        let _ = writeln!(b, "{}", lang.t("scan.changes_floor"));
    }
    if s.running_out.org.is_some_and(|o| o.newly_reported) {
        let _ = writeln!(b, "{}", lang.t("scan.changes_org_running_out"));
    }
    let new: Vec<&FlaggedMember> = s
        .critical
        .iter()
        .chain(&s.warning)
        .chain(&s.running_out.members)
        .filter(|m| m.newly_reported)
        .collect();
    if !new.is_empty() {
        let mut names: Vec<String> = new
            .iter()
            .take(EMAIL_NEW_NAMES)
            .map(|m| safe_one_line(&m.username, EMAIL_MAX_CHARS))
            .collect();
        if new.len() > EMAIL_NEW_NAMES {
            let more = new.len() - EMAIL_NEW_NAMES;
            names.push(lang.p("scan.and_more", more, &[("count", &lang.count(more))]));
        }
        let _ = writeln!(b, "{}", lang.f("scan.new_names", &[("names", &names.join(", "))]));
    }

    // The most urgent members.
    let flagged = s.critical.len() + s.warning.len();
    if flagged > 0 {
        let shown: Vec<(&FlaggedMember, Level)> = s
            .critical
            .iter()
            .map(|m| (m, Level::Critical))
            .chain(s.warning.iter().map(|m| (m, Level::Warning)))
            .take(EMAIL_MOST_URGENT)
            .collect();
        let _ = writeln!(b);
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "scan.urgent",
                &[("shown", &lang.count(shown.len())), ("total", &lang.count(flagged))]
            )
        );
        for (m, level) in &shown {
            let _ = writeln!(b, "- {}", member_line(lang, m, *level));
            if let Some(home) = &ctx.org_home {
                let _ = writeln!(b, "  {}", member_page(home, &m.username));
            }
        }
    }

    // Members above the thresholds who run out soon at their recent rate.
    if let (Some(within), false) = (s.running_out.within_days, s.running_out.members.is_empty()) {
        let total = s.running_out.members.len();
        let shown = total.min(EMAIL_RUNNING_OUT);
        let _ = writeln!(b);
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "scan.running_out",
                &[
                    ("within", &within.to_string()),
                    ("shown", &lang.count(shown)),
                    ("total", &lang.count(total)),
                ]
            )
        );
        for m in s.running_out.members.iter().take(shown) {
            let _ = writeln!(b, "- {}", running_out_line(lang, m));
            if let Some(home) = &ctx.org_home {
                let _ = writeln!(b, "  {}", member_page(home, &m.username));
            }
        }
    }

    // What to do.
    let _ = writeln!(b);
    what_to_do(&mut b, s, ctx);

    // Where the complete list is.
    if flagged > 0 {
        let _ = writeln!(b);
        let count = lang.count(flagged);
        let line = match &ctx.lists {
            Some(ListsPlace { link: Some(link), .. }) => {
                lang.f("scan.lists_link", &[("count", &count), ("link", link)])
            }
            Some(place) => lang.f(
                "scan.lists_where",
                &[("count", &count), ("key", &place.csv_key), ("bucket", &place.bucket)],
            ),
            None => lang.t("scan.lists_none").to_owned(),
        };
        let _ = writeln!(b, "{line}");
    }

    // What else happened, one line each.
    let mut other = Vec::new();
    if s.skipped.total > 0 {
        let reasons: Vec<String> = s
            .skipped
            .by_reason
            .iter()
            .map(|(reason, g)| format!("{} {}", lang.count(g.count), lang.t(skip_key(*reason))))
            .collect();
        other.push(lang.f(
            "scan.skipped",
            &[
                ("count", &lang.count(s.skipped.total)),
                ("reasons", &reasons.join(", ")),
            ],
        ));
    }
    if !s.member_errors.is_empty() {
        other.push(lang.f("scan.unreadable", &[("count", &lang.count(s.member_errors.len()))]));
    }
    match &s.top_up {
        TopUp::Applied {
            applied,
            not_applied,
            incomplete,
            ..
        } => {
            other.push(lang.f(
                "scan.top_up_applied",
                &[
                    ("applied", &lang.count(*applied)),
                    ("not_changed", &lang.count(not_applied.len())),
                ],
            ));
            if *incomplete {
                other.push(lang.t("scan.top_up_incomplete").to_owned());
            }
        }
        TopUp::Refused { reason } => {
            other.push(lang.f("scan.top_up_refused", &[("reason", &safe_one_line(reason, 200))]));
        }
        _ => {}
    }
    if !other.is_empty() {
        let _ = writeln!(b);
        for line in other {
            let _ = writeln!(b, "{line}");
        }
    }
    let _ = writeln!(b);
    let _ = writeln!(b, "{}", lang.t("scan.footer"));
    b
}

/// "Jane Doe (jdoe): 50 credits left (5%), about 10 days left · critical, new"
fn member_line(lang: Lang, m: &FlaggedMember, level: Level) -> String {
    let username = safe_one_line(&m.username, EMAIL_MAX_CHARS);
    let name = match m
        .full_name
        .as_deref()
        .map(|n| safe_one_line(n, EMAIL_MAX_CHARS))
        .filter(|n| !n.is_empty())
    {
        Some(full) => format!("{full} ({username})"),
        None => username,
    };
    let mut line = if m.available.is_negative() {
        lang.f(
            "scan.member_overspent",
            &[("name", &name), ("credits", &lang.credits_short(-m.available))],
        )
    } else {
        match m.percent_left {
            Some(p) => lang.f(
                "scan.member_left_percent",
                &[
                    ("name", &name),
                    ("credits", &lang.credits_short(m.available)),
                    ("percent", &lang.percent(p)),
                ],
            ),
            None => lang.f(
                "scan.member_left",
                &[("name", &name), ("credits", &lang.credits_short(m.available))],
            ),
        }
    };
    match (m.days_until_empty, m.credits_per_day) {
        // "Overspent by" already says it is empty.
        _ if m.available.is_negative() => {}
        (Some(d), _) if d <= 0.0 => {
            let _ = write!(line, ", {}", lang.t("scan.member_empty"));
        }
        (Some(d), _) => {
            let rounded = d.round().max(1.0);
            let days = lang.p(
                "scan.member_days",
                rounded as usize,
                &[("days", &lang.number(rounded, 0))],
            );
            let _ = write!(line, ", {days}");
        }
        (None, Some(_)) => {
            let _ = write!(line, ", {}", lang.t("scan.member_no_spending"));
        }
        (None, None) => {}
    }
    let level_name = lang.t(level_key(level));
    let status = match (m.newly_reported, m.previously_reported) {
        (true, Some(was)) if was != level => lang.f(
            "scan.member_was",
            &[("level", level_name), ("was", lang.t(level_key(was)))],
        ),
        (true, _) => lang.f("scan.member_new", &[("level", level_name)]),
        (false, _) => level_name.to_owned(),
    };
    format!("{line} · {status}")
}

/// "Jane Doe (jdoe): 600 credits left (60%), 150 credits a day, about 4 days left · running
/// out, new": the rate is what predicts it, so the line says it.
fn running_out_line(lang: Lang, m: &FlaggedMember) -> String {
    let mut line = member_line(lang, m, Level::Warning);
    // The member line ends with its level; a member running out soon has none.
    if let Some(at) = line.rfind(" · ") {
        line.truncate(at);
    }
    if let Some(per_day) = m.credits_per_day {
        let _ = write!(
            line,
            " {}",
            lang.f("scan.member_rate", &[("rate", &rate(lang, per_day))])
        );
    }
    let status = lang.t("level.running_out");
    if m.newly_reported {
        format!("{line} · {}", lang.f("scan.member_new", &[("level", status)]))
    } else {
        format!("{line} · {status}")
    }
}

/// Credits per day for reading: one decimal below 10, whole above.
fn rate(lang: Lang, per_day: f64) -> String {
    lang.number(per_day, if per_day.abs() < 10.0 { 1 } else { 0 })
}

fn level_key(level: Level) -> &'static str {
    match level {
        Level::Critical => "level.critical",
        _ => "level.warning",
    }
}

/// The member's page in the org: `<home>/home/user.html?user=<username>`.
pub fn member_page(home: &str, username: &str) -> String {
    let mut encoded = String::with_capacity(username.len());
    for b in username.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => encoded.push(char::from(b)),
            _ => {
                let _ = write!(encoded, "%{b:02X}");
            }
        }
    }
    format!("{}/home/user.html?user={encoded}", home.trim_end_matches('/'))
}

/// The allocations API call that tops the flagged members up, as examples to copy.
fn what_to_do(b: &mut String, s: &ScanSummary, ctx: &EmailContext) {
    let lang = ctx.lang;
    let first = s
        .critical
        .first()
        .or(s.warning.first())
        .or(s.running_out.members.first());
    let Some(first) = first.filter(|_| s.budgeting == Budgeting::Enabled) else {
        let _ = writeln!(b, "{}", lang.t("scan.todo_org"));
        return;
    };
    let reason = lang.f("scan.todo_reason", &[("date", &lang.date(ctx.date))]);
    let reason_json = serde_json::Value::String(reason).to_string();
    // The example's target: the automatic top-up's, else the member's own allocation (a full
    // allocation's worth available again), in whole credits.
    let target = |m: &FlaggedMember| -> i128 {
        let t = ctx.top_up_target.unwrap_or(m.assigned);
        let whole = t.micros().div_euclid(1_000_000) + i128::from(t.micros().rem_euclid(1_000_000) > 0);
        whole.max(1)
    };
    let _ = writeln!(b, "{}", lang.t("scan.todo"));
    if !s.critical.is_empty() {
        let t = target(first);
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "scan.todo_policy",
                &[("target", &lang.credits_short(Credits::from_micros(t * 1_000_000)))]
            )
        );
        let _ = writeln!(
            b,
            "  {{\"policy\": \"critical\", \"top_up_to\": {t}, \"dry_run\": true, \"reason\": {reason_json}}}"
        );
        let _ = writeln!(b, "{}", lang.t("scan.todo_dry_run"));
    }
    let username = serde_json::Value::String(first.username.clone()).to_string();
    let _ = writeln!(
        b,
        "{}",
        lang.f(
            "scan.todo_one",
            &[("username", &safe_one_line(&first.username, EMAIL_MAX_CHARS))]
        )
    );
    let _ = writeln!(
        b,
        "  {{\"allocations\": [{{\"username\": {username}, \"top_up_to\": {}}}], \"reason\": {reason_json}}}",
        target(first)
    );
}

fn skip_key(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Disabled => "skip.disabled",
        SkipReason::Viewer => "skip.viewer",
        SkipReason::Unlimited => "skip.unlimited",
        SkipReason::ZeroAllocation => "skip.zero_allocation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::percent::Percent;
    use crate::i18n::FR_SPACE;
    use crate::scan::summary::{
        AppliedAllocation, MemberNotTopped, NotificationOutcome, OrgRunningOut, RunningOut, Skipped, SkippedGroup,
        ThresholdsUsed,
    };

    fn c(x: f64) -> Credits {
        Credits::from_f64(x).unwrap()
    }

    fn summary_with(critical: Vec<FlaggedMember>, warning: Vec<FlaggedMember>) -> ScanSummary {
        ScanSummary {
            run_key: "2026-11-01T06:00:00Z".into(),
            dry_run: false,
            duplicate_of: None,
            org_available_credits: c(41_250.4),
            budgeting: Budgeting::Enabled,
            thresholds: ThresholdsUsed {
                critical_percent: Percent::whole(10).unwrap(),
                warning_percent: Percent::whole(50).unwrap(),
            },
            members_scanned: 2_000,
            critical,
            warning,
            skipped: Skipped::default(),
            member_errors: Vec::new(),
            forecast: ForecastStatus::Available {
                window_days: 30.0,
                org_credits_per_day: 654.8,
                org_days_until_empty: Some(63.2),
            },
            org_floor: OrgFloor::NotConfigured,
            running_out: RunningOut {
                within_days: Some(7),
                ..RunningOut::default()
            },
            newly_reported: 1,
            already_reported: 0,
            cleared: 0,
            recipients_notified: Vec::new(),
            notification: NotificationOutcome::NothingNew,
            member_notices: Default::default(),
            channels: Vec::new(),
            top_up: TopUp::Off,
            allocations_applied: Vec::new(),
            notes: Vec::new(),
            problems: Vec::new(),
            arcgis_requests: 7,
            duration_ms: 12,
            arcgis_read_ms: 10,
            lists: crate::scan::Lists::NotConfigured,
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

    fn context(lang: Lang) -> EmailContext {
        EmailContext {
            channel: NotifyChannel::Email,
            lang,
            date: "2026-11-01".parse().unwrap(),
            org_home: Some("https://acme.maps.arcgis.com".into()),
            lists: Some(ListsPlace {
                bucket: "credit-steward-reports".into(),
                csv_key: "scans/2026-11-01/2026-11-01T06-00-00Z/members.csv".into(),
                link: None,
            }),
            back_to_ok: 2,
            top_up_target: None,
        }
    }

    /// 32 members still critical and already reported, 114 newly warning: the subject used
    /// to say "0 critical, 114 warning", as if nobody were critical.
    #[test]
    fn the_subject_states_the_current_totals_not_only_the_new_crossings() {
        let critical = (0..32)
            .map(|i| member(&format!("crit{i:02}"), 1000.0, 50.0, false))
            .collect();
        let warning = (0..114)
            .map(|i| member(&format!("warn{i:03}"), 1000.0, 300.0, true))
            .collect();
        let n = compose_email(&summary_with(critical, warning), &context(Lang::En));
        assert_eq!(
            n.subject,
            "ArcGIS Online credits: 32 critical, 114 warning (114 new) · org 41,250 credits left · ~63 days"
        );
        assert!(
            n.message
                .contains("Members now critical: 32 · warning: 114 · scanned: 2,000"),
            "{}",
            n.message
        );
        assert!(
            n.message
                .contains("Since the last alert: critical +0, warning +114, back above the thresholds: 2."),
            "{}",
            n.message
        );
    }

    #[test]
    fn the_email_opens_with_the_totals_then_the_most_urgent_then_what_to_do() {
        let mut was_warning = member("jdoe", 1000.0, 50.0, true);
        was_warning.previously_reported = Some(Level::Warning);
        let mut s = summary_with(
            vec![
                member("amy", 100.0, -5.0, true),
                was_warning,
                member("old", 100.0, 1.0, false),
            ],
            vec![member("wendy", 2000.0, 600.0, false)],
        );
        s.org_floor = OrgFloor::Below {
            min_credits: c(50_000.0),
            newly_reported: true,
        };
        let n = compose_email(&s, &context(Lang::En));
        assert_eq!(
            n.subject,
            "ArcGIS Online credits: 3 critical (2 new), 1 warning · org 41,250 credits left, below 50,000 · ~63 days"
        );
        let lines: Vec<&str> = n.message.lines().collect();
        let at = |text: &str| {
            lines
                .iter()
                .position(|l| l.contains(text))
                .unwrap_or_else(|| panic!("no '{text}' in\n{}", n.message))
        };
        assert_eq!(lines[0], "Credit scan of November 1, 2026.");
        assert!(at("Members now critical: 3") < at("Since the last alert"));
        assert!(at("Since the last alert") < at("Most urgent (4 of 4):"));
        assert!(at("Most urgent") < at("What to do") && at("What to do") < at("Complete list"));
        assert!(n.message.contains(
            "Organization: 41,250 credits left, about 63 days at the last 30 days' rate.\n\
             The organization is below its minimum of 50,000 credits: buy credits or reduce usage."
        ));
        assert!(n.message.contains("New: amy, jdoe."), "{}", n.message);
        assert!(
            n.message.contains(
                "- Jane Doe (amy): overspent by 5.0 credits · critical, new\n  \
                 https://acme.maps.arcgis.com/home/user.html?user=amy\n"
            ),
            "{}",
            n.message
        );
        assert!(
            n.message
                .contains("- Jane Doe (jdoe): 50 credits left (5.0%), about 10 days left · critical, was warning"),
            "{}",
            n.message
        );
        assert!(
            n.message
                .contains("- Jane Doe (wendy): 600 credits left (30%), about 120 days left · warning\n")
        );
        // The example is a body the allocations API accepts, for the most urgent member.
        let example = lines[at("\"allocations\"")].trim();
        let body: serde_json::Value = serde_json::from_str(example).unwrap();
        assert_eq!(body["allocations"][0]["username"], "amy");
        assert_eq!(body["allocations"][0]["top_up_to"], 100);
        assert_eq!(body["reason"], "credit alert of November 1, 2026");
        let policy: serde_json::Value = serde_json::from_str(lines[at("\"policy\"")].trim()).unwrap();
        assert_eq!(
            (&policy["policy"], &policy["dry_run"]),
            (&"critical".into(), &true.into())
        );
        assert!(n.message.contains(
            "Complete list of flagged members (4): file scans/2026-11-01/2026-11-01T06-00-00Z/members.csv \
             in the reports bucket credit-steward-reports"
        ));
        assert!(!n.message.contains("ORG_MIN_CREDITS") && !n.message.contains("AUTO_TOP_UP"));
    }

    #[test]
    fn the_email_reads_in_french() {
        let mut s = summary_with(
            vec![
                member("amy", 1000.0, 12.5, true),
                member("bob", 100_000.0, 4_321.0, false),
            ],
            vec![member("wendy", 2000.0, 600.0, true)],
        );
        s.org_available_credits = c(41_250.0);
        let n = compose_email(&s, &context(Lang::Fr));
        let sp = FR_SPACE;
        assert_eq!(
            n.subject,
            format!(
                "Crédits ArcGIS Online : 2 critiques (1 nouveau), 1 en alerte (1 nouveau) · organisation \
                 41{sp}250 crédits restants · ~63 jours"
            )
        );
        let lines: Vec<&str> = n.message.lines().collect();
        assert_eq!(lines[0], "Analyse des crédits du 1er novembre 2026.");
        assert!(
            n.message.contains(&format!(
                "- Jane Doe (bob) : 4{sp}321 crédits restants (4,3{sp}%), environ 864 jours restants · critique\n"
            )),
            "{}",
            n.message
        );
        assert!(n.message.contains(&format!(
            "(Critique : moins de 10{sp}% de leur allocation restante ; alerte : moins de 50{sp}%.)"
        )));
        assert!(n.message.contains("Nouveaux : amy, wendy."));
        assert!(
            n.message
                .contains("\"reason\": \"alerte crédits du 1er novembre 2026\"")
        );
        assert!(
            n.message
                .contains("Liste complète des membres signalés (3) : fichier scans/")
        );
        for english in ["credits left", "What to do", "Most urgent", "critical,"] {
            assert!(!n.message.contains(english), "'{english}' in\n{}", n.message);
        }
    }

    /// A 2,000-member org's first alert, every member flagged, a top-up that changed
    /// hundreds, every reason to skip: the email stays short and says where the rest is.
    #[test]
    fn a_first_alert_in_a_large_org_stays_under_sixty_lines() {
        for lang in Lang::ALL {
            let critical: Vec<FlaggedMember> = (0..1_200)
                .map(|i| member(&format!("member{i:04}"), 1000.0, 20.0, true))
                .collect();
            let warning: Vec<FlaggedMember> = (1_200..2_000)
                .map(|i| member(&format!("member{i:04}"), 1000.0, 300.0, true))
                .collect();
            let mut s = summary_with(critical, warning);
            s.org_floor = OrgFloor::Below {
                min_credits: c(50_000.0),
                newly_reported: true,
            };
            s.member_errors = (0..300).map(|i| format!("member{i}: unreadable")).collect();
            s.running_out.members = (2_000..2_400)
                .map(|i| running_out(&format!("member{i:04}"), 900.0, 150.0, true))
                .collect();
            s.running_out.newly_reported = 400;
            s.running_out.org = Some(OrgRunningOut {
                credits_per_day: 9_000.0,
                days_until_empty: 4.6,
                newly_reported: true,
            });
            s.skipped = Skipped {
                total: 40,
                by_reason: [
                    (SkipReason::Disabled, 10),
                    (SkipReason::Viewer, 10),
                    (SkipReason::Unlimited, 10),
                    (SkipReason::ZeroAllocation, 10),
                ]
                .into_iter()
                .map(|(r, count)| {
                    (
                        r,
                        SkippedGroup {
                            count,
                            usernames: Vec::new(),
                        },
                    )
                })
                .collect(),
            };
            s.top_up = TopUp::Applied {
                requested: 600,
                applied: 500,
                not_applied: vec![
                    MemberNotTopped {
                        username: "x".into(),
                        status: "failed",
                        detail: "d".into(),
                    };
                    100
                ],
                incomplete: true,
                resumed: false,
            };
            s.allocations_applied = vec![
                AppliedAllocation {
                    username: "member0001".into(),
                    assigned_before: c(1000.0),
                    available_before: c(20.0),
                    assigned_after: c(1180.0),
                    available_after: c(200.0),
                };
                500
            ];
            let n = compose_email(&s, &context(lang));
            let lines = n.message.lines().count();
            assert!(lines <= EMAIL_MAX_LINES, "{lang}: {lines} lines\n{}", n.message);
            assert!(n.message.contains("members.csv"), "{}", n.message);
            assert!(
                n.message.contains("(10 ") || n.message.contains("(10 sur"),
                "{}",
                n.message
            );
        }
    }

    #[test]
    fn the_example_tops_up_to_the_configured_target_or_a_full_allocation() {
        let s = summary_with(vec![member("amy", 250.5, 3.0, true)], Vec::new());
        let policy = |n: &Notification| -> serde_json::Value {
            let line = n.message.lines().find(|l| l.contains("\"policy\"")).unwrap();
            serde_json::from_str(line.trim()).unwrap()
        };
        assert_eq!(policy(&compose_email(&s, &context(Lang::En)))["top_up_to"], 251);
        let mut ctx = context(Lang::En);
        ctx.top_up_target = Some(c(150.0));
        let n = compose_email(&s, &ctx);
        assert_eq!(policy(&n)["top_up_to"], 150);
        assert!(n.message.contains("Every critical member to 150 credits available:"));
        // Only warnings: no critical policy, the one-member example still.
        let n = compose_email(
            &summary_with(Vec::new(), vec![member("wendy", 100.0, 30.0, true)]),
            &ctx,
        );
        assert!(!n.message.contains("\"policy\"") && n.message.contains("\"username\": \"wendy\""));
    }

    #[test]
    fn member_pages_are_links_in_the_org() {
        assert_eq!(
            member_page("https://acme.maps.arcgis.com/", "j.doe@acme_1"),
            "https://acme.maps.arcgis.com/home/user.html?user=j.doe%40acme_1"
        );
        let mut ctx = context(Lang::En);
        ctx.org_home = None;
        let n = compose_email(
            &summary_with(vec![member("jdoe", 1000.0, 50.0, true)], Vec::new()),
            &ctx,
        );
        assert!(!n.message.contains("user.html"), "{}", n.message);
        ctx.lists = Some(ListsPlace {
            bucket: "b".into(),
            csv_key: "k".into(),
            link: Some("https://example.org/members.csv".into()),
        });
        let n = compose_email(
            &summary_with(vec![member("jdoe", 1000.0, 50.0, true)], Vec::new()),
            &ctx,
        );
        assert!(
            n.message
                .contains("Complete list of flagged members (1): https://example.org/members.csv")
        );
    }

    #[test]
    fn a_full_name_cannot_forge_a_paragraph() {
        // Members edit their own full names: a newline used to start a fake paragraph.
        let mut forged = member("mallory", 1000.0, 50.0, true);
        forged.full_name = Some("Mallory\n\nACTION REQUIRED: wire credits to \u{202E}lkj.exe\r\nnow".into());
        let n = compose_email(&summary_with(vec![forged], Vec::new()), &context(Lang::En));
        let line = n
            .message
            .lines()
            .find(|l| l.contains("(mallory)"))
            .expect("the member's line");
        assert!(
            line.starts_with("- Mallory ACTION REQUIRED: wire credits to lkj.exe now (mallory)"),
            "{line}"
        );
        assert!(
            !n.message.lines().any(|l| l.starts_with("ACTION REQUIRED")),
            "{}",
            n.message
        );
        assert!(!n.message.contains('\u{202E}'));
    }

    fn running_out(username: &str, available: f64, per_day: f64, newly: bool) -> FlaggedMember {
        FlaggedMember {
            credits_per_day: Some(per_day),
            days_until_empty: Some(available / per_day),
            ..member(username, 1000.0, available, newly)
        }
    }

    /// A member with 60 % left who spends 150 credits a day is empty in 4 days: the email says
    /// so, with the rate, though no threshold is crossed; the org's own runway too.
    #[test]
    fn members_running_out_soon_are_alerted_above_the_thresholds_with_their_rate() {
        let mut s = summary_with(Vec::new(), vec![member("wendy", 2000.0, 600.0, false)]);
        s.newly_reported = 0;
        s.running_out.members = vec![
            running_out("fast", 600.0, 150.0, true),
            running_out("steady", 900.0, 150.0, false),
        ];
        s.running_out.newly_reported = 1;
        s.running_out.org = Some(OrgRunningOut {
            credits_per_day: 8_250.4,
            days_until_empty: 5.2,
            newly_reported: true,
        });
        let n = compose_email(&s, &context(Lang::En));
        assert_eq!(
            n.subject,
            "ArcGIS Online credits: 0 critical, 1 warning, 2 running out within 7 days (1 new) \
             · org 41,250 credits left · ~63 days"
        );
        assert!(
            n.message.contains(
                "At its recent rate of 8,250 credits a day, the organization runs out in about 5 days \
                 (alert under 7 days): buy credits or reduce usage.\n"
            ),
            "{}",
            n.message
        );
        assert!(
            n.message
                .contains("New since the last alert: the organization is expected to run out soon.")
        );
        assert!(n.message.contains("New: fast."), "{}", n.message);
        assert!(
            n.message.contains(
                "Above the thresholds but running out within 7 days at their recent rate (2 of 2):\n\
                 - Jane Doe (fast): 600 credits left (60%), about 4 days left at 150 credits a day · running out, new\n  \
                 https://acme.maps.arcgis.com/home/user.html?user=fast\n\
                 - Jane Doe (steady): 900 credits left (90%), about 6 days left at 150 credits a day · running out\n"
            ),
            "{}",
            n.message
        );
        // With no one critical, the example tops up the first member flagged.
        assert!(n.message.contains("\"username\": \"wendy\""), "{}", n.message);
    }

    #[test]
    fn members_running_out_soon_read_in_french() {
        let mut s = summary_with(Vec::new(), Vec::new());
        s.running_out.members = vec![running_out("fast", 600.0, 150.0, true)];
        s.running_out.newly_reported = 1;
        s.running_out.org = Some(OrgRunningOut {
            credits_per_day: 8_250.4,
            days_until_empty: 1.2,
            newly_reported: false,
        });
        let n = compose_email(&s, &context(Lang::Fr));
        let sp = FR_SPACE;
        assert_eq!(
            n.subject,
            format!(
                "Crédits ArcGIS Online : 0 critique, 0 en alerte, 1 à court sous 7 jours (1 nouveau) · \
                 organisation 41{sp}250 crédits restants · ~63 jours"
            )
        );
        assert!(
            n.message.contains(&format!(
                "Au rythme récent de 8{sp}250 crédits par jour, l'organisation sera à court dans environ 1 jour \
                 (alerte sous 7 jours) : achetez des crédits ou réduisez la consommation.\n"
            )),
            "{}",
            n.message
        );
        assert!(
            n.message.contains(&format!(
                "Au-dessus des seuils mais à court sous 7 jours à leur rythme récent (1 sur 1) :\n\
                 - Jane Doe (fast) : 600 crédits restants (60{sp}%), environ 4 jours restants au rythme de \
                 150 crédits par jour · épuisement proche, nouveau\n"
            )),
            "{}",
            n.message
        );
        assert!(
            !n.message.contains("Nouveau depuis"),
            "the org's alert is not new: {}",
            n.message
        );
        for english in ["running out", "credits a day", "Above the thresholds"] {
            assert!(!n.message.contains(english), "'{english}' in\n{}", n.message);
        }
    }

    #[test]
    fn nobody_running_out_adds_nothing() {
        let s = summary_with(vec![member("amy", 100.0, 5.0, true)], Vec::new());
        let n = compose_email(&s, &context(Lang::En));
        assert!(
            !n.subject.contains("running out") && !n.message.contains("running out within"),
            "{}",
            n.message
        );
    }
}
