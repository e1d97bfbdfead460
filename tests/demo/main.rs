//! `make demo`: the watchdog's day, locally, with the real pieces.
//!
//! Starts a simulated ArcGIS Online org (portal-sim), moto (Secrets Manager + DynamoDB), the
//! Lambda Runtime API emulator and the real scan-credits and allocate binaries; stores the
//! secret; then: scan → allocate the notebook's step 6 as a dry run → apply it → scan the
//! next day (no repeated alerts). Prints what an administrator would look at, and stops
//! everything it started when it ends.
//!
//! `MEMBERS` and `SEED` choose the org (defaults 2000 and 7).

#[path = "../e2e/support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use chrono::{Duration, Utc};
use portal_sim::{GenParams, generate};
use serde_json::{Value, json};
use support::{World, fixture};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn num(v: &Value) -> String {
    v.as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into())
}

fn heading(text: &str) {
    println!("\n\x1b[1m{text}\x1b[0m");
}

fn flagged_table(list: &Value, limit: usize) {
    println!(
        "  {:<26}{:>10}{:>11}{:>11}{:>9}{:>12}",
        "member", "assigned", "consumed", "available", "% left", "days left"
    );
    for m in list.as_array().into_iter().flatten().take(limit) {
        println!(
            "  {:<26}{:>10}{:>11}{:>11}{:>9}{:>12}",
            m["username"].as_str().unwrap_or("?"),
            num(&m["assigned"]),
            num(&m["consumed"]),
            num(&m["available"]),
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

fn scan_report(s: &Value) {
    println!("  org credits available  {}", num(&s["org_available_credits"]));
    println!("  budgeting              {}", s["budgeting"]);
    println!("  members scanned        {}", s["members_scanned"]);
    println!(
        "  critical / warning     {} / {}   (newly reported {}, already reported {})",
        s["critical"].as_array().map_or(0, Vec::len),
        s["warning"].as_array().map_or(0, Vec::len),
        s["newly_reported"],
        s["already_reported"]
    );
    println!("  email                  {}", s["notification"]);
    println!(
        "  ArcGIS requests        {}   duration {} ms",
        s["arcgis_requests"], s["duration_ms"]
    );
}

/// The IAM-authorized API Gateway v2 fixture with this body and key.
fn allocation_request(body: &Value, key: &str) -> Value {
    let mut event = fixture("apigw-v2-allocations-iam.json");
    let text = body.to_string();
    event["headers"]["content-length"] = json!(text.len().to_string());
    event["headers"]["idempotency-key"] = json!(key);
    event["body"] = json!(text);
    event
}

fn http_body(out: &testkit::lambda::Invocation) -> (u64, Value) {
    let status = out.payload["statusCode"].as_u64().unwrap_or(0);
    let body = out.payload["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
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
    let guardrails = [("MAX_CREDITS_PER_MEMBER", "2000"), ("MAX_CREDITS_PER_PLAN", "200000")];
    let scan_fn = world.start("scan-credits", &guardrails);
    let alloc_fn = world.start("allocate", &guardrails);

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
    }

    heading("2. allocate: top every critical member up to 200 available — dry run");
    let policy = json!({"policy": "critical", "top_up_to": 200, "dry_run": true, "reason": "demo: notebook step 6"});
    let (status, plan) = http_body(
        &world
            .invoke("allocate", &allocation_request(&policy, "demo-dry-run"))
            .await,
    );
    println!("  HTTP {status}  {}", plan["summary"]);
    println!(
        "  org credits before {}  after (worst case) {}",
        num(&plan["org"]["available_before"]),
        num(&plan["org"]["available_after"])
    );
    println!(
        "  assignUserCredits calls so far: {} (a dry run writes nothing)",
        world.sim.allocation_calls().len()
    );

    heading("3. allocate: the same, applied (Idempotency-Key demo-apply), then replayed");
    let apply = json!({"policy": "critical", "top_up_to": 200, "dry_run": false, "reason": "demo: notebook step 6"});
    let (status, applied) = http_body(
        &world
            .invoke("allocate", &allocation_request(&apply, "demo-apply"))
            .await,
    );
    println!("  HTTP {status}  {}", applied["summary"]);
    let (replay_status, _) = http_body(
        &world
            .invoke("allocate", &allocation_request(&apply, "demo-apply"))
            .await,
    );
    println!(
        "  replay: HTTP {replay_status}; assignUserCredits calls in all: {} (batches of ≤ 100)",
        world.sim.allocation_calls().len()
    );
    println!(
        "  audit entries in the ledger: {}",
        world.ledger_where("AUDIT").await.len()
    );

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
        dup["run_key"], dup["status"], dup["claimed_at"]
    );
    println!("  emails sent in all: {}", world.sim.notifications().len());

    heading("Requests served by the simulated ArcGIS Online");
    for (endpoint, n) in world.sim.counts() {
        println!("  {endpoint:<40}{n:>6}");
    }
    let _ = alloc_fn.output();
    println!("\nDone; stopping everything.");
}
