//! The credits report item: create → wait (with a deadline) → download (no token leak across
//! the storage redirect) → delete.

use std::time::{Duration, Instant};

use portal_sim::generate::ADMIN_USERNAME;
use shared::arcgis::Error;
use shared::arcgis::report::month_start_ms;

use crate::support::{admin_client, sim};

#[tokio::test]
async fn a_report_is_created_awaited_downloaded_without_leaking_the_token_and_deleted() {
    let sim = sim(100).await;
    let client = admin_client(&sim);

    let item = client
        .create_credits_report(ADMIN_USERNAME, 2026, 10)
        .await
        .expect("created");
    assert_eq!(item.owner, ADMIN_USERNAME);
    client.wait_for_report(&item).await.expect("completes");
    let csv = client.download_report(&item).await.expect("downloaded");
    // Parsed as it streams, the same file gives the same report as parsed whole.
    let streamed = client
        .read_report(&item)
        .await
        .expect("downloaded")
        .expect("a credits report");
    assert_eq!(
        streamed,
        shared::credits::report_csv::parse(&csv).expect("a credits report")
    );
    assert!(!streamed.rows.is_empty());
    client.delete_item(&item).await.expect("deleted");

    let text = String::from_utf8(csv.to_vec()).expect("utf-8 CSV");
    assert!(text.lines().count() > 4, "{text}");
    let created = &sim.reports()[0];
    assert_eq!(
        created.start_time,
        month_start_ms(2026, 10).unwrap(),
        "1st of the month, UTC"
    );
    assert_eq!(created.duration, "monthly");
    assert!(created.deleted);
    assert_eq!(created.downloads, 2, "downloaded whole, then streamed");
    // The download went through the storage redirect, and no token followed it there.
    assert!(sim.requests().iter().any(|r| r.endpoint == "storage"));
    assert_eq!(sim.storage_token_leaks(), 0);
    assert_eq!(sim.request_count("community/users/{user}/report"), 1);
}

#[tokio::test]
async fn a_report_stuck_in_processing_times_out_clearly_instead_of_hanging() {
    let sim = sim(20).await;
    sim.update_behaviour(|b| b.report_stuck = true);
    let client = admin_client(&sim);
    let item = client
        .create_credits_report(ADMIN_USERNAME, 2026, 10)
        .await
        .expect("created");
    let started = Instant::now();

    let err = client
        .wait_for_report_within(&item, Duration::from_millis(800))
        .await
        .expect_err("stuck");

    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    match &err {
        Error::Timeout { last_status, .. } => assert_eq!(last_status, "processing"),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&item.id) && msg.contains("still 'processing'") && msg.contains("gave up"),
        "{msg}"
    );
    assert!(
        sim.request_count("content/users/{owner}/items/{id}/status") >= 2,
        "it polled"
    );
    // Downloading a stuck item is an error, not an empty CSV.
    let err = client.download_report(&item).await.expect_err("no data yet");
    assert!(err.api().is_some_and(|a| a.code == Some(404)), "{err:?}");
    // Read as it streams, the envelope is recognised the same way.
    let err = client.read_report(&item).await.expect_err("no data yet");
    assert!(err.api().is_some_and(|a| a.code == Some(404)), "{err:?}");
}

#[tokio::test]
async fn a_failed_report_is_a_job_failure() {
    let sim = sim(20).await;
    sim.update_behaviour(|b| {
        b.report_fail = true;
        b.report_processing_ms = 0;
    });
    let client = admin_client(&sim);
    let item = client
        .create_credits_report(ADMIN_USERNAME, 2026, 9)
        .await
        .expect("created");
    let err = client.wait_for_report(&item).await.expect_err("failed");
    assert!(
        matches!(&err, Error::JobFailed { message, .. } if message == "Report generation failed."),
        "{err:?}"
    );
}

#[tokio::test]
async fn report_creation_is_not_retried() {
    let sim = sim(20).await;
    let client = admin_client(&sim);
    client.org_properties().await.unwrap();
    sim.set_faults(portal_sim::Faults {
        http_error: Some(portal_sim::HttpErrorFault {
            status: 502,
            retry_after_secs: None,
            when: portal_sim::Trigger {
                endpoint: Some("community/users/{user}/report".into()),
                after_processing: true,
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    let err = client
        .create_credits_report(ADMIN_USERNAME, 2026, 10)
        .await
        .expect_err("gateway error");
    assert!(matches!(err, Error::Http { status: 502, .. }), "{err:?}");
    assert_eq!(sim.reports().len(), 1, "one item, not one per retry");
}

/// A new report item can answer "item not found" (`CONT_0001`) for a few seconds: that is
/// "not visible yet", waited out like processing, not a failed run.
#[tokio::test]
async fn a_report_item_not_visible_yet_is_waited_for() {
    let sim = sim(20).await;
    sim.update_behaviour(|b| {
        b.report_item_visible_after_ms = 1_500;
        b.report_processing_ms = 0;
    });
    let client = crate::support::client(shared::arcgis::ClientConfig {
        report_poll_interval: Duration::from_millis(200),
        ..crate::support::config_with(&sim, crate::support::admin())
    });
    let item = client
        .create_credits_report(ADMIN_USERNAME, 2026, 10)
        .await
        .expect("created");
    client.wait_for_report(&item).await.expect("visible, then completed");
    let csv = client.download_report(&item).await.expect("downloaded");
    assert!(!csv.is_empty());
    let polls = sim.request_count("content/users/{owner}/items/{id}/status");
    assert!(polls >= 2, "the first polls found no item yet: {polls}");
}

/// Past the grace period, "item not found" is what it says.
#[tokio::test]
async fn a_report_item_that_never_appears_fails_after_the_grace_period() {
    let sim = sim(20).await;
    sim.update_behaviour(|b| b.report_item_visible_after_ms = 600_000);
    let client = crate::support::client(shared::arcgis::ClientConfig {
        report_poll_interval: Duration::from_millis(100),
        report_visibility_grace: Duration::from_millis(500),
        ..crate::support::config_with(&sim, crate::support::admin())
    });
    let item = client
        .create_credits_report(ADMIN_USERNAME, 2026, 10)
        .await
        .expect("created");
    let err = client.wait_for_report(&item).await.expect_err("never visible");
    let api = err.api().expect("ArcGIS's answer");
    assert!(api.is_item_not_found(), "{err:?}");
}
