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
