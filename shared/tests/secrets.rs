//! The ArcGIS secret from Secrets Manager (a real moto_server on loopback): the three shapes,
//! a missing secret, bad JSON, caching, the `AWS_ENDPOINT_URL*` variables, and no secret value
//! in logs or errors.

use std::time::Duration;

use shared::arcgis::{Client, ClientConfig, Credentials, Secret};
use shared::config::Config;
use shared::connect::ArcgisSource;
use shared::secrets::{ArcgisSecret, SecretCache, SecretError};

use crate::moto::moto;
use crate::support::capture_logs;

const PASSWORD: &str = "pw-Zq8!never-log-me";
const CLIENT_SECRET: &str = "cs-Hh3?never-log-me";
const API_KEY: &str = "AAPK-never-log-me-0123456789";

/// A Secrets Manager client for the emulator, configured explicitly: no environment, no
/// credential chain, so nothing can reach for IMDS or a real endpoint.
fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&crate::support::moto_aws())
}

/// Creates a secret with a name unique to this process and test.
async fn put(sm: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    let id = format!("credit-steward-tests/{}/{name}", std::process::id());
    sm.create_secret()
        .name(&id)
        .secret_string(value)
        .send()
        .await
        .expect("create_secret on moto");
    id
}

fn user_secret() -> String {
    format!(r#"{{"portal_url":"https://org.example.com","username":"admin","password":"{PASSWORD}"}}"#)
}

#[tokio::test]
async fn the_three_shapes_parse_and_are_cached() {
    let sm = secrets_manager();
    let user = put(&sm, "user", &user_secret()).await;
    let app = put(
        &sm,
        "app",
        &format!(r#"{{"portal_url":"https://org.example.com","client_id":"app1","client_secret":"{CLIENT_SECRET}","referer":"r1"}}"#),
    )
    .await;
    let key = put(
        &sm,
        "key",
        &format!(r#"{{"portal_url":"https://org.example.com","api_key":"{API_KEY}"}}"#),
    )
    .await;
    let cache = SecretCache::new(sm.clone(), Duration::from_secs(300));

    let s = cache.arcgis_secret(&user).await.expect("user secret");
    assert!(
        matches!(&s.credentials, Credentials::UserPassword { username, password }
        if username == "admin" && password.expose() == PASSWORD)
    );
    assert_eq!(s.portal_url, "https://org.example.com");
    let s = cache.arcgis_secret(&app).await.expect("app secret");
    assert!(
        matches!(&s.credentials, Credentials::OAuthApp { client_id, client_secret }
        if client_id == "app1" && client_secret.expose() == CLIENT_SECRET)
    );
    assert_eq!(s.referer.as_deref(), Some("r1"));
    let s = cache.arcgis_secret(&key).await.expect("key secret");
    assert!(matches!(&s.credentials, Credentials::ApiKey(k) if k.expose() == API_KEY));

    // Within the TTL the cache answers even though the secret is gone; after invalidate it asks.
    sm.delete_secret()
        .secret_id(&user)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    assert!(cache.arcgis_secret(&user).await.is_ok(), "served from the cache");
    cache.invalidate(&user);
    assert!(matches!(
        cache.arcgis_secret(&user).await,
        Err(SecretError::NotFound { .. })
    ));
}

#[tokio::test]
async fn an_expired_entry_is_fetched_again() {
    let sm = secrets_manager();
    let id = put(&sm, "ttl", &user_secret()).await;
    let cache = SecretCache::new(sm.clone(), Duration::ZERO);
    cache.arcgis_secret(&id).await.expect("first read");
    let rotated = r#"{"portal_url":"https://org.example.com","api_key":"AAPK-rotated"}"#;
    sm.put_secret_value()
        .secret_id(&id)
        .secret_string(rotated)
        .send()
        .await
        .unwrap();
    let s = cache.arcgis_secret(&id).await.expect("re-read");
    assert!(matches!(&s.credentials, Credentials::ApiKey(k) if k.expose() == "AAPK-rotated"));
}

#[tokio::test]
async fn a_missing_secret_is_not_found_by_name() {
    let cache = SecretCache::new(secrets_manager(), Duration::from_secs(300));
    let err = cache
        .arcgis_secret("credit-steward-tests/does-not-exist")
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, SecretError::NotFound { id } if id == "credit-steward-tests/does-not-exist"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ARCGIS_SECRET_ID"), "{err}");
}

#[tokio::test]
async fn bad_json_and_bad_shapes_name_keys_never_values() {
    let sm = secrets_manager();
    let truncated = put(
        &sm,
        "truncated",
        &format!(r#"{{"portal_url":"https://o","password":"{PASSWORD}""#),
    )
    .await;
    let wrong_keys = put(
        &sm,
        "wrong-keys",
        &format!(r#"{{"portal_url":"https://o","user":"admin","pass":"{PASSWORD}"}}"#),
    )
    .await;
    let cache = SecretCache::new(sm, Duration::from_secs(300));

    let err = cache.arcgis_secret(&truncated).await.expect_err("bad JSON");
    assert!(
        matches!(&err, SecretError::Invalid { problems, .. } if problems[0].starts_with("not valid JSON")),
        "{err:?}"
    );
    let err2 = cache.arcgis_secret(&wrong_keys).await.expect_err("wrong keys");
    let text = err2.to_string();
    assert!(text.contains("unexpected keys: pass, user"), "{text}");
    assert!(text.contains("missing credentials"), "{text}");
    for e in [&err, &err2] {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(PASSWORD) && !shown.contains("admin\""), "{shown}");
    }
}

#[tokio::test]
async fn no_secret_value_reaches_logs_or_errors() {
    let sm = secrets_manager();
    let good = put(&sm, "log-good", &user_secret()).await;
    let bad = put(
        &sm,
        "log-bad",
        &format!(r#"{{"portal_url":"https://o","api_key":"{API_KEY}","password":"{PASSWORD}"}}"#),
    )
    .await;
    let (logs, _guard) = capture_logs();

    let cache = SecretCache::new(sm, Duration::from_secs(300));
    let secret = cache.arcgis_secret(&good).await.expect("good secret");
    tracing::info!(?secret, "loaded");
    let err = cache.arcgis_secret(&bad).await.expect_err("ambiguous secret");
    tracing::error!(error = %err, ?err, "failed");

    let text = logs.text();
    assert!(text.contains("ArcGIS secret loaded"), "logs were captured:\n{text}");
    assert!(
        text.contains("GetSecretValue") || text.contains("secretsmanager"),
        "SDK logs captured too:\n{text}"
    );
    for value in [PASSWORD, API_KEY] {
        assert!(!text.contains(value), "secret value in logs:\n{text}");
        assert!(!format!("{err} {err:?}").contains(value));
    }
}

/// Runs in a child process with only environment variables set (see the test below): the
/// production path, `Config::from_env` + `SecretCache::from_env`, honours
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
#[tokio::test]
#[ignore = "run by env_variables_point_the_client_at_the_emulator, in a child process"]
async fn env_configured_child() {
    let config = Config::from_env().expect("config from the environment");
    let cache = SecretCache::from_env(config.secret_ttl);
    let secret = cache
        .arcgis_secret(&config.arcgis_secret_id)
        .await
        .expect("secret through env endpoint");
    assert!(matches!(secret.credentials, Credentials::UserPassword { .. }));
}

#[tokio::test]
async fn env_variables_point_the_client_at_the_emulator() {
    let sm = secrets_manager();
    let id = put(&sm, "env", &user_secret()).await;
    let exe = std::env::current_exe().expect("the test binary");
    // A child process gets the variables from birth: no `set_var` racing other test threads.
    let output = std::process::Command::new(exe)
        .args([
            "secrets::env_configured_child",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto().endpoint)
        .env("ARCGIS_SECRET_ID", &id)
        .output()
        .expect("child runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("1 passed"), "the child ran the test:\n{out}");
}

#[tokio::test]
async fn a_portal_url_with_credentials_or_a_token_never_appears_in_errors_or_logs() {
    const LEAKS: [&str; 2] = ["pa55word", "SECRET123"];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let with_userinfo = "https://user:pa55word@org.example.com/sharing/rest?token=SECRET123";
    // Accepted by the secret's parser, refused by the client (clear text off loopback).
    let clear_text = "http://org.example.com/pa55word/sharing/rest?token=SECRET123";
    // Usable, but nothing listens: the request fails at the transport level.
    let unreachable = format!("http://127.0.0.1:{port}/pa55word/sharing/rest?token=SECRET123");
    let secret_json = |url: &str| format!(r#"{{"portal_url":"{url}","username":"admin","password":"{PASSWORD}"}}"#);
    let sm = secrets_manager();
    let refused_id = put(&sm, "url-userinfo", &secret_json(with_userinfo)).await;
    let clear_text_id = put(&sm, "url-clear-text", &secret_json(clear_text)).await;
    let config = Config::from_lookup(|name| (name == "ARCGIS_SECRET_ID").then(|| clear_text_id.clone()))
        .expect("valid configuration");
    let (logs, _guard) = capture_logs();
    let mut shown = Vec::new();

    // The secret with user:password@ is refused by key.
    let cache = SecretCache::new(sm.clone(), Duration::from_secs(300));
    let err = cache
        .arcgis_secret(&refused_id)
        .await
        .expect_err("credentials in the URL");
    assert!(err.to_string().contains("portal_url must not contain"), "{err}");
    tracing::error!(error = %err, ?err, "secret refused");
    shown.push(format!("{err} {err:?}"));

    // The clear-text one loads, and connecting names the URL by scheme and host.
    let source = ArcgisSource::from_secret(SecretCache::new(sm, Duration::from_secs(300)), clear_text_id.clone());
    let err = match source.client(&config).await {
        Ok(client) => panic!("a clear-text portal URL was accepted: {client:?}"),
        Err(err) => err,
    };
    assert_eq!(err.kind(), "InvalidSecret");
    assert!(err.to_string().contains("http://org.example.com"), "{err}");
    tracing::error!(error = %err, ?err, "connect failed");
    shown.push(format!("{err} {err:?}"));

    // Built directly, and Debug of everything that holds the URL.
    let creds = || Credentials::UserPassword {
        username: "admin".into(),
        password: Secret::new(PASSWORD),
    };
    let err = Client::new(ClientConfig::new(with_userinfo, creds())).expect_err("userinfo");
    tracing::error!(error = %err, ?err, "client refused");
    shown.push(format!("{err} {err:?}"));
    let parsed = ArcgisSecret::parse(&secret_json(clear_text)).expect("parses");
    let unreachable_config = ClientConfig {
        retry: shared::arcgis::RetryPolicy {
            max_attempts: 2,
            ..crate::support::fast_retry()
        },
        ..ClientConfig::new(unreachable.clone(), creds())
    };
    tracing::info!(?parsed, config = ?unreachable_config, "built from");
    shown.push(format!("{parsed:?} {unreachable_config:?}"));

    // Unreachable: the transport error and the retry log name the operation, not the URL.
    let client = Client::new(unreachable_config).expect("loopback http is allowed");
    let err = client.org_properties().await.expect_err("nothing listens");
    assert!(matches!(err.root(), shared::arcgis::Error::Transport { .. }), "{err:?}");
    tracing::error!(error = %err, ?err, ?client, "call failed");
    shown.push(format!("{err} {err:?} {client:?}"));

    let text = logs.text();
    assert!(
        text.contains("transient ArcGIS failure; retrying"),
        "logs captured:\n{text}"
    );
    for leak in LEAKS {
        assert!(!text.contains(leak), "{leak} in logs:\n{text}");
        for s in &shown {
            assert!(!s.contains(leak), "{leak} in {s}");
        }
    }
    assert!(!text.contains(PASSWORD), "{text}");
}
