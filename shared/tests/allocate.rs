//! `POST /allocations` end to end against portal-sim: validation (every bad request a 4xx
//! naming its problem, and nothing written to ArcGIS), the three request kinds and the
//! critical policy checked against the simulator's member state, dry runs, idempotency
//! (replay, conflicts, in-progress, across allocator instances on DynamoDB), and each
//! per-member status including `not_assigned` and `failed`.

use std::time::Duration;

use chrono::Utc;
use credit_core::allocate::{Allocator, Incoming, Reply, body};
use credit_core::arcgis::{Client, Credentials, Secret};
use credit_core::config::Config;
use credit_core::ledger::{IdempotencyClaim, Ledger};
use portal_sim::generate::{AUDITOR_PASSWORD, AUDITOR_USERNAME};
use portal_sim::{EnvelopeFault, Faults, GenParams, SimHandle, Trigger, generate, start};
use serde_json::{Value, json};

use crate::support::{admin_client, as_of, capture_logs, client, config_with, sim};

const CALLER: &str = "arn:aws:iam::111122223333:user/alice";

fn allocator(vars: &[(&str, &str)]) -> Allocator {
    let config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| (name == "ARCGIS_SECRET_ID").then(|| "arcgis/test".to_owned()))
    })
    .expect("valid test config");
    Allocator::from_config(&config).expect("valid settings")
}

/// One request, with sensible defaults for everything but the body.
#[derive(Clone)]
struct Call {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    key: Option<String>,
    caller: Option<&'static str>,
    request_id: &'static str,
    body: Vec<u8>,
}

fn post(body: impl Into<String>) -> Call {
    Call {
        method: "POST",
        path: "/allocations",
        content_type: Some("application/json"),
        key: None,
        caller: Some(CALLER),
        request_id: "req-1",
        body: body.into().into_bytes(),
    }
}

impl Call {
    fn key(mut self, key: &str) -> Call {
        self.key = Some(key.to_owned());
        self
    }
}

async fn send_as(allocator: &Allocator, ledger: &Ledger, call: &Call, client: Client) -> Reply {
    let incoming = Incoming {
        method: call.method,
        path: call.path,
        content_type: call.content_type,
        idempotency_key: call.key.as_deref(),
        caller: call.caller,
        request_id: call.request_id,
        body: &call.body,
        now: Utc::now(),
    };
    allocator
        .handle(ledger, &incoming, async { Ok::<_, String>(client) })
        .await
}

async fn send(allocator: &Allocator, ledger: &Ledger, sim: &SimHandle, call: &Call) -> Reply {
    send_as(allocator, ledger, call, admin_client(sim)).await
}

fn allocation(sim: &SimHandle, username: &str) -> Option<f64> {
    sim.member(username).and_then(|m| m.allocation)
}

fn member<'a>(reply: &'a Reply, username: &str) -> &'a Value {
    reply.body["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["username"] == username))
        .unwrap_or_else(|| panic!("{username} not in {}", reply.body))
}

fn assign_calls(sim: &SimHandle) -> usize {
    sim.writes()
        .iter()
        .filter(|w| w.endpoint == "portals/self/assignUserCredits")
        .count()
}

// ---------------------------------------------------------------------------------------
// Validation: every bad request is a 4xx naming its problem, with nothing written.
// ---------------------------------------------------------------------------------------

/// Bad requests refused before ArcGIS is contacted at all.
fn static_cases() -> Vec<(&'static str, Call, u16, &'static str)> {
    let ok_entry = r#"{"username":"jdoe","set":500}"#;
    let with = |entries: &str| post(format!(r#"{{"allocations":[{entries}]}}"#));
    let long_name = "u".repeat(129);
    let long_reason = "r".repeat(501);
    let many = (0..4)
        .map(|i| format!(r#"{{"username":"user{i}","add":1}}"#))
        .collect::<Vec<_>>()
        .join(",");
    let mut cases = vec![
        ("malformed JSON", post(r#"{"allocations": ["#), 400, "not valid JSON"),
        ("empty body", post(""), 400, "not valid JSON"),
        ("not an object", post("[1, 2]"), 400, "must be a JSON object"),
        ("a JSON string", post(r#""jdoe""#), 400, "must be a JSON object"),
        (
            "unknown top-level field",
            post(format!(r#"{{"allocations":[{ok_entry}],"dryrun":true}}"#)),
            400,
            r#""field":"dryrun""#,
        ),
        (
            "unknown entry field",
            with(r#"{"username":"jdoe","set":5,"credits":5}"#),
            400,
            "allocations[0].credits",
        ),
        (
            "neither allocations nor policy",
            post(r#"{"reason":"x"}"#),
            400,
            "nothing to do",
        ),
        (
            "both allocations and policy",
            post(format!(
                r#"{{"allocations":[{ok_entry}],"policy":"critical","top_up_to":5}}"#
            )),
            400,
            "not both",
        ),
        (
            "empty allocations",
            post(r#"{"allocations":[]}"#),
            400,
            "is empty; name at least one member",
        ),
        (
            "allocations not a list",
            post(r#"{"allocations":{"jdoe":500}}"#),
            400,
            "must be a list of entries",
        ),
        ("entry not an object", with(r#""jdoe""#), 400, "must be an object like"),
        (
            "no action",
            with(r#"{"username":"jdoe"}"#),
            400,
            "needs one of set, add or top_up_to",
        ),
        (
            "null action",
            with(r#"{"username":"jdoe","set":null}"#),
            400,
            "needs one of set, add or top_up_to",
        ),
        (
            "two actions",
            with(r#"{"username":"jdoe","set":5,"add":5}"#),
            400,
            "has set and add: give exactly one",
        ),
        ("missing username", with(r#"{"set":5}"#), 400, "allocations[0].username"),
        (
            "empty username",
            with(r#"{"username":"","set":5}"#),
            400,
            "is empty: name the member",
        ),
        (
            "username with a space",
            with(r#"{"username":"j doe","set":5}"#),
            400,
            "contains whitespace",
        ),
        (
            "username with a control character",
            with(r#"{"username":"jdoe\u0007","set":5}"#),
            400,
            "contains control characters",
        ),
        (
            "username too long",
            post(format!(r#"{{"allocations":[{{"username":"{long_name}","set":5}}]}}"#)),
            400,
            "129 characters, above 128",
        ),
        (
            "username with a slash",
            with(r#"{"username":"jdoe/../x","set":5}"#),
            400,
            "'/'",
        ),
        (
            "username not a string",
            with(r#"{"username":42,"set":5}"#),
            400,
            "must be a string",
        ),
        (
            "negative credits",
            with(r#"{"username":"jdoe","set":-5}"#),
            400,
            "is negative",
        ),
        (
            "credits as a string",
            with(r#"{"username":"jdoe","add":"500"}"#),
            400,
            "must be a number",
        ),
        (
            "credits as a bool",
            with(r#"{"username":"jdoe","add":true}"#),
            400,
            "must be a number",
        ),
        (
            "huge credits",
            with(r#"{"username":"jdoe","set":1e10}"#),
            400,
            "above the largest accepted amount",
        ),
        (
            "out-of-range number",
            with(r#"{"username":"jdoe","set":1e400}"#),
            400,
            "not valid JSON",
        ),
        (
            "duplicate usernames",
            with(r#"{"username":"jdoe","set":5},{"username":"jdoe","add":1}"#),
            400,
            "listed twice",
        ),
        (
            "too many members",
            post(format!(r#"{{"allocations":[{many}]}}"#)),
            400,
            "above MAX_MEMBERS_PER_REQUEST (3)",
        ),
        (
            "unknown policy",
            post(r#"{"policy":"everyone","top_up_to":200}"#),
            400,
            "unknown policy",
        ),
        (
            "policy without top_up_to",
            post(r#"{"policy":"critical"}"#),
            400,
            "needs top_up_to",
        ),
        (
            "policy with negative top_up_to",
            post(r#"{"policy":"critical","top_up_to":-1}"#),
            400,
            "is negative",
        ),
        (
            "policy not a string",
            post(r#"{"policy":1,"top_up_to":5}"#),
            400,
            "must be a string",
        ),
        (
            "top-level top_up_to with allocations",
            post(format!(r#"{{"allocations":[{ok_entry}],"top_up_to":5}}"#)),
            400,
            "only goes with a policy",
        ),
        (
            "reason too long",
            post(format!(r#"{{"allocations":[{ok_entry}],"reason":"{long_reason}"}}"#)),
            400,
            "501 characters, above 500",
        ),
        (
            "blank reason",
            post(format!(r#"{{"allocations":[{ok_entry}],"reason":"  "}}"#)),
            400,
            "say why, or omit it",
        ),
        (
            "reason with a newline",
            post(format!(r#"{{"allocations":[{ok_entry}],"reason":"a\nb"}}"#)),
            400,
            "control characters",
        ),
        (
            "reason not a string",
            post(format!(r#"{{"allocations":[{ok_entry}],"reason":5}}"#)),
            400,
            "must be a string",
        ),
        (
            "dry_run not a boolean",
            post(format!(r#"{{"allocations":[{ok_entry}],"dry_run":"yes"}}"#)),
            400,
            "must be true or false",
        ),
        (
            "idempotency key too long",
            post(format!(r#"{{"allocations":[{ok_entry}]}}"#)).key(&"k".repeat(201)),
            400,
            "Idempotency-Key",
        ),
        (
            "idempotency key not ASCII",
            post(format!(r#"{{"allocations":[{ok_entry}]}}"#)).key("clé"),
            400,
            "printable ASCII",
        ),
        (
            "empty idempotency key",
            post(format!(r#"{{"allocations":[{ok_entry}]}}"#)).key(""),
            400,
            "the header is empty",
        ),
    ];
    let body = format!(r#"{{"allocations":[{ok_entry}]}}"#);
    cases.push((
        "wrong method",
        Call {
            method: "GET",
            ..post(body.clone())
        },
        405,
        "method GET is not allowed",
    ));
    cases.push((
        "wrong path",
        Call {
            path: "/allocation",
            ..post(body.clone())
        },
        404,
        "no such resource",
    ));
    cases.push((
        "text content type",
        Call {
            content_type: Some("text/plain"),
            ..post(body.clone())
        },
        415,
        "must be application/json, got text/plain",
    ));
    cases.push((
        "no content type",
        Call {
            content_type: None,
            ..post(body.clone())
        },
        415,
        "got none",
    ));
    cases.push((
        "body too large",
        post(format!(
            r#"{{"allocations":[{ok_entry}],"reason":"{}"}}"#,
            "x".repeat(body::MAX_BODY_BYTES)
        )),
        413,
        "byte limit",
    ));
    cases.push((
        "no caller identity",
        Call {
            caller: None,
            ..post(body.clone())
        },
        401,
        "no authenticated caller",
    ));
    cases.push((
        "blank caller identity",
        Call {
            caller: Some("  "),
            ..post(body)
        },
        401,
        "no authenticated caller",
    ));
    cases
}

#[tokio::test]
async fn every_bad_request_is_refused_by_name_before_arcgis_is_contacted() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let allocator = allocator(&[("MAX_MEMBERS_PER_REQUEST", "3")]);
    let cases = static_cases();
    assert!(cases.len() >= 45, "{}", cases.len());
    for (name, call, status, needle) in &cases {
        let reply = send(&allocator, &ledger, &sim, call).await;
        let text = reply.body.to_string();
        assert_eq!(reply.status, *status, "{name}: {text}");
        assert!(text.contains(needle), "{name}: expected {needle:?} in {text}");
        assert!(reply.body["error"].is_string(), "{name}: {text}");
        assert!(
            reply.body["problems"].as_array().is_some_and(|p| !p.is_empty()),
            "{name}: {text}"
        );
        assert_eq!(reply.body["request_id"], "req-1", "{name}");
        assert_eq!(sim.total_requests(), 0, "{name}: ArcGIS was contacted");
    }
    assert!(sim.writes().is_empty());
    // No idempotency key was consumed by a refused request.
    assert!(ledger.changes_on(Utc::now().date_naive()).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_problem_of_a_request_is_named_at_once() {
    let sim = sim(30).await;
    let reply = send(
        &allocator(&[]),
        &Ledger::memory(),
        &sim,
        &post(
            r#"{"allocations":[{"username":"a b","set":-1},{"username":"ok","add":1,"top_up_to":2},
                {"username":"ok","set":1e12},{"username":"x/y"}],"reason":""}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 400);
    let problems = reply.body["problems"].as_array().unwrap();
    let text = reply.body.to_string();
    for needle in [
        "contains whitespace",
        "is negative",
        "has add and top_up_to",
        "listed twice",
        "above the largest accepted amount",
        "'/'",
        "needs one of set, add or top_up_to",
        "say why, or omit it",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(problems.len() >= 8, "{text}");
    assert!(
        problems
            .iter()
            .any(|p| p["username"] == "a b" && p["field"] == "allocations[0].username")
    );
    assert_eq!(sim.total_requests(), 0);
}

#[tokio::test]
async fn guardrail_breaches_are_422_listing_every_breach_and_write_nothing() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let strict = allocator(&[("MAX_CREDITS_PER_MEMBER", "300"), ("MAX_CREDITS_PER_PLAN", "500")]);
    let reply = send(
        &strict,
        &ledger,
        &sim,
        &post(
            r#"{"allocations":[{"username":"jdoe","add":400},{"username":"jdoe2","add":250},
                {"username":"unlimited_analyst","set":100}]}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let guardrails: Vec<&str> = reply.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["guardrail"].as_str())
        .collect();
    assert_eq!(
        guardrails,
        ["max_per_member", "unlimited_change", "max_total"],
        "{}",
        reply.body
    );
    assert_eq!(reply.body["code"], "guardrail_breach");
    assert!(member_free(&reply));

    let reserve = allocator(&[("ORG_RESERVE_CREDITS", "1000000000")]);
    let reply = send(
        &reserve,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":1}]}"#),
    )
    .await;
    assert_eq!(reply.status, 422);
    assert!(reply.body.to_string().contains("org_reserve_floor"), "{}", reply.body);

    // Dry runs are checked against the same guardrails.
    let reply = send(
        &strict,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":400}],"dry_run":true}"#),
    )
    .await;
    assert_eq!(reply.status, 422);
    assert!(sim.writes().is_empty());
}

fn member_free(reply: &Reply) -> bool {
    reply.body.get("members").is_none()
}

#[tokio::test]
async fn an_account_without_manage_credits_is_403_naming_the_privileges() {
    let sim = sim(30).await;
    let auditor = client(config_with(
        &sim,
        Credentials::UserPassword {
            username: AUDITOR_USERNAME.to_owned(),
            password: Secret::new(AUDITOR_PASSWORD),
        },
    ));
    let reply = send_as(
        &allocator(&[]),
        &Ledger::memory(),
        &post(r#"{"allocations":[{"username":"jdoe","set":500}]}"#),
        auditor,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let text = reply.body.to_string();
    assert!(
        text.contains("portal:admin:manageCredits") && text.contains("auditor"),
        "{text}"
    );
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn budgeting_off_is_422_and_bad_credentials_are_502_flagged_for_the_edge() {
    let sim = start(generate(&GenParams {
        budgeting: false,
        ..GenParams::new(30, 42, as_of())
    }))
    .await
    .unwrap();
    let body = post(r#"{"allocations":[{"username":"jdoe","set":500}]}"#);
    let reply = send(&allocator(&[]), &Ledger::memory(), &sim, &body).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.body["code"], "budgeting_disabled");

    let wrong = client(config_with(
        &sim,
        Credentials::UserPassword {
            username: "steward_admin".into(),
            password: Secret::new("not-the-password"),
        },
    ));
    let reply = send_as(&allocator(&[]), &Ledger::memory(), &body, wrong).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.credentials_rejected);
    assert!(!reply.body.to_string().contains("not-the-password"));
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn a_connection_failure_is_500_and_releases_the_key() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let allocator = allocator(&[]);
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500}]}"#).key("k-connect");
    let incoming = Incoming {
        method: "POST",
        path: "/allocations",
        content_type: Some("application/json"),
        idempotency_key: Some("k-connect"),
        caller: Some(CALLER),
        request_id: "req-1",
        body: &call.body,
        now: Utc::now(),
    };
    let reply = allocator
        .handle(&ledger, &incoming, async {
            Err::<Client, _>("secret 'arcgis/test' does not exist")
        })
        .await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(reply.body.to_string().contains("does not exist"));
    // The key was released: the same key now goes through.
    let reply = send(&allocator, &ledger, &sim, &call).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(allocation(&sim, "jdoe"), Some(1500.0));
}

// ---------------------------------------------------------------------------------------
// Applying: the simulator's state is the proof.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn set_add_and_top_up_to_set_absolute_allocations_and_are_audited() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let (logs, _guard) = capture_logs();
    // jdoe 1000/600 available, jdoe2 500/20 available, overspent 200/−750 available.
    let reply = send(
        &allocator(&[]),
        &ledger,
        &sim,
        &post(
            r#"{"allocations":[{"username":"jdoe","set":1500},{"username":"jdoe2","add":100},
                {"username":"overspent","top_up_to":200}],"reason":"ticket CS-42"}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(allocation(&sim, "jdoe"), Some(1500.0));
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));
    // The notebook sent 200 here (leaving −750); the allocation must cover what was consumed.
    assert_eq!(allocation(&sim, "overspent"), Some(1150.0));
    assert!((sim.member("overspent").unwrap().available_credits - 200.0).abs() < 1e-6);

    let jdoe = member(&reply, "jdoe");
    assert_eq!(jdoe["status"], "assigned");
    assert_eq!(jdoe["requested"], json!({"set": 1500.0}));
    assert_eq!(
        jdoe["before"],
        json!({"kind": "limited", "assigned": 1000.0, "available": 600.0})
    );
    assert_eq!(jdoe["after"], json!({"allocation": 1500.0, "available": 1100.0}));
    assert_eq!(member(&reply, "overspent")["after"]["available"], 200.0);
    assert_eq!(reply.body["summary"]["assigned"], 3);
    assert_eq!(reply.body["summary"]["total_increase"], 500.0 + 100.0 + 950.0);
    let org_before = reply.body["org"]["available_before"].as_f64().unwrap();
    assert_eq!(reply.body["org"]["available_after"], org_before - 1550.0);
    assert_eq!(assign_calls(&sim), 1);

    let audit = ledger.changes_on(Utc::now().date_naive()).await.unwrap();
    assert_eq!(audit.len(), 3);
    let a = audit.iter().find(|e| e.username == "jdoe").unwrap();
    assert_eq!(
        (
            a.caller.as_str(),
            a.request_id.as_str(),
            a.reason.as_deref(),
            a.source.as_str()
        ),
        (CALLER, "req-1", Some("ticket CS-42"), "allocate")
    );
    assert_eq!(a.after, json!({"allocation": 1500.0, "available": 1100.0}));
    assert_eq!(a.before["assigned"], 1000.0);

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("credit allocation changed") && l.contains("username=jdoe2"))
        .unwrap_or_else(|| panic!("no audit log line: {text}"));
    assert!(
        line.contains(CALLER) && line.contains("req-1") && line.contains("ticket CS-42"),
        "{line}"
    );
    assert!(!text.contains("sim-admin-password"));
}

#[tokio::test]
async fn members_that_cannot_or_need_not_change_are_reported_and_never_sent() {
    let sim = sim(30).await;
    let reply = send(
        &allocator(&[]),
        &Ledger::memory(),
        &sim,
        &post(
            r#"{"allocations":[{"username":"ghost_user","set":5},{"username":"jdoe3","set":5},
                {"username":"JDoe","set":5},{"username":"disabled_member","add":5},
                {"username":"viewer_member","add":5},{"username":"jdoe","top_up_to":100},
                {"username":"jdoe2","set":500},{"username":"auditor","add":10}]}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for (name, status) in [
        ("ghost_user", "unknown_user"),
        ("jdoe3", "unknown_user"), // a user of another org
        ("JDoe", "unknown_user"),  // usernames are case-sensitive
        ("disabled_member", "skipped"),
        ("viewer_member", "skipped"),
        ("jdoe", "skipped"),
        ("jdoe2", "skipped"),
        ("auditor", "assigned"),
    ] {
        assert_eq!(member(&reply, name)["status"], status, "{name}: {}", reply.body);
    }
    assert_eq!(member(&reply, "disabled_member")["reason"], "disabled");
    assert!(
        member(&reply, "jdoe")["reason"]
            .as_str()
            .unwrap()
            .starts_with("no_change")
    );
    assert!(member(&reply, "ghost_user")["before"].is_null());
    // Only the one real change was sent.
    let calls = sim.allocation_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].entries, vec![("auditor".to_owned(), Some(210.0))]);
}

#[tokio::test]
async fn the_critical_policy_tops_up_exactly_the_critical_members() {
    let sim = sim(120).await;
    let before = sim.members();
    let critical: Vec<String> = before
        .iter()
        .filter(|m| {
            matches!(m.allocation, Some(a) if a > 0.0)
                && !m.disabled
                && m.user_type != "viewerUT"
                && m.available_credits * 100.0 < 10.0 * m.assigned_credits
        })
        .map(|m| m.username.clone())
        .collect();
    assert!(critical.len() >= 2, "the generated org has critical members");
    let loose = allocator(&[
        ("MAX_CREDITS_PER_MEMBER", "100000"),
        ("MAX_CREDITS_PER_PLAN", "10000000"),
    ]);
    let ledger = Ledger::memory();

    let dry = send(
        &loose,
        &ledger,
        &sim,
        &post(r#"{"policy":"critical","top_up_to":200,"dry_run":true}"#),
    )
    .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["summary"]["would_assign"], critical.len());
    assert!(sim.writes().is_empty());

    let reply = send(
        &loose,
        &ledger,
        &sim,
        &post(r#"{"policy":"critical","top_up_to":200,"reason":"monthly"}"#),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["policy"], json!({"name": "critical", "top_up_to": 200.0}));
    let named: Vec<&str> = reply.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = critical.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(named, expected);
    for m in sim.members() {
        let old = before.iter().find(|b| b.username == m.username).unwrap();
        if critical.contains(&m.username) {
            assert!((m.available_credits - 200.0).abs() < 1e-6, "{}: {m:?}", m.username);
        } else {
            assert_eq!(m.allocation, old.allocation, "{} must not change", m.username);
        }
    }
    assert_eq!(
        ledger.changes_on(Utc::now().date_naive()).await.unwrap().len(),
        critical.len()
    );
}

#[tokio::test]
async fn a_dry_run_plans_from_live_state_and_writes_nothing() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let call =
        post(r#"{"allocations":[{"username":"jdoe","add":250},{"username":"ghost_user","set":1}],"dry_run":true}"#)
            .key("dry-key");
    let reply = send(&allocator(&[]), &ledger, &sim, &call).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["dry_run"], true);
    let jdoe = member(&reply, "jdoe");
    assert_eq!(jdoe["status"], "would_assign");
    assert_eq!(jdoe["after"], json!({"allocation": 1250.0, "available": 850.0}));
    assert_eq!(member(&reply, "ghost_user")["status"], "unknown_user");
    let org_before = reply.body["org"]["available_before"].as_f64().unwrap();
    assert_eq!(reply.body["org"]["available_after"], org_before - 250.0);
    assert!(sim.writes().is_empty());
    assert_eq!(allocation(&sim, "jdoe"), Some(1000.0));
    assert!(ledger.changes_on(Utc::now().date_naive()).await.unwrap().is_empty());
    // The dry run did not consume its key: the real request may use it.
    assert_eq!(
        ledger.begin_idempotent("dry-key", "any", Utc::now()).await.unwrap(),
        IdempotencyClaim::Fresh
    );
}

#[tokio::test]
async fn more_than_fifty_members_are_read_from_the_listing() {
    let sim = sim(200).await;
    let names: Vec<String> = sim
        .members()
        .into_iter()
        .filter(|m| m.allocation.is_some() && !m.disabled && m.user_type != "viewerUT")
        .map(|m| m.username)
        .take(60)
        .collect();
    assert_eq!(names.len(), 60);
    let entries: Vec<String> = names
        .iter()
        .map(|n| format!(r#"{{"username":"{n}","add":1}}"#))
        .collect();
    let before: Vec<f64> = names.iter().map(|n| allocation(&sim, n).unwrap()).collect();
    let reply = send(
        &allocator(&[]),
        &Ledger::memory(),
        &sim,
        &post(format!(r#"{{"allocations":[{}]}}"#, entries.join(","))),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["summary"]["assigned"], 60);
    assert_eq!(sim.request_count("community/users/{user}"), 0);
    assert!(sim.request_count("portals/self/users") >= 2);
    for (name, old) in names.iter().zip(before) {
        assert_eq!(allocation(&sim, name), Some(old + 1.0), "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Idempotency.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_key_and_body_replay_the_first_response_without_writing_again() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let allocator = allocator(&[]);
    let call = post(r#"{"allocations":[{"username":"jdoe2","add":100}]}"#).key("key-add");
    let first = send(&allocator, &ledger, &sim, &call).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));

    let again = send(
        &allocator,
        &ledger,
        &sim,
        &Call {
            request_id: "req-2",
            ..call.clone()
        },
    )
    .await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert!(again.headers.contains(&("idempotent-replayed", "true".to_owned())));
    // An add applied twice would be 700.
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));
    assert_eq!(assign_calls(&sim), 1);

    // Same key, different body: refused, nothing written.
    let other = send(
        &allocator,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe2","add":200}]}"#).key("key-add"),
    )
    .await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.body["code"], "idempotency_key_reused");
    assert_eq!(assign_calls(&sim), 1);
    assert_eq!(ledger.changes_on(Utc::now().date_naive()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_key_in_progress_is_409_retry_later() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500}]}"#).key("busy");
    let hash = body::body_hash(&call.body);
    assert_eq!(
        ledger.begin_idempotent("busy", &hash, Utc::now()).await.unwrap(),
        IdempotencyClaim::Fresh
    );
    let reply = send(&allocator(&[]), &ledger, &sim, &call).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body["error"].as_str().unwrap().contains("retry later"));
    assert!(reply.headers.iter().any(|(h, _)| *h == "retry-after"));
    assert_eq!(sim.total_requests(), 0);
}

#[tokio::test]
async fn a_refused_request_releases_its_key_for_the_corrected_one() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let allocator = allocator(&[("MAX_CREDITS_PER_MEMBER", "300")]);
    let too_much = send(
        &allocator,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":400}]}"#).key("fix-me"),
    )
    .await;
    assert_eq!(too_much.status, 422);
    let fixed = send(
        &allocator,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":300}]}"#).key("fix-me"),
    )
    .await;
    assert_eq!(fixed.status, 200, "{}", fixed.body);
    assert_eq!(allocation(&sim, "jdoe"), Some(1300.0));
}

#[tokio::test]
async fn replay_survives_a_cold_start_with_the_dynamodb_ledger() {
    let sim = sim(30).await;
    let call = post(r#"{"allocations":[{"username":"jdoe","add":50}],"reason":"cold start"}"#).key("cold-key");
    let first = {
        // One "container": its own allocator and ledger client.
        let ledger = crate::ledger::dynamo_ledger("allocate-cold").await;
        let reply = send(&allocator(&[]), &ledger, &sim, &call).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let audit = ledger.changes_on(Utc::now().date_naive()).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].reason.as_deref(), Some("cold start"));
        (reply, ledger)
    };
    let (first, first_ledger) = first;
    let Ledger::Dynamo(d) = &first_ledger else {
        panic!("a DynamoDB ledger")
    };
    // Another "container": new allocator, new client, same table.
    let second_ledger = Ledger::dynamo(crate::ledger::dynamodb(), d.table());
    let replay = send(&allocator(&[]), &second_ledger, &sim, &call).await;
    assert_eq!((replay.status, &replay.body), (200, &first.body));
    assert_eq!(allocation(&sim, "jdoe"), Some(1050.0));
    assert_eq!(assign_calls(&sim), 1);
}

// ---------------------------------------------------------------------------------------
// Partial failures: never hidden.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_batch_is_502_per_member_and_replays_instead_of_retrying_blind() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let allocator = allocator(&[]);
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: None,
            code: 500,
            message: "An error occurred while assigning credits.".into(),
            when: Trigger {
                endpoint: Some("portals/self/assignUserCredits".into()),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let call =
        post(r#"{"allocations":[{"username":"jdoe","set":1500},{"username":"ghost_user","set":1}]}"#).key("fails");
    let reply = send(&allocator, &ledger, &sim, &call).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let jdoe = member(&reply, "jdoe");
    assert_eq!(jdoe["status"], "failed");
    assert!(jdoe["error"].as_str().unwrap().contains("assigning credits"), "{jdoe}");
    assert_eq!(jdoe["planned"]["allocation"], 1500.0);
    assert!(jdoe["after"].is_null());
    assert_eq!(member(&reply, "ghost_user")["status"], "unknown_user");
    assert_eq!(allocation(&sim, "jdoe"), Some(1000.0));
    assert!(ledger.changes_on(Utc::now().date_naive()).await.unwrap().is_empty());

    sim.clear_faults();
    let attempts = sim.request_count("portals/self/assignUserCredits");
    let again = send(&allocator, &ledger, &sim, &call).await;
    assert_eq!((again.status, &again.body), (502, &reply.body));
    assert_eq!(sim.request_count("portals/self/assignUserCredits"), attempts);
}

#[tokio::test]
async fn a_member_gone_between_lookup_and_write_is_not_assigned_and_the_reply_is_207() {
    let sim = sim(30).await;
    let allocator = allocator(&[]);
    // Slow every request down, then remove jdoe2 from the org once its lookup has been
    // answered: the write that follows names a member ArcGIS no longer has.
    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500},{"username":"jdoe2","set":900}]}"#);
    let task = {
        let client = admin_client(&sim);
        let allocator = allocator.clone();
        let ledger = Ledger::memory();
        tokio::spawn(async move {
            let reply = send_as(&allocator, &ledger, &call, client).await;
            (reply, ledger)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sim
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/community/users/jdoe2"))
    {
        assert!(std::time::Instant::now() < deadline, "jdoe2 was never looked up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.request_count("portals/self/assignUserCredits"), 0);
    {
        let mut world = sim.sim().world();
        world.org.members.retain(|m| m.username != "jdoe2");
        world.reindex();
    }
    let (reply, task_ledger) = task.await.unwrap();
    assert_eq!(reply.status, 207, "{}", reply.body);
    assert_eq!(member(&reply, "jdoe")["status"], "assigned");
    let gone = member(&reply, "jdoe2");
    assert_eq!(gone["status"], "not_assigned");
    assert!(gone["reason"].as_str().unwrap().contains("notAssignedUsers"));
    assert!(gone["after"].is_null());
    assert_eq!(reply.body["summary"]["not_assigned"], 1);
    assert_eq!(allocation(&sim, "jdoe"), Some(1500.0));
    // Only the applied change is audited.
    let audit = task_ledger.changes_on(Utc::now().date_naive()).await.unwrap();
    assert_eq!(audit.iter().map(|e| e.username.as_str()).collect::<Vec<_>>(), ["jdoe"]);
}
