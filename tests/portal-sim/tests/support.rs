//! Shared helpers: a simulator per test, a raw HTTP client, sign-in.

use std::time::Duration;

use chrono::NaiveDate;
use portal_sim::{GenParams, Org, SimHandle, generate, generate::*, start};
use reqwest::{Client, Response};
use serde_json::Value;

/// The day every test org is generated for.
pub fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

/// A small generated org (the specials plus random members).
pub fn small_org() -> Org {
    generate(&GenParams::new(120, 42, as_of()))
}

/// A raw HTTP client that never follows redirects (tests assert them).
pub fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A running simulator plus a client.
pub struct Harness {
    pub sim: SimHandle,
    pub http: Client,
}

pub const REFERER: &str = "credit-steward-tests";

impl Harness {
    pub async fn new(org: Org) -> Harness {
        Harness {
            sim: start(org).await.unwrap(),
            http: client(),
        }
    }

    pub async fn small() -> Harness {
        Harness::new(small_org()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.sim.rest_url(), path)
    }

    /// POST form parameters (adds the referer header every call must carry).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .header("Referer", REFERER)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// POSTs from a task of its own: a request the test holds, races or abandons (aborting
    /// the task drops the request, and its connection closes as a killed client's does).
    pub fn spawn_post(&self, path: &str, form: &[(&str, &str)]) -> tokio::task::JoinHandle<reqwest::Result<Response>> {
        let request = self.http.post(self.url(path)).header("Referer", REFERER).form(form);
        tokio::spawn(request.send())
    }

    /// GET with query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Response {
        self.http
            .get(self.url(path))
            .header("Referer", REFERER)
            .query(query)
            .send()
            .await
            .unwrap()
    }

    /// POST and parse JSON, asserting HTTP 200 and a JSON content type.
    pub async fn post_json(&self, path: &str, form: &[(&str, &str)]) -> Value {
        json_of(self.post(path, form).await).await
    }

    /// Signs in with generateToken and returns the token.
    pub async fn token_for(&self, username: &str, password: &str) -> String {
        let v = self
            .post_json(
                "generateToken",
                &[
                    ("username", username),
                    ("password", password),
                    ("client", "referer"),
                    ("referer", REFERER),
                    ("expiration", "60"),
                    ("f", "json"),
                ],
            )
            .await;
        v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {v}"))
            .to_string()
    }

    /// The administrator's token.
    pub async fn admin_token(&self) -> String {
        self.token_for(ADMIN_USERNAME, ADMIN_PASSWORD).await
    }
}

/// Asserts HTTP 200 with `application/json` and parses the body.
pub async fn json_of(r: Response) -> Value {
    assert_eq!(r.status(), 200, "HTTP status");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/json"), "content type was {ct:?}");
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `error.code` of an envelope, asserting there is one.
pub fn error_code(v: &Value) -> u64 {
    v["error"]["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("expected an error envelope, got {v}"))
}

/// Awaits `f`, failing the test after 10 s: a hold never reached, a request that never ends.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("not done within 10 s")
}

/// The form of an `assignUserCredits` call setting one member's allocation; `credits` is JSON
/// text (`321`, `"321"`).
pub fn assign_form<'a>(token: &'a str, assignments: &'a str) -> [(&'a str, &'a str); 3] {
    [("f", "json"), ("token", token), ("userAssignments", assignments)]
}

/// `userAssignments` for one member.
pub fn one_assignment(username: &str, credits: &str) -> String {
    format!(r#"[{{"username":"{username}","credits":{credits}}}]"#)
}
