//! The alert channels beside the ArcGIS notification (Slack, Teams, the signed webhook)
//! against a real loopback receiver, with portal-sim and the in-memory ledger: what each
//! channel receives, its signature, once per run and per channel, a failing channel that
//! neither blocks the others nor sends twice, in English and in French.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use portal_sim::SimHandle;
use serde_json::Value;
use sha2::Sha256;
use shared::arcgis::Secret;
use shared::channels::{ChannelSecrets, Channels, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use shared::ledger::Ledger;
use shared::scan::{ScanDeps, ScanError, ScanRequest, ScanSettings, ScanSummary, scan};
use testkit::receiver::Receiver;

use crate::scan::{config, consume, healthy_member, request};
use crate::support::{admin_client, sim};

const KEY: &str = "test-hmac-key-0123456789";

fn channels(receiver: &Receiver) -> Channels {
    Channels::new(
        None,
        &ChannelSecrets {
            slack_webhook_url: Some(Secret::new(receiver.url("/slack"))),
            teams_webhook_url: Some(Secret::new(receiver.url("/teams"))),
            webhook_url: Some(Secret::new(receiver.url("/hook"))),
            webhook_hmac_key: Some(Secret::new(KEY)),
        },
    )
}

async fn run(
    sim: &SimHandle,
    ledger: &Ledger,
    settings: &ScanSettings,
    channels: &Channels,
    req: &ScanRequest,
) -> Result<ScanSummary, ScanError> {
    let client = admin_client(sim);
    let deps = ScanDeps {
        client: &client,
        ledger,
        settings,
        lists: None,
        channels,
    };
    scan(&deps, req).await
}

/// Checks the webhook's signature as a receiver would, from the documented recipe
/// (`HMAC-SHA256(key, timestamp + "." + body)`, hex, after `sha256=`), not from the crate's
/// own signing code.
fn verify(r: &testkit::receiver::Received, key: &str) -> bool {
    let timestamp = &r.headers[&TIMESTAMP_HEADER.to_ascii_lowercase()];
    let signature = &r.headers[&SIGNATURE_HEADER.to_ascii_lowercase()];
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    mac.verify_slice(&given).is_ok()
}

fn flagged(s: &ScanSummary) -> BTreeSet<String> {
    s.critical
        .iter()
        .chain(&s.warning)
        .map(|m| m.username.clone())
        .collect()
}

#[tokio::test]
async fn every_channel_gets_the_alert_once_signed_and_a_rerun_sends_nothing() {
    let sim = sim(120).await;
    let ledger = Ledger::memory();
    let receiver = Receiver::start();
    let channels = channels(&receiver);
    let settings = config(&[]);

    let s = run(&sim, &ledger, &settings, &channels, &request(0))
        .await
        .expect("scan succeeds");

    let email = &sim.notifications()[0];
    let hook = receiver.accepted("/hook");
    assert_eq!(hook.len(), 1);
    assert!(verify(&hook[0], KEY), "the signature verifies with the shared key");
    assert!(!verify(&hook[0], "another-key-0123456789"), "and with no other key");
    let body = hook[0].json();
    assert_eq!(body["schema"], "credit-steward.alert.v1");
    assert_eq!(body["run_key"], s.run_key);
    assert_eq!(body["language"], "en");
    assert_eq!(body["late"], false);
    assert_eq!(body["subject"], email.subject, "the channels say what the email says");
    assert_eq!(body["text"], email.message);
    assert_eq!(body["totals"]["critical"], s.critical.len());
    assert_eq!(body["totals"]["warning"], s.warning.len());
    assert_eq!(body["totals"]["critical_new"], s.critical.len());
    assert_eq!(body["totals"]["members_scanned"], s.members_scanned);
    assert_eq!(
        body["totals"]["org_available_credits"].to_string(),
        s.org_available_credits.to_string(),
        "credits are exact decimals"
    );
    let crossed: BTreeSet<String> = body["crossings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "member_level")
        .map(|c| c["member"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(crossed, flagged(&s), "every crossing, machine-readable");
    let levels: Vec<&str> = body["crossings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "member_level")
        .map(|c| c["level"].as_str().unwrap())
        .collect();
    assert!(
        levels.is_sorted_by_key(|l| *l != "critical"),
        "the most urgent first: {levels:?}"
    );
    assert_eq!(body["crossings_total"], body["crossings"].as_array().unwrap().len());

    let slack = receiver.accepted("/slack");
    assert_eq!(slack.len(), 1);
    let text = slack[0].json()["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with(&format!("*{}*\n", email.subject)), "{text}");
    assert!(text.contains(email.message.lines().next().unwrap()), "{text}");

    let teams = receiver.accepted("/teams");
    assert_eq!(teams.len(), 1);
    let teams = teams[0].json();
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(attachment["content"]["type"], "AdaptiveCard");
    assert_eq!(attachment["content"]["body"][0]["text"], email.subject);
    assert_eq!(s.channels.len(), 3);
    assert!(
        s.channels
            .iter()
            .all(|c| c.delivered == std::slice::from_ref(&s.run_key) && c.owed.is_empty())
    );
    let requests = receiver.received().len();
    assert_eq!(requests, 3);

    // The same scheduled run delivered again, then the next day with nothing new: silence.
    let retry = run(&sim, &ledger, &settings, &channels, &request(0)).await.unwrap();
    assert!(retry.duplicate_of.is_some());
    let next = run(&sim, &ledger, &settings, &channels, &request(1)).await.unwrap();
    assert_eq!(next.newly_reported, 0);
    assert!(next.channels.is_empty(), "{:?}", next.channels);
    assert_eq!(receiver.received().len(), requests, "nothing more on any channel");
    assert_eq!(sim.notifications().len(), 1);

    // A new crossing the day after: one more message per channel, naming only it.
    let (crosser, assigned, available) = healthy_member(&sim);
    consume(&sim, &crosser, available - 0.3 * assigned);
    let later = run(&sim, &ledger, &settings, &channels, &request(2)).await.unwrap();
    assert_eq!(later.newly_reported, 1);
    let hook = receiver.accepted("/hook");
    assert_eq!(hook.len(), 2);
    let body = hook[1].json();
    let crossed: Vec<(&str, &str)> = body["crossings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "member_level")
        .map(|c| (c["member"].as_str().unwrap(), c["level"].as_str().unwrap()))
        .collect();
    assert_eq!(crossed, [(crosser.as_str(), "warning")]);
    assert_eq!(receiver.received().len(), requests + 3);
}

#[tokio::test]
async fn a_failing_channel_blocks_nothing_and_delivers_once_on_the_next_run_in_french() {
    let sim = sim(90).await;
    let ledger = Ledger::memory();
    let receiver = Receiver::start();
    let channels = channels(&receiver);
    let settings = config(&[("LANGUAGE", "fr")]);
    receiver.answer("/hook", 500);

    let err = run(&sim, &ledger, &settings, &channels, &request(0)).await.unwrap_err();

    assert_eq!(err.kind(), "ChannelFailed");
    let message = err.to_string();
    assert!(message.contains("webhook: HTTP 500"), "{message}");
    assert!(
        !message.contains("127.0.0.1"),
        "the error never shows the URL: {message}"
    );
    let s = err.summary().unwrap();
    // The ArcGIS alert and the other channels went out, once.
    assert_eq!(sim.notifications().len(), 1);
    assert!(sim.notifications()[0].subject.starts_with("Crédits ArcGIS Online :"));
    assert_eq!(receiver.accepted("/slack").len(), 1);
    assert_eq!(receiver.accepted("/teams").len(), 1);
    let slack = receiver.accepted("/slack")[0].json();
    assert!(
        slack["text"].as_str().unwrap().starts_with("*Crédits ArcGIS Online :"),
        "{slack}"
    );
    let webhook = s.channels.iter().find(|c| c.channel.as_str() == "webhook").unwrap();
    assert_eq!(webhook.owed, std::slice::from_ref(&s.run_key));
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("webhook") && p.contains("next run"))
    );
    assert!(
        !ledger.alert_levels().await.unwrap().is_empty(),
        "the crossings are recorded"
    );

    // A retry of the failed run is a duplicate: it sends nothing anywhere.
    receiver.answer("/hook", 200);
    let retry = run(&sim, &ledger, &settings, &channels, &request(0)).await.unwrap();
    assert!(retry.duplicate_of.is_some());
    assert!(receiver.accepted("/hook").is_empty());

    // The next run (nothing new) delivers what the webhook owed, once, marked late.
    let next = run(&sim, &ledger, &settings, &channels, &request(1)).await.unwrap();
    assert_eq!(next.newly_reported, 0);
    let hook = receiver.accepted("/hook");
    assert_eq!(hook.len(), 1);
    assert!(verify(&hook[0], KEY));
    let body: Value = hook[0].json();
    assert_eq!(body["run_key"], s.run_key, "the first run's message");
    assert_eq!(body["late"], true);
    assert_eq!(body["language"], "fr");
    assert_eq!(body["totals"]["critical"], s.critical.len());
    assert_eq!(
        receiver.accepted("/slack").len(),
        1,
        "the other channels are not repeated"
    );
    assert_eq!(receiver.accepted("/teams").len(), 1);
    assert_eq!(sim.notifications().len(), 1);

    // And nothing after that.
    let quiet = run(&sim, &ledger, &settings, &channels, &request(2)).await.unwrap();
    assert!(quiet.channels.is_empty());
    assert_eq!(receiver.accepted("/hook").len(), 1);
    assert_eq!(
        receiver.received().len(),
        4,
        "one failed call, then one of each channel"
    );
}

#[tokio::test]
async fn a_late_chat_message_says_so_and_a_refused_one_is_dropped() {
    let sim = sim(90).await;
    let ledger = Ledger::memory();
    let receiver = Receiver::start();
    let channels = channels(&receiver);
    let settings = config(&[("LANGUAGE", "fr")]);
    receiver.answer("/slack", 503);
    receiver.answer("/teams", 400);

    let err = run(&sim, &ledger, &settings, &channels, &request(0)).await.unwrap_err();
    assert_eq!(err.kind(), "ChannelFailed");
    let s = err.summary().unwrap();
    let outcome = |name: &str| s.channels.iter().find(|c| c.channel.as_str() == name).unwrap().clone();
    assert_eq!(outcome("slack").owed, std::slice::from_ref(&s.run_key), "5xx: retried");
    assert_eq!(
        outcome("teams").dropped,
        std::slice::from_ref(&s.run_key),
        "400: refused, not retried"
    );
    assert_eq!(receiver.accepted("/hook").len(), 1);

    receiver.answer("/slack", 200);
    receiver.answer("/teams", 200);
    run(&sim, &ledger, &settings, &channels, &request(1)).await.unwrap();
    let slack = receiver.accepted("/slack");
    assert_eq!(slack.len(), 1);
    let text = slack[0].json()["text"].as_str().unwrap().to_owned();
    assert!(text.contains("Envoyé en retard : cette alerte date du "), "{text}");
    assert!(
        receiver.accepted("/teams").is_empty(),
        "the refused message is not sent again"
    );
    assert_eq!(receiver.accepted("/hook").len(), 1);
}

#[tokio::test]
async fn without_admin_contacts_the_channels_carry_the_alert_and_it_is_recorded() {
    let sim = sim(60).await;
    sim.sim().world().org.contacts.clear();
    let ledger = Ledger::memory();
    let receiver = Receiver::start();
    let channels = channels(&receiver);
    let settings = config(&[]);
    let s = run(&sim, &ledger, &settings, &channels, &request(0)).await.unwrap();
    assert!(sim.notifications().is_empty());
    assert_eq!(receiver.accepted("/hook").len(), 1);
    assert!(
        s.problems.iter().any(|p| p.contains("other alert channels only")),
        "{:?}",
        s.problems
    );
    assert_eq!(ledger.alert_levels().await.unwrap().len(), flagged(&s).len());
    run(&sim, &ledger, &settings, &channels, &request(1)).await.unwrap();
    assert_eq!(receiver.received().len(), 3, "reported once");
}
