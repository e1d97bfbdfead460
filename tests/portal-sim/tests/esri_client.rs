//! What Esri's own Python client (`arcgis` 2.4.4) needs from the service, as `make fidelity`
//! exercises it end to end: the version and `info` probes, the browser-style sign-in
//! (`oauth2/authorize` → `/sharing/oauth2/signin`), roles, item hydration, report items that
//! become visible late, a report `startTime` with a time of day, the CSV layout, and a storage
//! redirect to another name of this host that the certificate covers.

use portal_sim::generate::*;
use portal_sim::{SimOptions, TlsIdentity, start_with};
use serde_json::Value;

use crate::support::*;

const REDIRECT: &str = "urn:ietf:wg:oauth:2.0:oob";

/// The `var oAuthInfo = {...};` object of a sign-in page, read the way Esri's client reads it
/// (the first `{...}` on one line).
fn oauth_info(page: &str) -> Value {
    let line = page
        .lines()
        .find(|l| l.contains("var oAuthInfo = {"))
        .unwrap_or_else(|| panic!("no oAuthInfo in {page}"));
    let json = &line[line.find('{').unwrap()..=line.rfind('}').unwrap()];
    serde_json::from_str(json).unwrap()
}

async fn authorize(h: &Harness, response_type: &str, redirect_uri: &str) -> reqwest::Response {
    h.get(
        "oauth2/authorize",
        &[
            ("client_id", "pythonapi"),
            ("response_type", response_type),
            ("redirect_uri", redirect_uri),
            ("state", "st4te"),
            ("expiration", "600"),
        ],
    )
    .await
}

async fn signin(h: &Harness, oauth_state: &str, password: &str) -> reqwest::Response {
    h.http
        .post(format!("{}/sharing/oauth2/signin", h.sim.base_url()))
        .form(&[
            ("oauth_state", oauth_state),
            ("username", ADMIN_USERNAME),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn version_and_info_answer_without_a_token_in_json_and_html() {
    let h = Harness::small().await;
    let v = json_of(
        h.http
            .get(format!("{}/sharing/rest", h.sim.base_url()))
            .query(&[("f", "json")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let version = v["currentVersion"].as_str().unwrap();
    let t = h.admin_token().await;
    let portal = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert_eq!(portal["currentVersion"], version, "one version everywhere");
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts >= vec![6, 4],
        "Esri's client sends notifications only from 6.4: {version}"
    );

    let v = json_of(h.get("info", &[("f", "json")]).await).await;
    assert_eq!(v["authInfo"]["isTokenBasedSecurity"], true);
    assert_eq!(
        v["authInfo"]["tokenServicesUrl"],
        format!("{}/generateToken", h.sim.rest_url()),
        "names the host the client used"
    );
    let r = h.get("info", &[]).await;
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    // The client's other probes are no sharing/rest operation; repeated slashes are merged.
    let v = json_of(
        h.http
            .get(format!("{}/sharing/info", h.sim.base_url()))
            .query(&[("f", "json")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error_code(&v), 400);
    let v = json_of(
        h.http
            .post(format!("{}//sharing/rest/portals/self/itemsstatus", h.sim.base_url()))
            .header("Referer", REFERER)
            .form(&[("f", "json"), ("token", &t), ("status", "completed")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(v["results"].is_array(), "{v}");
}

#[tokio::test]
async fn browser_sign_in_returns_the_token_in_the_fragment_with_the_state() {
    let h = Harness::small().await;
    let r = authorize(&h, "token", REDIRECT).await;
    let page = r.text().await.unwrap();
    let info = oauth_info(&page);
    let oauth_state = info["oauth_state"].as_str().unwrap().to_string();
    assert_eq!(info["client_id"], "pythonapi");

    // A wrong password: the page again, with the message the client looks for.
    let page = signin(&h, &oauth_state, "wrong").await.text().await.unwrap();
    let again = oauth_info(&page);
    assert!(
        again["messages"][0]
            .as_str()
            .unwrap()
            .contains("Invalid username or password")
    );

    let r = signin(&h, &oauth_state, ADMIN_PASSWORD).await;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (base, fragment) = location.split_once('#').unwrap();
    assert_eq!(base, REDIRECT);
    let fields: std::collections::HashMap<String, String> =
        form_urlencoded::parse(fragment.as_bytes()).into_owned().collect();
    assert_eq!(fields["state"], "st4te");
    assert_eq!(fields["username"], ADMIN_USERNAME);
    assert_eq!(fields["expires_in"], "36000");
    let token = &fields["access_token"];
    // The header transport, as Esri's client sends it.
    let v = json_of(
        h.http
            .get(h.url("portals/self"))
            .query(&[("f", "json")])
            .header("X-Esri-Authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["user"]["username"], ADMIN_USERNAME);
    // The oauth_state is used up.
    let v = signin(&h, &oauth_state, ADMIN_PASSWORD).await.text().await.unwrap();
    assert!(v.contains("Error: Invalid or expired oauth_state"), "{v}");
}

#[tokio::test]
async fn sign_in_refuses_unknown_clients_and_foreign_redirects() {
    let h = Harness::small().await;
    let page = h
        .get(
            "oauth2/authorize",
            &[
                ("client_id", "nope"),
                ("response_type", "token"),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Error: Invalid client_id"), "{page}");
    let page = authorize(&h, "token", "https://evil.example")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Invalid redirect_uri"), "{page}");
    // The portal's own host is a valid redirect (Esri's client tries it first).
    let own = h.sim.base_url().replace("http://", "https://");
    let page = authorize(&h, "token", &own).await.text().await.unwrap();
    assert!(page.contains("var oAuthInfo = {"), "{page}");
    let page = authorize(&h, "bogus", REDIRECT).await.text().await.unwrap();
    assert!(page.contains("Error: Invalid parameter 'response_type'"), "{page}");
}

#[tokio::test]
async fn code_flow_shows_a_success_code_redeemed_once_at_oauth2_token() {
    let h = Harness::small().await;
    let info = oauth_info(&authorize(&h, "code", REDIRECT).await.text().await.unwrap());
    let page = signin(&h, info["oauth_state"].as_str().unwrap(), ADMIN_PASSWORD)
        .await
        .text()
        .await
        .unwrap();
    let start = page.find("<title>SUCCESS code=").expect("a SUCCESS page") + "<title>SUCCESS code=".len();
    let code = &page[start..start + page[start..].find("</title>").unwrap()];
    let redeem = async || {
        h.post_json(
            "oauth2/token",
            &[
                ("f", "json"),
                ("grant_type", "authorization_code"),
                ("client_id", "pythonapi"),
                ("code", code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await
    };
    let v = redeem().await;
    assert_eq!(v["username"], ADMIN_USERNAME);
    assert!(v["access_token"].is_string());
    assert_eq!(error_code(&redeem().await), 400, "a code works once");
}

#[tokio::test]
async fn roles_list_the_roles_that_carry_a_role_id() {
    let h = Harness::small().await;
    let v = h.post_json("portals/self/roles", &[("f", "json")]).await;
    assert_eq!(error_code(&v), 499, "members only");
    let t = h.admin_token().await;
    let v = h
        .post_json("portals/self/roles", &[("f", "json"), ("token", &t), ("num", "100")])
        .await;
    let expected: Vec<String> = h
        .sim
        .org()
        .roles
        .iter()
        .filter(|r| r.has_role_id)
        .map(|r| r.id.clone())
        .collect();
    let got: Vec<&str> = v["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(v["total"], expected.len());
    assert!(v["roles"][0]["name"].is_string() && v["roles"][0]["description"].is_string());
    let v = h
        .post_json("portals/self/roles", &[("f", "json"), ("token", &t), ("num", "1")])
        .await;
    assert_eq!(v["num"], 1);
    assert_eq!(v["nextStart"], if expected.len() > 1 { 2 } else { -1 });
    let r = h.get("portals/self/roles", &[("token", &t)]).await;
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
}

/// Requests a monthly credits report for October 2026 starting at `start` (epoch ms).
async fn report(h: &Harness, t: &str, start: i64) -> Value {
    h.post_json(
        &format!("community/users/{ADMIN_USERNAME}/report"),
        &[
            ("f", "json"),
            ("token", t),
            ("reportType", "org"),
            ("reportSubType", "credits"),
            ("timeDuration", "monthly"),
            ("startTime", &start.to_string()),
        ],
    )
    .await
}

#[tokio::test]
async fn report_items_appear_late_then_hydrate_and_the_day_of_the_first_is_enough() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    h.sim.update_behaviour(|b| {
        b.report_item_visible_after_ms = 3_600_000;
        b.report_processing_ms = 0;
    });
    // 1 October 2026 at 14:23:05 UTC: what Python sends for "the 1st" called mid-afternoon.
    let oct1 = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let midnight = oct1.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
    let v = report(&h, &t, midnight + 14 * 3_600_000 + 23 * 60_000 + 5_000).await;
    let id = v["itemId"].as_str().unwrap().to_string();
    assert_eq!(
        h.sim.reports()[0].start_time,
        midnight,
        "the period starts at the UTC midnight"
    );
    for path in [
        format!("content/items/{id}"),
        format!("content/items/{id}/data"),
        format!("content/users/{ADMIN_USERNAME}/items/{id}/status"),
    ] {
        let v = h.post_json(&path, &[("f", "json"), ("token", &t)]).await;
        assert_eq!(v["error"]["messageCode"], "CONT_0001", "{path}: not visible yet");
        assert_eq!(v["error"]["message"], "Item does not exist or is inaccessible.");
    }
    h.sim.update_behaviour(|b| b.report_item_visible_after_ms = 0);
    let v = h
        .post_json(&format!("content/items/{id}"), &[("f", "json"), ("token", &t)])
        .await;
    assert_eq!(
        (v["id"].as_str(), v["owner"].as_str()),
        (Some(id.as_str()), Some(ADMIN_USERNAME))
    );
    assert!(v["size"].as_i64().unwrap() > 0);
    // Another member cannot see it.
    let other = h.token_for(USER_USERNAME, USER_PASSWORD).await;
    let v = h
        .post_json(&format!("content/items/{id}"), &[("f", "json"), ("token", &other)])
        .await;
    assert_eq!(v["error"]["messageCode"], "CONT_0001");
    // A time on the 2nd does not start a month.
    let v = report(&h, &t, midnight + 86_400_000 + 1).await;
    assert_eq!(error_code(&v), 400);
}

/// The credits CSV's header line (line 4).
async fn csv_header(h: &Harness, t: &str, id: &str) -> String {
    let r = h
        .get(&format!("content/items/{id}/data"), &[("f", "json"), ("token", t)])
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let csv = h.http.get(&loc).send().await.unwrap().text().await.unwrap();
    csv.lines().nth(3).unwrap().to_string()
}

#[tokio::test]
async fn the_csv_has_one_text_column_unless_full_names_are_switched_on() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    h.sim.update_behaviour(|b| b.report_processing_ms = 0);
    let oct1 = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let start = oct1.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
    let id = report(&h, &t, start).await["itemId"].as_str().unwrap().to_string();
    let header = csv_header(&h, &t, &id).await;
    assert!(
        header.starts_with("Username,") && !header.contains("Full Name"),
        "{header}"
    );
    h.sim.update_behaviour(|b| b.report_full_name_column = true);
    assert!(csv_header(&h, &t, &id).await.starts_with("Username,Full Name,"));
}

#[tokio::test]
async fn downloads_redirect_to_the_other_name_of_this_host_and_the_certificate_covers_both() {
    let identity = TlsIdentity::self_signed().unwrap();
    let sim = start_with(
        small_org(),
        SimOptions {
            tls: Some(identity.clone()),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    sim.update_behaviour(|b| b.report_processing_ms = 0);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(identity.cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let port = sim.addr().port();
    let post = async |host: &str, path: &str, form: &[(&str, &str)]| -> reqwest::Response {
        http.post(format!("https://{host}:{port}/sharing/rest/{path}"))
            .header("Referer", REFERER)
            .form(form)
            .send()
            .await
            .unwrap()
    };
    let v = json_of(
        post(
            "127.0.0.1",
            "generateToken",
            &[
                ("username", ADMIN_USERNAME),
                ("password", ADMIN_PASSWORD),
                ("client", "referer"),
                ("referer", REFERER),
                ("f", "json"),
            ],
        )
        .await,
    )
    .await;
    let t = v["token"].as_str().unwrap().to_string();
    let oct1 = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let start = oct1
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
        .to_string();
    let form = [
        ("f", "json"),
        ("token", t.as_str()),
        ("reportType", "org"),
        ("reportSubType", "credits"),
        ("timeDuration", "monthly"),
        ("startTime", start.as_str()),
    ];
    let v = json_of(post("127.0.0.1", &format!("community/users/{ADMIN_USERNAME}/report"), &form).await).await;
    let id = v["itemId"].as_str().unwrap().to_string();
    for (used, other) in [("127.0.0.1", "localhost"), ("localhost", "127.0.0.1")] {
        let r = post(
            used,
            &format!("content/items/{id}/data"),
            &[("f", "json"), ("token", &t)],
        )
        .await;
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.starts_with(&format!("https://{other}:{port}/")), "{used} → {loc}");
        // Reachable, and the certificate is valid for that name too.
        let r = http.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), 200, "{loc}");
    }
}
