//! `POST /allocations` end to end against portal-sim: validation (every bad request a 4xx
//! naming its problem, and nothing written to ArcGIS), the three request kinds and the
//! critical policy checked against the simulator's member state, dry runs, idempotency
//! (replay, per-caller keys, conflicts, in-progress, resumption after a killed invocation,
//! across allocator instances on DynamoDB), the org-wide lock, the cumulative budget, and
//! each per-member status. Tests named after a defect reproduce it as it was reported.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use portal_sim::generate::{AUDITOR_PASSWORD, AUDITOR_USERNAME};
use portal_sim::{
    EnvelopeFault, Faults, GenParams, HoldPhase, HoldSpec, HttpErrorFault, SimHandle, Trigger, generate, start,
};
use serde_json::{Value, json};
use shared::allocate::{self, AllocateSettings, Incoming, JobQueue, Reply, body};
use shared::apply::Deadline;
use shared::arcgis::Client;
use shared::credits::amount::Credits;
use shared::ledger::{Caller, CallerKind, Claim, Ledger, Scope};

use crate::support::{
    ALICE_ARN, admin_client, alice, allocate_settings, as_of, audit_recent, bob, c, capture_logs, client_as, kill_at,
    sim,
};

const CALLER_ARN: &str = ALICE_ARN;

fn caller_named(principal: &str) -> Caller {
    Caller {
        principal_id: principal.into(),
        arn: None,
        ..alice()
    }
}

fn settings(vars: &[(&str, &str)]) -> AllocateSettings {
    allocate_settings(vars, &[])
}

/// A fresh Idempotency-Key.
fn fresh_key() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("key-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// One request, with sensible defaults for everything but the body (and a fresh key).
#[derive(Clone)]
struct Call {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    key: Option<String>,
    caller: Option<Caller>,
    request_id: &'static str,
    body: Vec<u8>,
    /// How long the invocation may take.
    budget: Duration,
    /// `Prefer: respond-async`.
    respond_async: bool,
}

fn post(body: impl Into<String>) -> Call {
    Call {
        method: "POST",
        path: "/allocations",
        content_type: Some("application/json"),
        key: Some(fresh_key()),
        caller: Some(alice()),
        request_id: "req-1",
        body: body.into().into_bytes(),
        budget: Duration::from_secs(30),
        respond_async: false,
    }
}

impl Call {
    fn key(mut self, key: &str) -> Call {
        self.key = Some(key.to_owned());
        self
    }

    fn no_key(mut self) -> Call {
        self.key = None;
        self
    }

    fn by(mut self, caller: Caller) -> Call {
        self.caller = Some(caller);
        self
    }

    fn id(mut self, request_id: &'static str) -> Call {
        self.request_id = request_id;
        self
    }
}

async fn send_as(settings: &AllocateSettings, ledger: &Ledger, call: &Call, client: Client) -> Reply {
    send_queued(settings, ledger, None, call, client).await
}

/// `call` to an allocate that may queue jobs on `queue`.
async fn send_queued(
    settings: &AllocateSettings,
    ledger: &Ledger,
    queue: Option<&JobQueue>,
    call: &Call,
    client: Client,
) -> Reply {
    let incoming = Incoming {
        method: call.method,
        path: call.path,
        content_type: call.content_type,
        idempotency_key: call.key.as_deref(),
        caller: call.caller.clone(),
        request_id: call.request_id,
        body: &call.body,
        respond_async: call.respond_async,
        deadline: Deadline::after(call.budget, Utc::now()),
    };
    allocate::handle(settings, ledger, queue, &incoming, async { Ok::<_, String>(client) }).await
}

async fn send(settings: &AllocateSettings, ledger: &Ledger, sim: &SimHandle, call: &Call) -> Reply {
    send_as(settings, ledger, call, admin_client(sim)).await
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
            "is null, which means nothing here",
        ),
        (
            "null dry_run",
            post(format!(r#"{{"allocations":[{ok_entry}],"dry_run":null}}"#)),
            400,
            r#""field":"dry_run""#,
        ),
        (
            "an entry given as a list",
            post(r#"{"allocations":[["jdoe", 100]]}"#),
            400,
            "must be an object",
        ),
        (
            "float noise",
            with(r#"{"username":"jdoe","add":0.30000000000000004}"#),
            400,
            "more than 6 decimal places",
        ),
        (
            "no idempotency key",
            post(format!(r#"{{"allocations":[{ok_entry}]}}"#)).no_key(),
            400,
            "required for a request that changes allocations",
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
            caller: Some(caller_named("  ")),
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
    let allocator = settings(&[("MAX_MEMBERS_PER_REQUEST", "3")]);
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
    assert!(audit_recent(&ledger).await.is_empty());
}

#[tokio::test]
async fn every_problem_of_a_request_is_named_at_once() {
    let sim = sim(30).await;
    let reply = send(
        &settings(&[]),
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
    let strict = settings(&[("MAX_CREDITS_PER_MEMBER", "300"), ("MAX_CREDITS_PER_PLAN", "500")]);
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
        ["max_per_member", "unlimited_change", "max_per_plan"],
        "{}",
        reply.body
    );
    assert_eq!(reply.body["code"], "guardrail_breach");
    assert!(member_free(&reply));

    let reserve = settings(&[("ORG_RESERVE_CREDITS", "1000000000")]);
    let reply = send(
        &reserve,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":1}]}"#),
    )
    .await;
    assert_eq!(reply.status, 422);
    assert!(reply.body.to_string().contains("org_reserve"), "{}", reply.body);

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
    let auditor = client_as(&sim, AUDITOR_USERNAME, AUDITOR_PASSWORD);
    let reply = send_as(
        &settings(&[]),
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

/// A custom role can report `role: "org_admin"` with a `roleId` and lack the credit
/// privileges: it is refused up front by its privileges, never trusted for its role and then
/// stopped by a 403 halfway through the writes.
#[tokio::test]
async fn a_custom_role_reported_as_org_admin_without_the_privileges_is_403_before_any_write() {
    use portal_sim::generate::{CONTENT_ADMIN_PASSWORD, CONTENT_ADMIN_USERNAME};
    let sim = sim(30).await;
    let content_admin = client_as(&sim, CONTENT_ADMIN_USERNAME, CONTENT_ADMIN_PASSWORD);
    let reply = send_as(
        &settings(&[]),
        &Ledger::memory(),
        &post(r#"{"allocations":[{"username":"jdoe","set":500}]}"#),
        content_admin,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let text = reply.body.to_string();
    for needed in [
        "portal:admin:viewUsers",
        "portal:admin:manageCredits",
        "reported as org_admin",
    ] {
        assert!(text.contains(needed), "names {needed}: {text}");
    }
    assert!(sim.writes().is_empty());
}

/// A name that exists only in another org (its public view has no `orgId`) or behind a
/// private profile is "not a member" for that name alone; the rest of the request goes on.
#[tokio::test]
async fn names_from_other_orgs_are_unknown_users_and_the_rest_of_the_request_proceeds() {
    use portal_sim::generate::{PRIVATE_OUTSIDER_USERNAME, PUBLIC_OUTSIDER_USERNAME};
    let sim = sim(30).await;
    // An incomplete listing (rows without credits, one lookup failing) makes the apply path
    // look every requested name up exactly, as it must before calling anyone unknown.
    sim.update_behaviour(|b| b.list_includes_credits = false);
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: Some("jdoe2".into()),
            code: 500,
            message: "Internal error.".into(),
            when: Trigger::default(),
        }),
        ..Faults::default()
    });
    let before = allocation(&sim, "auditor").expect("limited");
    let body = format!(
        r#"{{"allocations":[{{"username":"{PUBLIC_OUTSIDER_USERNAME}","set":5}},
            {{"username":"{PRIVATE_OUTSIDER_USERNAME}","set":5}},{{"username":"auditor","add":10}}]}}"#
    );
    let reply = send(&settings(&[]), &Ledger::memory(), &sim, &post(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for name in [PUBLIC_OUTSIDER_USERNAME, PRIVATE_OUTSIDER_USERNAME] {
        assert_eq!(member(&reply, name)["status"], "unknown_user", "{name}: {}", reply.body);
    }
    assert_eq!(member(&reply, "auditor")["status"], "assigned", "{}", reply.body);
    assert_eq!(allocation(&sim, "auditor"), Some(before + 10.0));
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
    let reply = send(&settings(&[]), &Ledger::memory(), &sim, &body).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.body["code"], "budgeting_disabled");

    let wrong = client_as(&sim, "steward_admin", "not-the-password");
    let reply = send_as(&settings(&[]), &Ledger::memory(), &body, wrong).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.credentials_rejected);
    assert!(!reply.body.to_string().contains("not-the-password"));
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn a_connection_failure_is_500_and_leaves_the_key_free() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500}]}"#).key("k-connect");
    let incoming = Incoming {
        method: "POST",
        path: "/allocations",
        content_type: Some("application/json"),
        idempotency_key: Some("k-connect"),
        caller: Some(alice()),
        request_id: "req-1",
        body: &call.body,
        respond_async: false,
        deadline: Deadline::after(Duration::from_secs(30), Utc::now()),
    };
    let reply = allocate::handle(&settings, &ledger, None, &incoming, async {
        Err::<Client, _>("secret 'arcgis/test' does not exist")
    })
    .await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(reply.body.to_string().contains("does not exist"));
    let reply = send(&settings, &ledger, &sim, &call).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(allocation(&sim, "jdoe"), Some(1500.0));
}

#[tokio::test]
async fn a_request_out_of_time_before_sending_changes_nothing_and_keeps_the_key_free() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let mut call = post(r#"{"allocations":[{"username":"jdoe","set":1500}]}"#);
    // Less time left than the reads and one batch need (the margin kept for recording is 3 s).
    call.budget = Duration::from_millis(3_500);
    let reply = send(&settings, &ledger, &sim, &call).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body["code"], "out_of_time");
    assert!(reply.headers.iter().any(|(h, _)| *h == "retry-after"));
    assert!(sim.writes().is_empty());
    call.budget = Duration::from_secs(30);
    let reply = send(&settings, &ledger, &sim, &call).await;
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
        &settings(&[]),
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
    // Setting 200 here would leave −750; the allocation must cover what was consumed.
    assert_eq!(allocation(&sim, "overspent"), Some(1150.0));
    assert_eq!(sim.member("overspent").unwrap().available_credits, 200.0);

    let jdoe = member(&reply, "jdoe");
    assert_eq!(jdoe["status"], "assigned");
    assert_eq!(jdoe["requested"], json!({"set": 1500}));
    assert_eq!(
        jdoe["before"],
        json!({"kind": "limited", "assigned": 1000, "available": 600})
    );
    // What was read back after the write, not what was hoped for.
    assert_eq!(jdoe["after"], json!({"allocation": 1500, "available": 1100}));
    assert_eq!(member(&reply, "overspent")["after"]["available"], 200);
    assert_eq!(reply.body["summary"]["assigned"], 3);
    assert_eq!(reply.body["summary"]["total_increase"], 500 + 100 + 950);
    let org_before = reply.body["org"]["available_before"].as_f64().unwrap();
    assert_eq!(reply.body["org"]["available_after"], org_before - 1550.0);
    assert_eq!(assign_calls(&sim), 1);

    let audit = audit_recent(&ledger).await;
    assert_eq!(audit.len(), 3);
    let a = audit.iter().find(|e| e.username == "jdoe").unwrap();
    assert_eq!(
        (&a.caller, a.request_id.as_str(), a.reason.as_deref(), a.source.as_str()),
        (&alice(), "req-1", Some("ticket CS-42"), "allocate")
    );
    assert_eq!((a.planned, a.matches_plan), (c("1500"), true));
    assert_eq!(
        a.observed,
        shared::credits::member::Balance::Limited {
            assigned: c("1500"),
            available: c("1100")
        }
    );
    // Each batch's intent was on record before it was sent.
    let intents = ledger.intents_on(Utc::now().date_naive()).await.unwrap();
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0].members.len(), 3);

    // The log line per change is checked on the real binary's output (tests/e2e): a
    // thread-scoped subscriber misses events whose callsites another test thread registered.
    assert!(!logs.text().contains("sim-admin-password"));
}

#[tokio::test]
async fn the_caller_is_recorded_by_principal_id_account_and_arn_not_only_the_session_name() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let reply = send(
        &settings(&[]),
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":1}]}"#),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["caller"], CALLER_ARN);
    assert_eq!(
        reply.body["caller_identity"],
        json!({"kind": "iam", "principal_id": "AROAEXAMPLEROLEID:alice", "account": "111122223333", "arn": CALLER_ARN})
    );
    let audit = audit_recent(&ledger).await;
    assert_eq!(audit[0].caller, alice());
}

#[tokio::test]
async fn members_that_cannot_or_need_not_change_are_reported_and_never_sent() {
    let sim = sim(30).await;
    let reply = send(
        &settings(&[]),
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
    assert_eq!(calls[0].requested(), vec![("auditor".to_owned(), Some(210.0))]);
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
    let loose = settings(&[
        ("MAX_CREDITS_PER_MEMBER", "100000"),
        ("MAX_CREDITS_PER_PLAN", "10000000"),
        ("MAX_CREDITS_PER_DAY", "10000000"),
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
    assert_eq!(reply.body["policy"], json!({"name": "critical", "top_up_to": 200}));
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
    assert_eq!(audit_recent(&ledger).await.len(), critical.len());
}

#[tokio::test]
async fn a_policy_selecting_more_members_than_the_cap_is_refused_before_any_write() {
    // The critical policy had no cap: a large org could select thousands of members.
    let sim = sim(120).await;
    let capped = settings(&[("MAX_MEMBERS_PER_REQUEST", "2"), ("MAX_CREDITS_PER_PLAN", "10000000")]);
    let reply = send(
        &capped,
        &Ledger::memory(),
        &sim,
        &post(r#"{"policy":"critical","top_up_to":200}"#),
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.body["code"], "too_many_members");
    assert!(reply.body["error"].as_str().unwrap().contains("above the limit of 2"));
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn a_dry_run_plans_from_live_state_and_writes_nothing() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let call =
        post(r#"{"allocations":[{"username":"jdoe","add":250},{"username":"ghost_user","set":1}],"dry_run":true}"#)
            .key("dry-key");
    let reply = send(&settings(&[]), &ledger, &sim, &call).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["dry_run"], true);
    let jdoe = member(&reply, "jdoe");
    assert_eq!(jdoe["status"], "would_assign");
    assert_eq!(jdoe["after"], json!({"allocation": 1250, "available": 850}));
    assert_eq!(member(&reply, "ghost_user")["status"], "unknown_user");
    let org_before = reply.body["org"]["available_before"].as_f64().unwrap();
    assert_eq!(reply.body["org"]["available_after"], org_before - 250.0);
    assert!(sim.writes().is_empty());
    assert_eq!(allocation(&sim, "jdoe"), Some(1000.0));
    assert!(audit_recent(&ledger).await.is_empty());
    // The dry run did not consume its key: nothing is stored under it.
    let scope = Scope::of_key(Some("111122223333"), "AROAEXAMPLEROLEID:alice", "dry-key");
    assert!(ledger.load_request(&scope).await.unwrap().is_none());
}

#[tokio::test]
async fn more_than_fifty_members_are_read_from_the_listing() {
    let sim = sim(200).await;
    let names = limited_members(&sim, 60, |_| true);
    let entries = adds(&names, "1");
    let before: Vec<f64> = names.iter().map(|n| allocation(&sim, n).unwrap()).collect();
    let reply = send(
        &settings(&[]),
        &Ledger::memory(),
        &sim,
        &post(format!(r#"{{"allocations":[{entries}]}}"#)),
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

#[tokio::test]
async fn amounts_reach_arcgis_and_the_audit_without_float_noise() {
    // top_up_to on 1000 − 949.9 consumed used to send 250.10000000000002; 0.1 + 0.2 sent
    // 0.30000000000000004. The simulator refuses more than six decimals, so noise would fail.
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let first = send(
        &settings,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","set":0.1}]}"#),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    // jdoe2: 500 assigned, 20 available → 480 consumed.
    let reply = send(
        &settings,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":0.2},{"username":"jdoe2","top_up_to":200.1}]}"#),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let last = sim.allocation_calls().pop().unwrap();
    let sent: Vec<(String, Option<f64>)> = last.requested();
    assert_eq!(
        sent,
        [("jdoe".to_owned(), Some(0.3)), ("jdoe2".to_owned(), Some(680.1))]
    );
    assert_eq!(member(&reply, "jdoe")["after"]["allocation"].to_string(), "0.3");
    assert_eq!(reply.body["summary"]["total_increase"].to_string(), "180.3");
    let audit = audit_recent(&ledger).await;
    let planned: Vec<String> = audit.iter().map(|e| e.planned.to_string()).collect();
    assert!(
        planned.contains(&"0.3".to_owned()) && planned.contains(&"680.1".to_owned()),
        "{planned:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Idempotency, resumption, per-caller keys.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_key_and_body_replay_the_first_response_without_writing_again() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let call = post(r#"{"allocations":[{"username":"jdoe2","add":100}]}"#).key("key-add");
    let first = send(&settings, &ledger, &sim, &call).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));

    let again = send(&settings, &ledger, &sim, &call.clone().id("req-2")).await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert!(again.headers.contains(&("idempotent-replayed", "true".to_owned())));
    // An add applied twice would be 700.
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));
    assert_eq!(assign_calls(&sim), 1);

    // Same key, different body: refused, nothing written.
    let other = send(
        &settings,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe2","add":200}]}"#).key("key-add"),
    )
    .await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.body["code"], "idempotency_key_reused");
    assert_eq!(assign_calls(&sim), 1);
    assert_eq!(audit_recent(&ledger).await.len(), 1);
}

#[tokio::test]
async fn another_callers_reuse_of_a_key_is_their_own_request_and_never_sees_the_first_reply() {
    // Keys were global: bob sending alice's key and body got alice's stored reply (her
    // identity, reason and members' balances); with another body, a 409 saying the key exists.
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let body = r#"{"allocations":[{"username":"jdoe2","add":100}],"reason":"alice's ticket"}"#;
    let alices = send(&settings, &ledger, &sim, &post(body).key("shared-key")).await;
    assert_eq!(alices.status, 200, "{}", alices.body);

    let bobs = send(
        &settings,
        &ledger,
        &sim,
        &post(body).key("shared-key").by(bob()).id("req-b"),
    )
    .await;
    assert_eq!(bobs.status, 200, "{}", bobs.body);
    assert!(!bobs.headers.iter().any(|(h, _)| *h == "idempotent-replayed"));
    assert_eq!(bobs.body["caller_identity"]["principal_id"], "AROAEXAMPLEROLEID:bob");
    let text = bobs.body.to_string();
    assert!(
        !text.contains("AROAEXAMPLEROLEID:alice") && !text.contains("CreditAdmins/alice"),
        "{text}"
    );
    // It was bob's own request: applied as such.
    assert_eq!(allocation(&sim, "jdoe2"), Some(700.0));

    let other_body = send(
        &settings,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":1}]}"#)
            .key("shared-key")
            .by(caller_named("AROAEXAMPLEROLEID:carol"))
            .id("req-c"),
    )
    .await;
    assert_eq!(other_body.status, 200, "{}", other_body.body);
}

#[tokio::test]
async fn the_same_subject_from_two_token_issuers_are_two_callers_with_their_own_keys() {
    // JWT callers were scoped by subject alone: `alice` of one identity provider replayed the
    // stored reply of `alice` of another.
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let jwt = |issuer: &str| Caller {
        kind: CallerKind::Jwt,
        principal_id: "alice".into(),
        account: None,
        arn: None,
        issuer: Some(issuer.into()),
    };
    let body = r#"{"allocations":[{"username":"jdoe2","add":100}]}"#;
    let first = send(
        &settings,
        &ledger,
        &sim,
        &post(body).key("k").by(jwt("https://idp-a.example/")),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = send(
        &settings,
        &ledger,
        &sim,
        &post(body).key("k").by(jwt("https://idp-b.example/")).id("req-b"),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert!(
        !second.headers.iter().any(|(h, _)| *h == "idempotent-replayed"),
        "not a replay"
    );
    assert_eq!(allocation(&sim, "jdoe2"), Some(700.0), "each caller's request applied");
    // The first issuer's alice, again: her own replay.
    let again = send(
        &settings,
        &ledger,
        &sim,
        &post(body).key("k").by(jwt("https://idp-a.example/")).id("req-c"),
    )
    .await;
    assert!(again.headers.iter().any(|(h, _)| *h == "idempotent-replayed"));
    assert_eq!(allocation(&sim, "jdoe2"), Some(700.0));
}

#[tokio::test]
async fn a_key_in_progress_is_409_with_retry_after_and_nothing_is_read() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500}]}"#).key("busy");
    let scope = Scope::of_key(Some("111122223333"), "AROAEXAMPLEROLEID:alice", "busy");
    let now = Utc::now();
    ledger
        .claim_request(
            &scope,
            Claim::new(
                &shared::apply::body_hash(&call.body),
                "another-invocation",
                now,
                now + chrono::TimeDelta::seconds(20),
            ),
        )
        .await
        .unwrap();
    let reply = send(&settings(&[]), &ledger, &sim, &call).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.body["code"], "idempotency_key_in_progress");
    let retry_after: u64 = reply
        .headers
        .iter()
        .find(|(h, _)| *h == "retry-after")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a Retry-After header");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn a_refused_request_releases_its_key_for_the_corrected_one() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[("MAX_CREDITS_PER_MEMBER", "300")]);
    let too_much = send(
        &settings,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":400}]}"#).key("fix-me"),
    )
    .await;
    assert_eq!(too_much.status, 422);
    let fixed = send(
        &settings,
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe","add":300}]}"#).key("fix-me"),
    )
    .await;
    assert_eq!(fixed.status, 200, "{}", fixed.body);
    assert_eq!(allocation(&sim, "jdoe"), Some(1300.0));
}

/// `n` members who may receive credits (limited, enabled, not viewers) whose allocation
/// satisfies `allocation`.
fn limited_members(sim: &SimHandle, n: usize, allocation: impl Fn(f64) -> bool) -> Vec<String> {
    let names: Vec<String> = sim
        .members()
        .into_iter()
        .filter(|m| matches!(m.allocation, Some(a) if allocation(a)) && !m.disabled && m.user_type != "viewerUT")
        .map(|m| m.username)
        .take(n)
        .collect();
    assert_eq!(names.len(), n, "the generated org has {n} such members");
    names
}

/// `n` limited members with a positive allocation.
fn limited_creators(sim: &SimHandle, n: usize) -> Vec<String> {
    limited_members(sim, n, |a| a > 0.0)
}

/// The allocation entries adding `amount` to each of `names`, comma-separated.
fn adds(names: &[String], amount: &str) -> String {
    names
        .iter()
        .map(|n| format!(r#"{{"username":"{n}","add":{amount}}}"#))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sends `call` until it is not answered "in progress" (the killed invocation's lease must run
/// out first), following Retry-After, within a bound.
async fn send_until_not_in_progress(
    settings: &AllocateSettings,
    ledger: &Ledger,
    sim: &SimHandle,
    call: &Call,
) -> Reply {
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = send(settings, ledger, sim, call).await;
        if reply.status != 409 || std::time::Instant::now() > give_up {
            return reply;
        }
        let wait: u64 = reply
            .headers
            .iter()
            .find(|(h, _)| *h == "retry-after")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        // The client's side of the protocol: wait as the server said, then retry.
        tokio::time::sleep(Duration::from_secs(wait.min(5))).await;
    }
}

// Multi-threaded: the killed invocation's thread blocks this one while the simulator serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_invocation_is_resumed_by_its_key_and_the_add_is_never_applied_twice() {
    // The invocation died after ArcGIS applied `add 100` (500 → 600) but before anything was
    // recorded: no audit entry, the key stuck "in progress", and a day later the same key was
    // a new request that applied the add again (700).
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let mut call = post(r#"{"allocations":[{"username":"jdoe2","add":100}]}"#).key("killed");
    // A short invocation, so its lease runs out soon after it is killed.
    call.budget = Duration::from_millis(5_500);
    kill_at_first_write(&settings, &ledger, &sim, &call, HoldPhase::AfterProcessing).await;
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));
    assert!(audit_recent(&ledger).await.is_empty(), "nothing recorded yet");

    call.budget = Duration::from_secs(30);
    let reply = send_until_not_in_progress(&settings, &ledger, &sim, &call.clone().id("req-2")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(member(&reply, "jdoe2")["status"], "assigned");
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0), "the add was applied once");
    assert_eq!(
        assign_calls(&sim),
        1,
        "the resumed request read back and did not re-send"
    );
    let audit = audit_recent(&ledger).await;
    assert_eq!(audit.len(), 1, "the change made by the killed invocation is audited");
    assert_eq!(
        audit[0].observed,
        shared::credits::member::Balance::Limited {
            assigned: c("600"),
            available: c("120")
        }
    );
    // And from now on the key replays.
    let again = send(&settings, &ledger, &sim, &call.id("req-3")).await;
    assert_eq!((again.status, &again.body), (200, &reply.body));
}

/// Kills an invocation of `call` at its first write, at `phase`.
async fn kill_at_first_write(
    settings: &AllocateSettings,
    ledger: &Ledger,
    sim: &SimHandle,
    call: &Call,
    phase: HoldPhase,
) {
    let hold = sim.hold(HoldSpec {
        endpoint: "portals/self/assignUserCredits".into(),
        nth: 1,
        phase,
    });
    kill_at(&hold, || send(settings, ledger, sim, call)).await;
}

// Multi-threaded: the killed invocation's thread blocks this one while the simulator serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_left_in_doubt_is_settled_by_the_next_writer_before_it_plans() {
    // A killed `add 100` on jdoe2 left its write in doubt and was never retried before
    // another request changed jdoe2: the other request planned from a balance nobody had
    // read back or audited, and A's retry later took B's change for a conflict with its own.
    for (phase, landed) in [(HoldPhase::AfterProcessing, true), (HoldPhase::BeforeProcessing, false)] {
        let sim = sim(30).await;
        let ledger = Ledger::memory();
        let settings = settings(&[]);
        let mut a = post(r#"{"allocations":[{"username":"jdoe2","add":100}]}"#).id("req-a");
        // A short invocation, so its lease runs out soon after it is killed.
        a.budget = Duration::from_millis(5_500);
        kill_at_first_write(&settings, &ledger, &sim, &a, phase).await;
        let after_a = if landed { 600.0 } else { 500.0 };
        assert_eq!(allocation(&sim, "jdoe2"), Some(after_a), "{phase:?}");

        // B, another key on the same member, once A's lease on the lock is over.
        let b = post(r#"{"allocations":[{"username":"jdoe2","add":50}]}"#).id("req-b");
        let reply_b = send_until_not_in_progress(&settings, &ledger, &sim, &b).await;
        assert_eq!(reply_b.status, 200, "{phase:?}: {}", reply_b.body);
        assert_eq!(
            member(&reply_b, "jdoe2")["before"]["assigned"].as_f64(),
            Some(after_a),
            "{phase:?}"
        );
        assert_eq!(allocation(&sim, "jdoe2"), Some(after_a + 50.0), "{phase:?}");

        // A's landed change was audited by B's settling, before B's own.
        let audit = audit_recent(&ledger).await;
        let planned: Vec<Credits> = audit.iter().map(|e| e.planned).collect();
        if landed {
            assert_eq!(planned, vec![c("600"), c("650")], "{phase:?}");
        } else {
            assert_eq!(planned, vec![c("550")], "{phase:?}: nothing of A's landed");
        }

        // A retried: what was settled is replayed; nothing is sent again.
        let writes = assign_calls(&sim);
        a.budget = Duration::from_secs(30);
        let reply_a = send(&settings, &ledger, &sim, &a.clone().id("req-a2")).await;
        let status = &member(&reply_a, "jdoe2")["status"];
        if landed {
            assert_eq!(
                (reply_a.status, status.as_str()),
                (200, Some("assigned")),
                "{}",
                reply_a.body
            );
        } else {
            assert_ne!(reply_a.status, 200, "{}", reply_a.body);
            assert_ne!(status, "assigned", "{}", reply_a.body);
            let error = member(&reply_a, "jdoe2")["error"].as_str().unwrap_or_default();
            assert!(error.contains("send a new request"), "{}", reply_a.body);
        }
        assert_eq!(assign_calls(&sim), writes, "{phase:?}: the retry wrote nothing");
        assert_eq!(allocation(&sim, "jdoe2"), Some(after_a + 50.0), "{phase:?}");
        assert!(
            ledger.pending_requests().await.unwrap().is_empty(),
            "{phase:?}: nothing left to settle"
        );
    }
}

#[tokio::test]
async fn replay_survives_a_cold_start_with_the_dynamodb_ledger() {
    let sim = sim(30).await;
    let call = post(r#"{"allocations":[{"username":"jdoe","add":50}],"reason":"cold start"}"#).key("cold-key");
    let table = dynamo_table("allocate-cold").await;
    let first = {
        // One "container": its own settings and ledger client.
        let ledger = Ledger::dynamo(crate::ledger::dynamodb(), &table);
        let reply = send(&settings(&[]), &ledger, &sim, &call).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let audit = audit_recent(&ledger).await;
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].reason.as_deref(), Some("cold start"));
        assert!(ledger.requests_made() > 0);
        reply
    };
    // Another "container": new settings, new client, same table.
    let second = Ledger::dynamo(crate::ledger::dynamodb(), &table);
    let replay = send(&settings(&[]), &second, &sim, &call).await;
    assert_eq!((replay.status, &replay.body), (200, &first.body));
    assert_eq!(allocation(&sim, "jdoe"), Some(1050.0));
    assert_eq!(assign_calls(&sim), 1);
}

#[tokio::test]
async fn a_reply_for_two_thousand_members_is_journaled_in_pages_and_replayed_whole() {
    // A reply this large did not fit under its key (DynamoDB's 400 KB item limit).
    let sim = sim(4_000).await;
    let names = limited_members(&sim, 2_000, |_| true);
    let entries = adds(&names, "0.5");
    let call = post(format!(r#"{{"allocations":[{entries}]}}"#));
    let table = dynamo_table("allocate-large").await;
    let ledger = Ledger::dynamo(crate::ledger::dynamodb(), &table);
    let settings = settings(&[("MAX_MEMBERS_PER_REQUEST", "2000")]);
    let first = send(&settings, &ledger, &sim, &call).await;
    assert_eq!(
        first.status, 200,
        "{} {}",
        first.body["summary"], first.body["incomplete"]
    );
    assert_eq!(first.body["summary"]["assigned"], 2_000, "{}", first.body["summary"]);
    let replay = send(&settings, &ledger, &sim, &call.clone().id("req-2")).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body, first.body);
    assert_eq!(assign_calls(&sim), 20, "2,000 members in batches of 100, once");
}

// ---------------------------------------------------------------------------------------
// Possibly-applied writes: read back, audited, never sent blind.
// ---------------------------------------------------------------------------------------

/// A fault on every `assignUserCredits`, after ArcGIS applied it.
fn after_the_write(status: u16, retry_after_secs: Option<u64>) -> Faults {
    Faults {
        http_error: Some(HttpErrorFault {
            status,
            retry_after_secs,
            when: Trigger {
                endpoint: Some("portals/self/assignUserCredits".into()),
                after_processing: true,
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    }
}

#[tokio::test]
async fn a_429_with_retry_after_after_the_write_is_read_back_and_audited() {
    // ArcGIS applied `add 100` (500 → 600), then answered 429 Retry-After 10: the change was
    // applied with no audit entry and the request answered as failed.
    let sim = sim(30).await;
    sim.set_faults(after_the_write(429, Some(10)));
    let ledger = Ledger::memory();
    let reply = send(
        &settings(&[]),
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe2","add":100}]}"#),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(member(&reply, "jdoe2")["status"], "assigned");
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));
    assert_eq!(sim.allocation_calls().len(), 1, "sent once");
    assert_eq!(audit_recent(&ledger).await.len(), 1);
}

#[tokio::test]
async fn a_503_after_the_write_on_every_attempt_is_sent_once_read_back_and_audited() {
    // Before: sent 5 times, ArcGIS moved 500 → 600, the reply said "failed", no audit entry.
    let sim = sim(30).await;
    sim.set_faults(after_the_write(503, None));
    let ledger = Ledger::memory();
    let reply = send(
        &settings(&[]),
        &ledger,
        &sim,
        &post(r#"{"allocations":[{"username":"jdoe2","add":100}]}"#),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(allocation(&sim, "jdoe2"), Some(600.0));
    assert_eq!(sim.allocation_calls().len(), 1, "never re-sent blind");
    let audit = audit_recent(&ledger).await;
    assert_eq!(audit.len(), 1);
    assert!(audit[0].matches_plan);
}

#[tokio::test]
async fn a_transient_failure_leaves_the_request_resumable_and_the_retry_finishes_it_once() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: None,
            code: 503,
            message: "Service unavailable.".into(),
            when: Trigger {
                endpoint: Some("portals/self/assignUserCredits".into()),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500},{"username":"ghost_user","set":1}]}"#);
    let reply = send(&settings, &ledger, &sim, &call).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.headers.iter().any(|(h, _)| *h == "retry-after"));
    assert_eq!(member(&reply, "jdoe")["status"], "pending");
    assert_eq!(member(&reply, "ghost_user")["status"], "unknown_user");
    assert!(
        reply.body["incomplete"]["what_to_do"]
            .as_str()
            .unwrap()
            .contains("same Idempotency-Key")
    );
    assert_eq!(allocation(&sim, "jdoe"), Some(1000.0));
    assert!(audit_recent(&ledger).await.is_empty());

    sim.clear_faults();
    let done = send(&settings, &ledger, &sim, &call.clone().id("req-2")).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(member(&done, "jdoe")["status"], "assigned");
    assert_eq!(allocation(&sim, "jdoe"), Some(1500.0));
    assert_eq!(audit_recent(&ledger).await.len(), 1);
    let replay = send(&settings, &ledger, &sim, &call.id("req-3")).await;
    assert_eq!(replay.body, done.body);
}

#[tokio::test]
async fn a_definitive_failure_is_502_per_member_and_replays_instead_of_retrying_blind() {
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: None,
            code: 400,
            message: "Unable to assign credits.".into(),
            when: Trigger {
                endpoint: Some("portals/self/assignUserCredits".into()),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500}]}"#);
    let reply = send(&settings, &ledger, &sim, &call).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let jdoe = member(&reply, "jdoe");
    assert_eq!(jdoe["status"], "failed");
    assert!(
        jdoe["error"].as_str().unwrap().contains("Unable to assign credits"),
        "{jdoe}"
    );
    assert_eq!(jdoe["planned"]["allocation"], 1500);
    assert_eq!(allocation(&sim, "jdoe"), Some(1000.0));
    sim.clear_faults();
    let attempts = assign_calls(&sim);
    let again = send(&settings, &ledger, &sim, &call).await;
    assert_eq!((again.status, &again.body), (502, &reply.body));
    assert_eq!(assign_calls(&sim), attempts);
}

#[tokio::test]
async fn a_member_gone_between_the_plan_and_the_write_is_not_assigned_and_the_reply_is_207() {
    let sim = sim(30).await;
    let settings = settings(&[]);
    let ledger = Ledger::memory();
    let hold = sim.hold(HoldSpec {
        endpoint: "portals/self/assignUserCredits".into(),
        nth: 1,
        phase: HoldPhase::BeforeProcessing,
    });
    let call = post(r#"{"allocations":[{"username":"jdoe","set":1500},{"username":"jdoe2","set":900}]}"#);
    let client = admin_client(&sim);
    let request = send_as(&settings, &ledger, &call, client);
    let remove = async {
        hold.reached().await;
        {
            let mut world = sim.sim().world();
            world.org.members.retain(|m| m.username != "jdoe2");
            world.reindex();
        }
        hold.release();
    };
    let (reply, ()) = tokio::join!(request, remove);
    assert_eq!(reply.status, 207, "{}", reply.body);
    assert_eq!(member(&reply, "jdoe")["status"], "assigned");
    let gone = member(&reply, "jdoe2");
    assert_eq!(gone["status"], "not_assigned");
    assert!(gone["reason"].as_str().unwrap().contains("notAssignedUsers"));
    assert!(gone["after"].is_null());
    assert_eq!(reply.body["summary"]["not_assigned"], 1);
    assert_eq!(allocation(&sim, "jdoe"), Some(1500.0));
    let audit = audit_recent(&ledger).await;
    assert_eq!(audit.iter().map(|e| e.username.as_str()).collect::<Vec<_>>(), ["jdoe"]);
}

// ---------------------------------------------------------------------------------------
// Serialized and bounded: concurrent writers and cumulative guardrails.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn two_concurrent_adds_on_one_member_are_serialized_and_neither_is_lost() {
    // Both used to answer 200 and audit 1000 → 1100: one add was lost.
    let sim = sim(30).await;
    sim.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let a = post(r#"{"allocations":[{"username":"jdoe","add":100}]}"#).id("req-a");
    let b = post(r#"{"allocations":[{"username":"jdoe","add":100}]}"#).id("req-b");
    let (ra, rb) = tokio::join!(send(&settings, &ledger, &sim, &a), send(&settings, &ledger, &sim, &b));
    let applied = [&ra, &rb].iter().filter(|r| r.status == 200).count();
    for r in [&ra, &rb] {
        assert!(
            r.status == 200 || r.body["code"] == "allocation_in_progress",
            "{}",
            r.body
        );
    }
    assert!(applied >= 1);
    assert_eq!(allocation(&sim, "jdoe"), Some(1000.0 + 100.0 * applied as f64));
    // Each applied add was planned from the other's result: the audit chains.
    let mut audit = audit_recent(&ledger).await;
    audit.sort_by_key(|e| e.planned_at);
    let assigned = |b: &shared::credits::member::Balance| match b {
        shared::credits::member::Balance::Limited { assigned, .. } => *assigned,
        shared::credits::member::Balance::Unlimited => panic!("limited"),
    };
    assert_eq!(audit.len(), applied);
    for pair in audit.windows(2) {
        assert_eq!(assigned(&pair[1].before), assigned(&pair[0].observed));
    }
}

#[tokio::test]
async fn a_revocation_racing_an_add_is_never_silently_undone() {
    // `set 0` racing `add 50` used to end at 550: the revocation undone without a trace.
    let sim = sim(30).await;
    sim.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let ledger = Ledger::memory();
    let settings = settings(&[]);
    let revoke = post(r#"{"allocations":[{"username":"jdoe","set":0}]}"#).id("req-revoke");
    let add = post(r#"{"allocations":[{"username":"jdoe","add":50}]}"#).id("req-add");
    let (r1, r2) = tokio::join!(
        send(&settings, &ledger, &sim, &revoke),
        send(&settings, &ledger, &sim, &add)
    );
    let final_allocation = allocation(&sim, "jdoe").unwrap();
    match (r1.status, r2.status) {
        // Both applied, one after the other: the later one's "before" is the earlier's result.
        (200, 200) => {
            let revoke_before = member(&r1, "jdoe")["before"]["assigned"].as_f64().unwrap();
            if revoke_before == 1050.0 {
                assert_eq!(final_allocation, 0.0, "add then revoke: revoked");
            } else {
                assert_eq!(revoke_before, 1000.0);
                assert_eq!(member(&r2, "jdoe")["before"]["assigned"], 0);
                assert_eq!(final_allocation, 50.0, "revoke then add, both on record");
            }
        }
        (200, _) => assert_eq!(final_allocation, 0.0),
        (_, 200) => assert_eq!(final_allocation, 1050.0),
        other => panic!("neither applied: {other:?}"),
    }
}

#[tokio::test]
async fn five_sequential_adds_cannot_hand_out_more_than_the_daily_budget() {
    // With a per-plan limit of 300, five `add 250` all succeeded: 1,250 handed out.
    let sim = sim(30).await;
    let ledger = Ledger::memory();
    let settings = settings(&[("MAX_CREDITS_PER_PLAN", "300"), ("MAX_CREDITS_PER_DAY", "400")]);
    let mut statuses = Vec::new();
    for name in limited_creators(&sim, 5) {
        let reply = send(
            &settings,
            &ledger,
            &sim,
            &post(format!(r#"{{"allocations":[{{"username":"{name}","add":250}}]}}"#)),
        )
        .await;
        if reply.status == 422 {
            assert_eq!(reply.body["problems"][0]["guardrail"], "max_per_day", "{}", reply.body);
            let text = reply.body["problems"][0]["problem"].as_str().unwrap();
            assert!(
                text.contains("250 credits were already granted") && text.contains("leaving 150"),
                "{text}"
            );
        }
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 422, 422, 422, 422]);
    assert_eq!(ledger.granted_since(Utc::now()).await.unwrap(), c("250"));
}

#[tokio::test]
async fn the_org_reserve_counts_what_members_were_already_promised() {
    // Allocations are limits: the org's credits never move, so every plan saw the same
    // headroom and five `add 250` passed a reserve that left 400 to hand out.
    let sim = sim(30).await;
    let org_available = Credits::from_f64(sim.org().available_credits).unwrap();
    let promised: Credits = sim
        .members()
        .iter()
        .filter(|m| m.allocation.is_some())
        .map(|m| Credits::from_f64(m.available_credits.max(0.0)).unwrap())
        .sum();
    let reserve = org_available - promised - c("400");
    assert!(!reserve.is_negative(), "the generated org is not over-committed");
    let settings = settings(&[
        ("ORG_RESERVE_CREDITS", &reserve.to_string()),
        ("MAX_CREDITS_PER_PLAN", "300"),
        ("MAX_CREDITS_PER_DAY", "100000"),
    ]);
    let ledger = Ledger::memory();
    let mut statuses = Vec::new();
    for name in limited_creators(&sim, 5) {
        let reply = send(
            &settings,
            &ledger,
            &sim,
            &post(format!(r#"{{"allocations":[{{"username":"{name}","add":250}}]}}"#)),
        )
        .await;
        if reply.status == 422 {
            assert_eq!(reply.body["problems"][0]["guardrail"], "org_reserve", "{}", reply.body);
        }
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses,
        [200, 422, 422, 422, 422],
        "250 of the 400 unpromised credits, then no more"
    );
}

/// A fresh ledger table in moto.
async fn dynamo_table(name: &str) -> String {
    crate::ledger::create_table(&crate::ledger::dynamodb(), name).await
}
