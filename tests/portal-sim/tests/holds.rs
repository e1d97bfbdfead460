//! Hold points: a request parked before or after processing, released, or abandoned by its
//! client. Synchronisation is by `Hold::reached` / `Hold::settled`, never by sleeping.

use portal_sim::{Hold, HoldPhase, HoldSpec, HoldStatus, RequestRecord};
use serde_json::{Value, json};

use crate::support::*;

const ASSIGN: &str = "portals/self/assignUserCredits";
const UNASSIGN: &str = "portals/self/unassignUserCredits";

fn spec(endpoint: &str, nth: u64, phase: HoldPhase) -> HoldSpec {
    HoldSpec {
        endpoint: endpoint.into(),
        nth,
        phase,
    }
}

fn record(h: &Harness, seq: u64) -> Option<RequestRecord> {
    h.sim.requests().into_iter().find(|r| r.seq == seq)
}

fn allocation(h: &Harness, username: &str) -> Option<f64> {
    h.sim.member(username).unwrap().allocation
}

/// Starts `assignUserCredits` setting jdoe to 321 in a task, held by `hold`; returns the
/// request task and the held request's sequence number.
async fn held_assign(
    h: &Harness,
    token: &str,
    hold: &Hold,
) -> (tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>, u64) {
    let assignments = one_assignment("jdoe", "321");
    let request = h.spawn_post(ASSIGN, &assign_form(token, &assignments));
    let seq = within(hold.reached()).await;
    assert_eq!(hold.status(), HoldStatus::Held { seq });
    (request, seq)
}

#[tokio::test]
async fn held_before_processing_the_world_is_unchanged_until_release() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let before = allocation(&h, "jdoe");
    let hold = h.sim.hold(spec(ASSIGN, 1, HoldPhase::BeforeProcessing));
    let (request, seq) = held_assign(&h, &t, &hold).await;

    assert_eq!(allocation(&h, "jdoe"), before);
    assert!(h.sim.allocation_calls().is_empty());
    assert!(record(&h, seq).is_none(), "not logged before it is processed");
    let other = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert!(other.get("error").is_none(), "other requests go on meanwhile");

    hold.release();
    let reply = json_of(within(request).await.unwrap().unwrap()).await;
    assert_eq!(reply["success"], true);
    assert_eq!(allocation(&h, "jdoe"), Some(321.0));
    let rec = record(&h, seq).unwrap();
    assert_eq!(
        (rec.outcome.as_str(), rec.held.as_slice()),
        ("ok", ["before".to_string()].as_slice())
    );
    assert_eq!(hold.status(), HoldStatus::Resumed { seq });
}

/// On a multi-threaded runtime, as the fault matrix runs: the disconnect is noticed from
/// another thread than the one that parked the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_held_before_processing_is_never_processed() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let before = allocation(&h, "jdoe");
    let hold = h.sim.hold(spec(ASSIGN, 1, HoldPhase::BeforeProcessing));
    let (request, seq) = held_assign(&h, &t, &hold).await;

    request.abort(); // the function process is killed: its connection closes
    assert_eq!(within(hold.settled()).await, HoldStatus::Abandoned { seq });
    hold.release(); // too late: there is nothing left to process

    let other = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert!(other.get("error").is_none(), "the simulator keeps serving");
    assert_eq!(allocation(&h, "jdoe"), before);
    assert!(h.sim.allocation_calls().is_empty() && h.sim.writes().is_empty());
    let rec = record(&h, seq).expect("an abandoned request is logged");
    assert_eq!((rec.outcome.as_str(), rec.status), ("held:before", 499));
    assert_eq!(rec.held, ["before", "abandoned"]);
    assert!(!rec.ok());
}

#[tokio::test]
async fn held_after_processing_the_world_changed_and_the_reply_waits_for_release() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let hold = h.sim.hold(spec(ASSIGN, 1, HoldPhase::AfterProcessing));
    let (request, seq) = held_assign(&h, &t, &hold).await;

    assert_eq!(allocation(&h, "jdoe"), Some(321.0));
    assert_eq!(h.sim.allocation_calls().len(), 1);
    let rec = record(&h, seq).expect("logged when processed");
    assert_eq!(
        (rec.outcome.as_str(), rec.held.as_slice()),
        ("ok", ["after".to_string()].as_slice())
    );
    assert_eq!(h.sim.writes().len(), 1, "a write that happened counts as one");
    assert!(!request.is_finished(), "the reply is withheld");

    hold.release();
    let reply = json_of(within(request).await.unwrap().unwrap()).await;
    assert_eq!(reply["success"], true);
    assert_eq!(hold.status(), HoldStatus::Resumed { seq });
}

#[tokio::test]
async fn a_client_that_leaves_while_its_reply_is_withheld_leaves_the_write_done() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let hold = h.sim.hold(spec(ASSIGN, 1, HoldPhase::AfterProcessing));
    let (request, seq) = held_assign(&h, &t, &hold).await;

    request.abort();
    assert_eq!(within(hold.settled()).await, HoldStatus::Abandoned { seq });
    assert_eq!(allocation(&h, "jdoe"), Some(321.0));
    let rec = record(&h, seq).unwrap();
    assert_eq!(
        (rec.outcome.as_str(), rec.held.as_slice()),
        ("ok", ["after", "abandoned"].map(String::from).as_slice())
    );
}

#[tokio::test]
async fn a_hold_catches_the_nth_matching_request_counted_from_when_it_is_set() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let form = [("f", "json"), ("token", t.as_str())];
    let pre = json_of(h.post("portals/self", &form).await).await;
    assert!(pre.get("error").is_none(), "requests before the hold do not count");
    let hold = h.sim.hold(spec("portals/self", 3, HoldPhase::BeforeProcessing));
    for _ in 0..2 {
        assert_eq!(h.post("portals/self", &form).await.status(), 200);
    }
    assert_eq!(hold.status(), HoldStatus::Waiting);
    let third = h.spawn_post("portals/self", &form);
    let seq = within(hold.reached()).await;
    assert_eq!(h.post("portals/self", &form).await.status(), 200, "the 4th is not held");

    hold.release();
    assert_eq!(within(third).await.unwrap().unwrap().status(), 200);
    let mut seqs: Vec<u64> = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "portals/self")
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs[3], seq, "the third request after the hold was set");
}

#[tokio::test]
async fn two_holds_at_once_release_independently() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let limited = h
        .sim
        .members()
        .into_iter()
        .find(|m| m.allocation.is_some() && m.username != "jdoe")
        .unwrap()
        .username;
    let jdoe_before = allocation(&h, "jdoe");
    let on_assign = h.sim.hold(spec(ASSIGN, 1, HoldPhase::BeforeProcessing));
    let on_unassign = h.sim.hold(spec(UNASSIGN, 1, HoldPhase::AfterProcessing));
    let (assign, _) = held_assign(&h, &t, &on_assign).await;
    let usernames = json!([limited]).to_string();
    let unassign = h.spawn_post(UNASSIGN, &[("f", "json"), ("token", &t), ("usernames", &usernames)]);
    within(on_unassign.reached()).await;
    assert_eq!(allocation(&h, &limited), None, "the unassign was processed");
    assert_eq!(allocation(&h, "jdoe"), jdoe_before, "the assign was not");

    on_unassign.release();
    let reply = json_of(within(unassign).await.unwrap().unwrap()).await;
    assert_eq!(reply["success"], true);
    assert!(matches!(on_assign.status(), HoldStatus::Held { .. }), "still held");

    on_assign.release();
    assert_eq!(within(assign).await.unwrap().unwrap().status(), 200);
    assert_eq!(allocation(&h, "jdoe"), Some(321.0));
    let kinds: Vec<String> = h.sim.allocation_calls().into_iter().map(|c| c.kind).collect();
    assert_eq!(kinds, ["unassign", "assign"], "applied in release order");
}

#[tokio::test]
async fn one_request_can_be_held_before_and_after_processing() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let before = h.sim.hold(spec(ASSIGN, 1, HoldPhase::BeforeProcessing));
    let after = h.sim.hold(spec(ASSIGN, 1, HoldPhase::AfterProcessing));
    let (request, seq) = held_assign(&h, &t, &before).await;
    assert_eq!(after.status(), HoldStatus::Waiting);
    before.release();
    assert_eq!(within(after.reached()).await, seq);
    assert_eq!(allocation(&h, "jdoe"), Some(321.0));
    after.release();
    assert_eq!(within(request).await.unwrap().unwrap().status(), 200);
    assert_eq!(record(&h, seq).unwrap().held, ["before", "after"]);
}

#[tokio::test]
async fn stopping_the_simulator_abandons_held_requests() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let hold = h.sim.hold(spec(ASSIGN, 1, HoldPhase::BeforeProcessing));
    let observer = hold.clone();
    let (request, seq) = held_assign(&h, &t, &hold).await;
    drop(hold);
    drop(h);
    assert_eq!(within(observer.settled()).await, HoldStatus::Abandoned { seq });
    let answered = within(request).await.unwrap();
    let body = match answered {
        Ok(r) => r.text().await.ok(),
        Err(_) => None,
    };
    assert!(body.is_none(), "no reply: the connection is dropped");
}

#[tokio::test]
async fn the_control_api_sets_awaits_and_releases_holds() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let base = h.sim.base_url();
    let add = |body: Value| h.http.post(format!("{base}/_sim/holds")).json(&body).send();
    let r = add(json!({"endpoint": ASSIGN, "nth": 0, "phase": "before_processing"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "nth is 1-based");
    let r = add(json!({"endpoint": ASSIGN, "nth": 1, "phase": "before_processing"}))
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_u64().unwrap();

    let assignments = one_assignment("jdoe", "321");
    let request = h.spawn_post(ASSIGN, &assign_form(&t, &assignments));
    let reached: Value = within(h.http.get(format!("{base}/_sim/holds/{id}/reached")).send())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reached["status"]["state"], "held");
    assert_eq!(reached["endpoint"], ASSIGN);
    let listed: Value = h
        .http
        .get(format!("{base}/_sim/holds"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["status"], reached["status"]);

    let r = h
        .http
        .post(format!("{base}/_sim/holds/{id}/release"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(within(request).await.unwrap().unwrap().status(), 200);
    assert_eq!(allocation(&h, "jdoe"), Some(321.0));
    let r = h
        .http
        .get(format!("{base}/_sim/holds/99/reached"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
