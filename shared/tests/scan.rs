//! scan-credits' workflow against portal-sim and the in-memory ledger: who is flagged (checked
//! against the alert rule computed independently from the simulator's state), one email
//! per crossing, once-only runs, failures that leave the alert state alone, the org floor,
//! budgeting off, dry runs, the automatic top-up and the metrics line.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use portal_sim::generate::{AUDITOR_PASSWORD, AUDITOR_USERNAME};
use portal_sim::{
    EnvelopeFault, Faults, GenParams, HoldPhase, HoldSpec, HttpErrorFault, SimHandle, Trigger, generate, start,
};
use serde_json::Value;
use shared::apply::Deadline;
use shared::arcgis::Client;
use shared::config::Config;
use shared::credits::amount::Credits;
use shared::credits::classify::Level;
use shared::credits::member::Balance;
use shared::credits::percent::Percent;
use shared::ledger::{Caller, Ledger, RunStatus};
use shared::scan::top_up::AUDIT_SOURCE;
use shared::scan::{ForecastStatus, ORG_ALERT_KEY, ScanDeps, ScanError, ScanRequest, ScanSettings, ScanSummary, scan};
use shared::schedule::ScanInput;
use shared::telemetry;

use crate::support::{
    admin, admin_client, as_of, audit_recent, client, client_as, config_with, geocode_usage,
    hold_roles_and_last_planned_page, kill_at, sim,
};

const NOTIFY: &str = "portals/self/createNotification";

/// scan-credits' settings for `vars` (plus a secret id and a ledger table).
pub(crate) fn config(vars: &[(&str, &str)]) -> ScanSettings {
    let mut map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    map.entry("ARCGIS_SECRET_ID".into())
        .or_insert_with(|| "test/arcgis".into());
    map.entry("LEDGER_TABLE".into()).or_insert_with(|| "ledger".into());
    let config = Config::from_lookup(|name| map.get(name).cloned()).expect("valid test configuration");
    ScanSettings::from_config(&config).expect("valid settings")
}

fn at(hour: u32) -> DateTime<Utc> {
    as_of().and_hms_opt(hour, 0, 0).expect("valid time").and_utc()
}

/// The daily run scheduled on the simulator's day, `days` later.
pub(crate) fn request(days: u64) -> ScanRequest {
    let when = at(6) + chrono::Days::new(days);
    let key = when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ScanRequest {
        run_key: key.clone(),
        request_id: format!("req-{key}"),
        input: ScanInput::default(),
        as_of: when,
        now: when + chrono::Duration::seconds(3),
        deadline: Deadline::after(Duration::from_secs(300), Utc::now()),
    }
}

async fn run(
    sim: &SimHandle,
    ledger: &Ledger,
    config: &ScanSettings,
    req: &ScanRequest,
) -> Result<ScanSummary, ScanError> {
    let client = admin_client(sim);
    run_with(&client, ledger, config, req).await
}

async fn run_with(
    client: &Client,
    ledger: &Ledger,
    settings: &ScanSettings,
    req: &ScanRequest,
) -> Result<ScanSummary, ScanError> {
    let none = shared::channels::Channels::none();
    let deps = ScanDeps {
        client,
        ledger,
        settings,
        lists: None,
        channels: &none,
    };
    scan(&deps, req).await
}

fn micros(credits: f64) -> i128 {
    (credits * 1_000_000.0).round() as i128
}

/// The alert rule (`available < 10 % of assigned` → critical, else `< 50 %` → warning),
/// with `credits::classify`'s skips (disabled, viewers, unlimited, zero allocation; overspent
/// is critical), computed in exact micro-credits from the simulator's own state.
fn expected(sim: &SimHandle, critical_percent: i128, warning_percent: i128) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut critical, mut warning) = (BTreeSet::new(), BTreeSet::new());
    for m in sim.members() {
        if m.disabled || m.user_type.eq_ignore_ascii_case("viewerUT") || m.assigned_credits < 0.0 {
            continue;
        }
        let (assigned, available) = (micros(m.assigned_credits), micros(m.available_credits));
        if available < 0 || (assigned > 0 && available * 100 < critical_percent * assigned) {
            critical.insert(m.username);
        } else if assigned > 0 && available * 100 < warning_percent * assigned {
            warning.insert(m.username);
        }
    }
    (critical, warning)
}

fn names(list: &[shared::scan::FlaggedMember]) -> BTreeSet<String> {
    list.iter().map(|m| m.username.clone()).collect()
}

/// The member lines of an email: `- <username> (<full name>): ...` or `- <username>: ...`.
/// The usernames of the members an email lists (`- Full Name (username): …` or
/// `- username: …`).
fn named_in(message: &str) -> BTreeSet<String> {
    message
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split(": ").next())
        .map(|head| match head.rsplit_once(" (") {
            Some((_, username)) => username.trim_end_matches(')').to_owned(),
            None => head.to_owned(),
        })
        .collect()
}

/// "12 critical (12 new)", or "0 critical" when there is nothing new.
fn level_text(level: &str, count: usize, new: usize) -> String {
    if new == 0 {
        format!("{count} {level}")
    } else {
        format!("{count} {level} ({new} new)")
    }
}

fn envelope_fault(endpoint: &str) -> Faults {
    Faults {
        error_envelope: Some(EnvelopeFault {
            member: None,
            code: 500,
            message: "Unable to send notification".into(),
            when: Trigger {
                endpoint: Some(endpoint.into()),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    }
}

/// A limited, enabled creator with more than half of a sizeable allocation left.
pub(crate) fn healthy_member(sim: &SimHandle) -> (String, f64, f64) {
    sim.members()
        .into_iter()
        .filter(|m| !m.disabled && m.user_type == "creatorUT" && m.assigned_credits >= 100.0)
        .find(|m| m.available_credits >= 0.6 * m.assigned_credits)
        .map(|m| (m.username, m.assigned_credits, m.available_credits))
        .expect("the generated org has a healthy member")
}

pub(crate) fn consume(sim: &SimHandle, username: &str, credits: f64) {
    let midnight = as_of().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    geocode_usage(sim, username, midnight.timestamp_millis(), credits);
}

#[tokio::test]
async fn flags_the_critical_and_warning_sets_and_emails_the_most_urgent_once() {
    let sim = sim(300).await;
    let ledger = Ledger::memory();
    let config = config(&[]);
    let (critical, warning) = expected(&sim, 10, 50);
    assert!(
        !critical.is_empty() && !warning.is_empty(),
        "the org must exercise both levels"
    );

    let s = run(&sim, &ledger, &config, &request(0)).await.expect("scan succeeds");

    assert_eq!(names(&s.critical), critical);
    assert_eq!(names(&s.warning), warning);
    assert_eq!(s.members_scanned, sim.members().len());
    assert_eq!(s.newly_reported, critical.len() + warning.len());
    assert_eq!(s.already_reported, 0);
    assert!(s.critical.iter().chain(&s.warning).all(|m| m.newly_reported));
    // Unlimited members are counted as skipped, never flagged.
    let unlimited = sim
        .members()
        .iter()
        .filter(|m| m.allocation.is_none() && !m.disabled && m.user_type != "viewerUT")
        .count();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["skipped"]["by_reason"]["unlimited"]["count"], unlimited);
    assert_eq!(json["budgeting"], "enabled");
    assert_eq!(json["forecast"]["status"], "available");
    assert!(s.critical.iter().any(|m| m.days_until_empty.is_some()));
    assert_eq!(s.arcgis_requests, sim.total_requests());

    // One email, to the org's administrative contacts: the totals, and the most urgent
    // members by name (critical first, in the summary's order).
    let sent = sim.notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].users, sim.org().contacts);
    assert_eq!(sent[0].channel, "email");
    assert!(
        sent[0].subject.starts_with(&format!(
            "ArcGIS Online credits: {}, {} · org ",
            level_text("critical", critical.len(), critical.len()),
            level_text("warning", warning.len(), warning.len())
        )),
        "{}",
        sent[0].subject
    );
    let most_urgent: BTreeSet<String> = s
        .critical
        .iter()
        .chain(&s.warning)
        .take(shared::scan::email::EMAIL_MOST_URGENT)
        .map(|m| m.username.clone())
        .collect();
    assert_eq!(named_in(&sent[0].message), most_urgent);
    let everyone: BTreeSet<String> = critical.union(&warning).cloned().collect();
    assert!(
        sent[0]
            .message
            .contains(&format!("Most urgent ({} of {}):", most_urgent.len(), everyone.len())),
        "{}",
        sent[0].message
    );
    assert_eq!(s.recipients_notified, sim.org().contacts);
    for u in s.skipped.by_reason.values().flat_map(|g| &g.usernames) {
        assert!(
            !named_in(&sent[0].message).contains(u),
            "skipped members are only counted"
        );
    }

    // The alert state now holds every reported level, and the run is done.
    let levels = ledger.alert_levels().await.unwrap();
    assert_eq!(levels.len(), everyone.len());
    assert!(critical.iter().all(|u| levels.get(u) == Some(&Level::Critical)));
    assert!(warning.iter().all(|u| levels.get(u) == Some(&Level::Warning)));
}

#[tokio::test]
async fn a_second_run_and_a_retried_invocation_send_nothing() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = config(&[]);
    let first = run(&sim, &ledger, &config, &request(0)).await.unwrap();
    assert_eq!(sim.notifications().len(), 1);

    // The same firing delivered again (Lambda retry, Scheduler redelivery): a duplicate.
    let retry = run(&sim, &ledger, &config, &request(0)).await.unwrap();
    let dup = retry.duplicate_of.as_ref().expect("a duplicate delivery");
    assert_eq!(dup.run_key, first.run_key);
    assert_eq!(dup.status, RunStatus::Done);
    assert_eq!(dup.summary.as_ref().unwrap()["newly_reported"], first.newly_reported);
    assert_eq!(
        serde_json::to_value(&retry.notification).unwrap()["status"],
        "duplicate"
    );
    assert_eq!(retry.newly_reported, 0);
    assert!(
        retry
            .notes
            .iter()
            .any(|n| n.contains("duplicate delivery of run 2026-11-26T06:00:00Z"))
    );

    // The next day's run: the same members are still flagged, already reported.
    let next = run(&sim, &ledger, &config, &request(1)).await.unwrap();
    assert!(next.duplicate_of.is_none());
    assert_eq!(next.newly_reported, 0);
    assert_eq!(next.already_reported, first.critical.len() + first.warning.len());
    assert_eq!(
        serde_json::to_value(&next.notification).unwrap()["status"],
        "nothing_new"
    );

    assert_eq!(sim.notifications().len(), 1);
    assert!(sim.writes().iter().all(|w| w.endpoint == NOTIFY));
    assert_eq!(sim.writes().len(), 1);
}

#[tokio::test]
async fn a_member_crossing_a_threshold_is_reported_alone_and_recovery_clears_the_record() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = config(&[]);
    let first = run(&sim, &ledger, &config, &request(0)).await.unwrap();

    // Push one healthy member to 30 % left (warning), and top up a critical one.
    let (crosser, assigned, available) = healthy_member(&sim);
    consume(&sim, &crosser, available - 0.3 * assigned);
    let recovered = first
        .critical
        .iter()
        .find(|m| !m.available.is_negative())
        .expect("a critical member that is not overspent")
        .username
        .clone();
    let client = admin_client(&sim);
    let raise = shared::arcgis::CreditAssignment {
        username: recovered.clone(),
        credits: Credits::whole(1_000_000),
    };
    assert!(client.assign_credits(&[raise]).await.unwrap().is_complete());

    let next = run_with(&client, &ledger, &config, &request(1)).await.unwrap();

    assert_eq!(next.newly_reported, 1);
    let reported: Vec<&str> = next
        .critical
        .iter()
        .chain(&next.warning)
        .filter(|m| m.newly_reported)
        .map(|m| m.username.as_str())
        .collect();
    assert_eq!(reported, [crosser.as_str()]);
    assert!(next.warning.iter().any(|m| m.username == crosser));
    assert_eq!(next.cleared, 1);
    let sent = sim.notifications();
    assert_eq!(sent.len(), 2);
    // The subject says the state (every flagged member), the body who is new.
    assert!(
        sent[1].subject.starts_with(&format!(
            "ArcGIS Online credits: {}, {} · org ",
            level_text("critical", next.critical.len(), 0),
            level_text("warning", next.warning.len(), 1)
        )),
        "{}",
        sent[1].subject
    );
    assert!(
        sent[1].message.contains(&format!("\nNew: {crosser}.\n")),
        "{}",
        sent[1].message
    );
    assert!(
        sent[1].message.contains("back above the thresholds: 1."),
        "{}",
        sent[1].message
    );
    let levels = ledger.alert_levels().await.unwrap();
    assert_eq!(levels.get(&crosser), Some(&Level::Warning));
    assert!(!levels.contains_key(&recovered));

    // Falling further, to critical, is a new crossing too.
    consume(&sim, &crosser, 0.25 * assigned);
    let third = run(&sim, &ledger, &config, &request(2)).await.unwrap();
    assert_eq!(third.newly_reported, 1);
    let m = third.critical.iter().find(|m| m.username == crosser).unwrap();
    assert_eq!(m.previously_reported, Some(Level::Warning));
    assert!(
        sim.notifications()[2].message.contains("· critical, was warning\n"),
        "{}",
        sim.notifications()[2].message
    );
}

#[tokio::test]
async fn thresholds_come_from_the_input_and_bad_ones_are_refused_before_any_request() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = config(&[]);
    let mut req = request(0);
    req.input.critical_percent = Some(Percent::whole(20).unwrap());
    req.input.dry_run = true;
    let s = run(&sim, &ledger, &config, &req).await.unwrap();
    let (critical, warning) = expected(&sim, 20, 50);
    assert_eq!((names(&s.critical), names(&s.warning)), (critical, warning));
    assert_eq!(s.thresholds.critical_percent, Percent::whole(20).unwrap());

    sim.clear_log();
    req.input.critical_percent = Some(Percent::whole(60).unwrap());
    let err = run(&sim, &ledger, &config, &req).await.unwrap_err();
    assert_eq!(err.kind(), "InvalidInput");
    assert!(err.to_string().contains("the schedule Input"), "{err}");
    assert!(err.to_string().contains("stricter"), "{err}");
    assert_eq!(sim.total_requests(), 0);
}

#[tokio::test]
async fn a_missing_privilege_is_named_and_nothing_is_claimed() {
    let sim = sim(50).await;
    let ledger = Ledger::memory();
    let client = client_as(&sim, AUDITOR_USERNAME, AUDITOR_PASSWORD);
    let err = run_with(&client, &ledger, &config(&[]), &request(0)).await.unwrap_err();
    assert_eq!(err.kind(), "MissingPrivilege");
    assert!(err.to_string().contains("portal:admin:manageCredits"), "{err}");
    // The run was not claimed: a retry with working credentials goes ahead.
    let ok = run(&sim, &ledger, &config(&[]), &request(0)).await.unwrap();
    assert!(ok.duplicate_of.is_none());
    assert_eq!(sim.notifications().len(), 1);
}

/// A custom role reported as `org_admin` (with a `roleId`) but without the credit privileges
/// is refused by its privileges before the scan reads, writes or emails anything, instead of
/// passing for an administrator and failing halfway.
#[tokio::test]
async fn a_custom_role_reported_as_org_admin_is_refused_by_its_privileges_before_any_email() {
    use portal_sim::generate::{CONTENT_ADMIN_PASSWORD, CONTENT_ADMIN_USERNAME};
    let sim = sim(50).await;
    let ledger = Ledger::memory();
    let client = client_as(&sim, CONTENT_ADMIN_USERNAME, CONTENT_ADMIN_PASSWORD);
    let err = run_with(&client, &ledger, &config(&[]), &request(0)).await.unwrap_err();
    assert_eq!(err.kind(), "MissingPrivilege");
    let msg = err.to_string();
    for needed in [
        "portal:admin:viewUsers",
        "portal:admin:manageCredits",
        "reported as org_admin",
    ] {
        assert!(msg.contains(needed), "names {needed}: {msg}");
    }
    assert!(sim.notifications().is_empty());
    assert!(sim.writes().is_empty());
    assert!(ledger.alert_levels().await.unwrap().is_empty());
}

/// The invocation dies after the email, while recording what it reported (after its commit
/// marker, before the shards are promoted): the next run neither sends those alerts again nor
/// forgets them, and finishes the recording.
#[tokio::test]
async fn a_run_dying_while_recording_its_alerts_neither_resends_nor_loses_them_next_time() {
    let sim = sim(300).await;
    let ledger = Ledger::memory();
    let Ledger::Memory(memory) = &ledger else {
        unreachable!("a memory ledger")
    };
    let config = config(&[]);
    let (critical, warning) = expected(&sim, 10, 50);
    memory.crash_next_commit_after_its_marker();
    let err = run(&sim, &ledger, &config, &request(0)).await.unwrap_err();
    assert_eq!(err.kind(), "RecordsIncomplete", "{err}");
    assert_eq!(sim.notifications().len(), 1, "the email went out");

    let next = run(&sim, &ledger, &config, &request(1))
        .await
        .expect("the next run succeeds");
    assert_eq!(sim.notifications().len(), 1, "nothing sent twice");
    assert_eq!(next.newly_reported, 0);
    assert_eq!(next.already_reported, critical.len() + warning.len());
    let levels = ledger.alert_levels().await.unwrap();
    assert_eq!(levels.len(), critical.len() + warning.len(), "nothing lost");
    assert!(critical.iter().all(|u| levels.get(u) == Some(&Level::Critical)));
    // A member crossing later is still reported exactly once.
    let (crosser, assigned, available) = healthy_member(&sim);
    consume(&sim, &crosser, available - 0.3 * assigned);
    let later = run(&sim, &ledger, &config, &request(2)).await.unwrap();
    assert!(names(&later.warning).contains(&crosser));
    assert_eq!(later.newly_reported, 1);
    assert_eq!(sim.notifications().len(), 2);
}

#[tokio::test]
async fn a_failed_email_leaves_the_alert_state_alone_and_the_next_run_resends() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = config(&[]);
    sim.set_faults(envelope_fault(NOTIFY));

    let err = run(&sim, &ledger, &config, &request(0)).await.unwrap_err();

    assert_eq!(err.kind(), "NotificationFailed");
    assert!(err.to_string().contains("next scheduled run"), "{err}");
    let summary = err.summary().expect("the summary travels with the error");
    let notification = serde_json::to_value(&summary.notification).unwrap();
    assert_eq!(notification["status"], "failed");
    assert!(
        notification["reason"]
            .as_str()
            .unwrap()
            .contains("Unable to send notification")
    );
    assert_eq!(
        sim.request_count(NOTIFY),
        1,
        "createNotification is never blindly retried"
    );
    assert!(sim.notifications().is_empty());
    assert!(ledger.alert_levels().await.unwrap().is_empty());

    // A retry of the failed run sends nothing: it was claimed and recorded as failed.
    sim.clear_faults();
    let retry = run(&sim, &ledger, &config, &request(0)).await.unwrap();
    assert_eq!(retry.duplicate_of.as_ref().map(|d| d.status), Some(RunStatus::Failed));
    assert!(sim.notifications().is_empty());

    // The next scheduled run finds the crossings unrecorded and sends them.
    let next = run(&sim, &ledger, &config, &request(1)).await.unwrap();
    assert_eq!(next.newly_reported, summary.newly_reported);
    assert_eq!(sim.notifications().len(), 1);
    assert_eq!(ledger.alert_levels().await.unwrap().len(), next.newly_reported);
}

#[tokio::test]
async fn a_gateway_error_after_sending_fails_the_run_without_a_resend() {
    let sim = sim(60).await;
    let ledger = Ledger::memory();
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: Trigger {
                endpoint: Some(NOTIFY.into()),
                after_processing: true,
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let err = run(&sim, &ledger, &config(&[]), &request(0)).await.unwrap_err();
    assert_eq!(err.kind(), "NotificationFailed");
    // ArcGIS did send it; the client could not know, and did not send it again.
    assert_eq!(sim.notifications().len(), 1);
    assert_eq!(sim.request_count(NOTIFY), 1);
}

#[tokio::test]
async fn forecasts_unavailable_do_not_fail_the_scan_and_are_reported() {
    let sim = sim(80).await;
    sim.set_faults(envelope_fault("portals/self/usage"));
    let s = run(&sim, &Ledger::memory(), &config(&[]), &request(0)).await.unwrap();
    let forecast = serde_json::to_value(&s.forecast).unwrap();
    assert_eq!(forecast["status"], "unavailable");
    assert!(forecast["reason"].as_str().unwrap().contains("portals/self/usage"));
    assert!(s.problems.iter().any(|p| p.contains("forecasts are unavailable")));
    assert!(
        s.critical
            .iter()
            .all(|m| m.days_until_empty.is_none() && m.credits_per_day.is_none())
    );
    assert!(
        sim.notifications()[0]
            .message
            .contains("Days until empty could not be estimated this time:")
    );
}

#[tokio::test]
async fn the_forecast_reads_the_30_whole_days_before_the_scan_day_under_either_bucket_label() {
    let scan_day = at(0);
    let day = |offset: i64| (scan_day + chrono::Duration::days(offset)).timestamp_millis();
    for (label, served) in [
        ("start", portal_sim::BucketLabel::Start),
        ("end", portal_sim::BucketLabel::End),
    ] {
        // Both sides agree on the convention.
        let sim = sim(60).await;
        sim.set_behaviour(portal_sim::Behaviour {
            usage_bucket_label: served,
            ..portal_sim::Behaviour::default()
        });
        // Usage on the day before the window, its first and last days and the scan day itself,
        // each amount different: a window shifted by a day would measure another rate.
        let username = sim.members()[0].username.clone();
        for (offset, credits) in [(-31, 3.000_001), (-30, 1.25), (-1, 2.75), (0, 40.5)] {
            geocode_usage(&sim, &username, day(offset), credits);
        }
        let used = |from: i64, to: i64| -> Credits {
            sim.org()
                .usage
                .iter()
                .filter(|r| day(from) <= r.day && r.day < day(to))
                .map(|r| Credits::from_f64(r.credits).expect("an exact record"))
                .sum()
        };
        let rate = |credits: Credits| credits.to_f64() / 30.0;
        let expected = rate(used(-30, 0));
        assert_ne!(expected, rate(used(-31, -1)), "a day early would differ");
        assert_ne!(expected, rate(used(-29, 1)), "a day late would differ");

        let settings = config(&[("USAGE_BUCKET_LABEL", label)]);
        let s = run(&sim, &Ledger::memory(), &settings, &request(0))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        match s.forecast {
            ForecastStatus::Available {
                window_days,
                org_credits_per_day,
                ..
            } => {
                assert_eq!(window_days, 30.0, "{label}");
                assert_eq!(org_credits_per_day, expected, "{label}: the org's rate");
            }
            other => panic!("{label}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn budgeting_off_reports_the_org_credits_and_still_alerts_on_the_floor() {
    let params = GenParams {
        budgeting: false,
        ..GenParams::new(80, 42, as_of())
    };
    let sim = start(generate(&params)).await.unwrap();
    let ledger = Ledger::memory();
    let org_credits = sim.org().available_credits;
    let config = config(&[("ORG_MIN_CREDITS", &(org_credits + 1000.0).to_string())]);

    let s = run(&sim, &ledger, &config, &request(0)).await.unwrap();

    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["budgeting"], "disabled");
    assert_eq!(s.org_available_credits, Credits::from_f64(org_credits).unwrap());
    assert_eq!((s.members_scanned, s.critical.len(), s.warning.len()), (0, 0, 0));
    assert!(s.notes.iter().any(|n| n.contains("budgeting is off")));
    // The listing starts beside portals/self and is abandoned once budgeting reads off: at
    // most its first page is requested, never the org.
    assert!(sim.request_count("portals/self/users") <= 1);
    assert_eq!(json["org_floor"]["status"], "below");
    assert_eq!(json["org_floor"]["newly_reported"], true);
    let sent = sim.notifications();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].subject.starts_with(&format!(
            "ArcGIS Online credits: org {} credits left, below {}",
            Credits::from_f64(org_credits).unwrap().grouped(0),
            Credits::from_f64(org_credits + 1000.0).unwrap().grouped(0)
        )),
        "{}",
        sent[0].subject
    );
    assert!(sent[0].message.contains("Credit budgeting is off"));
    assert_eq!(
        ledger.alert_levels().await.unwrap().get(ORG_ALERT_KEY),
        Some(&Level::Critical)
    );

    // Still below the next day: not repeated. Back above: the record is cleared.
    let again = run(&sim, &ledger, &config, &request(1)).await.unwrap();
    assert_eq!(
        serde_json::to_value(&again.notification).unwrap()["status"],
        "nothing_new"
    );
    let relaxed = self::config(&[("ORG_MIN_CREDITS", "1")]);
    let ok = run(&sim, &ledger, &relaxed, &request(2)).await.unwrap();
    assert_eq!(serde_json::to_value(ok.org_floor).unwrap()["status"], "ok");
    assert_eq!(ok.cleared, 1);
    assert!(ledger.alert_levels().await.unwrap().is_empty());
    assert_eq!(sim.notifications().len(), 1);
}

#[tokio::test]
async fn the_org_floor_joins_the_member_alerts() {
    let sim = sim(80).await;
    let config = config(&[("ORG_MIN_CREDITS", "1e12")]);
    let s = run(&sim, &Ledger::memory(), &config, &request(0)).await.unwrap();
    let sent = sim.notifications();
    assert!(
        sent[0].subject.starts_with(&format!(
            "ArcGIS Online credits: {}, {} · org ",
            level_text("critical", s.critical.len(), s.critical.len()),
            level_text("warning", s.warning.len(), s.warning.len())
        )) && sent[0].subject.contains(" credits left, below 1,000,000,000,000"),
        "{}",
        sent[0].subject
    );
    assert!(
        sent[0]
            .message
            .contains("The organization is below its minimum of 1,000,000,000,000 credits"),
        "{}",
        sent[0].message
    );
}

#[tokio::test]
async fn without_admin_contacts_nothing_is_sent_and_the_crossings_wait() {
    let sim = sim(60).await;
    sim.sim().world().org.contacts.clear();
    let ledger = Ledger::memory();
    let s = run(&sim, &ledger, &config(&[]), &request(0)).await.unwrap();
    assert_eq!(serde_json::to_value(&s.notification).unwrap()["status"], "no_contacts");
    assert!(s.problems.iter().any(|p| p.contains("no administrative contacts")));
    assert!(sim.notifications().is_empty());
    assert!(ledger.alert_levels().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dry_run_sends_allocates_and_records_nothing() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = top_up_config();
    let mut req = request(0);
    req.input.dry_run = true;

    let s = run(&sim, &ledger, &config, &req).await.unwrap();

    assert!(s.dry_run);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["notification"]["status"], "dry_run");
    assert_eq!(json["notification"]["would_send"], true);
    assert!(
        json["notification"]["message"]
            .as_str()
            .unwrap()
            .contains("Most urgent (")
    );
    assert_eq!(json["top_up"]["status"], "planned");
    assert!(s.allocations_applied.is_empty());
    assert!(sim.writes().is_empty());
    assert!(ledger.alert_levels().await.unwrap().is_empty());
    assert_eq!(ledger.listing_hint().await.unwrap(), None);
    // The run key was not claimed: the real run goes ahead, and keeps the org's size.
    req.input.dry_run = false;
    let real = run(&sim, &ledger, &config, &req).await.unwrap();
    assert!(real.duplicate_of.is_none());
    assert_eq!(sim.notifications().len(), 1);
    assert_eq!(ledger.listing_hint().await.unwrap().map(|h| h.members), Some(150));
    assert!(real.arcgis_read_ms <= real.duration_ms);
    // The next run lists with that size: the same two pages, the same members.
    let pages = sim.request_count("portals/self/users");
    let next = run(&sim, &ledger, &config, &request(1)).await.unwrap();
    assert_eq!(sim.request_count("portals/self/users") - pages, 2);
    assert_eq!(next.members_scanned, real.members_scanned);
}

/// Which run last wrote the listing's sizes, read from the table itself.
async fn hint_written_by(dynamo: &aws_sdk_dynamodb::Client, table: &str) -> String {
    let item = dynamo
        .get_item()
        .table_name(table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("ORG".into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("MEMBERS".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item on moto")
        .item
        .expect("the listing's sizes are recorded");
    item["run_key"].as_s().expect("run_key is a string").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_sizes_are_written_when_they_change_not_on_every_run() {
    let sim = sim(150).await;
    let dynamo = crate::ledger::dynamodb();
    let table = crate::ledger::create_table(&dynamo, "listing-sizes").await;
    let ledger = Ledger::dynamo(dynamo.clone(), table.clone());
    let config = config(&[]);
    let first = request(0);
    run(&sim, &ledger, &config, &first).await.unwrap();
    assert_eq!(hint_written_by(&dynamo, &table).await, first.run_key);

    // The same org the next day: the sizes stand, and are not written again.
    let stable = run(&sim, &ledger, &config, &request(1)).await.unwrap();
    assert!(stable.problems.is_empty(), "{:?}", stable.problems);
    assert_eq!(hint_written_by(&dynamo, &table).await, first.run_key);

    // A member leaves: the next run records the new size.
    sim.sim().world().org.members.pop();
    let changed = request(2);
    let s = run(&sim, &ledger, &config, &changed).await.unwrap();
    assert_eq!(s.members_scanned, 149);
    assert_eq!(hint_written_by(&dynamo, &table).await, changed.run_key);
    assert_eq!(ledger.listing_hint().await.unwrap().map(|h| h.members), Some(149));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_an_org_listed_by_role_lets_the_next_one_request_every_page_at_once() {
    let sim = sim(1_200).await;
    let client = client(shared::arcgis::ClientConfig {
        listing_cap: 1_000,
        ..config_with(&sim, admin())
    });
    let ledger = Ledger::memory();
    let config = config(&[]);
    let first = run_with(&client, &ledger, &config, &request(0)).await.unwrap();
    assert_eq!(first.members_scanned, 1_200);
    let hint = ledger.listing_hint().await.unwrap().expect("recorded");
    assert_eq!(hint.members, 1_200);
    assert!(hint.parts.len() > 1, "listed by role: {hint:?}");
    assert_eq!(hint.parts.iter().map(|(_, n)| n).sum::<u64>(), 1_200);

    // The next scan sends every page the roles' sizes imply while the roles listing is still
    // unanswered.
    let (roles, pages) = hold_roles_and_last_planned_page(&sim, &hint);
    let req = request(1);
    let (next, ()) = tokio::join!(run_with(&client, &ledger, &config, &req), async {
        let wait = Duration::from_secs(10);
        tokio::time::timeout(wait, roles.reached())
            .await
            .expect("the roles listing is requested");
        tokio::time::timeout(wait, pages.reached())
            .await
            .expect("every planned page is requested without it");
        roles.release();
        pages.release();
    });
    let next = next.unwrap();
    assert_eq!(next.members_scanned, 1_200);
    assert!(next.problems.is_empty(), "{:?}", next.problems);
}

/// Settings with the automatic top-up to 200 credits and guardrails that let it through.
fn top_up_config() -> ScanSettings {
    config(&[
        ("AUTO_TOP_UP_TO", "200"),
        ("MAX_CREDITS_PER_MEMBER", "100000"),
        ("MAX_CREDITS_PER_PLAN", "10000000"),
    ])
}

#[tokio::test]
async fn auto_top_up_applies_the_plan_and_audits_each_change() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = top_up_config();
    let (critical, _) = expected(&sim, 10, 50);
    let req = request(0);

    let s = run(&sim, &ledger, &config, &req).await.unwrap();

    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["top_up"]["status"], "applied", "{:#}", json["top_up"]);
    let applied: BTreeSet<String> = s.allocations_applied.iter().map(|a| a.username.clone()).collect();
    assert_eq!(applied, critical);
    for a in &s.allocations_applied {
        let m = sim.member(&a.username).unwrap();
        assert_eq!(m.allocation, Some(a.assigned_after.to_f64()));
        assert!(
            (m.available_credits - 200.0).abs() < 1e-6,
            "{}: {}",
            a.username,
            m.available_credits
        );
    }
    assert_eq!(sim.allocation_calls().len(), 1);
    let audit = audit_recent(&ledger).await;
    assert_eq!(audit.len(), applied.len());
    assert!(audit.iter().all(|e| e.source == AUDIT_SOURCE
        && e.caller == Caller::job("scan-credits")
        && e.request_id == req.request_id
        && e.matches_plan));
    assert_eq!(
        audit.iter().map(|e| e.username.clone()).collect::<BTreeSet<_>>(),
        applied
    );
    for e in &audit {
        let a = s.allocations_applied.iter().find(|a| a.username == e.username).unwrap();
        assert_eq!(
            e.before,
            Balance::Limited {
                assigned: a.assigned_before,
                available: a.available_before
            }
        );
        assert_eq!(e.planned, a.assigned_after);
        assert!(
            e.reason
                .as_deref()
                .unwrap()
                .contains("critical members in run 2026-11-26T06:00:00Z")
        );
    }
    assert!(sim.notifications()[0].message.contains("Automatic top-up"));

    // A retried invocation does not top up again, even when a member is critical again.
    consume(&sim, &s.allocations_applied[0].username, 195.0);
    let retry = run(&sim, &ledger, &config, &req).await.unwrap();
    assert_eq!(serde_json::to_value(&retry.top_up).unwrap()["status"], "planned");
    assert_eq!(sim.allocation_calls().len(), 1);
}

#[tokio::test]
async fn the_top_up_selects_by_the_runs_own_thresholds() {
    // A run with `critical_percent: 20` in its Input reported members critical at 20 % but
    // topped up only those critical at the configured 10 %.
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = top_up_config();
    let (at_20, _) = expected(&sim, 20, 50);
    let (at_10, _) = expected(&sim, 10, 50);
    assert!(
        at_20.len() > at_10.len(),
        "the generated org has members critical only at 20 %"
    );
    // Those already at or above the top-up target need no change.
    let below_target: BTreeSet<String> = at_20
        .iter()
        .filter(|u| sim.member(u).is_some_and(|m| m.available_credits < 200.0))
        .cloned()
        .collect();
    assert!(below_target.len() > at_10.len(), "{below_target:?}");
    let mut req = request(0);
    req.input.critical_percent = Some(Percent::whole(20).unwrap());

    let s = run(&sim, &ledger, &config, &req).await.unwrap();

    assert_eq!(names(&s.critical), at_20);
    let top_up = serde_json::to_value(&s.top_up).unwrap();
    assert_eq!(top_up["status"], "applied", "{top_up:#}");
    let applied: BTreeSet<String> = s.allocations_applied.iter().map(|a| a.username.clone()).collect();
    assert_eq!(applied, below_target, "topped up by the run's thresholds");
}

// Multi-threaded: the killed run's thread blocks this one while the simulator serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_while_a_killed_top_up_may_run_fails_and_a_later_one_finishes_it() {
    // A run killed at its top-up's write, redelivered while its lease was live, answered
    // success with the top-up "still being applied": Lambda stopped retrying, so the write
    // was never read back nor audited.
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let config = top_up_config();
    let (critical, _) = expected(&sim, 10, 50);
    let mut req = request(0);
    // A short invocation, so its lease runs out soon after it is killed.
    req.deadline = Deadline::after(Duration::from_secs(12), Utc::now());
    let hold = sim.hold(HoldSpec {
        endpoint: "portals/self/assignUserCredits".into(),
        nth: 1,
        phase: HoldPhase::AfterProcessing,
    });
    kill_at(&hold, || run(&sim, &ledger, &config, &req)).await;
    assert!(audit_recent(&ledger).await.is_empty(), "nothing audited yet");

    let redelivered = || {
        let mut again = request(0);
        again.request_id = "req-redelivered".into();
        again
    };
    let err = run(&sim, &ledger, &config, &redelivered()).await.unwrap_err();
    assert_eq!(err.kind(), "TopUpInProgress", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("2026-11-26T06:00:00Z") && text.contains("lease ends"),
        "{text}"
    );

    // Lambda retries later (a minute): by then the killed run's lease is over.
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    let finished = loop {
        match run(&sim, &ledger, &config, &redelivered()).await {
            Err(e) if e.kind() == "TopUpInProgress" && std::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => break other.unwrap(),
        }
    };
    let top_up = serde_json::to_value(&finished.top_up).unwrap();
    assert_eq!(
        (top_up["status"].as_str(), top_up["resumed"].as_bool()),
        (Some("applied"), Some(true)),
        "{top_up:#}"
    );
    assert_eq!(top_up["incomplete"], false, "{top_up:#}");
    assert_eq!(sim.allocation_calls().len(), 1, "read back, not sent again");
    let audited: BTreeSet<String> = audit_recent(&ledger).await.into_iter().map(|e| e.username).collect();
    assert_eq!(audited, critical, "every change of the killed run is audited once");
    for name in &critical {
        let m = sim.member(name).unwrap();
        assert!(
            (m.available_credits - 200.0).abs() < 1e-6,
            "{name}: {}",
            m.available_credits
        );
    }
}

#[tokio::test]
async fn a_top_up_breaking_the_guardrails_allocates_nothing() {
    let sim = sim(150).await;
    let config = config(&[("AUTO_TOP_UP_TO", "200"), ("MAX_CREDITS_PER_PLAN", "1")]);
    let s = run(&sim, &Ledger::memory(), &config, &request(0)).await.unwrap();
    let top_up = serde_json::to_value(&s.top_up).unwrap();
    assert_eq!(top_up["status"], "refused");
    assert!(
        top_up["reason"].as_str().unwrap().contains("MAX_CREDITS_PER_PLAN"),
        "{top_up}"
    );
    assert!(sim.allocation_calls().is_empty());
    assert!(s.allocations_applied.is_empty());
    assert_eq!(sim.notifications().len(), 1, "the alert still goes out");
}

#[tokio::test]
async fn the_metrics_line_carries_the_runs_numbers() {
    let sim = sim(120).await;
    let req = request(0);
    let s = run(&sim, &Ledger::memory(), &config(&[]), &req).await.unwrap();
    let mut out = Vec::new();
    telemetry::write_emf(
        &mut out,
        req.now,
        &telemetry::Dimensions::none(),
        &s.metrics(),
        &serde_json::Map::new(),
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1);
    let line: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(line["_aws"]["Timestamp"], req.now.timestamp_millis());
    let directive = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "CreditSteward");
    assert_eq!(directive["Dimensions"], serde_json::json!([[]]));
    let units: HashMap<&str, &str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
        .collect();
    let org_days = match s.forecast {
        ForecastStatus::Available {
            org_days_until_empty, ..
        } => org_days_until_empty,
        ForecastStatus::Unavailable { .. } => None,
    };
    let mut expected = HashMap::from([
        ("OrgAvailableCredits", "None"),
        ("MembersCritical", "Count"),
        ("MembersWarning", "Count"),
        ("MembersRunningOut", "Count"),
        ("MemberNoticesSent", "Count"),
        ("MemberNoticesFailed", "Count"),
        ("MembersScanned", "Count"),
        ("ArcgisRequests", "Count"),
        ("DurationMs", "Milliseconds"),
        ("ArcgisReadMs", "Milliseconds"),
    ]);
    if org_days.is_some() {
        expected.insert("OrgDaysUntilEmpty", "None");
    }
    assert_eq!(units, expected);
    assert_eq!(
        line["OrgAvailableCredits"].as_f64(),
        Some(s.org_available_credits.to_f64())
    );
    assert_eq!(line["MembersCritical"], s.critical.len());
    assert_eq!(line["MembersWarning"], s.warning.len());
    assert_eq!(line["MembersRunningOut"], s.running_out.members.len());
    assert_eq!(line["MembersScanned"], s.members_scanned);
    assert_eq!(s.members_scanned, sim.members().len());
    assert_eq!(line["ArcgisRequests"], sim.total_requests());
    assert_eq!(line["DurationMs"], s.duration_ms);
    assert_eq!(line["ArcgisReadMs"], s.arcgis_read_ms);
    // The names the template's alarms and dashboard are checked against are the ones written.
    for name in units.keys() {
        assert!(
            shared::scan::summary::METRIC_NAMES.contains(name),
            "{name} is not in METRIC_NAMES"
        );
    }
    assert_eq!(line["OrgDaysUntilEmpty"].as_f64(), org_days);
}

#[tokio::test]
async fn the_once_only_protocol_holds_on_the_dynamodb_ledger() {
    let sim = sim(120).await;
    let ledger = crate::ledger::dynamo_ledger("scan-once").await;
    let config = top_up_config();
    let req = request(0);

    let first = run(&sim, &ledger, &config, &req).await.expect("first run");
    assert_eq!(sim.notifications().len(), 1);
    let flagged = first.critical.len() + first.warning.len();
    assert_eq!(ledger.alert_levels().await.unwrap().len(), flagged);
    assert_eq!(audit_recent(&ledger).await.len(), first.allocations_applied.len());

    let retry = run(&sim, &ledger, &config, &req).await.expect("retry");
    assert_eq!(retry.duplicate_of.as_ref().map(|d| d.status), Some(RunStatus::Done));
    assert_eq!(sim.notifications().len(), 1);

    // The next day, the topped-up members have 200 credits available: ok (record cleared),
    // below 50 % of their larger allocation (a change from critical: reported once), or even
    // still below 10 % of a very large one (unchanged: not repeated).
    let next = run(&sim, &ledger, &config, &request(1)).await.expect("next day");
    let topped: BTreeSet<String> = first.allocations_applied.iter().map(|a| a.username.clone()).collect();
    let now_warning: BTreeSet<String> = names(&next.warning).intersection(&topped).cloned().collect();
    assert_eq!(next.newly_reported, now_warning.len());
    let still_critical = names(&next.critical).intersection(&topped).count();
    assert_eq!(next.cleared, topped.len() - now_warning.len() - still_critical);
    assert!(
        next.warning
            .iter()
            .filter(|m| m.newly_reported)
            .all(|m| m.previously_reported == Some(Level::Critical))
    );
    assert_eq!(sim.notifications().len(), 1 + usize::from(!now_warning.is_empty()));
    let levels = ledger.alert_levels().await.unwrap();
    assert_eq!(levels.len(), next.critical.len() + next.warning.len());
    assert_eq!(sim.allocation_calls().len(), 1);
}

/// Midnight UTC of the simulator's day, `days` later (negative: earlier), in epoch ms.
fn day_ms(days: i64) -> i64 {
    let day = as_of() + chrono::Duration::days(days);
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis()
}

/// The members above both thresholds who run out within `within` days at the rate of the 30
/// whole days before the run's day (`run_day`, days after the simulator's), computed from the
/// simulator's own records in exact micro-credits: `available × 30 < within × spent`.
fn expected_running_out(sim: &SimHandle, run_day: i64, within: i128) -> BTreeSet<String> {
    let (start, end) = (day_ms(run_day - 30), day_ms(run_day));
    let mut spent: HashMap<String, i128> = HashMap::new();
    for r in sim.org().usage.iter() {
        if let (Some(u), true) = (&r.username, (start..end).contains(&r.day)) {
            *spent.entry(u.clone()).or_default() += micros(r.credits);
        }
    }
    sim.members()
        .into_iter()
        .filter(|m| !m.disabled && !m.user_type.eq_ignore_ascii_case("viewerUT") && m.assigned_credits > 0.0)
        .filter(|m| {
            let (assigned, available) = (micros(m.assigned_credits), micros(m.available_credits));
            let spent = spent.get(&m.username).copied().unwrap_or(0);
            available * 100 >= 50 * assigned && spent > 0 && available * 30 < within * spent
        })
        .map(|m| m.username)
        .collect()
}

/// A member with their whole allocation left (a budget period just renewed) who spent ten
/// allocations' worth in the last days runs out in about three days: alerted although no
/// threshold is crossed, with the burn rate, once; cleared when topped up for good; alerted
/// again when it happens again.
#[tokio::test]
async fn a_member_running_out_soon_is_alerted_above_the_thresholds_once_per_crossing() {
    let sim = sim(150).await;
    let (fast, assigned, _) = healthy_member(&sim);
    geocode_usage(&sim, &fast, day_ms(-1), 10.0 * assigned);
    sim.start_budget_period(day_ms(0));
    let ledger = Ledger::memory();
    let settings = config(&[]);
    assert_eq!(settings.forecast_alert_days, Some(7), "on by default");

    let first = run(&sim, &ledger, &settings, &request(0)).await.unwrap();
    let running_out: BTreeSet<String> = names(&first.running_out.members);
    assert_eq!(running_out, expected_running_out(&sim, 0, 7));
    assert!(running_out.contains(&fast), "{running_out:?}");
    let m = first.running_out.members.iter().find(|m| m.username == fast).unwrap();
    assert!(m.newly_reported && m.percent_left.is_some_and(|p| p >= 50.0), "{m:?}");
    let rate = m.credits_per_day.expect("the burn rate that predicts it");
    assert!(rate >= 10.0 * assigned / 30.0 - 1e-6, "{rate}");
    assert!(m.days_until_empty.is_some_and(|d| d < 7.0), "{m:?}");
    assert_eq!(first.running_out.newly_reported, running_out.len());
    assert_eq!(first.newly_reported, first.critical.len() + first.warning.len());
    let sent = sim.notifications();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].subject.contains(&format!(
            "{} running out within 7 days ({} new)",
            running_out.len(),
            running_out.len()
        )),
        "{}",
        sent[0].subject
    );
    let line = sent[0]
        .message
        .lines()
        .find(|l| l.contains(&format!("({fast}):")))
        .unwrap_or_else(|| panic!("{fast} not in\n{}", sent[0].message));
    assert!(line.contains(" credits a day · running out, new"), "{line}");
    let levels = ledger.alert_levels().await.unwrap();
    assert!(levels.contains_key(&shared::scan::forecast_key(&fast)));
    assert!(
        !levels.contains_key(&fast),
        "no threshold level for a member above them"
    );

    // The next day the member still runs out soon: already reported, nothing sent.
    let second = run(&sim, &ledger, &settings, &request(1)).await.unwrap();
    assert!(names(&second.running_out.members).contains(&fast));
    assert_eq!(second.running_out.newly_reported, 0);
    assert_eq!(sim.notifications().len(), 1, "no repeated alert");

    // Topped up for good: no longer running out, the record goes, silently.
    let client = admin_client(&sim);
    let raise = |credits: f64| shared::arcgis::CreditAssignment {
        username: fast.clone(),
        credits: Credits::from_f64(credits).unwrap(),
    };
    assert!(
        client
            .assign_credits(&[raise(1000.0 * assigned)])
            .await
            .unwrap()
            .is_complete()
    );
    let third = run_with(&client, &ledger, &settings, &request(2)).await.unwrap();
    assert!(!names(&third.running_out.members).contains(&fast));
    assert!(
        !ledger
            .alert_levels()
            .await
            .unwrap()
            .contains_key(&shared::scan::forecast_key(&fast))
    );
    let quiet = sim.notifications().len();

    // Back to the small allocation: a new crossing, reported once more.
    assert!(client.assign_credits(&[raise(assigned)]).await.unwrap().is_complete());
    let fourth = run_with(&client, &ledger, &settings, &request(3)).await.unwrap();
    let again = fourth.running_out.members.iter().find(|m| m.username == fast).unwrap();
    assert!(again.newly_reported);
    assert_eq!(sim.notifications().len(), quiet + 1);
    assert!(sim.notifications()[quiet].message.contains(&format!("New: {fast}.")));

    // FORECAST_DAYS=0 turns these alerts off, and their records go.
    let off = config(&[("FORECAST_DAYS", "0")]);
    let fifth = run_with(&client, &ledger, &off, &request(4)).await.unwrap();
    assert!(fifth.running_out.members.is_empty() && fifth.running_out.within_days.is_none());
    let levels = ledger.alert_levels().await.unwrap();
    assert!(levels.keys().all(|k| !k.starts_with("#forecast/")), "{levels:?}");
}

/// The org's own credits running out within FORECAST_DAYS is alerted once, with its rate,
/// even with no member flagged and no floor set.
#[tokio::test]
async fn the_org_running_out_soon_is_alerted_once() {
    let sim = sim(60).await;
    let ledger = Ledger::memory();
    let config = config(&[]);
    let org = sim.org().available_credits;
    // Usage nobody is charged for: the org's credits drop to a tenth at a rate that
    // empties the rest in about three days.
    sim.consume(portal_sim::UsageRecord {
        day: day_ms(-1),
        username: None,
        stype: "storage".into(),
        etype: "featurestorage".into(),
        credits: 0.9 * org,
        num: 1,
    })
    .unwrap();
    let first = run(&sim, &ledger, &config, &request(0)).await.unwrap();
    let org_out = first.running_out.org.expect("the org runs out soon");
    assert!(org_out.newly_reported && org_out.days_until_empty < 7.0, "{org_out:?}");
    assert!(org_out.credits_per_day >= 0.9 * org / 30.0 - 1e-6);
    let sent = sim.notifications();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .message
            .contains("New since the last alert: the organization is expected to run out soon."),
        "{}",
        sent[0].message
    );
    assert!(
        sent[0].message.contains("the organization runs out in about "),
        "{}",
        sent[0].message
    );
    let second = run(&sim, &ledger, &config, &request(1)).await.unwrap();
    assert!(second.running_out.org.is_some_and(|o| !o.newly_reported));
    assert_eq!(sim.notifications().len(), 1, "once per crossing");
    assert_eq!(
        ledger.alert_levels().await.unwrap().get(shared::scan::ORG_FORECAST_KEY),
        Some(&Level::Warning)
    );
}

/// How many notifications `sim` recorded for exactly `username` alone (a member's notice).
fn notices_to(sim: &SimHandle, username: &str) -> usize {
    sim.notifications()
        .iter()
        .filter(|n| n.users.len() == 1 && n.users[0] == username)
        .count()
}

/// With `NOTIFY_MEMBERS=critical`, every critical member gets one notice of their own, with
/// their balance and who to ask; one notice failing (the second call) fails the run visibly
/// but keeps what was sent; a redelivery sends nothing; the next run sends exactly the failed
/// one, and the one after that nothing.
#[tokio::test]
async fn each_critical_member_is_told_once_and_a_failed_notice_goes_with_the_next_run() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let settings = config(&[("NOTIFY_MEMBERS", "critical")]);
    let (critical, warning) = expected(&sim, 10, 50);
    assert!(critical.len() >= 3 && !warning.is_empty());
    // The first call is the admin email; the second, the first member's notice, fails before
    // ArcGIS processes it.
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: Trigger {
                endpoint: Some(NOTIFY.into()),
                every_nth: Some(2),
                times: Some(1),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let err = run(&sim, &ledger, &settings, &request(0)).await.unwrap_err();
    assert_eq!(err.kind(), "MemberNoticesFailed", "{err}");
    let s = err.summary().expect("the run's summary").clone();
    assert_eq!(s.member_notices.due, critical.len());
    assert_eq!(s.member_notices.not_sent.len(), 1, "{:?}", s.member_notices);
    let failed = s.member_notices.not_sent[0].clone();
    let sent: BTreeSet<String> = s.member_notices.sent.iter().cloned().collect();
    assert_eq!(
        sent,
        critical
            .iter()
            .filter(|u| **u != failed)
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("member notice(s) could not be sent")),
        "{:?}",
        s.problems
    );
    // The admin email went out, to the contacts, and is recorded.
    let mails = sim.notifications();
    assert_eq!(mails[0].users, sim.org().contacts);
    assert_eq!(mails.len(), 1 + sent.len(), "one call per member notice");
    for u in &sent {
        assert_eq!(notices_to(&sim, u), 1, "{u}");
    }
    let member = s.critical.iter().find(|m| sent.contains(&m.username)).unwrap();
    let notice = mails.iter().find(|n| n.users == [member.username.clone()]).unwrap();
    assert_eq!(notice.subject, "ArcGIS Online: your credits are almost used up");
    assert!(notice.message.contains("Hello "), "{}", notice.message);
    assert!(
        notice
            .message
            .contains("To get more, ask your organization's administrators ("),
        "{}",
        notice.message
    );
    assert!(
        !warning.iter().any(|u| notices_to(&sim, u) > 0),
        "warning members are not told"
    );
    sim.clear_faults();

    // A redelivery of the run sends nothing.
    let again = run(&sim, &ledger, &settings, &request(0)).await.unwrap();
    assert!(again.duplicate_of.is_some());
    assert_eq!(sim.notifications().len(), 1 + sent.len());

    // The next run: no admin email (nothing new), exactly the failed notice.
    let next = run(&sim, &ledger, &settings, &request(1)).await.unwrap();
    assert_eq!(next.member_notices.sent, [failed.as_str()]);
    assert_eq!(sim.notifications().len(), 2 + sent.len());
    assert_eq!(notices_to(&sim, &failed), 1);
    let levels = ledger.alert_levels().await.unwrap();
    for u in &critical {
        assert_eq!(
            levels.get(&shared::scan::notices::notice_key(u)),
            Some(&Level::Critical),
            "{u}"
        );
    }

    // And then nothing.
    let quiet = run(&sim, &ledger, &settings, &request(2)).await.unwrap();
    assert_eq!((quiet.member_notices.due, quiet.member_notices.sent.len()), (0, 0));
    assert_eq!(sim.notifications().len(), 2 + sent.len());
}

/// A member told at `warning` who falls to critical is told again; one back to ok loses the
/// record, so a later crossing is told again; the configured contact is who to ask.
#[tokio::test]
async fn a_member_is_told_per_crossing_with_the_configured_contact() {
    let sim = sim(150).await;
    let ledger = Ledger::memory();
    let settings = config(&[
        ("NOTIFY_MEMBERS", "warning"),
        ("NOTIFY_MEMBERS_CONTACT", "the GIS team, gis@example.org"),
    ]);
    run(&sim, &ledger, &settings, &request(0)).await.unwrap();
    let (crosser, assigned, available) = healthy_member(&sim);
    consume(&sim, &crosser, available - 0.3 * assigned);
    let second = run(&sim, &ledger, &settings, &request(1)).await.unwrap();
    assert_eq!(second.member_notices.sent, [crosser.as_str()]);
    let told = sim
        .notifications()
        .into_iter()
        .rfind(|n| n.users == [crosser.clone()])
        .unwrap();
    assert_eq!(told.subject, "ArcGIS Online: your credits are running low");
    assert!(
        told.message
            .contains("To get more, ask the GIS team, gis@example.org.\n"),
        "{}",
        told.message
    );
    assert!(
        told.message.contains("credits left of your allocation of "),
        "{}",
        told.message
    );

    consume(&sim, &crosser, 0.25 * assigned);
    let third = run(&sim, &ledger, &settings, &request(2)).await.unwrap();
    assert_eq!(third.member_notices.sent, [crosser.as_str()]);
    assert_eq!(notices_to(&sim, &crosser), 2);

    // Back to ok: the notice record goes with the level.
    let client = admin_client(&sim);
    let raise = shared::arcgis::CreditAssignment {
        username: crosser.clone(),
        credits: Credits::whole(1_000_000),
    };
    assert!(client.assign_credits(&[raise]).await.unwrap().is_complete());
    run_with(&client, &ledger, &settings, &request(3)).await.unwrap();
    let levels = ledger.alert_levels().await.unwrap();
    assert!(!levels.contains_key(&shared::scan::notices::notice_key(&crosser)));
    assert_eq!(notices_to(&sim, &crosser), 2);
}
