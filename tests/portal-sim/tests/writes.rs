//! The write log (before/after values, application order), latency jitter that makes
//! concurrent writers race, and the refusal of float noise in credits.

use portal_sim::{AllocationCall, AllocationEntry, Faults};
use serde_json::Value;

use crate::support::*;

const ASSIGN: &str = "portals/self/assignUserCredits";

/// Sets jdoe to `credits` (JSON text) and returns the reply.
async fn assign_jdoe(h: &Harness, token: &str, credits: &str) -> Value {
    let assignments = one_assignment("jdoe", credits);
    h.post_json(ASSIGN, &assign_form(token, &assignments)).await
}

/// Asserts the write log replays: each applied entry's `before` is what the previous write
/// to that member left, starting from `start`, and ending at the member's allocation now.
fn assert_replays(h: &Harness, username: &str, start: Option<f64>, calls: &[AllocationCall]) {
    let mut current = start;
    for e in calls.iter().flat_map(|c| &c.entries).filter(|e| e.username == username) {
        assert_eq!(e.before, current, "{e:?}");
        current = e.after;
    }
    assert_eq!(h.sim.member(username).unwrap().allocation, current);
}

#[tokio::test]
async fn the_write_log_records_each_entry_before_and_after_in_application_order() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let start = h.sim.member("jdoe").unwrap().allocation;
    assert_eq!(assign_jdoe(&h, &t, "250").await["success"], true);
    let both = r#"[{"username":"jdoe","credits":"300"},{"username":"ghost","credits":5}]"#;
    h.post_json(ASSIGN, &assign_form(&t, both)).await;
    let unassign = [("f", "json"), ("token", t.as_str()), ("usernames", r#"["jdoe"]"#)];
    h.post_json("portals/self/unassignUserCredits", &unassign).await;
    assign_jdoe(&h, &t, "10.5").await;

    let calls = h.sim.allocation_calls();
    assert_eq!(calls.iter().map(|c| c.order).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(
        calls.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequential: arrival order"
    );
    let entry = |username: &str, applied, before, after| AllocationEntry {
        username: username.into(),
        applied,
        before,
        after,
    };
    assert_eq!(calls[0].entries, [entry("jdoe", true, start, Some(250.0))]);
    assert_eq!(
        calls[1].entries,
        [
            entry("jdoe", true, Some(250.0), Some(300.0)),
            entry("ghost", false, None, Some(5.0))
        ]
    );
    assert_eq!(calls[1].not_assigned, ["ghost"]);
    assert_eq!(calls[2].kind, "unassign");
    assert_eq!(calls[2].entries, [entry("jdoe", true, Some(300.0), None)]);
    assert_eq!(
        calls[3].entries,
        [entry("jdoe", true, None, Some(10.5))],
        "was unlimited"
    );
    assert_eq!(
        calls[1].requested(),
        [("jdoe".to_string(), Some(300.0)), ("ghost".to_string(), Some(5.0))]
    );
    assert_replays(&h, "jdoe", start, &calls);

    let served: Vec<AllocationCall> = h
        .http
        .get(format!("{}/_sim/allocations", h.sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, calls, "the control API serves the same log");
}

#[tokio::test]
async fn without_jitter_sequential_writes_are_applied_in_sending_order() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let start = h.sim.member("jdoe").unwrap().allocation;
    for credits in 1..=10 {
        assign_jdoe(&h, &t, &credits.to_string()).await;
    }
    let calls = h.sim.allocation_calls();
    let sent: Vec<Option<f64>> = (1..=10).map(|c| Some(f64::from(c))).collect();
    assert_eq!(calls.iter().map(|c| c.entries[0].after).collect::<Vec<_>>(), sent);
    assert!(calls.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_replays(&h, "jdoe", start, &calls);
}

/// 50 writers at once with up to 400 ms of jitter: each draws its own delay before
/// processing (0 to 200 ms), far more than the time the 50 take to arrive, so some request
/// is applied before one that arrived earlier. The draws are seeded, so this is not luck
/// that changes between runs.
#[tokio::test]
async fn latency_jitter_makes_concurrent_writers_overtake_each_other() {
    const WRITERS: u64 = 50;
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let start = h.sim.member("jdoe").unwrap().allocation;
    h.sim.set_faults(Faults {
        latency_jitter_ms: 400,
        ..Default::default()
    });
    let writers: Vec<_> = (1..=WRITERS)
        .map(|credits| {
            let assignments = one_assignment("jdoe", &credits.to_string());
            h.spawn_post(ASSIGN, &assign_form(&t, &assignments))
        })
        .collect();
    for w in writers {
        let reply = json_of(within(w).await.unwrap().unwrap()).await;
        assert_eq!(reply["success"], true);
    }

    let calls = h.sim.allocation_calls();
    assert_eq!(calls.len() as u64, WRITERS, "every writer was applied");
    assert!(calls.iter().zip(1..).all(|(c, n)| c.order == n));
    assert!(
        calls.windows(2).any(|w| w[0].seq > w[1].seq),
        "some request was applied before one that arrived earlier: {:?}",
        calls.iter().map(|c| c.seq).collect::<Vec<_>>()
    );
    let logged: Vec<u64> = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == ASSIGN)
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        logged,
        calls.iter().map(|c| c.seq).collect::<Vec<_>>(),
        "the request log agrees"
    );
    assert_replays(&h, "jdoe", start, &calls);
}

#[tokio::test]
async fn credits_with_float_noise_are_refused_and_change_nothing() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let start = h.sim.member("jdoe").unwrap().allocation;
    for noisy in [
        r#""250.10000000000002""#,
        "0.30000000000000004",
        "1e-7",
        r#""0.0000001""#,
    ] {
        let v = assign_jdoe(&h, &t, noisy).await;
        assert_eq!(error_code(&v), 400, "{noisy}: {v}");
        assert!(v.to_string().contains("decimal places"), "{v}");
    }
    let batch = r#"[{"username":"jdoe2","credits":5},{"username":"jdoe","credits":250.10000000000002}]"#;
    assert_eq!(error_code(&h.post_json(ASSIGN, &assign_form(&t, batch)).await), 400);
    assert!(
        h.sim.allocation_calls().is_empty(),
        "nothing applied, not even the valid entry"
    );
    assert_eq!(h.sim.member("jdoe").unwrap().allocation, start);

    for (clean, value) in [
        (r#""250.125""#, 250.125),
        ("0.000001", 0.000001),
        ("2.5e2", 250.0),
        (r#"" 250.1000000 ""#, 250.1),
        ("7", 7.0),
    ] {
        assert_eq!(assign_jdoe(&h, &t, clean).await["success"], true, "{clean}");
        assert_eq!(h.sim.member("jdoe").unwrap().allocation, Some(value), "{clean}");
    }
    for not_a_number in ["null", "true", r#""abc""#, "[1]", "-1"] {
        assert_eq!(
            error_code(&assign_jdoe(&h, &t, not_a_number).await),
            400,
            "{not_a_number}"
        );
    }
}
