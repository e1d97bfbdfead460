//! The complete member listing: no cap, each member once, ceil(N/100) + constant requests.

use std::collections::{BTreeMap, HashSet};

use portal_sim::{EnvelopeFault, Faults, Trigger};
use shared::arcgis::{ClientConfig, Error, ListingProblem};
use shared::credits::member::{Balance, Credits};

use crate::support::{admin, admin_client, client, config_with, sim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_25000_member_org_is_listed_completely_each_member_once() {
    let sim = sim(25_000).await;
    let expected = sim.members();
    assert_eq!(expected.len(), 25_000);
    let client = admin_client(&sim);

    let list = client.list_members().await.expect("listing succeeds");

    assert!(list.is_complete(), "{:?}", list.problems);
    assert_eq!(list.reported_total, 25_000);
    assert_eq!(list.members.len(), 25_000);
    assert_eq!(list.pages, 250);
    assert_eq!(list.duplicates_dropped, 0);
    let unique: HashSet<&str> = list.members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(unique.len(), 25_000, "each member exactly once");
    assert!(
        list.members.windows(2).all(|w| w[0].username < w[1].username),
        "deterministic username order"
    );

    // Same balances as the simulator holds (the -1 sentinel read as unlimited), to the
    // micro-credit: what was consumed is exactly assigned − available.
    let exact = |x: f64| Credits::from_f64(x).expect("the simulator serves finite amounts");
    let truth: BTreeMap<&str, _> = expected.iter().map(|m| (m.username.as_str(), m)).collect();
    for m in &list.members {
        let t = truth[m.username.as_str()];
        match m.balance {
            Balance::Unlimited => assert_eq!(t.assigned_credits, -1.0, "{}", m.username),
            Balance::Limited { assigned, available } => {
                assert_eq!(
                    (assigned, available),
                    (exact(t.assigned_credits), exact(t.available_credits)),
                    "{}",
                    m.username
                );
                assert_eq!(m.balance.consumed(), Some(exact(t.consumed)), "{}", m.username);
            }
        }
        assert_eq!(m.disabled, t.disabled);
    }

    // Request count: 250 pages + 1 sign-in, nothing per member.
    assert_eq!(sim.request_count("portals/self/users"), 250);
    assert_eq!(sim.request_count("community/users/{user}"), 0);
    assert_eq!(sim.request_count("generateToken"), 1);
    assert!(client.requests_made() <= 250 + 3, "{} requests", client.requests_made());
    // Every request asks for JSON; tokens travel in the header, never as a parameter (so
    // never in a URL).
    let log = sim.requests();
    assert!(
        log.iter()
            .all(|r| r.params.iter().any(|(k, v)| k == "f" && v == "json"))
    );
    assert!(log.iter().all(|r| r.params.iter().all(|(k, _)| k != "token")));
    assert!(
        log.iter()
            .filter(|r| r.endpoint != "generateToken")
            .all(|r| r.authenticated && r.method == "GET")
    );
}

#[tokio::test]
async fn token_expiry_in_the_middle_of_a_listing_re_signs_in_and_completes() {
    let sim = sim(3_000).await;
    let client = admin_client(&sim);
    // Sign in first, then let every token die after 12 more requests (mid-listing).
    client.org_properties().await.expect("org properties");
    sim.set_faults(Faults {
        expire_tokens_after: Some(12),
        ..Faults::default()
    });

    let list = client.list_members().await.expect("listing survives token expiry");

    assert!(list.is_complete(), "{:?}", list.problems);
    assert_eq!(list.members.len(), 3_000);
    assert_eq!(
        sim.request_count("generateToken"),
        2,
        "one re-sign-in, shared by concurrent pages"
    );
    let rejected = sim.requests().iter().filter(|r| r.outcome == "error:498").count() as u64;
    assert!((1..=8).contains(&rejected), "{rejected} pages rejected (≤ concurrency)");
    assert_eq!(sim.request_count("portals/self/users"), 30 + rejected);
}

#[tokio::test]
async fn members_without_credit_fields_fall_back_to_exact_lookup_and_one_failure_is_reported() {
    let sim = sim(250).await;
    sim.update_behaviour(|b| b.list_includes_credits = false);
    let victim = sim.members()[100].username.clone();
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: Some(victim.clone()),
            code: 500,
            message: "Unable to load user.".into(),
            when: Trigger::default(),
        }),
        ..Faults::default()
    });
    let client = admin_client(&sim);

    let list = client.list_members().await.expect("a per-member failure is not fatal");

    assert_eq!(list.members.len(), 249);
    assert!(list.members.iter().all(|m| m.username != victim));
    match list.problems.as_slice() {
        [ListingProblem::Lookup { username, error }] => {
            assert_eq!(username, &victim);
            let api = error.api().expect("the envelope is kept");
            assert_eq!(api.code, Some(500));
            assert!(error.to_string().contains(&victim), "{error}");
        }
        other => panic!("expected one lookup problem, got {other:?}"),
    }
    // 3 pages + 250 lookups + sign-in + one portals/self for the org id.
    assert_eq!(sim.request_count("portals/self/users"), 3);
    assert_eq!(sim.request_count("community/users/{user}"), 250);
    assert_eq!(client.requests_made(), 3 + 250 + 2);
}

#[tokio::test]
async fn a_page_that_keeps_failing_fails_the_listing_instead_of_returning_a_partial_list() {
    let sim = sim(500).await;
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: None,
            code: 400,
            message: "Invalid parameter.".into(),
            when: Trigger {
                endpoint: Some("portals/self/users".into()),
                every_nth: Some(3),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let err = admin_client(&sim).list_members().await.expect_err("no partial list");
    assert!(matches!(err, Error::Api { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("portals/self/users (members from #"),
        "{err}"
    );
}

#[tokio::test]
async fn a_small_org_is_one_page_even_with_concurrency_one() {
    let sim = sim(7).await;
    let config = ClientConfig {
        list_concurrency: 1,
        ..config_with(&sim, admin())
    };
    let list = client(config).list_members().await.expect("listing");
    assert_eq!(list.members.len() as u64, list.reported_total);
    assert!(list.is_complete());
    assert_eq!(list.pages, 1);
}

#[tokio::test]
async fn a_listing_with_the_last_runs_count_is_complete_whether_the_org_is_the_same_size_smaller_or_larger() {
    let sim = sim(450).await;
    let truth: Vec<String> = sim.members().into_iter().map(|m| m.username).collect();
    // (the count the last run recorded, page requests expected)
    for (expected, pages) in [(450, 5), (1000, 10), (120, 5), (0, 5)] {
        let before = sim.request_count("portals/self/users");
        let list = admin_client(&sim)
            .list_members_expecting(Some(expected))
            .await
            .expect("listing succeeds");
        assert!(list.is_complete(), "expecting {expected}: {:?}", list.problems);
        let listed: Vec<&str> = list.members.iter().map(|m| m.username.as_str()).collect();
        assert_eq!(listed, truth, "expecting {expected}: every member once, in order");
        assert_eq!(list.reported_total, 450);
        assert_eq!(
            sim.request_count("portals/self/users") - before,
            pages,
            "expecting {expected}: the same size costs ceil(N/100); a shrunk org the empty pages"
        );
    }
}
