//! Throttling, gateway errors, broken bodies and dropped connections: what is retried, what is
//! not, and what the errors say.

use std::time::{Duration, Instant};

use portal_sim::{Faults, HttpErrorFault, Trigger};
use shared::arcgis::usage::{BucketLabel, Buckets};
use shared::arcgis::{
    ClientConfig, Error, MAX_RETRY_AFTER, Notification, NotifyChannel, RetryPolicy, TransportKind, UsageQuery,
};
use shared::credits::amount::Credits;
use shared::credits::usage::TimeWindow;

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

#[tokio::test]
async fn a_retry_after_of_u64_max_ends_the_call_at_once_without_panicking() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    client.org_properties().await.expect("signed in");
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(u64::MAX),
            when: on("portals/self"),
        }),
        ..Faults::default()
    });
    let started = Instant::now();

    let err = client.org_properties().await.expect_err("throttled forever");

    assert!(started.elapsed() < Duration::from_secs(5), "did not wait");
    assert_eq!(sim.request_count("portals/self"), 2, "not retried");
    match &err {
        Error::Http {
            status: 429,
            retry_after: Some(ra),
            ..
        } => assert_eq!(*ra, MAX_RETRY_AFTER),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("HTTP 429") && msg.contains("Retry-After 86400s"), "{msg}");
}

/// A client signed in to `sim`, then bounded by a deadline `ms` milliseconds away.
async fn bounded_client(sim: &portal_sim::SimHandle, ms: u64) -> shared::arcgis::Client {
    let client = admin_client(sim);
    client.org_properties().await.expect("signed in");
    client.until(Instant::now() + Duration::from_millis(ms))
}

#[tokio::test]
async fn a_retry_after_past_the_invocation_deadline_ends_the_call_at_once() {
    let sim = sim(50).await;
    let client = bounded_client(&sim, 300).await;
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: Some(10),
            when: on("portals/self"),
        }),
        ..Faults::default()
    });
    let started = Instant::now();

    let err = client.org_properties().await.expect_err("unavailable");

    // Policy deadline 20 s would allow the 10 s wait; the invocation's deadline does not.
    assert!(started.elapsed() < Duration::from_secs(5), "did not wait 10 s");
    assert!(matches!(err, Error::Http { status: 503, .. }), "{err:?}");
    assert_eq!(sim.request_count("portals/self"), 2, "sign-in check + one attempt");
}

#[tokio::test]
async fn backoff_retries_stop_at_the_invocation_deadline() {
    let sim = sim(50).await;
    let config = ClientConfig {
        retry: RetryPolicy {
            max_attempts: 50,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(100),
            deadline: Duration::from_secs(20),
        },
        ..config_with(&sim, admin())
    };
    let client = client(config);
    client.org_properties().await.expect("signed in");
    let client = client.until(Instant::now() + Duration::from_millis(300));
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: on("portals/self"),
        }),
        ..Faults::default()
    });
    let started = Instant::now();

    let err = client.org_properties().await.expect_err("unavailable");

    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let attempts = match &err {
        Error::GaveUp { attempts, .. } => *attempts,
        // A machine slow enough that the first answer took the whole budget.
        Error::Http { status: 503, .. } => 1,
        other => panic!("{other:?}"),
    };
    // Waits of at least 50 ms inside 300 ms: a handful of attempts, far from the policy's 50.
    assert!(attempts <= 7, "{attempts}");
    assert_eq!(sim.request_count("portals/self"), 1 + u64::from(attempts));
}

#[tokio::test]
async fn a_slow_answer_is_cut_at_the_invocation_deadline() {
    let sim = sim(50).await;
    let client = bounded_client(&sim, 300).await;
    sim.set_faults(Faults {
        latency_ms: 3_000,
        ..Faults::default()
    });
    let started = Instant::now();

    let err = client.org_properties().await.expect_err("too slow");

    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    match err.root() {
        Error::Transport {
            kind: TransportKind::Timeout,
            detail,
            ..
        } => assert!(detail.contains("cut short by the invocation's deadline"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_call_after_the_invocation_deadline_sends_nothing() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    let late = client.until(Instant::now());
    assert!(late.deadline().is_some());
    let before = (sim.total_requests(), client.requests_made());

    // Not signed in yet: not even the sign-in is sent.
    let err = late.org_properties().await.expect_err("too late");
    assert!(
        matches!(&err, Error::DeadlineReached { what } if what.contains("portals/self")),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("portals/self") && msg.ends_with(": not sent: the invocation's time is up; retry the request"),
        "{msg}"
    );
    let members: Vec<String> = sim.members().iter().take(3).map(|m| m.username.clone()).collect();
    let note = Notification {
        subject: "s".into(),
        message: "m".into(),
        channel: NotifyChannel::Email,
    };
    let outcome = late.notify(&members, &note).await.expect("valid input");
    assert_eq!(outcome.failed.len(), 1);
    assert!(matches!(
        outcome.failed[0].error.as_ref(),
        Error::DeadlineReached { .. }
    ));

    assert_eq!((sim.total_requests(), client.requests_made()), before, "nothing sent");
    // The unbounded original still works, sharing the same state.
    client.org_properties().await.expect("no deadline");
    assert_eq!(late.requests_made(), client.requests_made());
}

#[tokio::test]
async fn a_call_waiting_for_another_tasks_sign_in_stops_at_its_deadline() {
    let sim = sim(50).await;
    sim.set_faults(Faults {
        latency_ms: 3_000,
        ..Faults::default()
    });
    let client = admin_client(&sim);
    // An unbounded call signs in slowly, holding the sign-in lock.
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.org_properties().await }
    });
    while client.requests_made() == 0 {
        tokio::task::yield_now().await;
    }
    let started = Instant::now();

    let err = client
        .until(Instant::now() + Duration::from_millis(300))
        .org_properties()
        .await
        .expect_err("the sign-in outlasts the deadline");

    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(
        matches!(&err, Error::DeadlineReached { what } if what.contains("signing in as user 'steward_admin'")),
        "{err:?}"
    );
    assert_eq!(client.requests_made(), 1, "only the slow sign-in was sent");
    slow.abort();
}

/// The last 30 whole UTC days, per member: the scan's forecast read.
fn usage_by_member() -> UsageQuery {
    let today = chrono::Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let window = TimeWindow::last_days(today, 30).expect("a window");
    UsageQuery::by_member(window, Buckets::daily(BucketLabel::Start))
}

#[tokio::test]
async fn usage_spent_keeps_each_members_sum_and_the_orgs() {
    let sim = sim(300).await;
    let client = admin_client(&sim);
    let query = usage_by_member();
    let totals = client.usage_totals(&query).await.expect("the series");
    let spent = client.usage_spent(&query).await.expect("the sums");
    let mut per_member: std::collections::HashMap<&str, Credits> = std::collections::HashMap::new();
    for t in &totals {
        if let Some(username) = t.username.as_deref() {
            *per_member.entry(username).or_default() += t.credits;
        }
    }
    assert!(per_member.len() > 100, "members with usage: {}", per_member.len());
    for (username, credits) in &per_member {
        assert_eq!(spent.by(username), *credits, "{username}");
    }
    assert_eq!(spent.by("nobody-listed"), Credits::ZERO);
    let org: Credits = totals.iter().map(|t| t.credits).sum();
    assert!(org.is_positive());
    assert_eq!(spent.org, org, "every series counts for the org, attributed or not");
}

#[tokio::test]
async fn a_usage_answer_broken_midway_is_read_again_from_the_start() {
    let sim = sim(300).await;
    let client = admin_client(&sim);
    let query = usage_by_member();
    let clean = client.usage_totals(&query).await.expect("a clean read");
    assert!(clean.len() > 100, "members with usage: {}", clean.len());

    // A truncated body and a connection dropped under the body: each attempt starts from
    // nothing, so the partial read of the first counts for nothing.
    for (name, faults) in [
        (
            "truncated",
            Faults {
                malformed_json: Some(Trigger {
                    times: Some(1),
                    ..on("portals/self/usage")
                }),
                ..Faults::default()
            },
        ),
        (
            "dropped",
            Faults {
                drop_connection: Some(Trigger {
                    times: Some(1),
                    ..on("portals/self/usage")
                }),
                ..Faults::default()
            },
        ),
    ] {
        sim.set_faults(faults);
        let before = sim.request_count("portals/self/usage");
        let again = client.usage_totals(&query).await.expect("read again");
        assert_eq!(again, clean, "{name}: the same totals, nothing counted twice");
        assert_eq!(sim.request_count("portals/self/usage") - before, 2, "{name}: one retry");
    }
}

#[tokio::test]
async fn a_usage_answer_that_stays_broken_or_is_an_envelope_is_a_clear_error() {
    let sim = sim(50).await;
    let client = admin_client(&sim);
    client.org_properties().await.expect("signed in");
    sim.set_faults(Faults {
        malformed_json: Some(on("portals/self/usage")),
        ..Faults::default()
    });
    let err = client
        .usage_totals(&usage_by_member())
        .await
        .expect_err("always truncated");
    match err.root() {
        Error::Decode {
            status: 200, excerpt, ..
        } => assert!(
            excerpt.starts_with("{\"total\""),
            "the body's start is quoted: {excerpt}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("portals/self/usage"), "{err}");

    sim.set_faults(Faults {
        error_envelope: Some(portal_sim::EnvelopeFault {
            member: None,
            code: 400,
            message: "Unable to get usage".into(),
            when: on("portals/self/usage"),
        }),
        ..Faults::default()
    });
    let err = client.usage_totals(&usage_by_member()).await.expect_err("an envelope");
    match err.root() {
        Error::Api { api, .. } => assert_eq!((api.code, api.message.as_str()), (Some(400), "Unable to get usage")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_throttling_org_gets_fewer_requests_at_once_until_it_recovers() {
    let sim = sim(3_000).await;
    let client = admin_client(&sim);
    client.org_properties().await.expect("signed in");
    let ceiling = client.concurrency();
    assert!(ceiling >= 4, "the configured ceiling: {ceiling}");
    sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(1),
            when: Trigger {
                every_nth: Some(3),
                times: Some(4),
                ..on("portals/self/users")
            },
        }),
        ..Faults::default()
    });

    let list = client.list_members().await.expect("the listing completes");
    assert!(list.is_complete(), "{:?}", list.problems);
    assert_eq!(list.members.len(), sim.members().len());
    let throttled = client.concurrency();
    assert!(throttled < ceiling, "backed off: {throttled} of {ceiling}");

    // Quiet again: full windows of successes win the limit back, never past the ceiling.
    sim.set_faults(Faults::default());
    for _ in 0..3 {
        assert!(client.list_members().await.expect("listed").is_complete());
    }
    assert_eq!(client.concurrency(), ceiling, "recovered");
}
