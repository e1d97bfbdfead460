//! Each fault kind, switched on and off within one simulator run.

use portal_sim::{EnvelopeFault, Faults, HttpErrorFault, Trigger};

use crate::support::*;

#[tokio::test]
async fn every_fault_kind_switches_on_and_off_without_restarting() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let ok = async |h: &Harness| h.post("portals/self", &[("f", "json"), ("token", &t)]).await;

    // Latency.
    h.sim.set_faults(Faults {
        latency_ms: 150,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(ok(&h).await.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    h.sim.clear_faults();

    // 503 with an HTML body on every 2nd request.
    h.sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 503,
            retry_after_secs: None,
            when: Trigger {
                every_nth: Some(2),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(ok(&h).await.status().as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 503, 200, 503]);
    h.sim.clear_faults();
    assert_eq!(ok(&h).await.status(), 200);

    // 429 for a time window only.
    h.sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(1),
            when: Trigger {
                for_ms: Some(60_000),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    assert_eq!(ok(&h).await.status(), 429);
    h.sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(1),
            when: Trigger {
                for_ms: Some(0),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    tokio::task::yield_now().await;
    let mut passed = false;
    for _ in 0..50 {
        if ok(&h).await.status() == 200 {
            passed = true;
            break;
        }
    }
    assert!(passed, "a window that has closed stops firing");
    h.sim.clear_faults();

    // Tokens expire after N requests; a new token works.
    h.sim.set_faults(Faults {
        expire_tokens_after: Some(2),
        ..Default::default()
    });
    assert!(json_of(ok(&h).await).await.get("error").is_none());
    assert_eq!(error_code(&json_of(ok(&h).await).await), 498);
    let fresh = h.admin_token().await;
    let v = h.post_json("portals/self", &[("f", "json"), ("token", &fresh)]).await;
    assert!(v.get("error").is_none());
    h.sim.clear_faults();

    // An HTTP-200 envelope for one member only.
    h.sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: Some("jdoe2".into()),
            code: 500,
            message: "Unable to read user.".into(),
            when: Trigger::default(),
        }),
        ..Default::default()
    });
    let bad = h
        .post_json("community/users/jdoe2", &[("f", "json"), ("token", &fresh)])
        .await;
    assert_eq!(error_code(&bad), 500);
    let good = h
        .post_json("community/users/jdoe", &[("f", "json"), ("token", &fresh)])
        .await;
    assert_eq!(good["username"], "jdoe");
    // ... or for one endpoint.
    h.sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: None,
            code: 400,
            message: "Broken.".into(),
            when: Trigger {
                endpoint: Some("portals/self/users".into()),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    assert_eq!(
        error_code(
            &h.post_json("portals/self/users", &[("f", "json"), ("token", &fresh)])
                .await
        ),
        400
    );
    assert!(
        h.post_json("portals/self", &[("f", "json"), ("token", &fresh)])
            .await
            .get("error")
            .is_none()
    );
    h.sim.clear_faults();

    // Malformed JSON, once.
    h.sim.set_faults(Faults {
        malformed_json: Some(Trigger {
            times: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = h.post("portals/self", &[("f", "json"), ("token", &fresh)]).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).is_err());
    assert_eq!(
        h.post("portals/self", &[("f", "json"), ("token", &fresh)])
            .await
            .status(),
        200
    );

    // A dropped connection: the client sees a transport error, not a response body.
    h.sim.set_faults(Faults {
        drop_connection: Some(Trigger {
            times: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = h
        .http
        .post(h.url("portals/self"))
        .form(&[("f", "json"), ("token", &fresh)])
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(failed, "the dropped connection must surface as an error");
    h.sim.clear_faults();
    assert_eq!(
        h.post("portals/self", &[("f", "json"), ("token", &fresh)])
            .await
            .status(),
        200
    );

    let log = h.sim.requests();
    for kind in [
        "fault:http_503",
        "fault:http_429",
        "fault:error_envelope:500",
        "fault:malformed_json",
        "fault:drop_connection",
    ] {
        assert!(log.iter().any(|r| r.outcome == kind), "{kind} logged");
    }
}

#[tokio::test]
async fn an_error_after_processing_means_the_operation_happened() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    h.sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(1),
            when: Trigger {
                endpoint: Some("portals/self/createNotification".into()),
                times: Some(1),
                after_processing: true,
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    let r = h
        .post(
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
    assert_eq!(r.status(), 429);
    assert_eq!(
        h.sim.notifications().len(),
        1,
        "the email went out although the client saw 429"
    );
}
