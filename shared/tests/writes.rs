//! Batched writes: allocations (100 per call, `notAssignedUsers` per member) and notifications
//! (25 per call, comma-separated usernames).

use credit_core::arcgis::{CreditAssignment, Error, Notification, NotifyChannel};
use credit_core::credits::member::{Balance, Credits};

use crate::support::{admin_client, sim};

fn assign(username: &str, credits: f64) -> CreditAssignment {
    CreditAssignment {
        username: username.to_owned(),
        credits: Credits::new(credits).expect("valid credits"),
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
        Balance::Limited { assigned, .. } => assert_eq!(assigned, 250.0),
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
