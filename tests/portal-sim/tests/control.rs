//! The binary's loopback control API and the TLS option.

use portal_sim::{SimOptions, TlsIdentity, start_with};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn the_control_api_switches_faults_and_shows_state() {
    let h = Harness::small().await;
    let base = h.sim.base_url();
    let r = h
        .http
        .put(format!("{base}/_sim/faults"))
        .json(&json!({"http_error": {"status": 503, "when": {"times": 1}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.post("portals/self", &[("f", "json")]).await.status(), 503);
    assert_eq!(h.post("portals/self", &[("f", "json")]).await.status(), 200);
    let r = h
        .http
        .put(format!("{base}/_sim/faults"))
        .json(&json!({"no_such_fault": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "unknown fault names are refused");
    h.http.delete(format!("{base}/_sim/faults")).send().await.unwrap();

    let state: Value = h
        .http
        .get(format!("{base}/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["members"].as_array().unwrap().len(), 120);
    let counts: Value = h
        .http
        .get(format!("{base}/_sim/counts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["portals/self"], 2);
    let r = h.http.post(format!("{base}/_sim/consume")).json(&json!({"day": h.sim.org().as_of, "username": "ghost", "stype": "geocode", "etype": "x", "credits": 1.0, "num": 1})).send().await.unwrap();
    assert_eq!(r.status(), 400, "consumption by a non-member is refused");
    let r = h.http.post(format!("{base}/_sim/reset")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.sim.requests().is_empty());
}

#[tokio::test]
async fn tls_serves_generate_token_over_https_with_a_self_signed_certificate() {
    let id = TlsIdentity::self_signed().unwrap();
    let sim = start_with(
        small_org(),
        SimOptions {
            tls: Some(id.clone()),
            behaviour: portal_sim::Behaviour {
                require_https_for_token: true,
                ..Default::default()
            },
        },
    )
    .await
    .unwrap();
    assert!(sim.rest_url().starts_with("https://127.0.0.1:"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = reqwest::Certificate::from_pem(id.cert_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([cert]).build().unwrap();
    let v: Value = http
        .post(format!("{}/generateToken", sim.rest_url()))
        .form(&[
            ("username", portal_sim::generate::ADMIN_USERNAME),
            ("password", portal_sim::generate::ADMIN_PASSWORD),
            ("client", "referer"),
            ("referer", REFERER),
            ("f", "json"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["token"].is_string(), "{v}");
    let untrusted = reqwest::Client::builder().tls_certs_only([]).build().unwrap();
    assert!(
        untrusted
            .post(format!("{}/portals/self", sim.rest_url()))
            .send()
            .await
            .is_err(),
        "an untrusted certificate is refused"
    );
}
