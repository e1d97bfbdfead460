//! scan-credits end to end: the real binary, under the Runtime API emulator, against
//! portal-sim and a DynamoDB ledger in moto.

use std::collections::BTreeSet;

use portal_sim::{GenParams, MemberState, UsageRecord, generate};
use serde_json::{Value, json};

use crate::support::*;

/// The notebook's rule applied to the simulator's state, written independently of
/// credit-core: strictly below 10 % (critical) or 50 % (warning) of the allocation left,
/// for limited, enabled, non-viewer members with a non-zero allocation; overspent members are
/// critical whatever their allocation.
fn notebook_rule(members: &[MemberState]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut critical = BTreeSet::new();
    let mut warning = BTreeSet::new();
    for m in members {
        let Some(assigned) = m.allocation else { continue };
        if m.disabled || m.user_type == "viewerUT" {
            continue;
        }
        let available = m.available_credits;
        if available < 0.0 || (assigned > 0.0 && available * 100.0 < 10.0 * assigned) {
            critical.insert(m.username.clone());
        } else if assigned > 0.0 && available * 100.0 < 50.0 * assigned {
            warning.insert(m.username.clone());
        }
    }
    (critical, warning)
}

fn names(summary: &Value, list: &str) -> BTreeSet<String> {
    summary[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {summary}"))
        .iter()
        .map(|m| m["username"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_flags_the_notebooks_sets_and_alerts_once_per_crossing() {
    let world = World::new(generate(&GenParams::new(400, 11, chrono::Utc::now().date_naive()))).await;
    let function = world.start("scan-credits", &[]);
    let event = fixture("scheduler-input.json");

    let first = world.invoke("scan-credits", &event).await;
    assert!(
        first.function_error.is_none(),
        "{:?}\n{}",
        first.payload,
        function.output()
    );
    let s = &first.payload;
    let (critical, warning) = notebook_rule(&world.sim.members());
    assert_eq!(names(s, "critical"), critical);
    assert_eq!(names(s, "warning"), warning);
    assert!(critical.contains("overspent") && !critical.contains("edge_10pct") && !warning.contains("edge_50pct"));
    for never in ["unlimited_analyst", "disabled_member", "viewer_member", "zero_alloc"] {
        assert!(!critical.contains(never) && !warning.contains(never), "{never} flagged");
    }
    assert_eq!(s["members_scanned"], 400);

    // One email, to the admin contacts, naming the flagged members.
    let mails = world.sim.notifications();
    assert_eq!(mails.len(), 1, "one email for the first run");
    let contacts = world.sim.org().contacts;
    assert_eq!(mails[0].users, contacts);
    assert_eq!(mails[0].channel, "email");
    for u in critical.iter().chain(&warning) {
        assert!(mails[0].message.contains(u.as_str()), "{u} missing from the email");
    }
    // The ledger holds one alert record per flagged member and the run.
    let alerts = world.ledger_where("ALERT").await;
    let recorded: BTreeSet<String> = alerts
        .iter()
        .filter_map(|a| attr(a, "sk"))
        .filter(|u| !u.starts_with("__"))
        .map(str::to_string)
        .collect();
    assert_eq!(recorded, critical.union(&warning).cloned().collect());
    assert_eq!(world.ledger_where("RUN#scan-credits").await.len(), 1);

    // The same scheduled event again (a retried invocation): no email.
    let retry = world.invoke("scan-credits", &event).await;
    assert!(retry.function_error.is_none(), "{:?}", retry.payload);
    assert!(retry.payload["duplicate_of"].is_object(), "{}", retry.payload);
    assert_eq!(world.sim.notifications().len(), 1, "a retried invocation sends nothing");

    // The next day's run: nobody crossed anything, nothing sent.
    let next_day = json!({"scheduled_time": "2099-01-02T06:00:00Z"});
    let second = world.invoke("scan-credits", &next_day).await;
    assert!(second.function_error.is_none(), "{:?}", second.payload);
    assert_eq!(second.payload["newly_reported"], 0);
    assert_eq!(world.sim.notifications().len(), 1, "no repeated alerts");

    // jdoe (60 % left) spends enough to drop below 10 %: exactly jdoe is reported next.
    let jdoe = world.sim.member("jdoe").unwrap();
    let spend = jdoe.available_credits - 0.05 * jdoe.allocation.unwrap();
    world
        .sim
        .consume(UsageRecord {
            day: world.sim.org().as_of,
            username: Some("jdoe".into()),
            stype: "spanalysis".into(),
            etype: "analysis".into(),
            credits: spend,
            num: 1,
        })
        .unwrap();
    let third = world
        .invoke("scan-credits", &json!({"scheduled_time": "2099-01-03T06:00:00Z"}))
        .await;
    assert!(third.function_error.is_none(), "{:?}", third.payload);
    assert_eq!(third.payload["newly_reported"], 1, "{}", third.payload);
    let mails = world.sim.notifications();
    assert_eq!(mails.len(), 2);
    assert!(mails[1].message.contains("jdoe"));
    assert!(
        !mails[1].message.contains("overspent"),
        "already-reported members are not repeated"
    );

    // One EMF metrics line per run.
    let out = function.output();
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("\"_aws\"") && l.contains("CreditSteward"))
            .count(),
        4,
        "{out}"
    );
    assert!(
        !out.contains(portal_sim::generate::ADMIN_PASSWORD),
        "the password reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_accepts_every_schedule_shape_and_refuses_garbage() {
    let world = World::new(generate(&GenParams::new(60, 3, chrono::Utc::now().date_naive()))).await;
    let _function = world.start("scan-credits", &[]);
    let mut outs = Vec::new();
    for name in [
        "eventbridge-scheduled-event.json",
        "scheduler-default-envelope.json",
        "scheduler-input.json",
    ] {
        let out = world.invoke("scan-credits", &fixture(name)).await;
        assert!(out.function_error.is_none(), "{name}: {:?}", out.payload);
        outs.push(out.payload);
    }
    // The legacy event (its own time) scans and alerts; the Scheduler envelope (a later time)
    // scans and finds nothing new; the Input carries the envelope's schedule time, so it is
    // recognised as the same run delivered again.
    assert!(outs[0]["members_scanned"].as_u64().unwrap() > 0 && outs[0]["duplicate_of"].is_null());
    assert!(outs[1]["members_scanned"].as_u64().unwrap() > 0 && outs[1]["newly_reported"] == 0);
    assert!(outs[2]["duplicate_of"].is_object(), "{}", outs[2]);
    assert_eq!(world.sim.notifications().len(), 1);
    let bad = world.invoke("scan-credits", &json!({"dryrun": true})).await;
    assert!(bad.function_error.is_some(), "{:?}", bad.payload);
    assert!(
        bad.payload.to_string().contains("dryrun"),
        "the error names the bad field: {}",
        bad.payload
    );
}
