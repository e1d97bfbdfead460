//! One test per ArcGIS quirk the simulator reproduces (docs/arcgis.md lists each with its
//! source), each on the raw wire.

use portal_sim::{Faults, HttpErrorFault, Trigger, UsageRecord, generate::*};
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn quirk01_errors_arrive_inside_http_200_and_gateways_send_real_statuses() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let v = json_of(
        h.post("community/users/no_such_member", &[("f", "json"), ("token", &t)])
            .await,
    )
    .await;
    assert_eq!(error_code(&v), 400);
    // The message Esri's own Python client matches for an unknown user.
    assert_eq!(v["error"]["message"], "User does not exist or is inaccessible.");
    assert!(v["error"]["details"].is_array());

    h.sim.set_faults(Faults {
        http_error: Some(HttpErrorFault {
            status: 429,
            retry_after_secs: Some(2),
            when: Trigger {
                times: Some(1),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    let r = h.post("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(
        serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err(),
        "a gateway body is not JSON"
    );
}

#[tokio::test]
async fn quirk02_f_defaults_to_html_and_pjson_is_pretty() {
    let h = Harness::small().await;
    let r = h.get("portals/self", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("<html>"));

    let r = h.get("portals/self", &[("f", "pjson")]).await;
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(text.contains("\n  \""), "pretty-printed");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["portalName"],
        "ArcGIS Online"
    );

    let v = json_of(h.get("portals/self", &[("f", "json")]).await).await;
    assert_eq!(v["portalMode"], "multitenant");
    let v = json_of(h.get("portals/self", &[("f", "xml")]).await).await;
    assert_eq!(error_code(&v), 400);
}

#[tokio::test]
async fn quirk03_token_as_param_or_header_referer_bound_498_499_403() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    // As a form parameter.
    let v = h
        .post_json("portals/self/users", &[("f", "json"), ("token", &t), ("num", "1")])
        .await;
    assert_eq!(v["users"].as_array().unwrap().len(), 1);
    // As the header.
    let r = h
        .http
        .post(h.url("portals/self/users"))
        .header("Referer", REFERER)
        .header("X-Esri-Authorization", format!("Bearer {t}"))
        .form(&[("f", "json"), ("num", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["users"].as_array().unwrap().len(), 1);
    // Another referer: the token is bound to the one it was issued for.
    let r = h
        .http
        .post(h.url("portals/self/users"))
        .header("Referer", "elsewhere")
        .form(&[("f", "json"), ("token", &t)])
        .send()
        .await
        .unwrap();
    let v = json_of(r).await;
    assert_eq!(
        (error_code(&v), v["error"]["message"].as_str().unwrap()),
        (498, "Invalid token.")
    );
    // Garbage token.
    assert_eq!(
        error_code(&h.post_json("portals/self", &[("f", "json"), ("token", "nope")]).await),
        498
    );
    // No token on a protected resource.
    let v = h.post_json("portals/self/users", &[("f", "json")]).await;
    assert_eq!(
        (error_code(&v), v["error"]["messageCode"].as_str()),
        (499, Some("GWM_0003"))
    );
    // A member without the privilege.
    let user = h.token_for(USER_USERNAME, USER_PASSWORD).await;
    let v = h
        .post_json(
            "portals/self/assignUserCredits",
            &[
                ("f", "json"),
                ("token", &user),
                ("userAssignments", r#"[{"username":"jdoe2","credits":1}]"#),
            ],
        )
        .await;
    assert_eq!(
        (error_code(&v), v["error"]["messageCode"].as_str()),
        (403, Some("GWM_0003"))
    );
    // Expired: the fault makes every issued token invalid after 1 more request.
    h.sim.set_faults(Faults {
        expire_tokens_after: Some(1),
        ..Default::default()
    });
    let v = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert_eq!(error_code(&v), 498);
}

#[tokio::test]
async fn quirk04_portal_self_is_anonymous_friendly_and_app_tokens_get_app_info() {
    let h = Harness::small().await;
    let anon = h.post_json("portals/self", &[("f", "json")]).await;
    for hidden in [
        "user",
        "availableCredits",
        "contacts",
        "creditAssignments",
        "subscriptionInfo",
    ] {
        assert!(anon.get(hidden).is_none(), "anonymous view leaks {hidden}");
    }
    assert!(anon["id"].is_string());
    let v = h
        .post_json(
            "oauth2/token",
            &[
                ("f", "json"),
                ("client_id", APP_CLIENT_ID),
                ("client_secret", APP_CLIENT_SECRET),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    let app = h
        .post_json(
            "portals/self",
            &[("f", "json"), ("token", v["access_token"].as_str().unwrap())],
        )
        .await;
    assert!(app.get("user").is_none());
    assert_eq!(app["appInfo"]["appId"], APP_CLIENT_ID);
    let key = h.post_json("portals/self", &[("f", "json"), ("token", API_KEY)]).await;
    assert!(key.get("user").is_none() && key.get("appInfo").is_some());
    let admin = h
        .post_json("portals/self", &[("f", "json"), ("token", &h.admin_token().await)])
        .await;
    assert_eq!(admin["user"]["username"], ADMIN_USERNAME);
    assert!(admin["availableCredits"].is_number());
}

#[tokio::test]
async fn quirk05_generate_token_is_post_only_ms_expiry_lockout_and_https_only() {
    let h = Harness::small().await;
    let before = chrono::Utc::now().timestamp_millis();
    let v = h
        .post_json(
            "generateToken",
            &[
                ("username", ADMIN_USERNAME),
                ("password", ADMIN_PASSWORD),
                ("client", "referer"),
                ("referer", REFERER),
                ("expiration", "30"),
                ("f", "json"),
            ],
        )
        .await;
    let expires = v["expires"].as_i64().unwrap();
    assert!(
        (before + 29 * 60_000..before + 31 * 60_000).contains(&expires),
        "epoch ms, 30 minutes ahead"
    );
    assert_eq!(v["ssl"], true);
    let v = h
        .post_json(
            "generateToken",
            &[
                ("username", ADMIN_USERNAME),
                ("password", "wrong"),
                ("client", "referer"),
                ("referer", REFERER),
                ("f", "json"),
            ],
        )
        .await;
    assert_eq!(
        (error_code(&v), v["error"]["message"].as_str().unwrap()),
        (400, "Unable to generate token.")
    );
    assert_eq!(v["error"]["details"][0], "Invalid username or password.");
    // GET is refused.
    let v = json_of(
        h.get(
            "generateToken",
            &[
                ("username", ADMIN_USERNAME),
                ("password", ADMIN_PASSWORD),
                ("f", "json"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(error_code(&v), 405);
    // Lockout after repeated failures, even with the right password.
    for _ in 0..5 {
        h.post_json(
            "generateToken",
            &[
                ("username", AUDITOR_USERNAME),
                ("password", "bad"),
                ("referer", REFERER),
                ("f", "json"),
            ],
        )
        .await;
    }
    let v = h
        .post_json(
            "generateToken",
            &[
                ("username", AUDITOR_USERNAME),
                ("password", AUDITOR_PASSWORD),
                ("referer", REFERER),
                ("f", "json"),
            ],
        )
        .await;
    assert_eq!(
        v["error"]["details"][0],
        "Too many invalid attempts. Please try again later."
    );
    // HTTPS only, when the simulator enforces it.
    h.sim.update_behaviour(|b| b.require_https_for_token = true);
    let v = h
        .post_json(
            "generateToken",
            &[
                ("username", ADMIN_USERNAME),
                ("password", ADMIN_PASSWORD),
                ("referer", REFERER),
                ("f", "json"),
            ],
        )
        .await;
    assert_eq!(
        (error_code(&v), v["error"]["message"].as_str().unwrap()),
        (403, "SSL Required")
    );
}

#[tokio::test]
async fn quirk06_oauth_client_credentials_returns_seconds() {
    let h = Harness::small().await;
    let v = h
        .post_json(
            "oauth2/token",
            &[
                ("f", "json"),
                ("client_id", APP_CLIENT_ID),
                ("client_secret", APP_CLIENT_SECRET),
                ("grant_type", "client_credentials"),
                ("expiration", "90"),
            ],
        )
        .await;
    assert_eq!(v["expires_in"], 90 * 60);
    assert!(v["access_token"].is_string() && v.get("refresh_token").is_none());
    let v = h
        .post_json(
            "oauth2/token",
            &[
                ("f", "json"),
                ("client_id", APP_CLIENT_ID),
                ("client_secret", "wrong"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(
        (error_code(&v), v["error"]["error"].as_str()),
        (400, Some("invalid_client"))
    );
}

#[tokio::test]
async fn quirk07_post_works_for_get_resources_and_get_is_refused_on_post_only_operations() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    for path in [
        "community/users",
        "portals/self/users",
        "portals/self",
        "community/users/jdoe",
    ] {
        let v = h.post_json(path, &[("f", "json"), ("token", &t), ("q", "jdoe")]).await;
        assert!(v.get("error").is_none(), "POST {path}: {v}");
    }
    for path in [
        "portals/self/assignUserCredits",
        "portals/self/unassignUserCredits",
        "generateToken",
        "portals/self/createNotification",
    ] {
        let v = json_of(h.get(path, &[("f", "json"), ("token", &t)]).await).await;
        assert_eq!(error_code(&v), 405, "GET {path}");
    }
    assert!(h.sim.allocation_calls().is_empty() && h.sim.notifications().is_empty());
}

#[tokio::test]
async fn quirk08_list_parameters_are_json_text_and_booleans_are_words() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let v = h
        .post_json(
            "portals/self/assignUserCredits",
            &[
                ("f", "json"),
                ("token", &t),
                ("userAssignments", r#"[{"username":"jdoe2","credits":700.0}]"#),
            ],
        )
        .await;
    assert_eq!(v["success"], true);
    // Comma-separated is not JSON: rejected, nothing changed.
    let v = h
        .post_json(
            "portals/self/assignUserCredits",
            &[("f", "json"), ("token", &t), ("userAssignments", "jdoe2:5")],
        )
        .await;
    assert_eq!(error_code(&v), 400);
    let v = h
        .post_json(
            "portals/self/unassignUserCredits",
            &[("f", "json"), ("token", &t), ("usernames", r#"["jdoe"]"#)],
        )
        .await;
    assert_eq!(v["success"], true);
    // createNotification takes comma-separated usernames, and a JSON array too.
    for users in ["jdoe,jdoe2", r#"["jdoe","jdoe2"]"#] {
        let v = h
            .post_json(
                "portals/self/createNotification",
                &[
                    ("f", "json"),
                    ("token", &t),
                    ("notificationChannelType", "email"),
                    ("subject", "s"),
                    ("message", "m"),
                    ("users", users),
                ],
            )
            .await;
        assert_eq!(v["success"], true);
    }
    assert!(h.sim.notifications().iter().all(|n| n.users == ["jdoe", "jdoe2"]));
    let v = h
        .post_json(
            "portals/self/users",
            &[("f", "json"), ("token", &t), ("excludeSystemUsers", "false")],
        )
        .await;
    assert!(v.get("error").is_none());
    let v = h
        .post_json(
            "portals/self/users",
            &[("f", "json"), ("token", &t), ("excludeSystemUsers", "nah")],
        )
        .await;
    assert_eq!(error_code(&v), 400);
    assert_eq!(h.sim.member("jdoe2").unwrap().allocation, Some(700.0));
    assert_eq!(h.sim.member("jdoe").unwrap().allocation, None);
}

#[tokio::test]
async fn quirk09_paging_is_one_based_capped_at_100_and_ends_with_minus_one() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let v = h.post_json("portals/self/users", &[("f", "json"), ("token", &t)]).await;
    assert_eq!(
        (
            v["start"].as_u64(),
            v["num"].as_u64(),
            v["users"].as_array().unwrap().len()
        ),
        (Some(1), Some(10), 10),
        "num defaults to 10"
    );
    assert_eq!(v["nextStart"], 11);
    let v = h
        .post_json("portals/self/users", &[("f", "json"), ("token", &t), ("num", "500")])
        .await;
    assert_eq!(
        (v["num"].as_u64(), v["users"].as_array().unwrap().len()),
        (Some(100), 100),
        "num capped at 100"
    );
    let v = h
        .post_json(
            "portals/self/users",
            &[("f", "json"), ("token", &t), ("start", "101"), ("num", "100")],
        )
        .await;
    assert_eq!(v["users"].as_array().unwrap().len(), 20);
    assert_eq!(v["num"], 100, "num echoes the request, not the count returned");
    assert_eq!(v["nextStart"], -1);
    assert_eq!(v["total"], 120);
    let v = h
        .post_json("portals/self/users", &[("f", "json"), ("token", &t), ("start", "0")])
        .await;
    assert_eq!(error_code(&v), 400, "start is 1-based");
}

#[tokio::test]
async fn quirk10_search_is_fuzzy_crosses_orgs_and_lags() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let org = h.sim.org().id;
    let names = |v: &Value| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let v = h
        .post_json(
            "community/users",
            &[
                ("f", "json"),
                ("token", &t),
                ("q", "jdoe"),
                ("sortField", "username"),
                ("num", "100"),
            ],
        )
        .await;
    assert_eq!(
        names(&v),
        ["jdoe", "jdoe2", "jdoe3", "jdoe_admin", "jdoe_partner"],
        "other orgs' users included, sorted"
    );
    let q = format!("jdoe accountid:{org}");
    let v = h
        .post_json("community/users", &[("f", "json"), ("token", &t), ("q", &q)])
        .await;
    assert_eq!(names(&v), ["jdoe", "jdoe2", "jdoe_admin"]);
    let v = h
        .post_json(
            "portals/self/users/search",
            &[("f", "json"), ("token", &t), ("filter", "username:\"jdoe\"")],
        )
        .await;
    assert_eq!(names(&v), ["jdoe"], "filter is exact");
    h.sim.update_behaviour(|b| b.search_hidden = vec!["jdoe".into()]);
    let v = h
        .post_json("community/users", &[("f", "json"), ("token", &t), ("q", &q)])
        .await;
    assert_eq!(names(&v)[0], "jdoe2", "index lag: the first hit is the wrong member");
}

#[tokio::test]
async fn quirk11_community_users_accepts_username_or_id() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let by_name = h
        .post_json("community/users/jdoe2", &[("f", "json"), ("token", &t)])
        .await;
    let id = by_name["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let by_id = h
        .post_json(&format!("community/users/{id}"), &[("f", "json"), ("token", &t)])
        .await;
    assert_eq!(by_id, by_name);
}

#[tokio::test]
async fn quirk12_minus_one_means_unlimited_and_balances_can_go_negative() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let get = async |u: &str| {
        h.post_json(&format!("community/users/{u}"), &[("f", "json"), ("token", &t)])
            .await
    };
    // As recorded live: an unlimited member's availableCredits is the org's remaining credits.
    let u = get("unlimited_analyst").await;
    assert_eq!(
        (u["assignedCredits"].as_f64(), u["availableCredits"].as_f64()),
        (Some(-1.0), Some(h.sim.org().available_credits))
    );
    // As older mocks show, with the switch: -1 for both.
    h.sim
        .update_behaviour(|b| b.unlimited_available = portal_sim::UnlimitedAvailable::MinusOne);
    let u = get("unlimited_analyst").await;
    assert_eq!(
        (u["assignedCredits"].as_f64(), u["availableCredits"].as_f64()),
        (Some(-1.0), Some(-1.0))
    );
    let o = get("overspent").await;
    assert_eq!(
        (o["assignedCredits"].as_f64(), o["availableCredits"].as_f64()),
        (Some(200.0), Some(-750.0))
    );
    let z = get("zero_alloc").await;
    assert_eq!(
        (z["assignedCredits"].as_f64(), z["availableCredits"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    let mut org = small_org();
    org.default_user_credit_assignment = -1.0;
    let h2 = Harness::new(org).await;
    let v = h2
        .post_json("portals/self", &[("f", "json"), ("token", &h2.admin_token().await)])
        .await;
    assert_eq!(v["defaultUserCreditAssignment"].as_f64(), Some(-1.0));
}

#[tokio::test]
async fn quirk13_assign_sets_at_most_100_and_reports_not_assigned_with_success() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let before = h.sim.member("jdoe").unwrap();
    let v = h.post_json("portals/self/assignUserCredits", &[("f", "json"), ("token", &t), ("userAssignments", r#"[{"username":"jdoe","credits":250},{"username":"ghost","credits":5},{"username":"jdoe_partner","credits":5}]"#)]).await;
    assert_eq!(v["success"], true);
    assert_eq!(v["notAssignedUsers"], serde_json::json!(["ghost", "jdoe_partner"]));
    let after = h.sim.member("jdoe").unwrap();
    assert_eq!(after.allocation, Some(250.0), "sets, does not add");
    assert_eq!(after.available_credits, 250.0 - before.consumed);
    let many: Vec<String> = (0..101)
        .map(|i| format!(r#"{{"username":"u{i}","credits":1}}"#))
        .collect();
    let v = h
        .post_json(
            "portals/self/assignUserCredits",
            &[
                ("f", "json"),
                ("token", &t),
                ("userAssignments", &format!("[{}]", many.join(","))),
            ],
        )
        .await;
    assert_eq!(error_code(&v), 400);
    let v = h
        .post_json(
            "portals/self/unassignUserCredits",
            &[("f", "json"), ("token", &t), ("usernames", r#"["jdoe","ghost"]"#)],
        )
        .await;
    assert_eq!(
        (v["success"].as_bool(), v["notUnAssignedUsers"].clone()),
        (Some(true), serde_json::json!(["ghost"]))
    );
    assert_eq!(h.sim.member("jdoe").unwrap().assigned_credits, -1.0);
    assert_eq!(
        h.sim.allocation_calls().len(),
        2,
        "the refused call is not recorded as applied"
    );
}

#[tokio::test]
async fn quirk14_create_notification_takes_at_most_25_users() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let members: Vec<String> = h.sim.members().iter().map(|m| m.username.clone()).collect();
    let send = async |n: usize| {
        let users = members[..n].join(",");
        h.post_json(
            "portals/self/createNotification",
            &[
                ("f", "json"),
                ("token", &t),
                ("notificationChannelType", "email"),
                ("subject", "Credits"),
                ("message", "Hello"),
                ("users", &users),
            ],
        )
        .await
    };
    assert_eq!(send(25).await["success"], true);
    assert_eq!(error_code(&send(26).await), 400);
    let sent = h.sim.notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].users.len(), 25);
}

#[tokio::test]
async fn quirk15_report_items_process_then_complete_and_download_through_a_redirect() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    h.sim.update_behaviour(|b| b.report_processing_ms = 60_000);
    let start = chrono::NaiveDate::from_ymd_opt(2026, 10, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
        .to_string();
    let v = h
        .post_json(
            &format!("community/users/{ADMIN_USERNAME}/report"),
            &[
                ("f", "json"),
                ("token", &t),
                ("reportType", "org"),
                ("reportSubType", "credits"),
                ("timeDuration", "monthly"),
                ("startTime", &start),
            ],
        )
        .await;
    let id = v["itemId"].as_str().unwrap().to_string();
    let status = async |h: &Harness| {
        h.post_json(
            &format!("content/users/{ADMIN_USERNAME}/items/{id}/status"),
            &[("f", "json"), ("token", &t)],
        )
        .await["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(&h).await, "processing");
    let v = json_of(
        h.get(&format!("content/items/{id}/data"), &[("f", "json"), ("token", &t)])
            .await,
    )
    .await;
    assert_eq!(error_code(&v), 404, "no data before completion");
    h.sim.update_behaviour(|b| b.report_processing_ms = 0);
    assert_eq!(status(&h).await, "completed");
    let r = h
        .get(&format!("content/items/{id}/data"), &[("f", "json"), ("token", &t)])
        .await;
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("http://localhost:"), "another host: {loc}");
    let r = h.http.get(&loc).send().await.unwrap();
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[3].starts_with("Username,") && !lines[3].contains("Full Name"),
        "3 preamble lines then the header: {:?}",
        &lines[..4]
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("jdoe,")).count(), 1);
    assert_eq!(
        lines.len(),
        4 + 120 + 1,
        "one row per member and unattributed usage, no Total"
    );
    assert!(!lines.iter().any(|l| l.starts_with("Total,")));
    assert_eq!(h.sim.storage_token_leaks(), 0);
    let v = h
        .post_json(
            "portals/self/itemsstatus",
            &[
                ("f", "json"),
                ("token", &t),
                ("status", "completed"),
                ("type", "Administrative Report"),
            ],
        )
        .await;
    assert_eq!(
        v["results"][0]["itemId"],
        id.as_str(),
        "reports accumulate in the caller's content"
    );
    // Not the 1st of the month → refused.
    let v = h
        .post_json(
            &format!("community/users/{ADMIN_USERNAME}/report"),
            &[
                ("f", "json"),
                ("token", &t),
                ("reportType", "org"),
                ("reportSubType", "credits"),
                ("timeDuration", "monthly"),
                ("startTime", "1791072000001"),
            ],
        )
        .await;
    assert_eq!(error_code(&v), 400);
}

#[tokio::test]
async fn quirk16_numbers_use_exponents_and_usage_series_are_strings() {
    let mut org = small_org();
    org.available_credits = 5.0018196e7;
    let h = Harness::new(org).await;
    let t = h.admin_token().await;
    let text = h
        .post("portals/self", &[("f", "json"), ("token", &t)])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\"availableCredits\":5.0018196E7"),
        "{}",
        &text[..200.min(text.len())]
    );
    // Tomorrow: a day with no generated usage, so the bucket holds exactly this record.
    let day = h.sim.org().as_of + 86_400_000;
    h.sim
        .consume(UsageRecord {
            day,
            username: Some("jdoe".into()),
            stype: "geocode".into(),
            etype: "geocodecnt".into(),
            credits: 0.0002,
            num: 1,
        })
        .unwrap();
    // Labels are the midnights inside (startTime, endTime]: this asks for the one naming `day`.
    let (s, e) = ((day - 1).to_string(), day.to_string());
    let v = h
        .post_json(
            "portals/self/usage",
            &[
                ("f", "json"),
                ("token", &t),
                ("startTime", &s),
                ("endTime", &e),
                ("period", "1d"),
                ("groupby", "username,stype"),
                ("vars", "credits,num"),
                ("username", "jdoe"),
                ("stype", "geocode"),
            ],
        )
        .await;
    let point = &v["data"][0]["credits"][0];
    assert_eq!(point[0], Value::String(day.to_string()), "timestamp as a string");
    let value = point[1].as_str().unwrap();
    assert_eq!(value, "2.0E-4", "Java formatting");
    assert_eq!(v["data"][0]["num"][0][1], "1");
    let v = h
        .post_json("community/users/jdoe", &[("f", "json"), ("token", &t)])
        .await;
    assert!(v["level"].is_string());
}

#[tokio::test]
async fn quirk17_org_credits_change_between_calls() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let credits = |v: Value| v["availableCredits"].as_f64().unwrap();
    let before = credits(h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await);
    let member_before = credits(
        h.post_json("community/users/jdoe", &[("f", "json"), ("token", &t)])
            .await,
    );
    h.sim
        .consume(UsageRecord {
            day: h.sim.org().as_of,
            username: Some("jdoe".into()),
            stype: "spanalysis".into(),
            etype: "analysis".into(),
            credits: 12.5,
            num: 3,
        })
        .unwrap();
    let after = credits(h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await);
    let member_after = credits(
        h.post_json("community/users/jdoe", &[("f", "json"), ("token", &t)])
            .await,
    );
    assert!((before - after - 12.5).abs() < 1e-6);
    assert!((member_before - member_after - 12.5).abs() < 1e-6);
}

#[tokio::test]
async fn quirk18_credit_assignments_may_be_absent_and_cannot_be_enabled_when_broke() {
    let mut org = small_org();
    org.credit_assignments = None;
    org.available_credits = -5.0;
    let h = Harness::new(org).await;
    let t = h.admin_token().await;
    let v = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert!(v.get("creditAssignments").is_none());
    let u = h
        .post_json("community/users/jdoe", &[("f", "json"), ("token", &t)])
        .await;
    assert_eq!(
        u["assignedCredits"].as_f64(),
        Some(-1.0),
        "no budgeting, no allocations"
    );
    let v = h
        .post_json(
            "portals/self/update",
            &[("f", "json"), ("token", &t), ("creditAssignments", "enabled")],
        )
        .await;
    assert_eq!(error_code(&v), 400);
    assert!(h.sim.org().credit_assignments.is_none(), "nothing changed");
}

#[tokio::test]
async fn quirk19_custom_admin_role_is_not_org_admin() {
    let h = Harness::small().await;
    let t = h.token_for(OFFICER_USERNAME, OFFICER_PASSWORD).await;
    let v = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    let user = &v["user"];
    assert_eq!(user["role"], "org_publisher");
    assert_eq!(user["roleId"].as_str().unwrap().len(), 16);
    let privs: Vec<&str> = user["privileges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(privs.contains(&"portal:admin:manageCredits") && privs.contains(&"portal:admin:viewUsers"));
    // And the privileges are real: the officer may allocate.
    let v = h
        .post_json(
            "portals/self/assignUserCredits",
            &[
                ("f", "json"),
                ("token", &t),
                ("userAssignments", r#"[{"username":"jdoe2","credits":600}]"#),
            ],
        )
        .await;
    assert_eq!(v["success"], true);
}

#[tokio::test]
async fn quirk20_awkward_members_are_present() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let v = h
        .post_json("portals/self/users", &[("f", "json"), ("token", &t), ("num", "100")])
        .await;
    let mut users: Vec<Value> = v["users"].as_array().unwrap().clone();
    users.extend(
        h.post_json(
            "portals/self/users",
            &[("f", "json"), ("token", &t), ("num", "100"), ("start", "101")],
        )
        .await["users"]
            .as_array()
            .unwrap()
            .clone(),
    );
    let find = |u: &str| {
        users
            .iter()
            .find(|x| x["username"] == u)
            .unwrap_or_else(|| panic!("{u} missing"))
            .clone()
    };
    assert_eq!(find("disabled_member")["disabled"], true);
    assert_eq!(find("viewer_member")["userLicenseTypeId"], "viewerUT");
    assert!(find("no_email").get("email").is_none());
    assert_eq!(find("empty_email")["email"], "");
    assert_eq!(find("never_logged_in")["lastLogin"], -1);
    for u in ["jdoe", "jdoe2", "jdoe_admin"] {
        find(u);
    }
}

#[tokio::test]
async fn quirk21_usage_buckets_are_labelled_by_their_start_or_their_end() {
    const DAY: i64 = 86_400_000;
    let mut org = small_org();
    // Tomorrow and the day after: days without generated usage, so each bucket holds exactly
    // what is planted here.
    let day = org.as_of + DAY;
    let org_id = org.id.clone();
    // A public account, in no org: its series carries no userOrgId at all.
    let outsider = UsageRecord {
        day,
        username: Some("public_account_1".into()),
        stype: "geocode".into(),
        etype: "geocodecnt".into(),
        credits: 0.125,
        num: 1,
    };
    let at = org.usage.partition_point(|r| r.day <= day);
    std::sync::Arc::make_mut(&mut org.usage).insert(at, outsider);
    let h = Harness::new(org).await;
    for (offset, credits) in [(0, 0.5), (DAY, 0.25)] {
        h.sim
            .consume(UsageRecord {
                day: day + offset,
                username: Some("jdoe".into()),
                stype: "geocode".into(),
                etype: "geocodecnt".into(),
                credits,
                num: 1,
            })
            .unwrap();
    }
    let t = h.admin_token().await;
    let series = |start: i64, end: i64, period: &'static str| {
        let (h, t) = (&h, t.clone());
        async move {
            let (s, e) = (start.to_string(), end.to_string());
            h.post_json(
                "portals/self/usage",
                &[
                    ("f", "json"),
                    ("token", &t),
                    ("startTime", &s),
                    ("endTime", &e),
                    ("period", period),
                    ("groupby", "username,userorgid"),
                    ("vars", "credits"),
                ],
            )
            .await
        }
    };
    let points = |v: &Value, user: &str| -> Vec<(i64, String)> {
        let s = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["username"] == user)
            .unwrap_or_else(|| panic!("no series for {user}: {v}"));
        s["credits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().parse().unwrap(),
                    p[1].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let month_start = {
        use chrono::Datelike;
        let d = chrono::DateTime::from_timestamp_millis(day).unwrap().date_naive();
        d.with_day(1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc()
    };
    let month_end = month_start
        .checked_add_months(chrono::Months::new(1))
        .unwrap()
        .timestamp_millis();
    let month_start = month_start.timestamp_millis();
    for label in [portal_sim::BucketLabel::Start, portal_sim::BucketLabel::End] {
        h.sim.set_behaviour(portal_sim::Behaviour {
            usage_bucket_label: label,
            ..portal_sim::Behaviour::default()
        });
        // Labels are the midnights inside (startTime, endTime]; each names the day it starts
        // or the day it ends.
        let v = series(day, day + 2 * DAY, "1d").await;
        let expected = match label {
            portal_sim::BucketLabel::Start => [(day + DAY, "0.25"), (day + 2 * DAY, "0.0")],
            portal_sim::BucketLabel::End => [(day + DAY, "0.5"), (day + 2 * DAY, "0.25")],
        };
        assert_eq!(
            points(&v, "jdoe"),
            expected.map(|(t, c)| (t, c.to_owned())),
            "{label:?}"
        );
        // Esri's docstring run: asked from 08:00 to 08:00 seven days later, labelled with the
        // seven midnights between.
        let v = series(day + 8 * 3_600_000, day + 7 * DAY + 8 * 3_600_000, "1d").await;
        let labels: Vec<i64> = points(&v, "jdoe").into_iter().map(|(t, _)| t).collect();
        assert_eq!(labels, (1..=7).map(|n| day + n * DAY).collect::<Vec<_>>(), "{label:?}");
        // Around `day`: its bucket is labelled `day` (start) or `day + 1 day` (end).
        let v = series(day - DAY, day + DAY, "1d").await;
        let jdoe = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["username"] == "jdoe")
            .unwrap();
        assert_eq!(jdoe["userOrgId"], org_id.as_str(), "{label:?}");
        let outsider = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["username"] == "public_account_1")
            .unwrap();
        assert!(outsider.get("userOrgId").is_none(), "absent, not null: {outsider}");
        let outsider_day = match label {
            portal_sim::BucketLabel::Start => day,
            portal_sim::BucketLabel::End => day + DAY,
        };
        assert!(
            points(&v, "public_account_1").contains(&(outsider_day, "0.125".to_owned())),
            "{label:?}"
        );
        // Every period: the bucket `[day, day + period)`, labelled by its start or its end,
        // holds what falls inside it.
        let v = series(day - 1, day + 3_600_000, "1h").await;
        let named = match label {
            portal_sim::BucketLabel::Start => day,
            portal_sim::BucketLabel::End => day + 3_600_000,
        };
        assert!(points(&v, "jdoe").contains(&(named, "0.5".to_owned())), "{label:?} 1h");
        // Months are calendar months: the bucket holding `day` is its month, summed exactly.
        let in_month: i64 = h
            .sim
            .org()
            .usage
            .iter()
            .filter(|r| r.username.as_deref() == Some("jdoe") && (month_start..month_end).contains(&r.day))
            .map(|r| (r.credits * 1e6).round() as i64)
            .sum();
        let v = series(month_start - 1, month_end, "1m").await;
        let named = match label {
            portal_sim::BucketLabel::Start => month_start,
            portal_sim::BucketLabel::End => month_end,
        };
        let monthly = points(&v, "jdoe");
        let (_, value) = monthly
            .iter()
            .find(|(t, _)| *t == named)
            .unwrap_or_else(|| panic!("{label:?} 1m: {monthly:?}"));
        let value: f64 = value.parse().unwrap();
        assert_eq!((value * 1e6).round() as i64, in_month, "{label:?} 1m");
        // Weeks are ISO weeks: every weekly label is a Monday at midnight.
        let v = series(day - 21 * DAY, day + DAY, "1w").await;
        let weekly: Vec<i64> = v["data"][0]["credits"]
            .as_array()
            .expect("a series")
            .iter()
            .map(|p| p[0].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(weekly.len() >= 3, "{label:?}: {weekly:?}");
        assert!(weekly.iter().all(|t| {
            use chrono::Datelike;
            let d = chrono::DateTime::from_timestamp_millis(*t).unwrap();
            d.weekday() == chrono::Weekday::Mon && t % DAY == 0
        }));
    }
}
