//! Batched writes: allocations (100 per call, `notAssignedUsers` per member) and notifications
//! (25 per call, comma-separated usernames).

use portal_sim::{Faults, HttpErrorFault, Trigger};
use shared::arcgis::{CreditAssignment, Error, Notification, NotifyChannel, TransportKind};
use shared::credits::member::Balance;

use crate::support::{admin_client, sim};

const ASSIGN: &str = "portals/self/assignUserCredits";
const UNASSIGN: &str = "portals/self/unassignUserCredits";

/// An amount as a plain number, whichever type holds it.
fn as_number(amount: impl serde::Serialize) -> f64 {
    serde_json::to_value(amount)
        .ok()
        .and_then(|v| v.as_f64())
        .expect("an amount serializes as a number")
}

fn after_processing(endpoint: &str) -> Trigger {
    Trigger {
        endpoint: Some(endpoint.into()),
        after_processing: true,
        ..Trigger::default()
    }
}

fn assign(username: &str, credits: f64) -> CreditAssignment {
    CreditAssignment {
        username: username.to_owned(),
        // Through serde: the one constructor every representation of `Credits` keeps.
        credits: serde_json::from_value(serde_json::json!(credits)).expect("valid credits"),
    }
}

#[tokio::test]
async fn a_partial_allocation_surfaces_not_assigned_users_per_member() {
    let sim = sim(300).await;
    let client = admin_client(&sim);
    let mut assignments: Vec<CreditAssignment> = sim
        .members()
        .iter()
        .skip(10)
        .take(230)
        .map(|m| assign(&m.username, 250.0))
        .collect();
    assignments.insert(150, assign("ghost_user", 100.0));
    assignments.push(assign("jdoe3", 100.0)); // a user of another org

    let outcome = client.assign_credits(&assignments).await.expect("valid input");

    assert_eq!(outcome.rejected, vec!["ghost_user", "jdoe3"]);
    assert_eq!(outcome.succeeded.len(), 230);
    assert!(outcome.failed.is_empty());
    assert!(!outcome.is_complete());
    // 232 entries → batches of 100, 100, 32.
    let calls = sim.allocation_calls();
    assert_eq!(
        calls.iter().map(|c| c.entries.len()).collect::<Vec<_>>(),
        vec![100, 100, 32]
    );
    // The allocation is *set*, and the member re-read afterwards shows it.
    let first = &assignments[0].username;
    assert_eq!(sim.member(first).unwrap().allocation, Some(250.0));
    match client.member(first).await.unwrap().balance {
        Balance::Limited { assigned, .. } => assert_eq!(as_number(assigned), 250.0),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unassign_makes_members_unlimited_and_reports_refusals() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    let limited: Vec<String> = sim
        .members()
        .iter()
        .filter(|m| m.allocation.is_some())
        .take(5)
        .map(|m| m.username.clone())
        .collect();
    let mut names = limited.clone();
    names.push("ghost_user".into());

    let outcome = client.unassign_credits(&names).await.expect("valid input");

    assert_eq!(outcome.rejected, vec!["ghost_user"]);
    assert_eq!(outcome.succeeded, limited);
    for u in &limited {
        assert_eq!(client.member(u).await.unwrap().balance, Balance::Unlimited);
    }
}

#[tokio::test]
async fn invalid_writes_are_refused_before_anything_is_sent() {
    let sim = sim(20).await;
    let client = admin_client(&sim);
    let dup = [assign("jdoe", 1.0), assign("jdoe", 2.0)];
    assert!(matches!(
        client.assign_credits(&dup).await,
        Err(Error::InvalidInput { .. })
    ));
    let note = Notification {
        subject: " ".into(),
        message: "m".into(),
        channel: NotifyChannel::Email,
    };
    assert!(matches!(
        client.notify(&["jdoe".into()], &note).await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(sim.writes().len(), 0);
    assert_eq!(client.requests_made(), 0);
}

#[tokio::test]
async fn notifications_go_out_in_batches_of_25_with_duplicates_dropped() {
    let sim = sim(100).await;
    let client = admin_client(&sim);
    let mut recipients: Vec<String> = sim.members().iter().take(60).map(|m| m.username.clone()).collect();
    recipients.push(recipients[0].clone());
    let note = Notification {
        subject: "Credits running low".into(),
        message: "Your credits are below 10 %.".into(),
        channel: NotifyChannel::Builtin,
    };

    let outcome = client.notify(&recipients, &note).await.expect("valid input");

    assert!(outcome.is_complete(), "{outcome:?}");
    assert_eq!(outcome.succeeded.len(), 60);
    let sent = sim.notifications();
    assert_eq!(sent.iter().map(|n| n.users.len()).collect::<Vec<_>>(), vec![25, 25, 10]);
    assert!(sent.iter().all(|n| n.channel == "builtin" && n.subject == note.subject));
    assert_eq!(sent[0].users[..], recipients[..25]);
}

#[tokio::test]
async fn an_assign_that_failed_after_sending_is_not_resent() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    let names: Vec<String> = sim
        .members()
        .iter()
        .skip(3)
        .take(4)
        .map(|m| m.username.clone())
        .collect();
    let assignments: Vec<CreditAssignment> = names.iter().map(|u| assign(u, 321.0)).collect();
    // ArcGIS sets the allocations, then a gateway answers 503: the client cannot know.
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: Some(0),
            when: after_processing(ASSIGN),
        }),
        ..Faults::default()
    });

    let outcome = client.assign_credits(&assignments).await.expect("valid input");

    assert_eq!(sim.request_count(ASSIGN), 1, "sent once, not resent");
    assert!(outcome.succeeded.is_empty());
    assert_eq!(outcome.failed.len(), 1);
    assert_eq!(outcome.failed[0].usernames, names);
    assert!(outcome.failed[0].attempted, "the caller re-reads these members");
    assert!(matches!(
        outcome.failed[0].error.as_ref(),
        Error::Http { status: 503, .. }
    ));
    // It was applied: only a re-read tells, which is the caller's to do.
    for u in &names {
        assert_eq!(sim.member(u).unwrap().allocation, Some(321.0), "{u}");
    }
}

#[tokio::test]
async fn a_throttled_assign_is_not_resent_either() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    let name = sim.members()[5].username.clone();
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(0),
            when: Trigger {
                endpoint: Some(ASSIGN.into()),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });

    let outcome = client.assign_credits(&[assign(&name, 5.0)]).await.expect("valid input");

    assert_eq!(sim.request_count(ASSIGN), 1);
    assert!(matches!(
        outcome.failed[0].error.as_ref(),
        Error::Http { status: 429, .. }
    ));
}

#[tokio::test]
async fn an_unassign_whose_connection_dropped_after_sending_is_not_resent() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    let limited: Vec<String> = sim
        .members()
        .iter()
        .filter(|m| m.allocation.is_some())
        .take(3)
        .map(|m| m.username.clone())
        .collect();
    sim.set_faults(Faults {
        drop_connection: Some(after_processing(UNASSIGN)),
        ..Faults::default()
    });

    let outcome = client.unassign_credits(&limited).await.expect("valid input");

    assert_eq!(sim.request_count(UNASSIGN), 1, "sent once, not resent");
    assert_eq!(outcome.failed.len(), 1);
    assert!(
        matches!(
            outcome.failed[0].error.as_ref(),
            Error::Transport {
                kind: TransportKind::Interrupted,
                ..
            }
        ),
        "{:?}",
        outcome.failed[0].error
    );
    for u in &limited {
        assert_eq!(sim.member(u).unwrap().allocation, None, "applied: {u}");
    }
}
