//! Garbage in, AGOL-style errors out, and the simulator keeps serving.

use crate::support::*;

const PATHS: &[&str] = &[
    "generateToken",
    "oauth2/token",
    "portals/self",
    "portals/self/update",
    "portals/self/users",
    "portals/self/users/search",
    "community/users",
    "community/users/jdoe",
    "community/users/steward_admin/report",
    "portals/self/assignUserCredits",
    "portals/self/unassignUserCredits",
    "portals/self/createNotification",
    "portals/self/itemsstatus",
    "portals/self/usage",
    "content/users/steward_admin/items/ffff/status",
    "content/items/ffff/data",
    "content/users/steward_admin/items/ffff/delete",
    "portals/OTHERORG/users",
    "no/such/thing",
];

const GARBAGE: &[&[(&str, &str)]] = &[
    &[("start", "-5"), ("num", "abc")],
    &[("start", "99999999999999999999999"), ("num", "1e400")],
    &[
        ("userAssignments", "[{\"username\":1}"),
        ("usernames", "{}"),
        ("users", "[1,2"),
    ],
    &[
        ("userAssignments", "[{\"username\":\"jdoe\",\"credits\":-4}]"),
        ("expiration", "NaN"),
    ],
    &[
        ("startTime", "x"),
        ("endTime", "-1"),
        ("period", "7y"),
        ("groupby", "nonsense"),
    ],
    &[
        ("reportType", "org"),
        ("reportSubType", "credits"),
        ("timeDuration", "monthly"),
        ("startTime", "17"),
    ],
    &[
        ("q", "\u{0}\u{ffff}💥 \"unterminated"),
        ("filter", "nocolon"),
        ("sortField", "'; drop table"),
    ],
    &[
        ("creditAssignments", "maybe"),
        ("contacts", "[not json"),
        ("defaultUserCreditAssignment", "-7"),
    ],
    &[("client", "carrier-pigeon"), ("grant_type", "password")],
];

#[tokio::test]
async fn garbage_to_every_endpoint_gets_an_envelope_and_never_breaks_the_simulator() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let before = h.sim.members();
    for path in PATHS {
        for params in GARBAGE {
            let mut form: Vec<(&str, &str)> = params.to_vec();
            form.push(("f", "json"));
            form.push(("token", &t));
            let v = json_of(h.post(path, &form).await).await;
            assert!(v.get("error").is_some() || v.is_object(), "{path}: {v}");
        }
        // A body that is not form data, and one that is not UTF-8.
        let r = h
            .http
            .post(h.url(path))
            .header("content-type", "application/octet-stream")
            .body(vec![0xff, 0xfe, 0x00])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = h
            .http
            .post(h.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'f', b'=', 0xff, 0xfe])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = h.http.put(h.url(path)).query(&[("f", "json")]).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(h.sim.members(), before, "no garbage changed any member");
    let v = h.post_json("portals/self", &[("f", "json"), ("token", &t)]).await;
    assert!(v.get("error").is_none(), "still serving");
}

#[tokio::test]
async fn invalid_paths_and_other_orgs_get_envelopes() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let v = h.post_json("no/such/thing", &[("f", "json")]).await;
    assert_eq!(
        (error_code(&v), v["error"]["message"].as_str()),
        (400, Some("Invalid URL"))
    );
    let v = h
        .post_json("portals/OTHERORG/users", &[("f", "json"), ("token", &t)])
        .await;
    assert_eq!(error_code(&v), 403);
    let org = h.sim.org().id;
    let v = h
        .post_json(
            &format!("portals/{org}/users"),
            &[("f", "json"), ("token", &t), ("num", "1")],
        )
        .await;
    assert_eq!(
        v["users"].as_array().unwrap().len(),
        1,
        "portals/<orgId> is portals/self"
    );
}
