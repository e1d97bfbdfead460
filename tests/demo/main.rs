//! `make demo`: the watchdog's day, locally, with the real pieces.
//!
//! Starts a simulated ArcGIS Online org (portal-sim), moto (Secrets Manager + DynamoDB), the
//! Lambda Runtime API emulator and the real scan-credits and allocate binaries; stores the
//! secret; then: scan → allocate the critical policy as a dry run → apply it with an
//! Idempotency-Key and replay it → scan the next day (no repeated alerts) → deliver that run
//! again (nothing sent). Prints what an administrator would look at, and stops everything it
//! started when it ends. Before the first scan it shows the same scan as a French deployment
//! would mail it (a dry run with `"language": "fr"`); after the scans, monthly-report archives
//! last month's report and mails its link, and the rendered HTML is copied to
//! `target/demo/`. It opens with the administrators' command line (`credit-steward check`
//! and `credit-steward members`). The first scan also shows what people receive besides the
//! admin email: the members' own notices (`NOTIFY_MEMBERS=critical`) and the alert on a Slack
//! webhook and a signed generic webhook, both a loopback receiver standing in for the real ones.
//!
//! `MEMBERS` and `SEED` choose the org (defaults 2000 and 7).

#[path = "../e2e/support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use chrono::{Datelike, Duration, Utc};
use portal_sim::{GenParams, generate};
use serde_json::{Value, json};
use shared::credits::amount::Credits;
use support::{World, attr};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// An amount as people read it (`43,945.36`); amounts in the JSON are exact decimals.
fn credits(v: &Value) -> String {
    Credits::from_json(v)
        .map(|c| c.grouped(2))
        .unwrap_or_else(|| "—".into())
}

/// A count, or `—` when absent.
fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "—".into(), |n| n.to_string())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("—")
}

/// The demo's webhook key (a real one lives in the secret only).
const DEMO_HMAC_KEY: &str = "demo-hmac-key-not-a-secret";

/// What the first scan sent besides the admin email: the members' own notices, and the alert
/// on Slack and on the signed webhook (its payload, shortened, and its signature checked).
fn channels_report(world: &World, receiver: &testkit::receiver::Receiver) {
    heading("1b. What members and the other channels received");
    let notices = world.sim.notifications();
    let notices = notices.get(1..).unwrap_or_default();
    println!(
        "  member notices (NOTIFY_MEMBERS=critical): {} members told, one call each",
        notices.len()
    );
    if let Some(n) = notices.first() {
        println!("  → to {:?}: \"{}\"", n.users, n.subject);
        for line in n.message.lines() {
            println!("    | {line}");
        }
    }
    if let Some(slack) = receiver.accepted("/slack").first() {
        let body = slack.json();
        let text = body["text"].as_str().unwrap_or_default();
        println!("  → Slack: {{\"text\": …}}, {} lines; it begins:", text.lines().count());
        for line in text.lines().take(4) {
            println!("    | {line}");
        }
    }
    if let Some(hook) = receiver.accepted("/webhook").first() {
        let timestamp = hook
            .headers
            .get("x-credit-steward-timestamp")
            .cloned()
            .unwrap_or_default();
        let signature = hook
            .headers
            .get("x-credit-steward-signature")
            .cloned()
            .unwrap_or_default();
        let expected = shared::channels::sign(DEMO_HMAC_KEY.as_bytes(), &timestamp, &hook.body);
        println!(
            "  → webhook: POST with X-Credit-Steward-Timestamp: {timestamp}, X-Credit-Steward-Signature: {}… ({})",
            signature.chars().take(23).collect::<String>(),
            if signature == expected {
                "verifies with the key"
            } else {
                "DOES NOT VERIFY"
            }
        );
        let mut body = hook.json();
        // The payload lists every crossing (up to 500); three show its shape.
        if let Some(all) = body["crossings"].as_array_mut() {
            all.truncate(3);
        }
        body["text"] = json!("(the email's text)");
        let shown = serde_json::to_string_pretty(&body).unwrap_or_default();
        for line in shown.lines() {
            println!("    | {line}");
        }
        println!(
            "    (crossings shortened to 3 of {} for the demo)",
            hook.json()["crossings_total"]
        );
    }
}

fn heading(text: &str) {
    println!("\n\x1b[1m{text}\x1b[0m");
}

fn flagged_table(list: &Value, limit: usize) {
    println!(
        "  {:<26}{:>11}{:>11}{:>11}{:>9}{:>11}",
        "member", "assigned", "consumed", "available", "% left", "days left"
    );
    for m in list.as_array().into_iter().flatten().take(limit) {
        println!(
            "  {:<26}{:>11}{:>11}{:>11}{:>9}{:>11}",
            text(&m["username"]),
            credits(&m["assigned"]),
            credits(&m["consumed"]),
            credits(&m["available"]),
            m["percent_left"]
                .as_f64()
                .map(|p| format!("{p:.1}"))
                .unwrap_or_else(|| "—".into()),
            m["days_until_empty"]
                .as_f64()
                .map(|d| format!("{d:.0}"))
                .unwrap_or_else(|| "—".into()),
        );
    }
    let n = list.as_array().map_or(0, Vec::len);
    if n > limit {
        println!("  … and {} more", n - limit);
    }
}

fn email(notification: &Value) -> String {
    match text(&notification["status"]) {
        "sent" => format!(
            "sent to {} contact(s): \"{}\"",
            notification["recipients"].as_array().map_or(0, Vec::len),
            text(&notification["subject"])
        ),
        other => other.replace('_', " "),
    }
}

fn top_up(t: &Value) -> String {
    match text(&t["status"]) {
        "applied" => format!(
            "applied: {} of {} changes{}",
            count(&t["applied"]),
            count(&t["requested"]),
            if t["incomplete"] == true { " (incomplete)" } else { "" }
        ),
        "planned" => format!("planned, not applied ({})", text(&t["not_applied"]).replace('_', " ")),
        "off" => "off (AUTO_TOP_UP_TO unset)".into(),
        other => other.replace('_', " "),
    }
}

fn scan_report(s: &Value) {
    println!("  org credits available  {}", credits(&s["org_available_credits"]));
    println!("  budgeting              {}", text(&s["budgeting"]));
    println!("  members scanned        {}", count(&s["members_scanned"]));
    println!(
        "  critical / warning     {} / {}   (newly reported {}, already reported {})",
        count(&s["counts"]["critical"]),
        count(&s["counts"]["warning"]),
        count(&s["newly_reported"]),
        count(&s["already_reported"])
    );
    println!("  email                  {}", email(&s["notification"]));
    println!("  automatic top-up       {}", top_up(&s["top_up"]));
    println!(
        "  ArcGIS requests        {}   duration {} ms",
        count(&s["arcgis_requests"]),
        count(&s["duration_ms"])
    );
}

/// The IAM-authorized API Gateway v2 fixture with this body and key, as its own API Gateway
/// request (each call gets a request id of its own).
fn allocation_request(body: &Value, key: Option<&str>, request_id: &str) -> Value {
    support::allocation_event(&body.to_string(), key, request_id)
}

/// The HTTP status and body; status 0 (and the error document) when the function failed.
fn http_body(out: &testkit::lambda::Invocation) -> (u16, Value) {
    support::http_reply(out).unwrap_or_else(|| (0, out.payload.clone()))
}

/// What allocate answered, as a few lines: the counts and the org's position, or the refusal.
fn allocation_report(status: u16, reply: &Value) {
    if !(200..300).contains(&status) {
        println!("  HTTP {status} {}: {}", text(&reply["code"]), text(&reply["error"]));
        for p in reply["problems"].as_array().into_iter().flatten() {
            let name = p["guardrail"].as_str().or(p["field"].as_str()).unwrap_or("");
            println!(
                "    - {name}{}{}",
                if name.is_empty() { "" } else { ": " },
                text(&p["problem"])
            );
        }
        return;
    }
    let s = &reply["summary"];
    let done = if reply["dry_run"] == true {
        format!("would assign {}", count(&s["would_assign"]))
    } else {
        format!(
            "assigned {}, not assigned {}, failed {}, conflict {}, pending {}",
            count(&s["assigned"]),
            count(&s["not_assigned"]),
            count(&s["failed"]),
            count(&s["conflict"]),
            count(&s["pending"])
        )
    };
    println!(
        "  HTTP {status}  {} members: {done}; skipped {} (already at 200 or more)",
        count(&s["members"]),
        count(&s["skipped"])
    );
    println!(
        "  credits allocated      +{}  (caller {})",
        credits(&s["total_increase"]),
        text(&reply["caller"])
    );
    let org = &reply["org"];
    println!(
        "  org credits            {} before, {} after at worst (every new credit spent)",
        credits(&org["available_before"]),
        credits(&org["available_after"])
    );
    println!(
        "  promised to members    {}   granted in the last 24 h {}   unpromised after {}",
        credits(&org["promised_to_members"]),
        credits(&org["granted_last_24h"]),
        credits(&org["unpromised_after"])
    );
}

fn members_table(reply: &Value, limit: usize) {
    println!(
        "  {:<26}{:>13}{:>13}{:>13}   status",
        "member", "allocation", "→", "available"
    );
    let changed: Vec<&Value> = reply["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["status"] != "skipped")
        .collect();
    for m in changed.iter().take(limit) {
        let after = if m["after"].is_null() {
            &m["planned"]
        } else {
            &m["after"]
        };
        println!(
            "  {:<26}{:>13}{:>13}{:>13}   {}",
            text(&m["username"]),
            credits(&m["before"]["assigned"]),
            credits(&after["allocation"]),
            credits(&after["available"]),
            text(&m["status"])
        );
    }
    if changed.len() > limit {
        println!("  … and {} more", changed.len() - limit);
    }
}

/// Runs the `credit-steward` CLI against the demo's world and prints what it says.
async fn cli(world: &World, args: &[&str]) {
    let binary = testkit::lambda::function_binaries().join("credit-steward");
    let out = tokio::process::Command::new(&binary)
        .args(["--secret-id", &world.secret_id])
        .args(args)
        .envs(testkit::env::aws_local(&testkit::moto::moto().endpoint))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} could not run: {e}", binary.display()));
    println!("  $ credit-steward {}", args.join(" "));
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("    {line}");
    }
}

#[tokio::main]
async fn main() {
    let members = env_or("MEMBERS", 2000) as usize;
    let seed = env_or("SEED", 7);
    let today = Utc::now();
    heading("Starting the local world");
    let world = World::new(generate(&GenParams::new(members, seed, today.date_naive()))).await;
    println!(
        "  ArcGIS Online (portal-sim)  {}  ({members} members, seed {seed})",
        world.sim.rest_url()
    );
    println!("  moto (Secrets Manager, DynamoDB)  {}", testkit::moto::moto().endpoint);
    println!("  Lambda Runtime API emulator  {}", world.emulator.url());
    println!("  secret {}  ledger table {}", world.secret_id, world.table);
    // The guardrails an administrator would set for a 2,000-member org: up to 2,000 credits
    // per member, 200,000 per request and per rolling day.
    let guardrails = [
        ("MAX_CREDITS_PER_MEMBER", "2000"),
        ("MAX_CREDITS_PER_PLAN", "200000"),
        ("MAX_CREDITS_PER_DAY", "200000"),
    ];
    println!(
        "  guardrails: {}",
        guardrails
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let bucket = support::Bucket::create().await;
    let with_bucket: Vec<(&str, &str)> = guardrails
        .iter()
        .copied()
        .chain([("REPORT_BUCKET", bucket.name.as_str())])
        .collect();
    println!("  reports bucket {}", bucket.name);
    // The other alert channels: a Slack webhook and a signed webhook, set in the secret as an
    // administrator would, received here by a loopback receiver.
    let receiver = testkit::receiver::Receiver::start();
    world
        .add_to_secret(json!({
            "slack_webhook_url": receiver.url("/slack"),
            "webhook_url": receiver.url("/webhook"),
            "webhook_hmac_key": DEMO_HMAC_KEY,
        }))
        .await;
    println!(
        "  alert channels: Slack and a signed webhook, received on {}",
        receiver.url("/")
    );
    let with_notices: Vec<(&str, &str)> = with_bucket
        .iter()
        .copied()
        .chain([("NOTIFY_MEMBERS", "critical")])
        .collect();
    let scan_fn = world.start("scan-credits", &with_notices);
    let alloc_fn = world.start("allocate", &guardrails);
    let report_fn = world.start("monthly-report", &with_bucket);

    heading("0. credit-steward check: is the set-up right? (the administrators' command line)");
    cli(&world, &["--table", &world.table, "--bucket", &bucket.name, "check"]).await;
    println!("  and the ten members closest to empty:");
    cli(&world, &["members", "--sort", "days-left", "--limit", "10"]).await;

    heading("0b. The alert a French deployment would send (LANGUAGE=fr; a dry run sends and records nothing)");
    let french = world
        .invoke(
            "scan-credits",
            &json!({"dry_run": true, "language": "fr", "scheduled_time": today.to_rfc3339()}),
        )
        .await;
    let notification = &french.payload["notification"];
    match notification["message"].as_str() {
        Some(message) => {
            println!("  subject: \"{}\"", text(&notification["subject"]));
            for line in message.lines() {
                println!("    | {line}");
            }
        }
        None => println!("  no email would go out: {notification}"),
    }

    heading("1. scan-credits (the daily schedule)");
    let first = world
        .invoke("scan-credits", &json!({"scheduled_time": today.to_rfc3339()}))
        .await;
    if let Some(e) = &first.function_error {
        eprintln!("scan-credits failed ({e}): {}\n{}", first.payload, scan_fn.output());
        std::process::exit(1);
    }
    scan_report(&first.payload);
    println!("  most urgent critical members:");
    flagged_table(&first.payload["critical"], 8);
    if let Some(mail) = world.sim.notifications().first() {
        println!(
            "  → email to {:?}: \"{}\" ({} lines)",
            mail.users,
            mail.subject,
            mail.message.lines().count()
        );
        for line in mail.message.lines() {
            println!("    | {line}");
        }
        // The link in the email opens the complete list without AWS credentials.
        if let Some(link) = mail
            .message
            .split_whitespace()
            .find(|w| w.starts_with("http") && w.contains("members.csv"))
        {
            match reqwest::get(link).await {
                Ok(r) => println!(
                    "  → the email's link to the complete list answers HTTP {} ({} lines of CSV)",
                    r.status(),
                    r.text().await.map(|t| t.lines().count()).unwrap_or(0)
                ),
                Err(e) => println!("  → the email's link could not be opened: {e}"),
            }
        }
    }

    channels_report(&world, &receiver);

    heading("2. allocate: top every critical member up to 200 available — dry run");
    let policy =
        json!({"policy": "critical", "top_up_to": 200, "dry_run": true, "reason": "demo: top up the critical members"});
    let (status, plan) = http_body(
        &world
            .invoke("allocate", &allocation_request(&policy, None, "demo-dry-run"))
            .await,
    );
    allocation_report(status, &plan);
    println!(
        "  assignUserCredits calls so far: {} (a dry run writes nothing and needs no Idempotency-Key)",
        world.sim.allocation_calls().len()
    );

    heading("3. allocate: the same, applied (Idempotency-Key demo-apply), then replayed");
    let apply = json!({"policy": "critical", "top_up_to": 200, "dry_run": false, "reason": "demo: top up the critical members"});
    let (status, refused) = http_body(
        &world
            .invoke("allocate", &allocation_request(&apply, None, "demo-no-key"))
            .await,
    );
    println!(
        "  without an Idempotency-Key: HTTP {status} ({}), nothing written",
        text(&refused["code"])
    );
    let (status, applied) = http_body(
        &world
            .invoke(
                "allocate",
                &allocation_request(&apply, Some("demo-apply"), "demo-apply-1"),
            )
            .await,
    );
    allocation_report(status, &applied);
    if (200..300).contains(&status) {
        members_table(&applied, 6);
    }
    let replay = world
        .invoke(
            "allocate",
            &allocation_request(&apply, Some("demo-apply"), "demo-apply-2"),
        )
        .await;
    let (replay_status, replayed) = http_body(&replay);
    println!(
        "  replay (same key, same body): HTTP {replay_status}, idempotent-replayed: {}; the first answer \
         (request {}), nothing sent again",
        replay.payload["headers"]["idempotent-replayed"]
            .as_str()
            .unwrap_or("no"),
        text(&replayed["request_id"]),
    );
    println!(
        "  assignUserCredits calls in all: {} (batches of ≤ 100)",
        world.sim.allocation_calls().len()
    );
    let audit = world.ledger_where("AUDIT#").await;
    let of_kind = |kind: &str| audit.iter().filter(|i| attr(i, "kind") == Some(kind)).count();
    println!(
        "  audit trail: {} intent(s) (one per batch, written before it is sent), {} change(s) (read back)",
        of_kind("intent"),
        of_kind("change")
    );
    if let Some(record) = audit
        .iter()
        .filter(|i| attr(i, "kind") == Some("change"))
        .filter_map(|i| attr(i, "record"))
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .next()
    {
        println!(
            "  e.g. {}: {} → {} planned, {} observed (matches plan: {}), by {} (principal {}, account {})",
            text(&record["username"]),
            credits(&record["before"]["assigned"]),
            credits(&record["planned"]),
            credits(&record["observed"]["assigned"]),
            record["matches_plan"],
            text(&record["caller"]["arn"]),
            text(&record["caller"]["principal_id"]),
            text(&record["caller"]["account"])
        );
    }

    heading("4. scan-credits the next day");
    let next = world
        .invoke(
            "scan-credits",
            &json!({"scheduled_time": (today + Duration::days(1)).to_rfc3339()}),
        )
        .await;
    if let Some(e) = &next.function_error {
        eprintln!("scan-credits failed ({e}): {}", next.payload);
        std::process::exit(1);
    }
    scan_report(&next.payload);
    println!(
        "  emails sent in all: {} (members whose level changed after the top-up are reported once at their new level; the rest are not repeated)",
        world.sim.notifications().len()
    );

    heading("5. the same scheduled run delivered again (a Lambda retry)");
    let again = world
        .invoke(
            "scan-credits",
            &json!({"scheduled_time": (today + Duration::days(1)).to_rfc3339()}),
        )
        .await;
    let dup = &again.payload["duplicate_of"];
    println!(
        "  recognised as run {} (first attempt {} at {}): nothing sent",
        text(&dup["run_key"]),
        text(&dup["status"]),
        text(&dup["claimed_at"])
    );
    println!("  emails sent in all: {}", world.sim.notifications().len());

    heading("6. monthly-report: last month's credits report");
    let month = (today.date_naive().with_day(1).unwrap_or(today.date_naive()) - Duration::days(1))
        .format("%Y-%m")
        .to_string();
    let report = world.invoke("monthly-report", &json!({"month": month})).await;
    if let Some(e) = &report.function_error {
        eprintln!(
            "monthly-report failed ({e}): {}\n{}",
            report.payload,
            report_fn.output()
        );
        std::process::exit(1);
    }
    println!(
        "  {month}: {} credits used, archived as {}",
        credits(&report.payload["total_credits"]),
        report.payload["objects"]
            .as_array()
            .map(|o| o.iter().map(|v| text(v).to_owned()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    if let Some(mail) = world.sim.notifications().last() {
        println!(
            "  → email \"{}\" ({} lines)",
            mail.subject,
            mail.message.lines().count()
        );
        for line in mail.message.lines() {
            println!("    | {line}");
        }
    }
    let key = format!("reports/{month}/credits.html");
    if let Some((html, _)) = bucket.object(&key).await {
        let dir = testkit::lambda::workspace_root().join("target/demo");
        let path = dir.join(format!("credits-{month}.html"));
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, html)) {
            Ok(()) => println!("  the rendered report: {} (open it in a browser)", path.display()),
            Err(e) => println!("  could not copy the report to {}: {e}", path.display()),
        }
    }

    heading("Requests served by the simulated ArcGIS Online");
    for (endpoint, n) in world.sim.counts() {
        println!("  {endpoint:<40}{n:>6}");
    }
    let _ = alloc_fn.output();
    println!("\nDone; stopping everything.");
}
