//! scan-credits end to end: the real binary, under the Runtime API emulator, against
//! portal-sim and a DynamoDB ledger in moto.

use std::collections::{BTreeMap, BTreeSet};

use portal_sim::{GenParams, MemberState, UsageRecord, generate};
use serde_json::{Value, json};

use crate::support::*;

/// The alert rule applied to the simulator's state, written independently of
/// the shared crate: strictly below 10 % (critical) or 50 % (warning) of the allocation left,
/// for limited, enabled, non-viewer members with a non-zero allocation; overspent members are
/// critical whatever their allocation.
fn alert_rule(members: &[MemberState]) -> (BTreeSet<String>, BTreeSet<String>) {
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

/// The complete lists a scan wrote to `bucket`, found from its result.
async fn complete_lists(bucket: &Bucket, result: &Value) -> Value {
    assert_eq!(result["lists"]["status"], "written", "{}", result["lists"]);
    assert_eq!(result["lists"]["bucket"], bucket.name.as_str());
    let key = result["lists"]["json_key"].as_str().expect("json_key");
    assert!(key.starts_with("scans/") && key.ends_with("/members.json"), "{key}");
    let (bytes, _) = bucket.object(key).await.expect("the complete lists");
    serde_json::from_slice(&bytes).expect("JSON lists")
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
async fn scan_flags_the_critical_and_warning_sets_and_alerts_once_per_crossing() {
    let world = World::new(generate(&GenParams::new(400, 11, chrono::Utc::now().date_naive()))).await;
    let bucket = Bucket::create().await;
    let function = world.start(
        "scan-credits",
        &[("REPORT_BUCKET", &bucket.name), ("STACK_NAME", "credit-steward-e2e")],
    );
    let event = fixture("scheduler-input.json");

    let first = world.invoke("scan-credits", &event).await;
    assert!(
        first.function_error.is_none(),
        "{:?}\n{}",
        first.payload,
        function.output()
    );
    let s = &first.payload;
    let (critical, warning) = alert_rule(&world.sim.members());
    // The result stays small: complete counts, the most urgent members of each list, and the
    // complete lists in S3, where the JSON document and the CSV hold every flagged member.
    let lists = complete_lists(&bucket, s).await;
    assert_eq!(names(&lists, "critical"), critical);
    assert_eq!(names(&lists, "warning"), warning);
    assert_eq!(
        (s["counts"]["critical"].as_u64(), s["counts"]["warning"].as_u64()),
        (Some(critical.len() as u64), Some(warning.len() as u64))
    );
    for level in ["critical", "warning"] {
        let cut = s[level].as_array().unwrap();
        let all = lists[level].as_array().unwrap();
        assert!(
            all.len() > shared::scan::lists::RESULT_MEMBERS_PER_LIST,
            "{level}: the org is large enough to cut"
        );
        assert_eq!(
            cut[..],
            all[..shared::scan::lists::RESULT_MEMBERS_PER_LIST],
            "{level}: the most urgent first"
        );
    }
    let (csv, content_type) = bucket
        .object(s["lists"]["csv_key"].as_str().unwrap())
        .await
        .expect("the CSV list");
    assert_eq!(content_type.as_deref(), Some("text/csv; charset=utf-8"));
    assert_eq!(
        String::from_utf8(csv).unwrap().lines().count(),
        1 + critical.len() + warning.len()
    );
    assert!(
        s.to_string().len() < 32 * 1024,
        "a small result: {} bytes",
        s.to_string().len()
    );
    assert!(critical.contains("overspent") && !critical.contains("edge_10pct") && !warning.contains("edge_50pct"));
    for never in ["unlimited_analyst", "disabled_member", "viewer_member", "zero_alloc"] {
        assert!(!critical.contains(never) && !warning.contains(never), "{never} flagged");
    }
    assert_eq!(s["members_scanned"], 400);

    // One email, to the admin contacts: the current totals, the most urgent member with a
    // link to their page in the org, and where the complete list is.
    let mails = world.sim.notifications();
    assert_eq!(mails.len(), 1, "one email for the first run");
    let contacts = world.sim.org().contacts;
    assert_eq!(mails[0].users, contacts);
    assert_eq!(mails[0].channel, "email");
    assert!(
        mails[0].subject.starts_with(&format!(
            "ArcGIS Online credits: {n} critical ({n} new), {w} warning ({w} new) · org ",
            n = critical.len(),
            w = warning.len()
        )),
        "{}",
        mails[0].subject
    );
    let most_urgent = s["critical"][0]["username"].as_str().unwrap();
    assert!(
        mails[0].message.contains(&format!(
            "https://{}.maps.arcgis.com/home/user.html?user={most_urgent}",
            world.sim.org().url_key
        )),
        "{}",
        mails[0].message
    );
    assert!(
        mails[0].message.contains(s["lists"]["csv_key"].as_str().unwrap()),
        "the email says where the complete list is: {}",
        mails[0].message
    );
    assert!(mails[0].message.lines().count() <= 60, "{}", mails[0].message);
    // The ledger holds the level of every flagged member, in a few shard items rather than
    // one item per member, and the run.
    let ledger = shared::ledger::Ledger::dynamo(world.dynamo.clone(), world.table.clone());
    let recorded: BTreeSet<String> = ledger
        .alert_levels()
        .await
        .expect("the alert state")
        .into_keys()
        .collect();
    assert_eq!(recorded, critical.union(&warning).cloned().collect());
    let items = world.ledger_where("ALERT").await;
    assert!(
        items.len() <= usize::from(shared::ledger::alerts::SHARDS) + 1 && items.len() < recorded.len(),
        "{} alert items for {} members",
        items.len(),
        recorded.len()
    );
    assert_eq!(world.ledger_where("RUN#scan-credits").await.len(), 1);
    // Without AUTO_TOP_UP_TO the scan stays off the money path: no request, grant or audit.
    assert_eq!(s["top_up"]["status"], "off", "{}", s["top_up"]);
    for money in ["REQ#", "BUDGET", "AUDIT#", "LOCK"] {
        assert!(world.ledger_where(money).await.is_empty(), "{money} written by a scan");
    }
    assert!(world.sim.allocation_calls().is_empty());

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
    // The subject still counts every critical member, of whom one is new: jdoe.
    assert!(
        mails[1].subject.starts_with(&format!(
            "ArcGIS Online credits: {} critical (1 new), ",
            third.payload["counts"]["critical"]
        )),
        "{}",
        mails[1].subject
    );
    assert!(mails[1].message.contains("\nNew: jdoe.\n"), "{}", mails[1].message);

    // One EMF metrics line per run, published under this stack's Stack dimension (what the
    // template's alarms filter on).
    let out = function.output();
    let emf: Vec<Value> = out
        .lines()
        .filter(|l| l.contains("\"_aws\"") && l.contains("CreditSteward"))
        .map(|l| serde_json::from_str(l).expect("an EMF line is one JSON object"))
        .collect();
    assert_eq!(emf.len(), 4, "{out}");
    for line in &emf {
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stack"]]),
            "{line}"
        );
        assert_eq!(line["Stack"], "credit-steward-e2e", "{line}");
    }
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

/// The automatic top-up goes through the one apply path: the critical members below the
/// target are topped up under the run's own key, every batch announced by an audit intent and
/// every change audited under the scan's job identity; a redelivered run changes nothing; and
/// what the top-up granted counts against the daily budget allocate is held to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_top_up_is_applied_once_audited_and_counted_against_the_day() {
    let world = World::new(generate(&GenParams::new(150, 5, chrono::Utc::now().date_naive()))).await;
    let (critical, _) = alert_rule(&world.sim.members());
    let before: BTreeMap<String, MemberState> = world
        .sim
        .members()
        .into_iter()
        .filter(|m| critical.contains(&m.username))
        .map(|m| (m.username.clone(), m))
        .collect();
    // The members the top-up must change (below 200 available) and what it grants in all, in
    // micro-credits so the sum is exact.
    let increases: BTreeMap<String, i64> = before
        .values()
        .filter(|m| m.available_credits < 200.0)
        .map(|m| (m.username.clone(), ((200.0 - m.available_credits) * 1e6).round() as i64))
        .collect();
    assert!(
        increases.contains_key("overspent") && increases.len() >= 2,
        "{increases:?}"
    );
    let total: i64 = increases.values().sum();
    let largest = increases.values().max().copied().unwrap_or(0);
    // Guardrails that let the top-up through and leave allocate 100 credits for the day.
    let per_member = (largest / 1_000_000 + 1).max(1_000).to_string();
    let per_plan = (total / 1_000_000 + 1_000).to_string();
    let per_day = format!(
        "{}.{:06}",
        (total + 100_000_000) / 1_000_000,
        (total + 100_000_000) % 1_000_000
    );
    let guardrails = [
        ("AUTO_TOP_UP_TO", "200"),
        ("MAX_CREDITS_PER_MEMBER", per_member.as_str()),
        ("MAX_CREDITS_PER_PLAN", per_plan.as_str()),
        ("MAX_CREDITS_PER_DAY", per_day.as_str()),
    ];
    let scan_fn = world.start("scan-credits", &guardrails);
    let _allocate_fn = world.start("allocate", &guardrails);

    let event = json!({"scheduled_time": chrono::Utc::now().to_rfc3339()});
    let first = world.invoke("scan-credits", &event).await;
    assert!(
        first.function_error.is_none(),
        "{:?}\n{}",
        first.payload,
        scan_fn.output()
    );
    let s = &first.payload;
    assert_eq!(names(s, "critical"), critical, "the scan rates before it tops up");
    let top_up = &s["top_up"];
    assert_eq!(top_up["status"], "applied", "{top_up}");
    assert_eq!(top_up["requested"], increases.len(), "{top_up}");
    assert_eq!(top_up["applied"], increases.len(), "{top_up}");
    assert_eq!(top_up["not_applied"], json!([]), "{top_up}");
    assert_eq!(
        (&top_up["incomplete"], &top_up["resumed"]),
        (&json!(false), &json!(false))
    );
    let applied = s["allocations_applied"].as_array().expect("allocations_applied");
    assert_eq!(
        applied
            .iter()
            .map(|a| a["username"].as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>(),
        increases.keys().cloned().collect::<BTreeSet<_>>()
    );
    for a in applied {
        let u = a["username"].as_str().unwrap();
        assert_eq!(a["available_after"], json!(200), "an exact amount: {a}");
        let m = world.sim.member(u).unwrap();
        assert!((m.available_credits - 200.0).abs() < 1e-6, "{u}: {m:?}");
        assert_eq!(m.consumed, before[u].consumed, "{u}: only the allocation moved");
    }
    assert_eq!(world.sim.allocation_calls().len(), 1, "one batch");
    assert_eq!(world.sim.notifications().len(), 1);

    // Audited under the job's identity: one intent for the batch, one change per member.
    let intents = world.audit("intent").await;
    let changes = world.audit("change").await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(changes.len(), increases.len(), "{changes:?}");
    for r in intents.iter().chain(&changes) {
        assert_eq!(r["caller"]["kind"], "job", "{r}");
        assert_eq!(r["caller"]["principal_id"], "scan-credits", "{r}");
        assert_eq!(r["source"], "scan-credits auto top-up", "{r}");
    }
    for r in &changes {
        assert_eq!(r["matches_plan"], true, "{r}");
        assert_eq!(r["observed"]["available"], json!(200), "{r}");
        assert_eq!(r["observed"]["assigned"], r["planned"], "{r}");
    }
    crate::allocate::assert_lock_free(&world).await;
    let calls_after_first = world.sim.allocation_calls().len();

    // The same run delivered again: no email, no allocation, no audit.
    let again = world.invoke("scan-credits", &event).await;
    assert!(again.function_error.is_none(), "{:?}", again.payload);
    assert!(again.payload["duplicate_of"].is_object(), "{}", again.payload);
    assert_ne!(again.payload["top_up"]["status"], "applied", "{}", again.payload);
    assert_eq!(world.sim.allocation_calls().len(), calls_after_first);
    assert_eq!(world.sim.notifications().len(), 1, "a redelivered run sends nothing");
    assert_eq!(world.ledger_where("AUDIT#").await.len(), intents.len() + changes.len());

    // The top-up's grant counts against the rolling day allocate is held to: 100 credits are
    // left, so 150 more are refused and 50 go through.
    let allocation = |body: &str, key: &str| allocation_event(body, Some(key), key);
    let out = world
        .invoke(
            "allocate",
            &allocation(r#"{"allocations":[{"username":"jdoe","add":150}]}"#, "day-1"),
        )
        .await;
    let reply: Value = serde_json::from_str(out.payload["body"].as_str().unwrap_or("null")).unwrap_or_default();
    assert_eq!(out.payload["statusCode"], 422, "{reply}");
    let problem = reply["problems"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["guardrail"] == "max_per_day"))
        .unwrap_or_else(|| panic!("no max_per_day problem: {reply}"));
    assert!(
        problem["problem"].as_str().is_some_and(|t| t.contains("leaving 100 ")),
        "{problem}"
    );
    let out = world
        .invoke(
            "allocate",
            &allocation(r#"{"allocations":[{"username":"jdoe","add":50}]}"#, "day-2"),
        )
        .await;
    let reply: Value = serde_json::from_str(out.payload["body"].as_str().unwrap_or("null")).unwrap_or_default();
    assert_eq!(out.payload["statusCode"], 200, "{reply}");
    assert_eq!(
        reply["org"]["granted_last_24h"]
            .as_f64()
            .map(|g| (g * 1e6).round() as i64),
        Some(total),
        "{reply}"
    );
}

/// A French deployment (`LANGUAGE=fr`) of a 2,000-member org: the first alert the simulator
/// received reads in French, keeps to 60 lines, and names where the complete list is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_french_deployment_alerts_in_french_in_a_short_email() {
    let world = World::new(generate(&GenParams::new(2_000, 29, chrono::Utc::now().date_naive()))).await;
    let bucket = Bucket::create().await;
    let function = world.start("scan-credits", &[("REPORT_BUCKET", &bucket.name), ("LANGUAGE", "fr")]);
    let out = world
        .invoke("scan-credits", &json!({"scheduled_time": "2026-11-01T06:00:00Z"}))
        .await;
    assert!(out.function_error.is_none(), "{:?}\n{}", out.payload, function.output());
    let (critical, warning) = alert_rule(&world.sim.members());
    assert!(
        critical.len() + warning.len() > 60,
        "enough flagged members to overflow an email"
    );
    let mails = world.sim.notifications();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(
        mail.subject.starts_with(&format!(
            "Crédits ArcGIS Online : {} critiques ({} nouveaux), {} en alerte ({} nouveaux) · organisation ",
            group_fr(critical.len()),
            group_fr(critical.len()),
            group_fr(warning.len()),
            group_fr(warning.len())
        )),
        "{}",
        mail.subject
    );
    let lines: Vec<&str> = mail.message.lines().collect();
    assert!(lines.len() <= 60, "{} lines:\n{}", lines.len(), mail.message);
    assert_eq!(lines[0], "Analyse des crédits du 1er novembre 2026.");
    assert!(
        mail.message.contains(&format!(
            "Membres actuellement critiques : {} · en alerte : {} · analysés : 2\u{202f}000",
            group_fr(critical.len()),
            group_fr(warning.len())
        )),
        "{}",
        mail.message
    );
    assert!(mail.message.contains("Les plus urgents (10 sur "), "{}", mail.message);
    // The link opens the complete list without AWS credentials.
    let csv_key = out.payload["lists"]["csv_key"].as_str().unwrap();
    let link = mail
        .message
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(csv_key))
        .unwrap_or_else(|| panic!("no link to {csv_key} in:\n{}", mail.message));
    let opened = reqwest::get(link).await.expect("the link answers");
    assert_eq!(opened.status(), 200, "{link}");
    let listed = opened.bytes().await.unwrap().to_vec();
    assert_eq!(Some(listed.clone()), bucket.object(csv_key).await.map(|(b, _)| b));
    let rows = String::from_utf8(listed).unwrap().lines().count();
    assert_eq!(
        rows,
        1 + critical.len() + warning.len(),
        "a header and every flagged member"
    );
    assert!(mail.message.contains("\"policy\": \"critical\""), "{}", mail.message);
    for english in ["credits left", "What to do", "Most urgent"] {
        assert!(!mail.message.contains(english), "'{english}' in {}", mail.message);
    }
}

/// A count as French writes it: thousands grouped with a narrow no-break space.
fn group_fr(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// UTC midnight of `day`, in epoch ms (the simulator's usage days).
fn midnight_ms(day: chrono::NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis()
}

/// A limited, enabled creator with most of a sizeable allocation left.
fn healthy(members: &[MemberState]) -> MemberState {
    members
        .iter()
        .find(|m| {
            !m.disabled
                && m.user_type == "creatorUT"
                && m.allocation
                    .is_some_and(|a| a >= 100.0 && m.available_credits >= 0.6 * a)
        })
        .cloned()
        .expect("a healthy member")
}

/// A member far above the thresholds (a budget period just renewed) who spent ten
/// allocations' worth yesterday runs out in about three days: the French deployment's email
/// says so, with the rate, and a redelivery of the run sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_running_out_soon_is_alerted_once_in_french_with_the_rate() {
    let today = chrono::Utc::now().date_naive();
    let world = World::new(generate(&GenParams::new(80, 17, today))).await;
    let fast = healthy(&world.sim.members());
    let allocation = fast.allocation.unwrap();
    world
        .sim
        .consume(UsageRecord {
            day: midnight_ms(today - chrono::Days::new(1)),
            username: Some(fast.username.clone()),
            stype: "spanalysis".into(),
            etype: "analysis".into(),
            credits: 10.0 * allocation,
            num: 1,
        })
        .unwrap();
    world.sim.start_budget_period(midnight_ms(today));
    let function = world.start("scan-credits", &[("LANGUAGE", "fr")]);
    let event = json!({"scheduled_time": format!("{today}T06:00:00Z")});

    let out = world.invoke("scan-credits", &event).await;
    assert!(out.function_error.is_none(), "{:?}\n{}", out.payload, function.output());
    let s = &out.payload;
    assert_eq!(s["running_out"]["within_days"], 7, "{}", s["running_out"]);
    assert!(
        names(&s["running_out"], "members").contains(&fast.username),
        "{}",
        s["running_out"]
    );
    assert_eq!(
        s["counts"]["running_out"],
        s["running_out"]["members"].as_array().unwrap().len()
    );
    let mails = world.sim.notifications();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].users, world.sim.org().contacts);
    assert!(
        mails[0].subject.contains(" à court sous 7 jours ("),
        "{}",
        mails[0].subject
    );
    let line = mails[0]
        .message
        .lines()
        .find(|l| l.contains(&format!("({}) :", fast.username)))
        .unwrap_or_else(|| panic!("{} not in\n{}", fast.username, mails[0].message));
    assert!(
        line.contains(" crédits par jour · épuisement proche, nouveau"),
        "{line}"
    );
    assert!(
        mails[0]
            .message
            .contains("Au-dessus des seuils mais à court sous 7 jours à leur rythme récent"),
        "{}",
        mails[0].message
    );

    let again = world.invoke("scan-credits", &event).await;
    assert!(again.payload["duplicate_of"].is_object(), "{}", again.payload);
    assert_eq!(world.sim.notifications().len(), 1, "a redelivered run sends nothing");
}

/// The notices portal-sim recorded to `username` alone (a member's own notice).
fn notices_to(world: &World, username: &str) -> Vec<portal_sim::Notification> {
    world
        .sim
        .notifications()
        .into_iter()
        .filter(|n| n.users == [username.to_owned()])
        .collect()
}

/// `NOTIFY_MEMBERS=warning` in a French deployment: every flagged member gets one notice of
/// their own (one user per call, their balance), the admin contacts the one email. One notice
/// failing fails the invocation visibly; the same run delivered again sends nothing; the next
/// run sends exactly the failed notice, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_told_themselves_once_per_crossing_and_a_failed_notice_goes_next_run() {
    let today = chrono::Utc::now().date_naive();
    let world = World::new(generate(&GenParams::new(90, 23, today))).await;
    let (critical, warning) = alert_rule(&world.sim.members());
    let flagged: BTreeSet<String> = critical.union(&warning).cloned().collect();
    assert!(flagged.len() >= 3, "{flagged:?}");
    let function = world.start("scan-credits", &[("LANGUAGE", "fr"), ("NOTIFY_MEMBERS", "warning")]);
    // The first call is the admin email; the third, a member's notice, fails before ArcGIS
    // processes it.
    world.sim.set_faults(portal_sim::Faults {
        http_error: Some(portal_sim::HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: portal_sim::Trigger {
                endpoint: Some("portals/self/createNotification".into()),
                every_nth: Some(3),
                times: Some(1),
                ..portal_sim::Trigger::default()
            },
        }),
        ..portal_sim::Faults::default()
    });
    let event = json!({"scheduled_time": format!("{today}T06:00:00Z")});

    let first = world.invoke("scan-credits", &event).await;
    let error = first.function_error.as_deref().unwrap_or_default();
    assert!(
        first.payload.to_string().contains("MemberNoticesFailed"),
        "{error} {:?}\n{}",
        first.payload,
        function.output()
    );
    world.sim.clear_faults();
    let mails = world.sim.notifications();
    assert_eq!(mails[0].users, world.sim.org().contacts, "the admin email first");
    let told: BTreeSet<String> = mails[1..].iter().map(|n| n.users.join(",")).collect();
    assert_eq!(mails.len() - 1, told.len(), "one call per member, each told once");
    let missed: Vec<&String> = flagged.iter().filter(|u| !told.contains(*u)).collect();
    assert_eq!(missed.len(), 1, "exactly the failed notice is missing: {missed:?}");
    let failed = missed[0].clone();
    for n in &mails[1..] {
        let m = world.sim.member(&n.users[0]).unwrap();
        let level = if critical.contains(&m.username) {
            "ArcGIS Online : vos crédits sont presque épuisés"
        } else {
            "ArcGIS Online : vos crédits diminuent"
        };
        assert_eq!(n.subject, level, "{}", m.username);
        assert_eq!(n.channel, "email");
        assert!(n.message.starts_with("Bonjour "), "{}", n.message);
        assert!(
            n.message
                .contains("Pour en obtenir davantage, contactez les administrateurs de votre organisation ("),
            "{}",
            n.message
        );
        assert!(
            n.message.contains("Il vous reste ") || n.message.contains("Vous avez consommé "),
            "{}",
            n.message
        );
        assert!(n.message.lines().count() <= 10, "{}", n.message);
    }

    // The same scheduled run again: nothing.
    let retry = world.invoke("scan-credits", &event).await;
    assert!(retry.payload["duplicate_of"].is_object(), "{}", retry.payload);
    assert_eq!(
        world.sim.notifications().len(),
        mails.len(),
        "a redelivered run sends nothing"
    );

    // The next run: exactly the failed notice, once; no admin email (nothing new).
    let next_event = json!({"scheduled_time": format!("{}T06:00:00Z", today + chrono::Days::new(1))});
    let next = world.invoke("scan-credits", &next_event).await;
    assert!(
        next.function_error.is_none(),
        "{:?}\n{}",
        next.payload,
        function.output()
    );
    assert_eq!(
        next.payload["member_notices"]["sent"],
        json!([failed.clone()]),
        "{}",
        next.payload
    );
    assert_eq!(world.sim.notifications().len(), mails.len() + 1);
    assert_eq!(notices_to(&world, &failed).len(), 1);

    // And then nothing, to anyone.
    let later = json!({"scheduled_time": format!("{}T06:00:00Z", today + chrono::Days::new(2))});
    let quiet = world.invoke("scan-credits", &later).await;
    assert!(quiet.function_error.is_none(), "{:?}", quiet.payload);
    assert_eq!(world.sim.notifications().len(), mails.len() + 1);
    for u in &flagged {
        assert_eq!(notices_to(&world, u).len(), 1, "{u}");
    }
}

/// The English deployment with `NOTIFY_MEMBERS=critical`: critical members get their own
/// notice in English, warning members none, and a member running out soon is in the admin
/// email with their rate, not told themselves (they crossed no level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_english_critical_members_are_told_and_the_admins_see_who_runs_out() {
    let today = chrono::Utc::now().date_naive();
    let world = World::new(generate(&GenParams::new(70, 31, today))).await;
    let fast = healthy(&world.sim.members());
    world
        .sim
        .consume(UsageRecord {
            day: midnight_ms(today - chrono::Days::new(1)),
            username: Some(fast.username.clone()),
            stype: "spanalysis".into(),
            etype: "analysis".into(),
            credits: 10.0 * fast.allocation.unwrap(),
            num: 1,
        })
        .unwrap();
    world.sim.start_budget_period(midnight_ms(today));
    // Two others spend most of their allocation today: critical (today is outside the
    // forecast's window, so they are not running out by it).
    let spenders: Vec<MemberState> = world
        .sim
        .members()
        .into_iter()
        .filter(|m| m.username != fast.username && !m.disabled && m.user_type == "creatorUT")
        .filter(|m| m.allocation.is_some_and(|a| a >= 100.0))
        .take(2)
        .collect();
    for m in &spenders {
        world
            .sim
            .consume(UsageRecord {
                day: midnight_ms(today),
                username: Some(m.username.clone()),
                stype: "geocode".into(),
                etype: "geocodecnt".into(),
                credits: 0.95 * m.allocation.unwrap(),
                num: 1,
            })
            .unwrap();
    }
    let (critical, warning) = alert_rule(&world.sim.members());
    assert!(
        spenders.len() == 2 && spenders.iter().all(|m| critical.contains(&m.username)),
        "{critical:?}"
    );
    let function = world.start("scan-credits", &[("NOTIFY_MEMBERS", "critical")]);
    let event = json!({"scheduled_time": format!("{today}T06:00:00Z")});

    let out = world.invoke("scan-credits", &event).await;
    assert!(out.function_error.is_none(), "{:?}\n{}", out.payload, function.output());
    let mails = world.sim.notifications();
    assert_eq!(mails[0].users, world.sim.org().contacts);
    assert!(
        mails[0].subject.contains(" running out within 7 days ("),
        "{}",
        mails[0].subject
    );
    assert!(
        mails[0].message.contains(&format!("({}):", fast.username))
            && mails[0].message.contains(" credits a day · running out, new"),
        "{}",
        mails[0].message
    );
    let told: BTreeSet<String> = mails[1..].iter().map(|n| n.users.join(",")).collect();
    assert_eq!(told, critical, "exactly the critical members, one call each");
    assert_eq!(mails.len() - 1, critical.len());
    assert!(!told.contains(&fast.username) && warning.iter().all(|u| !told.contains(u)));
    for n in &mails[1..] {
        assert_eq!(n.subject, "ArcGIS Online: your credits are almost used up");
        assert!(n.message.starts_with("Hello "), "{}", n.message);
        assert!(
            n.message
                .contains("To get more, ask your organization's administrators ("),
            "{}",
            n.message
        );
    }
    assert_eq!(out.payload["member_notices"]["notify"], "critical");
    assert_eq!(out.payload["member_notices"]["due"], critical.len());

    let again = world.invoke("scan-credits", &event).await;
    assert!(again.payload["duplicate_of"].is_object(), "{}", again.payload);
    assert_eq!(
        world.sim.notifications().len(),
        mails.len(),
        "a redelivered run sends nothing"
    );
}
