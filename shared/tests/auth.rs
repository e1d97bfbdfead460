//! Sign-in modes, the Referer binding, the admin capability check, and usage reads.

use chrono::{Duration as Days, NaiveDate};
use portal_sim::generate::{
    ADMIN_USERNAME, API_KEY, APP_CLIENT_ID, APP_CLIENT_SECRET, AUDITOR_PASSWORD, AUDITOR_USERNAME, OFFICER_PASSWORD,
    OFFICER_USERNAME, USER_PASSWORD, USER_USERNAME,
};
use shared::arcgis::{Capability, Credentials, Error, Secret, SignedIn, UsageQuery};
use shared::credits::member::Credits;
use shared::credits::usage::{BucketLabel, Buckets, TimeWindow};

use crate::support::{REFERER, admin_client, as_of, client, client_as, config_with, sim};

#[tokio::test]
async fn the_admin_reads_org_properties_with_a_referer_bound_token() {
    let sim = sim(100).await;
    let client = admin_client(&sim);
    let org = client.org_properties().await.expect("admin view");
    assert!(org.budgeting_enabled);
    assert!(org.available_credits.is_positive());
    assert_eq!(
        org.available_credits,
        Credits::from_f64(sim.org().available_credits).unwrap(),
        "the org's credits to the micro-credit"
    );
    assert_eq!(org.username(), Some(ADMIN_USERNAME));
    assert!(!org.admin_contacts.is_empty());
    org.ensure(Capability::ManageCredits).expect("org_admin");
    org.ensure(Capability::CreateReports).expect("org_admin");

    let sign_in = sim
        .requests()
        .into_iter()
        .find(|r| r.endpoint == "generateToken")
        .expect("signed in");
    let param = |k: &str| sign_in.params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(param("client").as_deref(), Some("referer"));
    assert_eq!(param("referer").as_deref(), Some(REFERER));
    assert_eq!(param("expiration").as_deref(), Some("60"));
    assert_eq!(param("f").as_deref(), Some("json"));
    assert_eq!(sign_in.method, "POST");
    // The token is reused, not fetched per call.
    client.org_properties().await.unwrap();
    assert_eq!(sim.request_count("generateToken"), 1);
}

#[tokio::test]
async fn a_custom_role_with_the_privileges_passes_and_one_without_is_named() {
    let sim = sim(100).await;
    let officer = client_as(&sim, OFFICER_USERNAME, OFFICER_PASSWORD);
    let org = officer.org_properties().await.expect("officer sees credits");
    let SignedIn::User(u) = &org.signed_in else {
        panic!("a user")
    };
    assert_ne!(u.role.as_deref(), Some("org_admin"));
    assert!(u.role_id.is_some());
    org.ensure(Capability::ManageCredits).expect("privileges suffice");

    let auditor = client_as(&sim, AUDITOR_USERNAME, AUDITOR_PASSWORD);
    let org = auditor.org_properties().await.expect("the auditor can view users");
    let err = org
        .ensure(Capability::ManageCredits)
        .expect_err("cannot manage credits");
    assert!(err.to_string().contains("portal:admin:manageCredits"), "{err}");
}

#[tokio::test]
async fn a_plain_members_token_is_a_typed_error_never_zero_credits() {
    let sim = sim(100).await;
    let err = client_as(&sim, USER_USERNAME, USER_PASSWORD)
        .org_properties()
        .await
        .expect_err("not an admin");
    // Named by the privileges that would show the org's credits, never read as 0 credits.
    match &err {
        Error::MissingPrivileges { account, missing, .. } => {
            assert_eq!(account, &format!("user '{USER_USERNAME}'"));
            assert_eq!(missing, &vec!["portal:admin:viewUsers", "portal:admin:manageCredits"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("built-in Administrator role"), "{err}");
}

#[tokio::test]
async fn oauth_app_and_api_key_sign_in() {
    let sim = sim(100).await;
    let app = client(config_with(
        &sim,
        Credentials::OAuthApp {
            client_id: APP_CLIENT_ID.into(),
            client_secret: Secret::new(APP_CLIENT_SECRET),
        },
    ));
    let org = app.org_properties().await.expect("app token");
    assert!(matches!(&org.signed_in, SignedIn::App { app_id: Some(id), .. } if id == APP_CLIENT_ID));
    org.ensure(Capability::ManageCredits).expect("registered privileges");
    assert_eq!(sim.request_count("oauth2/token"), 1);

    let key = client(config_with(&sim, Credentials::ApiKey(Secret::new(API_KEY))));
    assert!(key.list_members().await.expect("API key lists").is_complete());
    assert_eq!(
        sim.request_count("generateToken") + sim.request_count("oauth2/token"),
        1
    );
}

#[tokio::test]
async fn refused_credentials_say_so_without_the_secret() {
    let sim = sim(20).await;
    let err = client_as(&sim, ADMIN_USERNAME, "wrong-password-123")
        .org_properties()
        .await
        .expect_err("bad password");
    let Error::SignIn { account, api } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(account, "user 'steward_admin'");
    assert_eq!(api.details, vec!["Invalid username or password."]);
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-password-123"), "{text}");
    assert!(text.contains("ARCGIS_SECRET_ID"), "says what to fix: {text}");
    assert_eq!(
        sim.request_count("generateToken"),
        1,
        "refused sign-ins are not retried"
    );

    let err = client(config_with(
        &sim,
        Credentials::OAuthApp {
            client_id: APP_CLIENT_ID.into(),
            client_secret: Secret::new("nope-nope-nope"),
        },
    ))
    .org_properties()
    .await
    .expect_err("bad client secret");
    let Error::SignIn { api, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.oauth_error.as_deref(), Some("invalid_client"));
    assert!(!err.to_string().contains("nope-nope-nope"));
}

#[tokio::test]
async fn usage_series_are_read_by_service_and_by_member() {
    let sim = sim(100).await;
    let client = admin_client(&sim);
    let end = as_of();
    let start: NaiveDate = end - Days::days(30);
    let window = TimeWindow::between(
        start.and_hms_opt(0, 0, 0).unwrap().and_utc(),
        end.and_hms_opt(0, 0, 0).unwrap().and_utc(),
    )
    .expect("a window");

    let by_service = client
        .usage(&UsageQuery::by_service(window, Buckets::daily(BucketLabel::Start)))
        .await
        .expect("usage");
    assert!(!by_service.is_empty());
    assert!(by_service.iter().all(|s| !s.stype.is_empty()));
    let total: Credits = by_service.iter().map(|s| s.credits_in(&window)).sum();
    assert!(total.is_positive(), "the generated org used credits");
    // Exact: the series add up to the simulator's own records in the window, to the
    // micro-credit, overall and for the members.
    let (start_ms, end_ms) = (window.start_ms(), window.end_ms());
    let records: Vec<_> = sim
        .org()
        .usage
        .iter()
        .filter(|r| start_ms <= r.day && r.day < end_ms)
        .cloned()
        .collect();
    let exact = |x: f64| Credits::from_f64(x).unwrap();
    let independent: Credits = records.iter().map(|r| exact(r.credits)).sum();
    assert_eq!(total, independent, "by service vs the records");

    let by_member = client
        .usage(&UsageQuery::by_member(window, Buckets::daily(BucketLabel::Start)))
        .await
        .expect("usage");
    assert!(by_member.iter().any(|s| s.username.is_some()));
    let members: Credits = by_member
        .iter()
        .filter(|s| s.username.is_some())
        .map(|s| s.credits_in(&window))
        .sum();
    let attributed: Credits = records
        .iter()
        .filter(|r| r.username.is_some())
        .map(|r| exact(r.credits))
        .sum();
    assert_eq!(members, attributed, "by member vs the attributed records");
    let all: Credits = by_member.iter().map(|s| s.credits_in(&window)).sum();
    assert_eq!(all, total, "both groupings add up to the same total");
    let sent = sim
        .requests()
        .into_iter()
        .find(|r| r.endpoint == "portals/self/usage")
        .unwrap();
    let param = |k: &str| sent.params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(param("groupby").as_deref(), Some("stype,etype"));
    // One day more on each side, so the edge days come back whichever end of its day a label
    // names; only the days inside the window are returned.
    let day = shared::credits::usage::MS_PER_DAY;
    assert_eq!(param("startTime"), Some((window.start_ms() - day).to_string()));
    assert_eq!(param("endTime"), Some((window.end_ms() + day).to_string()));
    assert!(
        by_service
            .iter()
            .flat_map(|s| &s.points)
            .all(|p| window.covers(&p.bucket))
    );
}

#[tokio::test]
async fn https_with_the_ring_provider_and_an_extra_root() {
    use portal_sim::{Behaviour, SimOptions, TlsIdentity};
    let identity = TlsIdentity::self_signed().expect("a certificate");
    let behaviour = Behaviour {
        require_https_for_token: true,
        ..Behaviour::default()
    };
    let org = portal_sim::generate(&portal_sim::GenParams::new(150, 42, as_of()));
    let sim = portal_sim::start_with(
        org,
        SimOptions {
            tls: Some(identity.clone()),
            behaviour,
        },
    )
    .await
    .expect("TLS simulator");
    assert!(sim.rest_url().starts_with("https://"));

    // Without the simulator's root the certificate is refused, as it must be.
    let err = admin_client(&sim)
        .org_properties()
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(err.root(), Error::Transport { .. }), "{err:?}");

    let config = shared::arcgis::ClientConfig {
        extra_root_certificates_pem: Some(identity.cert_pem.into_bytes()),
        ..config_with(&sim, crate::support::admin())
    };
    let client = client(config);
    assert!(client.list_members().await.expect("listing over TLS").is_complete());
    // The report download redirects to https://localhost: still verified, still no token.
    let item = client
        .create_credits_report(ADMIN_USERNAME, 2026, 10)
        .await
        .expect("report");
    client.wait_for_report(&item).await.expect("completes");
    assert!(
        !client
            .download_report(&item)
            .await
            .expect("download over TLS")
            .is_empty()
    );
    assert_eq!(sim.storage_token_leaks(), 0);
}

#[tokio::test]
async fn no_password_or_token_reaches_logs_or_errors() {
    use portal_sim::{Faults, generate::ADMIN_PASSWORD};
    let sim = sim(300).await;
    let (logs, _guard) = crate::support::capture_logs();
    let client = admin_client(&sim);
    client.org_properties().await.expect("signed in");
    sim.set_faults(Faults {
        expire_tokens_after: Some(1),
        ..Faults::default()
    });
    client.list_members().await.expect("re-signs in");
    let bad = client_with_password(&sim, "wrong-password-456");
    let err = bad.org_properties().await.expect_err("refused");
    tracing::error!(error = %err, ?err, ?client, "logged like a handler would");

    let text = logs.text();
    assert!(
        text.contains("token rejected; signing in again"),
        "logs were captured:\n{text}"
    );
    assert!(
        text.contains("hyper") || text.contains("reqwest"),
        "HTTP internals captured too:\n{text}"
    );
    for secret in [ADMIN_PASSWORD, "wrong-password-456", "simtok."] {
        assert!(!text.contains(secret), "{secret} in logs:\n{text}");
        assert!(!format!("{err} {err:?} {client:?}").contains(secret));
    }
}

fn client_with_password(sim: &portal_sim::SimHandle, password: &str) -> shared::arcgis::Client {
    client_as(sim, ADMIN_USERNAME, password)
}
