//! Throttling, gateway errors, broken bodies and dropped connections: what is retried, what is
//! not, and what the errors say.

use std::time::{Duration, Instant};

use credit_core::arcgis::{ClientConfig, Error, Notification, NotifyChannel, RetryPolicy, TransportKind};
use portal_sim::{Faults, HttpErrorFault, Trigger};

use crate::support::{admin, admin_client, client, config_with, sim};

fn on(endpoint: &str) -> Trigger {
    Trigger {
        endpoint: Some(endpoint.into()),
        ..Trigger::default()
    }
}

#[tokio::test]
async fn a_429_storm_with_retry_after_is_waited_out() {
    let sim = sim(1_000).await;
    let client = admin_client(&sim);
    client.org_properties().await.expect("signed in");
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(1),
            when: Trigger {
                for_ms: Some(700),
                ..on("portals/self/users")
            },
        }),
        ..Faults::default()
    });
    let started = Instant::now();

    let list = client.list_members().await.expect("the storm passes");

    assert!(list.is_complete(), "{:?}", list.problems);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    let throttled = sim.requests().iter().filter(|r| r.outcome == "fault:http_429").count();
    assert!(throttled >= 1, "the storm hit");
    // Each throttled page was retried once, after the storm: no hammering.
    assert_eq!(sim.request_count("portals/self/users") as usize, 10 + throttled);
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_gives_up_at_once_with_a_clear_error() {
    let sim = sim(50).await;
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(3600),
            when: on("portals/self"),
        }),
        ..Faults::default()
    });
    let started = Instant::now();
    let err = admin_client(&sim)
        .org_properties()
        .await
        .expect_err("throttled for an hour");
    assert!(started.elapsed() < Duration::from_secs(2), "did not sleep an hour");
    match &err {
        Error::Http {
            status: 429,
            retry_after: Some(ra),
            ..
        } => assert_eq!(*ra, Duration::from_secs(3600)),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("portals/self") && msg.contains("HTTP 429") && msg.contains("Retry-After 3600s"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_503_with_an_html_body_is_retried_for_reads_and_reported_when_it_persists() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: Trigger {
                every_nth: Some(2),
                ..on("portals/self")
            },
        }),
        ..Faults::default()
    });
    for _ in 0..3 {
        client.org_properties().await.expect("every other 503 is retried away");
    }

    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: on("portals/self"),
        }),
        ..Faults::default()
    });
    let err = client.org_properties().await.expect_err("persistent 503");
    let Error::GaveUp { attempts, last, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*attempts, 5);
    match last.as_ref() {
        Error::Http {
            status: 503, excerpt, ..
        } => assert!(excerpt.starts_with("<html>"), "{excerpt}"),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("gave up after 5 attempts") && msg.contains("HTTP 503"),
        "{msg}"
    );
    assert!(msg.contains("try again later"), "says what to do: {msg}");
}

#[tokio::test]
async fn malformed_json_is_retried_once_transient_and_a_clear_error_when_persistent() {
    let sim = sim(300).await;
    let client = admin_client(&sim);
    client.org_properties().await.expect("signed in");
    sim.set_faults(Faults {
        malformed_json: Some(Trigger {
            times: Some(1),
            ..on("portals/self/users")
        }),
        ..Faults::default()
    });
    assert!(
        client
            .list_members()
            .await
            .expect("one truncated page is re-read")
            .is_complete()
    );

    sim.set_faults(Faults {
        malformed_json: Some(on("portals/self/users")),
        ..Faults::default()
    });
    let err = client.list_members().await.expect_err("every page truncated");
    match err.root() {
        Error::Decode {
            status: 200,
            reason,
            excerpt,
            ..
        } => {
            assert!(reason.contains("EOF"), "{reason}");
            assert!(excerpt.starts_with("{\"total\""), "{excerpt}");
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("portals/self/users") && msg.contains("not valid JSON"),
        "{msg}"
    );
}

#[tokio::test]
async fn dropped_connections_are_retried_for_reads() {
    let sim = sim(400).await;
    let client = admin_client(&sim);
    client.org_properties().await.expect("signed in");
    sim.set_faults(Faults {
        drop_connection: Some(Trigger {
            times: Some(2),
            ..on("portals/self/users")
        }),
        ..Faults::default()
    });
    let list = client.list_members().await.expect("dropped pages are re-read");
    assert!(list.is_complete());
    assert_eq!(sim.request_count("portals/self/users"), 4 + 2);
}

#[tokio::test]
async fn create_notification_is_never_blindly_retried() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    let recipients: Vec<String> = sim.members().iter().take(3).map(|m| m.username.clone()).collect();
    // ArcGIS processes the call, then a gateway answers 503: the client cannot know.
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: Trigger {
                after_processing: true,
                ..on("portals/self/createNotification")
            },
        }),
        ..Faults::default()
    });
    let note = Notification {
        subject: "s".into(),
        message: "m".into(),
        channel: NotifyChannel::Email,
    };

    let outcome = client.notify(&recipients, &note).await.expect("valid input");

    assert_eq!(
        sim.request_count("portals/self/createNotification"),
        1,
        "sent once, not retried"
    );
    assert_eq!(sim.notifications().len(), 1, "exactly one email batch went out");
    assert!(outcome.succeeded.is_empty());
    assert_eq!(outcome.failed.len(), 1);
    assert!(matches!(
        outcome.failed[0].error.as_ref(),
        Error::Http { status: 503, .. }
    ));
}

#[tokio::test]
async fn an_unreachable_portal_is_a_transport_error_within_the_deadline() {
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sim = sim(10).await;
    let config = ClientConfig {
        portal_url: format!("http://127.0.0.1:{port}"),
        retry: RetryPolicy {
            max_attempts: 3,
            deadline: Duration::from_secs(5),
            ..crate::support::fast_retry()
        },
        ..config_with(&sim, admin())
    };
    let started = Instant::now();
    let err = client(config).org_properties().await.expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            err.root(),
            Error::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("generateToken for user 'steward_admin'"),
        "{err}"
    );
}

#[tokio::test]
async fn read_timeouts_are_retried_then_reported_as_timeouts() {
    let sim = sim(10).await;
    sim.set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });
    let config = ClientConfig {
        http_timeout: Duration::from_millis(150),
        retry: RetryPolicy {
            max_attempts: 2,
            ..crate::support::fast_retry()
        },
        ..config_with(&sim, admin())
    };
    let started = Instant::now();
    let err = client(config)
        .org_properties()
        .await
        .expect_err("every answer is too slow");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let Error::GaveUp { attempts: 2, last, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            last.as_ref(),
            Error::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{last:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
}
