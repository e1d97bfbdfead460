//! The generator and the state stay consistent: balances equal allocations minus usage.

use std::collections::HashMap;

use portal_sim::{GenParams, UsageRecord, generate, org::micros};

use crate::support::*;

#[test]
fn same_seed_gives_a_byte_identical_org_and_another_seed_does_not() {
    let a = serde_json::to_vec(&generate(&GenParams::new(500, 9, as_of()))).unwrap();
    let b = serde_json::to_vec(&generate(&GenParams::new(500, 9, as_of()))).unwrap();
    let c = serde_json::to_vec(&generate(&GenParams::new(500, 10, as_of()))).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn generated_orgs_are_realistic() {
    let org = generate(&GenParams::new(2000, 3, as_of()));
    assert_eq!(org.members.len(), 2000);
    let mut types: HashMap<&str, usize> = HashMap::new();
    for m in &org.members {
        *types.entry(m.user_type.as_str()).or_default() += 1;
    }
    assert!(
        types.len() >= 5 && types["viewerUT"] > 200 && types["creatorUT"] > 600,
        "{types:?}"
    );
    assert!(
        org.members.iter().filter(|m| m.allocation.is_none()).count() > 300,
        "unlimited members"
    );
    assert!(org.members.iter().filter(|m| m.disabled).count() > 10);
    assert!(
        org.members.iter().any(|m| m.email.is_none()) && org.members.iter().any(|m| m.email.as_deref() == Some(""))
    );
    assert!(org.roles.iter().any(|r| r.has_role_id
        && r.base != "org_admin"
        && r.privileges.iter().any(|p| p == "portal:admin:manageCredits")));
    let stypes: std::collections::BTreeSet<&str> = org.usage.iter().map(|u| u.stype.as_str()).collect();
    assert!(stypes.len() >= 9, "{stypes:?}");
    let first = org.usage.first().unwrap().day;
    let last = org.usage.last().unwrap().day;
    assert!((last - first) / 86_400_000 >= 390, "13 months of daily usage");
    assert!(org.usage.iter().any(|u| u.username.is_none()), "org-level usage");
    let off = generate(&GenParams {
        budgeting: false,
        ..GenParams::new(50, 3, as_of())
    });
    assert_eq!(off.credit_assignments, Some(false));
}

#[tokio::test]
async fn balances_equal_allocation_minus_usage_in_the_budget_period() {
    let h = Harness::new(generate(&GenParams::new(800, 5, as_of()))).await;
    let org = h.sim.org();
    let mut used: HashMap<String, i64> = HashMap::new();
    for r in org.usage.iter().filter(|r| r.day >= org.budget_period_start) {
        if let Some(u) = &r.username {
            *used.entry(u.clone()).or_default() += micros(r.credits);
        }
    }
    let states = h.sim.members();
    let mut edges = (false, false, false);
    for s in &states {
        match s.allocation {
            Some(a) => {
                let expected = (micros(a) - used.get(&s.username).copied().unwrap_or(0)) as f64 / 1e6;
                assert_eq!(s.available_credits, expected, "{}", s.username);
                edges.0 |= s.available_credits * 10.0 == a && a > 0.0;
                edges.1 |= s.available_credits * 2.0 == a && a > 0.0;
                edges.2 |= s.available_credits < 0.0;
            }
            // Unlimited: the org's remaining credits, as a live capture shows.
            None => assert_eq!((s.assigned_credits, s.available_credits), (-1.0, org.available_credits)),
        }
    }
    assert_eq!(
        edges,
        (true, true, true),
        "exactly 10 % left, exactly 50 % left, negative"
    );
    // Served values agree with the state.
    let t = h.admin_token().await;
    let v = h
        .post_json("community/users/edge_10pct", &[("f", "json"), ("token", &t)])
        .await;
    assert_eq!(
        (v["assignedCredits"].as_f64(), v["availableCredits"].as_f64()),
        (Some(300.0), Some(30.0))
    );
}

#[tokio::test]
async fn reset_restores_the_fixture_and_forgets_the_records() {
    let h = Harness::small().await;
    let pristine = h.sim.members();
    let t = h.admin_token().await;
    h.post_json(
        "portals/self/assignUserCredits",
        &[
            ("f", "json"),
            ("token", &t),
            ("userAssignments", r#"[{"username":"jdoe","credits":1}]"#),
        ],
    )
    .await;
    h.post_json(
        "portals/self/createNotification",
        &[
            ("f", "json"),
            ("token", &t),
            ("notificationChannelType", "email"),
            ("subject", "s"),
            ("message", "m"),
            ("users", "jdoe"),
        ],
    )
    .await;
    h.sim
        .consume(UsageRecord {
            day: h.sim.org().as_of,
            username: Some("jdoe2".into()),
            stype: "geocode".into(),
            etype: "geocodecnt".into(),
            credits: 3.0,
            num: 1,
        })
        .unwrap();
    assert_ne!(h.sim.members(), pristine);
    h.sim.reset();
    assert_eq!(h.sim.members(), pristine);
    assert!(h.sim.notifications().is_empty() && h.sim.allocation_calls().is_empty() && h.sim.requests().is_empty());
    let v = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert_eq!(error_code(&v), 498, "tokens are forgotten too");
}

#[tokio::test]
async fn the_request_log_never_holds_secrets() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    h.http
        .post(h.url("portals/self"))
        .header("X-Esri-Authorization", format!("Bearer {t}"))
        .form(&[("f", "json")])
        .send()
        .await
        .unwrap();
    h.post_json(
        "oauth2/token",
        &[
            ("f", "json"),
            ("client_id", portal_sim::generate::APP_CLIENT_ID),
            ("client_secret", portal_sim::generate::APP_CLIENT_SECRET),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    let log = serde_json::to_string(&h.sim.requests()).unwrap();
    for secret in [
        t.as_str(),
        portal_sim::generate::ADMIN_PASSWORD,
        portal_sim::generate::APP_CLIENT_SECRET,
    ] {
        assert!(!log.contains(secret), "the log holds a secret");
    }
    assert!(log.contains("[redacted]"));
    assert_eq!(h.sim.request_count("portals/self"), 2);
    assert!(
        h.sim
            .requests()
            .iter()
            .filter(|r| r.endpoint == "portals/self")
            .all(|r| r.authenticated)
    );
}
