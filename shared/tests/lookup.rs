//! Exact member lookup: the jdoe/jdoe2 trap, not-found, outside users, per-member envelopes.

use portal_sim::{EnvelopeFault, Faults, Trigger};
use shared::arcgis::Error;
use shared::credits::member::{Balance, Credits};

use crate::support::{admin_client, sim};

#[tokio::test]
async fn exact_lookup_returns_the_right_member_never_a_near_duplicate() {
    let sim = sim(200).await;
    let client = admin_client(&sim);

    let jdoe = client.member("jdoe").await.expect("jdoe exists");
    assert_eq!(jdoe.username, "jdoe");
    let truth = sim.member("jdoe").expect("in the fixture");
    let exact = |x: f64| Credits::from_f64(x).expect("the simulator serves finite amounts");
    assert_eq!(
        jdoe.balance,
        Balance::Limited {
            assigned: exact(truth.assigned_credits),
            available: exact(truth.available_credits)
        }
    );
    assert_eq!(
        jdoe.balance.consumed(),
        Some(exact(truth.consumed)),
        "assigned − available, exactly"
    );

    let jdoe2 = client.member("jdoe2").await.expect("jdoe2 exists");
    assert_eq!(jdoe2.username, "jdoe2");
    assert_ne!(jdoe.balance, jdoe2.balance);

    // Lookups go to community/users/<name>, never to a search.
    assert_eq!(sim.request_count("community/users"), 0);
    assert_eq!(sim.request_count("portals/self/users/search"), 0);
    assert_eq!(sim.request_count("community/users/{user}"), 2);
}

#[tokio::test]
async fn prefixes_other_cases_and_outside_users_are_not_found() {
    let sim = sim(200).await;
    let client = admin_client(&sim);
    for name in ["jdo", "jdoe_", "JDOE", "jdoe3", "nobody-at-all"] {
        let err = client.member(name).await.expect_err(name);
        match &err {
            Error::NotFound { username, .. } => assert_eq!(username, name),
            other => panic!("{name}: {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("member '{name}' not found")), "{msg}");
        assert!(msg.contains("case-sensitive"), "{msg}");
    }
}

#[tokio::test]
async fn an_error_envelope_for_one_member_is_that_members_error_only() {
    let sim = sim(200).await;
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: Some("jdoe".into()),
            code: 403,
            message: "You do not have permissions to access this resource or perform this operation.".into(),
            when: Trigger::default(),
        }),
        ..Faults::default()
    });
    let client = admin_client(&sim);

    let err = client.member("jdoe").await.expect_err("the envelope");
    let Error::Api { what, http_status, api } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*http_status, 200);
    assert_eq!(api.code, Some(403));
    assert!(what.contains("community/users/jdoe"), "{what}");
    assert!(err.to_string().contains("org administrator"), "says what to do: {err}");
    assert_eq!(sim.request_count("community/users/{user}"), 1, "a 403 is not retried");

    assert_eq!(
        client.member("jdoe2").await.expect("others unaffected").username,
        "jdoe2"
    );
}

/// The public view of a user of another org carries no `orgId`, role or credit fields, and
/// a private profile answers "User does not exist or is inaccessible": both are "not a
/// member of this org", never a failure of the lookup.
#[tokio::test]
async fn users_of_other_orgs_public_or_private_are_not_members() {
    use portal_sim::generate::{PRIVATE_OUTSIDER_USERNAME, PUBLIC_OUTSIDER_USERNAME};
    let sim = sim(200).await;
    let client = admin_client(&sim);
    for name in [PUBLIC_OUTSIDER_USERNAME, PRIVATE_OUTSIDER_USERNAME] {
        match client.member(name).await {
            Err(Error::NotFound { username, .. }) => assert_eq!(username, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    // A member with a private profile is still seen whole by the org's administrator.
    let private = client
        .member("private_member")
        .await
        .expect("an admin sees private members");
    assert!(matches!(private.balance, Balance::Limited { .. }));
}

/// A member without an allocation is unlimited whether `availableCredits` holds the org's
/// credits (as recorded live) or `-1` (as older mocks show); no balance is read from it.
#[tokio::test]
async fn unlimited_members_are_unlimited_whatever_available_credits_holds() {
    use portal_sim::UnlimitedAvailable;
    for served in [UnlimitedAvailable::OrgCredits, UnlimitedAvailable::MinusOne] {
        let sim = sim(60).await;
        sim.update_behaviour(|b| b.unlimited_available = served);
        let client = admin_client(&sim);
        let truth = sim.member("unlimited_analyst").expect("in the fixture");
        assert_eq!(truth.allocation, None);
        let expected_available = match served {
            UnlimitedAvailable::OrgCredits => sim.org().available_credits,
            UnlimitedAvailable::MinusOne => -1.0,
        };
        assert_eq!(truth.available_credits, expected_available, "{served:?}");
        let member = client.member("unlimited_analyst").await.unwrap();
        assert_eq!(member.balance, Balance::Unlimited, "{served:?}");
        let listed = client.list_members().await.unwrap();
        let unlimited = listed
            .members
            .iter()
            .filter(|m| m.balance == Balance::Unlimited)
            .count();
        let expected = sim.members().iter().filter(|m| m.allocation.is_none()).count();
        assert_eq!(unlimited, expected, "{served:?}");
    }
}
