//! Opt-in notices to the members themselves (`NOTIFY_MEMBERS`): each member crossing a level
//! gets their own short notice (their balance, days left, who to ask), once per crossing.
//!
//! A notice carries the member's own figures, so each `createNotification` call names one
//! member: the call takes up to 25 users, but one message for all of them.
//!
//! Exactly once, with the admin alert's rules ([`crate::ledger::alerts`]): a member's notice
//! is recorded under its own alert-state key ([`notice_key`], the level told) and runs its own
//! stage → send → commit, after the admin alert's commit (so a notice failure never makes the
//! admin email go out twice). Its staging uses a run key of its own: the admin commit marker
//! of the run already exists and would make the notices' staged content count before they
//! were sent. A notice that fails stays unrecorded (the successful ones are re-staged and
//! committed alone), so the next scheduled run sends exactly the failed ones; a redelivered
//! run never gets here (it lost the claim).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::alerts::Crossings;
use super::summary::{FlaggedMember, ScanSummary};
use super::{ScanDeps, ScanRequest};
use crate::arcgis::{Notification, NotifyChannel};
use crate::credits::classify::Level;
use crate::i18n::Lang;
use crate::ledger::StagedAlerts;
use crate::member_text::{EMAIL_MAX_CHARS, safe_one_line};

/// Prefix of a member's notice key: apart from the admin alert's key for the same member, so
/// each is recorded when its own message went out.
const NOTICE_PREFIX: &str = "#notice/";

/// The most notices one run sends: one call each, so a first run in a large org must leave
/// time for the rest of the run; the others stay unrecorded and go with the next runs.
pub const NOTICES_PER_RUN: usize = 300;

/// The alert-state key recording the level `username` was last told about.
pub fn notice_key(username: &str) -> String {
    format!("{NOTICE_PREFIX}{username}")
}

/// The member a notice key is about, or `None` for any other key.
pub fn notice_member(key: &str) -> Option<&str> {
    key.strip_prefix(NOTICE_PREFIX)
}

/// Who a notice says to ask for credits: the configured text, else the admin contacts.
pub fn who_to_ask(lang: Lang, configured: Option<&str>, contacts: &[String]) -> String {
    match configured {
        Some(text) => safe_one_line(text, 200),
        None if contacts.is_empty() => lang.t("notice.admins_unnamed").to_owned(),
        None => {
            let names: Vec<String> = contacts
                .iter()
                .take(5)
                .map(|c| safe_one_line(c, EMAIL_MAX_CHARS))
                .collect();
            lang.f("notice.admins", &[("names", &names.join(", "))])
        }
    }
}

/// A member's notice: short, in the run's language, with their own figures.
pub fn compose_notice(m: &FlaggedMember, level: Level, lang: Lang, who: &str, channel: NotifyChannel) -> Notification {
    let subject = match level {
        Level::Critical => lang.t("notice.subject.critical"),
        _ => lang.t("notice.subject.warning"),
    };
    let name = m
        .full_name
        .as_deref()
        .map(|n| safe_one_line(n, EMAIL_MAX_CHARS))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| safe_one_line(&m.username, EMAIL_MAX_CHARS));
    let mut b = String::new();
    let _ = writeln!(b, "{}", lang.f("notice.hello", &[("name", &name)]));
    let _ = writeln!(b);
    let assigned = lang.credits_short(m.assigned);
    if m.available.is_negative() {
        let over = lang.credits_short(-m.available);
        let _ = writeln!(
            b,
            "{}",
            lang.f("notice.overspent", &[("credits", &over), ("assigned", &assigned)])
        );
    } else {
        let percent = m.percent_left.map(|p| lang.percent(p)).unwrap_or_default();
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "notice.left",
                &[
                    ("credits", &lang.credits_short(m.available)),
                    ("assigned", &assigned),
                    ("percent", &percent),
                ]
            )
        );
        match (m.days_until_empty, m.credits_per_day) {
            (Some(d), _) if d <= 0.0 => {}
            (Some(d), Some(rate)) => {
                let rounded = d.round().max(1.0);
                let rate = lang.number(rate, if rate.abs() < 10.0 { 1 } else { 0 });
                let _ = writeln!(
                    b,
                    "{}",
                    lang.p(
                        "notice.days",
                        rounded as usize,
                        &[("days", &lang.number(rounded, 0)), ("rate", &rate)]
                    )
                );
            }
            _ => {}
        }
    }
    let _ = writeln!(b, "{}", lang.t("notice.effect"));
    let _ = writeln!(b, "{}", lang.f("notice.ask", &[("who", who)]));
    let _ = writeln!(b);
    let _ = writeln!(b, "{}", lang.t("notice.footer"));
    Notification {
        subject: subject.to_owned(),
        message: b,
        channel,
    }
}

/// Stages, sends and commits the members' notices (see the module documentation). `Err`
/// names what failed; the outcome in `summary.member_notices` says who was told.
pub(super) async fn notify_members(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    notices: &Crossings,
    lang: Lang,
    contacts: &[String],
    summary: &mut ScanSummary,
) -> Result<(), String> {
    let due: Vec<(&str, Level)> = notices
        .report
        .iter()
        .filter_map(|(k, l)| notice_member(k).map(|u| (u, *l)))
        .collect();
    summary.member_notices.due = due.len();
    if due.is_empty() && notices.clear.is_empty() {
        return Ok(());
    }
    // Every member told is flagged (their figures are in the summary); one that is not would
    // be recorded untold, so it is left out.
    let flagged: HashMap<&str, &FlaggedMember> = summary
        .critical
        .iter()
        .chain(&summary.warning)
        .map(|m| (m.username.as_str(), m))
        .collect();
    let due: Vec<(&FlaggedMember, Level)> = due
        .into_iter()
        .filter_map(|(u, l)| flagged.get(u).map(|m| (*m, l)))
        .collect();
    let (now, later) = due.split_at(due.len().min(NOTICES_PER_RUN));
    let deferred = later.len();
    let clear = notices.clear.iter().map(|k| (k.clone(), None));
    let changes: Vec<(String, Option<Level>)> = now
        .iter()
        .map(|(m, l)| (notice_key(&m.username), Some(*l)))
        .chain(clear.clone())
        .collect();

    // The admin alert's commit changed the shards' versions: stage against a fresh read.
    let staged = stage(deps, &changes, &format!("{}/notices", req.run_key)).await?;

    let who = who_to_ask(lang, deps.settings.member_contact.as_deref(), contacts);
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    let mut reasons = Vec::new();
    for (m, level) in now {
        let notice = compose_notice(m, *level, lang, &who, deps.settings.notify_channel);
        let recipient = [m.username.clone()];
        match deps.client.notify(&recipient, &notice).await {
            Ok(outcome) if outcome.is_complete() => sent.push(m.username.clone()),
            Ok(outcome) => {
                failed.push(m.username.clone());
                reasons.extend(outcome.failed.iter().map(|f| f.error.to_string()));
            }
            Err(e) => {
                failed.push(m.username.clone());
                reasons.push(e.to_string());
            }
        }
    }
    reasons.dedup();
    let sent_only: Vec<(String, Option<Level>)> = now
        .iter()
        .filter(|(m, _)| sent.contains(&m.username))
        .map(|(m, l)| (notice_key(&m.username), Some(*l)))
        .chain(clear)
        .collect();
    let outcome = &mut summary.member_notices;
    outcome.deferred = deferred;
    outcome.sent.clone_from(&sent);
    outcome.not_sent.clone_from(&failed);

    // Commit what went out: everything staged, or, after a failure, the sent ones alone
    // (re-staged), so the failed ones stay due for the next run.
    let committed = if failed.is_empty() {
        commit(deps, req, &staged).await
    } else {
        match stage(deps, &sent_only, &format!("{}/notices-sent", req.run_key)).await {
            Ok(staged) => commit(deps, req, &staged).await,
            Err(e) => Err(e),
        }
    };
    let mut problems = Vec::new();
    if !failed.is_empty() {
        let reason = reasons.join("; ");
        outcome.failure = Some(reason.clone());
        problems.push(format!(
            "{} member notice(s) could not be sent ({}); they are sent by the next run: {reason}",
            failed.len(),
            failed.join(", ")
        ));
    }
    if let Err(e) = committed {
        problems.push(format!(
            "the member notices sent were not recorded, so the next run may send them again: {e}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

async fn stage(deps: &ScanDeps<'_>, changes: &[(String, Option<Level>)], run: &str) -> Result<StagedAlerts, String> {
    let state = deps
        .ledger
        .alert_state()
        .await
        .map_err(|e| format!("member notices not sent: the alert state could not be read: {e}"))?;
    let staged = state.stage(changes, run);
    deps.ledger
        .stage_alerts(&staged)
        .await
        .map_err(|e| format!("member notices not sent: the alert state could not be staged: {e}"))?;
    Ok(staged)
}

async fn commit(deps: &ScanDeps<'_>, req: &ScanRequest, staged: &StagedAlerts) -> Result<(), String> {
    deps.ledger
        .commit_alerts(staged, req.now)
        .await
        .map_err(|e| format!("alert state of the member notices of run {}: {e}", req.run_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::amount::Credits;
    use crate::i18n::FR_SPACE;

    fn member(available: f64, per_day: Option<f64>) -> FlaggedMember {
        let c = |x: f64| Credits::from_f64(x).unwrap();
        FlaggedMember {
            username: "jdoe".into(),
            full_name: Some("Jane\nDoe".into()),
            assigned: c(1000.0),
            available: c(available),
            consumed: c(1000.0 - available),
            percent_left: Some(available / 10.0),
            credits_per_day: per_day,
            days_until_empty: per_day.map(|r| available.max(0.0) / r),
            previously_reported: None,
            newly_reported: true,
        }
    }

    #[test]
    fn keys_are_apart_from_the_members_own() {
        let key = notice_key("j.doe@acme");
        assert_eq!(notice_member(&key), Some("j.doe@acme"));
        assert_eq!(notice_member("j.doe@acme"), None);
        assert_ne!(key, super::super::alerts::forecast_key("j.doe@acme"));
    }

    #[test]
    fn a_notice_gives_the_members_balance_days_and_who_to_ask() {
        let who = who_to_ask(Lang::En, None, &["admin1".into(), "admin2".into()]);
        let n = compose_notice(
            &member(50.0, Some(12.0)),
            Level::Critical,
            Lang::En,
            &who,
            NotifyChannel::Email,
        );
        assert_eq!(n.subject, "ArcGIS Online: your credits are almost used up");
        assert_eq!(
            n.message,
            "Hello Jane Doe,\n\n\
             You have 50 ArcGIS Online credits left of your allocation of 1,000 (5.0%).\n\
             At your recent rate of 12 credits a day, they last about 4 days.\n\
             Without credits, the tools that use them (analysis, geocoding, notebooks…) stop working for you.\n\
             To get more, ask your organization's administrators (admin1, admin2).\n\n\
             Sent by credit-steward for your organization's administrators, once each time your credits fall \
             below this level.\n"
        );
        assert!(n.message.lines().count() <= 10, "short");
    }

    #[test]
    fn a_notice_reads_in_french_with_the_configured_contact() {
        let who = who_to_ask(Lang::Fr, Some("l'équipe SIG (sig@example.org)"), &["admin1".into()]);
        let n = compose_notice(
            &member(300.0, None),
            Level::Warning,
            Lang::Fr,
            &who,
            NotifyChannel::Builtin,
        );
        let sp = FR_SPACE;
        assert_eq!(n.subject, "ArcGIS Online : vos crédits diminuent");
        assert_eq!(
            n.message,
            format!(
                "Bonjour Jane Doe,\n\n\
                 Il vous reste 300 crédits ArcGIS Online sur votre allocation de 1{sp}000 (30{sp}%).\n\
                 Sans crédits, les outils qui en consomment (analyse, géocodage, notebooks…) cessent de \
                 fonctionner pour vous.\n\
                 Pour en obtenir davantage, contactez l'équipe SIG (sig@example.org).\n\n\
                 Envoyé par credit-steward pour les administrateurs de votre organisation, une seule fois à \
                 chaque passage de vos crédits sous ce niveau.\n"
            )
        );
        assert_eq!(n.channel, NotifyChannel::Builtin);
    }

    #[test]
    fn an_overspent_member_is_told_by_how_much() {
        let n = compose_notice(
            &member(-20.0, Some(5.0)),
            Level::Critical,
            Lang::En,
            &who_to_ask(Lang::En, None, &[]),
            NotifyChannel::Email,
        );
        assert!(
            n.message
                .contains("You have used 20 credits more than your allocation of 1,000.\n"),
            "{}",
            n.message
        );
        assert!(n.message.contains("ask your organization's administrators.\n"));
    }
}
