//! allocate end to end: API Gateway HTTP API v2 events (shaped like AWS's, from the fixture)
//! into the real binary; effects read from portal-sim and the ledger table.

use portal_sim::{GenParams, generate};
use serde_json::{Value, json};

use crate::support::*;

/// The IAM-authorized fixture with another body, and optionally another idempotency key.
fn request(body: &str, idempotency_key: Option<&str>) -> Value {
    let mut event = fixture("apigw-v2-allocations-iam.json");
    event["body"] = json!(body);
    event["headers"]["content-length"] = json!(body.len().to_string());
    match idempotency_key {
        Some(k) => event["headers"]["idempotency-key"] = json!(k),
        None => {
            event["headers"].as_object_mut().unwrap().remove("idempotency-key");
        }
    }
    event
}

/// The HTTP response the function returned: (status, parsed body).
fn response(out: &testkit::lambda::Invocation) -> (u16, Value) {
    assert!(out.function_error.is_none(), "the function failed: {}", out.payload);
    let status = out.payload["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("no statusCode in {}", out.payload)) as u16;
    let body = out.payload["body"].as_str().unwrap_or("null");
    (status, serde_json::from_str(body).unwrap_or_else(|_| json!(body)))
}

fn status_of<'a>(body: &'a Value, username: &str) -> &'a str {
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["username"] == username)
        .unwrap_or_else(|| panic!("{username} missing: {body}"))["status"]
        .as_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_sets_adds_tops_up_and_replays_idempotently() {
    let world = World::new(generate(&GenParams::new(150, 5, chrono::Utc::now().date_naive()))).await;
    let function = world.start("allocate", &[]);
    let jdoe = world.sim.member("jdoe").unwrap();
    let jdoe2 = world.sim.member("jdoe2").unwrap();
    let officer = world.sim.member("credit_officer").unwrap();

    // Dry run: the plan, nothing written.
    let body = r#"{"allocations":[{"username":"jdoe","set":1500},{"username":"jdoe2","add":100},{"username":"credit_officer","top_up_to":450},{"username":"nobody_here","set":5}],"dry_run":true,"reason":"e2e"}"#;
    let (status, plan) = response(&world.invoke("allocate", &request(body, None)).await);
    assert_eq!(status, 200, "{plan}");
    assert_eq!(status_of(&plan, "jdoe"), "would_assign");
    assert_eq!(status_of(&plan, "nobody_here"), "unknown_user");
    assert!(world.sim.writes().is_empty(), "a dry run writes nothing");
    assert!(world.ledger_where("AUDIT").await.is_empty());

    // Applied, with an idempotency key.
    let applied_body = body.replace("\"dry_run\":true", "\"dry_run\":false");
    let event = request(&applied_body, Some("e2e-key-1"));
    let (status, applied) = response(&world.invoke("allocate", &event).await);
    assert_eq!(status, 200, "{applied}");
    for u in ["jdoe", "jdoe2", "credit_officer"] {
        assert_eq!(status_of(&applied, u), "assigned", "{applied}");
    }
    assert_eq!(status_of(&applied, "nobody_here"), "unknown_user");
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
    assert_eq!(world.sim.allocation_calls().len(), 1, "one assignUserCredits call");
    // Audited: one entry per applied change, with the caller from the IAM authorizer.
    let audit = world.ledger_where("AUDIT").await;
    assert_eq!(audit.len(), 3);
    assert!(
        audit
            .iter()
            .all(|a| attr(a, "caller").is_some_and(|c| c.contains("alice"))),
        "{audit:?}"
    );
    assert!(audit.iter().all(|a| attr(a, "reason") == Some("e2e")));

    // The same key and body again: the first response, no second write.
    let (status, replay) = response(&world.invoke("allocate", &event).await);
    assert_eq!(status, 200);
    assert_eq!(replay["members"], applied["members"]);
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
    assert_eq!(world.sim.allocation_calls().len(), 1);

    // The notebook's step 6 as a policy: every critical member topped up to 200 available.
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
    )
    .clone();
    assert_eq!(status, 200, "{policy}");
    let topped: Vec<&str> = policy["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "assigned")
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert!(
        topped.contains(&"overspent")
            && topped.contains(&"jdoe2") == (world.sim.member("jdoe2").unwrap().available_credits >= 200.0 - 1e-6)
    );
    for u in &topped {
        let m = world.sim.member(u).unwrap();
        assert!((m.available_credits - 200.0).abs() < 1e-6, "{u}: {m:?}");
    }
    assert_eq!(
        world.sim.member("unlimited_analyst").unwrap().allocation,
        None,
        "unlimited members are never topped up by a policy"
    );
    assert!(!function.output().contains(portal_sim::generate::ADMIN_PASSWORD));
}

/// Thirty-odd distinct bad requests: each a 4xx that names the problem, none writes to ArcGIS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_a_4xx_naming_the_problem_and_writes_nothing() {
    let world = World::new(generate(&GenParams::new(60, 9, chrono::Utc::now().date_naive()))).await;
    let _function = world.start(
        "allocate",
        &[("MAX_MEMBERS_PER_REQUEST", "3"), ("MAX_CREDITS_PER_MEMBER", "1000")],
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
        (r#"{"allocations":[{"username":"jdoe","add":5000}]}"#.into(), "max_per_member"),
        (r#"{"allocations":[{"username":"unlimited_analyst","set":100}]}"#.into(), "unlimited"),
    ];
    assert!(cases.len() >= 30);
    for (body, names) in &cases {
        let (status, reply) = response(&world.invoke("allocate", &request(body, None)).await);
        assert!((400..500).contains(&status), "{body}: {status} {reply}");
        let text = reply.to_string();
        assert!(
            text.to_lowercase().contains(&names.to_lowercase()),
            "{body}: the error does not name '{names}': {text}"
        );
    }
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
    assert!(world.ledger_where("AUDIT").await.is_empty());
}
