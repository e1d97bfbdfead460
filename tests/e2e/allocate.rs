//! allocate end to end: API Gateway HTTP API v2 events (shaped like AWS's, from the fixture)
//! into the real binary; effects read from portal-sim and the ledger table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use portal_sim::{GenParams, generate};
use serde_json::{Value, json};
use shared::ledger::Scope;

use crate::support::*;

/// The IAM identity in `apigw-v2-allocations-iam.json`, as API Gateway's authorizer sets it.
const PRINCIPAL_ID: &str = "AROAEXAMPLEROLEID:alice";
const ACCOUNT: &str = "111122223333";
const ARN: &str = "arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice";

/// The IAM-authorized fixture with another body, and optionally another idempotency key.
/// Every event gets a request id of its own, as API Gateway gives every call (a retry too).
fn request(body: &str, idempotency_key: Option<&str>) -> Value {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let request_id = format!("e2e-request-{}", N.fetch_add(1, Ordering::Relaxed));
    allocation_event(body, idempotency_key, &request_id)
}

/// The same event sent by another IAM principal (another role session in another account).
fn as_other_caller(mut event: Value) -> Value {
    let iam = &mut event["requestContext"]["authorizer"]["iam"];
    iam["userId"] = json!("AROAOTHERROLEID:bob");
    iam["callerId"] = json!("AROAOTHERROLEID:bob");
    iam["accountId"] = json!("444455556666");
    iam["userArn"] = json!("arn:aws:sts::444455556666:assumed-role/CreditAdmins/bob");
    event
}

/// The HTTP response the function returned: (status, parsed body).
fn response(out: &testkit::lambda::Invocation) -> (u16, Value) {
    http_reply(out).unwrap_or_else(|| panic!("the function failed or did not answer HTTP: {}", out.payload))
}

/// A response header (API Gateway v2 response: `headers` is a flat object).
fn header<'a>(out: &'a testkit::lambda::Invocation, name: &str) -> Option<&'a str> {
    out.payload["headers"][name].as_str()
}

fn line<'a>(body: &'a Value, username: &str) -> &'a Value {
    body["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {body}"))
        .iter()
        .find(|m| m["username"] == username)
        .unwrap_or_else(|| panic!("{username} missing: {body}"))
}

fn status_of<'a>(body: &'a Value, username: &str) -> &'a str {
    line(body, username)["status"].as_str().unwrap()
}

/// An audit item of the ledger: its plain attributes and its parsed `record`.
#[derive(Debug)]
struct AuditItem {
    sk: String,
    kind: String,
    attrs: HashMap<String, AttributeValue>,
    record: Value,
}

/// Every item of the AUDIT partitions, split by `kind` (`change`, `intent`).
async fn audit(world: &World) -> BTreeMap<String, Vec<AuditItem>> {
    let mut by_kind: BTreeMap<String, Vec<AuditItem>> = BTreeMap::new();
    for item in world.ledger_where("AUDIT#").await {
        let kind = attr(&item, "kind")
            .unwrap_or_else(|| panic!("an audit item without kind: {item:?}"))
            .to_owned();
        let record: Value =
            serde_json::from_str(attr(&item, "record").unwrap_or_else(|| panic!("no record: {item:?}")))
                .unwrap_or_else(|e| panic!("record is not JSON ({e}): {item:?}"));
        by_kind.entry(kind.clone()).or_default().push(AuditItem {
            sk: attr(&item, "sk").unwrap_or_default().to_owned(),
            kind,
            attrs: item,
            record,
        });
    }
    for items in by_kind.values_mut() {
        items.sort_by(|a, b| a.sk.cmp(&b.sk));
    }
    by_kind
}

/// The change items of one member.
fn changes_of<'a>(audit: &'a BTreeMap<String, Vec<AuditItem>>, username: &str) -> Vec<&'a AuditItem> {
    audit
        .get("change")
        .into_iter()
        .flatten()
        .filter(|c| c.record["username"] == username)
        .collect()
}

/// Asserts an audit record's caller is the fixture's IAM principal: the principal id and the
/// account API Gateway established, not only the session name the caller chose.
fn assert_fixture_caller(item: &AuditItem) {
    let caller = &item.record["caller"];
    assert_eq!(caller["kind"], "iam", "{item:?}");
    assert_eq!(caller["principal_id"], PRINCIPAL_ID, "{item:?}");
    assert_eq!(caller["account"], ACCOUNT, "{item:?}");
    assert_eq!(caller["arn"], ARN, "{item:?}");
    assert_eq!(
        item.attrs.get("caller").and_then(|v| v.as_s().ok()).map(String::as_str),
        Some(ARN),
        "the plain caller attribute is the ARN: {item:?}"
    );
}

/// The head of a request in the ledger (`REQ#<scope>` / `HEAD`).
async fn head(world: &World, scope: &Scope) -> Option<HashMap<String, AttributeValue>> {
    let pk = format!("REQ#{}", scope.as_str());
    world
        .ledger_where(&pk)
        .await
        .into_iter()
        .find(|i| attr(i, "pk") == Some(pk.as_str()) && attr(i, "sk") == Some("HEAD"))
}

/// Asserts the org-wide allocation lock (`LOCK`/`ALLOCATIONS`) is released and no request is
/// left listed as pending (`LOCK`/`PENDING`, whose `scopes` set empties as requests finish).
pub(crate) async fn assert_lock_free(world: &World) {
    for item in world.ledger_where("LOCK").await {
        assert_ne!(
            attr(&item, "sk"),
            Some("ALLOCATIONS"),
            "the lock is still held: {item:?}"
        );
        assert!(
            item.get("scopes").is_none_or(|s| s.as_ss().is_ok_and(Vec::is_empty)),
            "a request is left pending: {item:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_sets_adds_tops_up_and_replays_idempotently() {
    let world = World::new(generate(&GenParams::new(150, 5, chrono::Utc::now().date_naive()))).await;
    let function = world.start("allocate", &[]);
    let jdoe = world.sim.member("jdoe").unwrap();
    let jdoe2 = world.sim.member("jdoe2").unwrap();
    let officer = world.sim.member("credit_officer").unwrap();

    // Dry run (no key needed): the plan, nothing written, not even the ledger.
    let body = r#"{"allocations":[{"username":"jdoe","set":1500},{"username":"jdoe2","add":100},{"username":"credit_officer","top_up_to":450},{"username":"nobody_here","set":5}],"dry_run":true,"reason":"e2e"}"#;
    let (status, plan) = response(&world.invoke("allocate", &request(body, None)).await);
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(status_of(&plan, "jdoe"), "would_assign");
    assert_eq!(
        line(&plan, "jdoe")["after"]["allocation"],
        json!(1500),
        "an exact amount"
    );
    assert_eq!(status_of(&plan, "nobody_here"), "unknown_user");
    assert!(world.sim.writes().is_empty(), "a dry run writes nothing");
    assert!(world.ledger().await.is_empty(), "a dry run neither claims nor locks");

    // Applied, with an idempotency key.
    let applied_body = body.replace("\"dry_run\":true", "\"dry_run\":false");
    let event = request(&applied_body, Some("e2e-key-1"));
    let first = world.invoke("allocate", &event).await;
    let (status, applied) = response(&first);
    assert_eq!(status, 200, "{applied}");
    assert_eq!(header(&first, "idempotent-replayed"), None);
    for u in ["jdoe", "jdoe2", "credit_officer"] {
        assert_eq!(status_of(&applied, u), "assigned", "{applied}");
    }
    assert_eq!(status_of(&applied, "nobody_here"), "unknown_user");
    assert_eq!(applied["caller"], ARN);
    assert_eq!(
        applied["caller_identity"],
        json!({"kind": "iam", "principal_id": PRINCIPAL_ID, "account": ACCOUNT, "arn": ARN})
    );
    assert_eq!(applied["summary"]["assigned"], 3, "{applied}");
    assert!(applied["incomplete"].is_null(), "{applied}");
    // set → 1500; add → +100; top_up_to 450 → assigned − available + 450.
    assert_eq!(world.sim.member("jdoe").unwrap().allocation, Some(1500.0));
    assert_eq!(
        world.sim.member("jdoe2").unwrap().allocation,
        Some(jdoe2.allocation.unwrap() + 100.0)
    );
    let officer_after = world.sim.member("credit_officer").unwrap();
    assert!(
        (officer_after.available_credits - 450.0).abs() < 1e-6,
        "{officer_after:?} (was {officer:?})"
    );
    assert_eq!(jdoe.allocation, Some(1000.0));
    // Amounts in the reply are exact decimals, read back from ArcGIS.
    assert_eq!(line(&applied, "jdoe")["after"]["allocation"], json!(1500), "{applied}");
    assert_eq!(line(&applied, "jdoe")["before"]["assigned"], json!(1000), "{applied}");
    assert_eq!(
        line(&applied, "credit_officer")["after"]["available"],
        json!(450),
        "{applied}"
    );
    assert_eq!(world.sim.allocation_calls().len(), 1, "one assignUserCredits call");

    // Audited: one intent for the batch, written before it was sent, then one change entry per
    // member read back changed, each with the caller from the IAM authorizer.
    let trail = audit(&world).await;
    assert_eq!(
        trail.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["change".to_owned(), "intent".to_owned()]),
        "{trail:?}"
    );
    let intents = &trail["intent"];
    assert_eq!(intents.len(), 1, "one batch, one intent: {intents:?}");
    let intent = &intents[0];
    assert_eq!(intent.kind, "intent");
    assert_fixture_caller(intent);
    assert_eq!(intent.record["request_id"], applied["request_id"]);
    assert_eq!(intent.record["reason"], "e2e");
    let targets: BTreeMap<String, Value> = intent.record["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in the intent: {intent:?}"))
        .iter()
        .map(|m| (m["username"].as_str().unwrap().to_owned(), m["target"].clone()))
        .collect();
    assert_eq!(
        targets.keys().map(String::as_str).collect::<Vec<_>>(),
        ["credit_officer", "jdoe", "jdoe2"]
    );
    assert_eq!(targets["jdoe"], json!(1500));

    let changes = &trail["change"];
    assert_eq!(changes.len(), 3, "{changes:?}");
    for change in changes {
        assert_eq!(change.kind, "change");
        assert_fixture_caller(change);
        let r = &change.record;
        assert_eq!(r["reason"], "e2e", "{change:?}");
        assert_eq!(r["source"], "allocate", "{change:?}");
        assert_eq!(r["request_id"], applied["request_id"], "{change:?}");
        assert_eq!(r["matches_plan"], true, "{change:?}");
        assert_eq!(r["observed"]["assigned"], r["planned"], "{change:?}");
        assert_eq!(
            r["planned"],
            targets[r["username"].as_str().unwrap()],
            "the change set what the intent announced: {change:?}"
        );
        for plain in ["username", "source", "request_id"] {
            assert_eq!(
                change.attrs.get(plain).and_then(|v| v.as_s().ok()).map(String::as_str),
                r[plain].as_str(),
                "{plain}: {change:?}"
            );
        }
    }
    let jdoe_change = &changes_of(&trail, "jdoe")[0].record;
    assert_eq!(jdoe_change["before"]["assigned"], json!(1000));
    assert_eq!(jdoe_change["planned"], json!(1500));
    // The request's head is done and the org-wide lock is released.
    let scope = Scope::of_key(Some(ACCOUNT), PRINCIPAL_ID, "e2e-key-1");
    let head_item = head(&world, &scope)
        .await
        .expect("the request is kept under its caller-scoped key");
    assert_eq!(attr(&head_item, "status"), Some("done"), "{head_item:?}");
    assert_lock_free(&world).await;
    assert_eq!(
        world.ledger_where("BUDGET").await.len(),
        1,
        "the grant is on the day's budget"
    );

    // The same key and body again (API Gateway gives the retry a request id of its own): the
    // first response, no second write.
    let again = world
        .invoke("allocate", &request(&applied_body, Some("e2e-key-1")))
        .await;
    let (status, replay) = response(&again);
    assert_eq!(status, 200);
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(replay["members"], applied["members"]);
    assert_eq!(
        replay["request_id"], applied["request_id"],
        "the first answer, replayed"
    );
    assert_eq!(world.sim.allocation_calls().len(), 1, "replay writes nothing");
    // The same key with another body: 409, no write.
    let (status, conflict) = response(
        &world
            .invoke(
                "allocate",
                &request(&applied_body.replace("1500", "1600"), Some("e2e-key-1")),
            )
            .await,
    );
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["code"], "idempotency_key_reused", "{conflict}");
    assert_eq!(world.sim.allocation_calls().len(), 1);
    let trail = audit(&world).await;
    assert_eq!(
        (trail["intent"].len(), trail["change"].len()),
        (1, 3),
        "no audit for a replay or a refusal"
    );

    // Keys are scoped per caller: another principal sending the same key and body is a request
    // of its own, not alice's answer replayed (jdoe is already at 1500; jdoe2 gets +100 again).
    let jdoe2_before = world.sim.member("jdoe2").unwrap().allocation.unwrap();
    let (status, other) = response(
        &world
            .invoke("allocate", &as_other_caller(request(&applied_body, Some("e2e-key-1"))))
            .await,
    );
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["request_id"], applied["request_id"], "{other}");
    assert_eq!(other["caller_identity"]["principal_id"], "AROAOTHERROLEID:bob");
    assert_eq!(status_of(&other, "jdoe"), "skipped", "{other}");
    assert_eq!(status_of(&other, "jdoe2"), "assigned", "{other}");
    assert_eq!(
        world.sim.member("jdoe2").unwrap().allocation,
        Some(jdoe2_before + 100.0)
    );
    assert_eq!(world.sim.allocation_calls().len(), 2);
    let bob = audit(&world).await;
    let bob_changes = changes_of(&bob, "jdoe2");
    assert_eq!(bob_changes.len(), 2, "{bob_changes:?}");
    assert!(
        bob_changes
            .iter()
            .any(|c| c.record["caller"]["principal_id"] == "AROAOTHERROLEID:bob"
                && c.record["caller"]["account"] == "444455556666"),
        "{bob_changes:?}"
    );

    // The critical policy: every critical member topped up to 200 available.
    // Critical by the alert rule, applied to the simulator's state here: strictly below
    // 10 % of the allocation left (or overspent), for limited, enabled, non-viewer members.
    let critical: BTreeMap<String, f64> = world
        .sim
        .members()
        .into_iter()
        .filter(|m| match m.allocation {
            Some(assigned) if !m.disabled && m.user_type != "viewerUT" => {
                m.available_credits < 0.0 || (assigned > 0.0 && m.available_credits * 100.0 < 10.0 * assigned)
            }
            _ => false,
        })
        .map(|m| (m.username, m.available_credits))
        .collect();
    let (status, policy) = response(
        &world
            .invoke(
                "allocate",
                &request(
                    r#"{"policy":"critical","top_up_to":200,"dry_run":false,"reason":"policy"}"#,
                    Some("e2e-key-2"),
                ),
            )
            .await,
    );
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["policy"], json!({"name": "critical", "top_up_to": 200}));
    let listed: BTreeSet<&str> = policy["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        critical.keys().map(String::as_str).collect(),
        "the policy selects exactly the critical members"
    );
    let topped: Vec<&str> = policy["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "assigned")
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    let below_target: Vec<&str> = critical
        .iter()
        .filter(|(_, available)| **available < 200.0)
        .map(|(u, _)| u.as_str())
        .collect();
    assert_eq!(
        topped, below_target,
        "critical members below 200 available are topped up: {policy}"
    );
    assert!(topped.contains(&"overspent") && !listed.contains("jdoe2"), "{policy}");
    for u in &topped {
        let m = world.sim.member(u).unwrap();
        assert!((m.available_credits - 200.0).abs() < 1e-6, "{u}: {m:?}");
        assert_eq!(line(&policy, u)["after"]["available"], json!(200), "{u}: {policy}");
    }
    assert_eq!(
        world.sim.member("unlimited_analyst").unwrap().allocation,
        None,
        "unlimited members are never topped up by a policy"
    );
    let trail = audit(&world).await;
    let policy_changes: Vec<&AuditItem> = trail["change"]
        .iter()
        .filter(|c| c.record["request_id"] == policy["request_id"])
        .collect();
    assert_eq!(policy_changes.len(), topped.len(), "{policy_changes:?}");
    assert!(policy_changes.iter().all(|c| c.record["reason"] == "policy"));
    assert_lock_free(&world).await;
    assert!(!function.output().contains(portal_sim::generate::ADMIN_PASSWORD));
}

/// A request that changes allocations must carry an Idempotency-Key: without one it is a 400
/// naming the header, and nothing is read from or written to ArcGIS or the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_an_idempotency_key_is_refused_and_writes_nothing() {
    let world = World::new(generate(&GenParams::new(40, 13, chrono::Utc::now().date_naive()))).await;
    let _function = world.start("allocate", &[]);
    for body in [
        r#"{"allocations":[{"username":"jdoe","set":1500}],"reason":"no key"}"#,
        r#"{"allocations":[{"username":"jdoe","add":10}],"dry_run":false}"#,
        r#"{"policy":"critical","top_up_to":200}"#,
    ] {
        let (status, reply) = response(&world.invoke("allocate", &request(body, None)).await);
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["code"], "invalid_request", "{reply}");
        assert!(
            reply["problems"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["field"] == "Idempotency-Key")),
            "{body}: the problem names Idempotency-Key: {reply}"
        );
    }
    // A key that is present but unusable is named too.
    let long_key = "k".repeat(300);
    for key in ["", "   ", long_key.as_str(), "clé-unicode"] {
        let (status, reply) = response(
            &world
                .invoke(
                    "allocate",
                    &request(r#"{"allocations":[{"username":"jdoe","set":1500}]}"#, Some(key)),
                )
                .await,
        );
        assert_eq!(status, 400, "{key:?}: {reply}");
        assert!(reply.to_string().contains("Idempotency-Key"), "{key:?}: {reply}");
    }
    assert_eq!(world.sim.total_requests(), 0, "nothing was asked of ArcGIS");
    assert!(world.sim.writes().is_empty());
    assert!(world.ledger().await.is_empty(), "nothing in the ledger");
    assert_eq!(world.sim.member("jdoe").unwrap().allocation, Some(1000.0));
}

/// Thirty-odd distinct bad requests: each a 4xx that names the problem, none writes to ArcGIS
/// or leaves anything in the ledger. Each carries an Idempotency-Key of its own, so what is
/// refused is the request itself (the missing key has its own test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_a_4xx_naming_the_problem_and_writes_nothing() {
    let world = World::new(generate(&GenParams::new(60, 9, chrono::Utc::now().date_naive()))).await;
    // The reserve leaves 500 credits to promise: an increase of 600 breaks only org_reserve.
    // What is promised is what every limited member may still spend (overspent ones: 0).
    let promised: f64 = world
        .sim
        .members()
        .iter()
        .filter(|m| m.allocation.is_some())
        .map(|m| m.available_credits.max(0.0))
        .sum();
    let unpromised = world.sim.org().available_credits - promised;
    let reserve = (unpromised.floor() - 500.0).max(0.0).to_string();
    let _function = world.start(
        "allocate",
        &[
            ("MAX_MEMBERS_PER_REQUEST", "3"),
            ("MAX_CREDITS_PER_MEMBER", "1000"),
            ("MAX_CREDITS_PER_PLAN", "1500"),
            ("MAX_CREDITS_PER_DAY", "1200"),
            ("ORG_RESERVE_CREDITS", &reserve),
        ],
    );
    let long_name = "x".repeat(200);
    let long_reason = "r".repeat(600);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "JSON"),
        ("".into(), "body"),
        ("[]".into(), "object"),
        ("{}".into(), "allocations"),
        (r#"{"allocations":[]}"#.into(), "empty"),
        (r#"{"allocations":[{"username":"jdoe","set":1}],"policy":"critical","top_up_to":5}"#.into(), "policy"),
        (r#"{"allocations":[{"username":"jdoe","set":1}],"surprise":true}"#.into(), "surprise"),
        (r#"{"allocations":[{"username":"jdoe","set":1,"colour":"red"}]}"#.into(), "colour"),
        (r#"{"allocations":[{"username":"jdoe"}]}"#.into(), "set"),
        (r#"{"allocations":[{"username":"jdoe","set":1,"add":2}]}"#.into(), "exactly one"),
        (r#"{"allocations":[{"set":1}]}"#.into(), "username"),
        (r#"{"allocations":[{"username":"","set":1}]}"#.into(), "username"),
        (r#"{"allocations":[{"username":"   ","set":1}]}"#.into(), "username"),
        (r#"{"allocations":[{"username":"j doe","set":1}]}"#.into(), "j doe"),
        (r#"{"allocations":[{"username":"jdoe\u0007","set":1}]}"#.into(), "username"),
        (r#"{"allocations":[{"username":"jdoe;drop","set":1}]}"#.into(), "jdoe;drop"),
        (format!(r#"{{"allocations":[{{"username":"{long_name}","set":1}}]}}"#), "128"),
        (r#"{"allocations":[{"username":"jdoe","set":-5}]}"#.into(), "jdoe"),
        (r#"{"allocations":[{"username":"jdoe","add":-1}]}"#.into(), "jdoe"),
        (r#"{"allocations":[{"username":"jdoe","set":"NaN"}]}"#.into(), "jdoe"),
        (r#"{"allocations":[{"username":"jdoe","set":"100"}]}"#.into(), "jdoe"),
        (r#"{"allocations":[{"username":"jdoe","set":1e12}]}"#.into(), "jdoe"),
        (r#"{"allocations":[{"username":"jdoe","top_up_to":null}]}"#.into(), "jdoe"),
        (r#"{"allocations":[{"username":"jdoe","set":1},{"username":"jdoe","add":1}]}"#.into(), "listed twice"),
        (r#"{"allocations":[{"username":"a","set":1},{"username":"b","set":1},{"username":"c","set":1},{"username":"d","set":1}]}"#.into(), "3"),
        (r#"{"policy":"everyone","top_up_to":5}"#.into(), "everyone"),
        (r#"{"policy":"critical"}"#.into(), "top_up_to"),
        (r#"{"policy":"critical","top_up_to":-3}"#.into(), "top_up_to"),
        (format!(r#"{{"allocations":[{{"username":"jdoe","set":1}}],"reason":"{long_reason}"}}"#), "reason"),
        (r#"{"allocations":[{"username":"jdoe","set":1}],"dry_run":"yes"}"#.into(), "dry_run"),
        (r#"{"allocations":[{"username":"jdoe","set":1.0000001}]}"#.into(), "jdoe"),
    ];
    assert!(cases.len() >= 30);
    for (n, (body, names)) in cases.iter().enumerate() {
        let key = format!("bad-{n}");
        let (status, reply) = response(&world.invoke("allocate", &request(body, Some(&key))).await);
        assert_eq!(status, 400, "{body}: {status} {reply}");
        let text = reply.to_string();
        assert!(
            text.to_lowercase().contains(&names.to_lowercase()),
            "{body}: the error does not name '{names}': {text}"
        );
    }
    // Well-formed requests the guardrails refuse after reading the org: 422, each naming its
    // guardrail in `problems[].guardrail`, with the numbers in the message.
    // `alone`: the request breaks no other guardrail.
    let guarded = [
        (
            r#"{"allocations":[{"username":"jdoe","add":5000}]}"#,
            "max_per_member",
            "5000",
            false,
        ),
        (
            r#"{"allocations":[{"username":"jdoe","add":800},{"username":"jdoe2","add":800}]}"#,
            "max_per_plan",
            "1600",
            false,
        ),
        (
            r#"{"allocations":[{"username":"jdoe","add":700},{"username":"jdoe2","add":600}]}"#,
            "max_per_day",
            "1200",
            false,
        ),
        (
            r#"{"allocations":[{"username":"jdoe","add":600}]}"#,
            "org_reserve",
            "600",
            true,
        ),
        (
            r#"{"allocations":[{"username":"unlimited_analyst","set":100}]}"#,
            "unlimited_change",
            "unlimited_analyst",
            true,
        ),
    ];
    for (n, (body, guardrail, figure, alone)) in guarded.iter().enumerate() {
        let key = format!("guarded-{n}");
        let (status, reply) = response(&world.invoke("allocate", &request(body, Some(&key))).await);
        assert_eq!(status, 422, "{body}: {reply}");
        assert_eq!(reply["code"], "guardrail_breach", "{reply}");
        let problems = reply["problems"].as_array().cloned().unwrap_or_default();
        let problem = problems
            .iter()
            .find(|p| p["guardrail"] == *guardrail)
            .unwrap_or_else(|| panic!("{body}: no {guardrail} problem in {reply}"));
        assert!(
            problem["problem"].as_str().is_some_and(|t| t.contains(figure)),
            "{body}: the {guardrail} problem does not say {figure}: {problem}"
        );
        if *alone {
            assert_eq!(problems.len(), 1, "{body}: {reply}");
        }
    }
    // A dry run is held to the same guardrails.
    let (status, reply) = response(
        &world
            .invoke(
                "allocate",
                &request(
                    r#"{"allocations":[{"username":"jdoe","add":600}],"dry_run":true}"#,
                    None,
                ),
            )
            .await,
    );
    assert_eq!(status, 422, "a dry run is checked against the guardrails too: {reply}");
    // Transport-level problems: wrong method, wrong path, wrong content type, no identity.
    let mut get = request(r#"{"allocations":[{"username":"jdoe","set":1}]}"#, None);
    get["requestContext"]["http"]["method"] = json!("GET");
    assert_eq!(response(&world.invoke("allocate", &get).await).0, 405);
    let mut path = request(r#"{"allocations":[{"username":"jdoe","set":1}]}"#, None);
    path["rawPath"] = json!("/elsewhere");
    path["requestContext"]["http"]["path"] = json!("/elsewhere");
    assert_eq!(response(&world.invoke("allocate", &path).await).0, 404);
    let mut ctype = request(r#"{"allocations":[{"username":"jdoe","set":1}]}"#, None);
    ctype["headers"]["content-type"] = json!("text/plain");
    assert_eq!(response(&world.invoke("allocate", &ctype).await).0, 415);
    let mut anonymous = fixture("apigw-v2-allocations-anonymous.json");
    anonymous["body"] = json!(r#"{"allocations":[{"username":"jdoe","set":1}]}"#);
    let status = response(&world.invoke("allocate", &anonymous).await).0;
    assert!(status == 401 || status == 403, "no caller identity: {status}");

    assert!(
        world.sim.writes().is_empty(),
        "no bad request wrote to ArcGIS: {:?}",
        world.sim.writes()
    );
    assert!(
        world.ledger().await.is_empty(),
        "a refused request leaves nothing in the ledger (claim given back, lock released): {:?}",
        world.ledger().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_allocation_answers_202_and_the_worker_applies_it_once_from_the_queue() {
    let world = World::new(generate(&GenParams::new(150, 5, chrono::Utc::now().date_naive()))).await;
    let queue = Queue::create().await;
    let _api = world.start(
        "allocate",
        &[("ALLOCATION_QUEUE_URL", &queue.url), ("ASYNC_ABOVE_MEMBERS", "2")],
    );
    let _worker = world.start("allocation-jobs", &[]);
    let before: Vec<f64> = ["jdoe", "jdoe2", "credit_officer"]
        .iter()
        .map(|u| world.sim.member(u).unwrap().allocation.unwrap())
        .collect();

    let body = r#"{"allocations":[{"username":"jdoe","add":10},{"username":"jdoe2","add":20},{"username":"credit_officer","add":30}],"reason":"e2e async"}"#;
    let accepted = world.invoke("allocate", &request(body, Some("e2e-async-1"))).await;
    let (status, reply) = response(&accepted);
    assert_eq!(status, 202, "{reply}");
    let job_id = reply["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        header(&accepted, "location"),
        Some(format!("/allocations/{job_id}").as_str())
    );
    assert!(
        world.sim.writes().is_empty(),
        "nothing is written before the worker runs"
    );

    let (status, queued) = response(&world.invoke("allocate", &job_status_event(&job_id, "e2e-get-1")).await);
    assert_eq!((status, queued["status"].as_str()), (200, Some("queued")), "{queued}");

    // SQS delivers at least once: the worker gets the same message twice.
    let messages = queue.receive().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        !messages[0].body().unwrap_or_default().contains("jdoe"),
        "no member data in the queue"
    );
    let event = queue.event(&messages);
    for _ in 0..2 {
        let out = world.invoke("allocation-jobs", &event).await;
        assert_eq!(
            queue.settle(&messages, &out).await,
            Vec::<String>::new(),
            "{}",
            out.payload
        );
    }
    assert!(queue.receive().await.is_empty(), "the finished message was deleted");

    for (u, (was, added)) in ["jdoe", "jdoe2", "credit_officer"]
        .iter()
        .zip(before.iter().zip([10.0, 20.0, 30.0]))
    {
        assert_eq!(world.sim.member(u).unwrap().allocation, Some(was + added), "{u}");
    }
    assert_eq!(world.sim.writes().len(), 1, "one assignUserCredits call for the three");
    let changes = world.audit("change").await;
    assert_eq!(changes.len(), 3, "one audit entry per member: {changes:?}");
    assert!(
        changes.iter().all(|c| c["caller"]["principal_id"] == PRINCIPAL_ID),
        "{changes:?}"
    );

    let (status, done) = response(&world.invoke("allocate", &job_status_event(&job_id, "e2e-get-2")).await);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["result_status"], 200, "{done}");
    assert_eq!(done["result"]["summary"]["assigned"], 3, "{done}");
    assert_eq!(done["result"]["reason"], "e2e async");

    // Another caller cannot see the job.
    let (status, hidden) = response(
        &world
            .invoke("allocate", &as_other_caller(job_status_event(&job_id, "e2e-get-3")))
            .await,
    );
    assert_eq!(
        (status, hidden["code"].as_str()),
        (404, Some("no_such_job")),
        "{hidden}"
    );
}
