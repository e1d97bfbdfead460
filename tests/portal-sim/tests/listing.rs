//! `portals/self/users` filtered by role and user type, and under each way a 10,000 cap could
//! show (the listing's cap is unverified; search's is documented).

use portal_sim::{CappedTotal, ListingCap, PastCap, RoleFilter};
use serde_json::Value;

use crate::support::*;

/// A listing request's filters.
type Filters<'a> = Vec<(&'a str, &'a str)>;

/// The usernames of a listing page, in order.
fn usernames(v: &Value) -> Vec<String> {
    v["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users in {v}"))
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

/// Every member the listing serves for `filters`, page by page, and the `total` it announced.
async fn list_all(h: &Harness, token: &str, filters: &[(&str, &str)]) -> (Vec<String>, u64) {
    let (mut all, mut total, mut start) = (Vec::new(), 0, 1i64);
    while start > 0 {
        let s = start.to_string();
        let mut form = vec![("f", "json"), ("token", token), ("start", &s), ("num", "100")];
        form.extend_from_slice(filters);
        let v = h.post_json("portals/self/users", &form).await;
        total = v["total"].as_u64().unwrap_or_else(|| panic!("no total in {v}"));
        all.extend(usernames(&v));
        start = v["nextStart"].as_i64().unwrap();
    }
    (all, total)
}

#[tokio::test]
async fn the_listing_selects_by_exact_role_and_user_type_and_counts_what_it_selects() {
    let h = Harness::new(portal_sim::generate(&portal_sim::GenParams::new(400, 5, as_of()))).await;
    let t = h.admin_token().await;
    let org = h.sim.org();
    let truth = |keep: &dyn Fn(&portal_sim::org::MemberRecord) -> bool| -> Vec<String> {
        org.members
            .iter()
            .filter(|m| keep(m))
            .map(|m| m.username.clone())
            .collect()
    };
    let viewer_role = org.roles.iter().find(|r| r.name == "Viewer").unwrap().id.clone();
    // (the filters, the members they select)
    let cases: Vec<(Filters, Vec<String>)> = vec![
        (vec![("role", "org_user")], truth(&|m| m.role_id == "org_user")),
        (vec![("role", &viewer_role)], truth(&|m| m.role_id == viewer_role)),
        (
            vec![("userLicenseType", "creatorUT")],
            truth(&|m| m.user_type == "creatorUT"),
        ),
        (
            vec![("role", "org_publisher"), ("userLicenseType", "creatorUT")],
            truth(&|m| m.role_id == "org_publisher" && m.user_type == "creatorUT"),
        ),
        (vec![("role", "no_such_role")], Vec::new()),
    ];
    for (filters, expected) in cases {
        assert!(
            expected.len() != org.members.len(),
            "{filters:?} selects a part of the org"
        );
        let (listed, total) = list_all(&h, &t, &filters).await;
        assert_eq!(listed, expected, "{filters:?}: those members, in username order");
        assert_eq!(total, expected.len() as u64, "{filters:?}: total counts the selection");
    }

    // Sorted as asked, filters kept.
    let v = h
        .post_json(
            "portals/self/users",
            &[
                ("f", "json"),
                ("token", &t),
                ("role", "org_user"),
                ("sortField", "username"),
                ("sortOrder", "desc"),
                ("num", "100"),
            ],
        )
        .await;
    let mut desc = truth(&|m| m.role_id == "org_user");
    desc.reverse();
    desc.truncate(100);
    assert_eq!(usernames(&v), desc);

    // With the base-role reading, org_user also selects the custom roles built on it.
    h.sim.update_behaviour(|b| b.org_users_role_filter = RoleFilter::Base);
    let bases: Vec<(String, String)> = org.roles.iter().map(|r| (r.id.clone(), r.base.clone())).collect();
    let base_of = |m: &portal_sim::org::MemberRecord| bases.iter().find(|(id, _)| *id == m.role_id).unwrap().1.clone();
    let (listed, total) = list_all(&h, &t, &[("role", "org_user")]).await;
    let expected = truth(&|m| base_of(m) == "org_user");
    assert!(expected.len() > truth(&|m| m.role_id == "org_user").len());
    assert_eq!((listed, total), (expected.clone(), expected.len() as u64));
    let (listed, _) = list_all(&h, &t, &[("role", &viewer_role)]).await;
    assert_eq!(
        listed,
        truth(&|m| m.role_id == viewer_role),
        "a custom role still selects itself"
    );
}

#[tokio::test]
async fn a_capped_listing_serves_the_first_matches_and_says_so_in_each_plausible_way() {
    let h = Harness::small().await;
    let t = h.admin_token().await;
    let all: Vec<String> = h.sim.org().members.iter().map(|m| m.username.clone()).collect();
    assert_eq!(all.len(), 120);
    let page = |start: &'static str, num: &'static str| {
        let t = t.clone();
        let h = &h;
        async move {
            h.post_json(
                "portals/self/users",
                &[("f", "json"), ("token", &t), ("start", start), ("num", num)],
            )
            .await
        }
    };

    // Search's documented behaviour: the total stops at the cap, so 50 served of 50 announced
    // looks complete.
    h.sim.update_behaviour(|b| {
        b.org_users_cap = Some(ListingCap {
            at: 50,
            ..ListingCap::default()
        })
    });
    let v = page("1", "100").await;
    assert_eq!(usernames(&v), all[..50]);
    assert_eq!((v["total"].as_u64(), v["nextStart"].as_i64()), (Some(50), Some(-1)));
    let v = page("41", "20").await;
    assert_eq!(usernames(&v), all[40..50], "the page that reaches the cap is cut at it");
    assert_eq!(v["nextStart"], -1);
    let v = page("21", "20").await;
    assert_eq!(v["nextStart"], 41, "pages inside the cap go on as usual");
    let v = page("51", "100").await;
    assert_eq!((usernames(&v).len(), v["total"].as_u64()), (0, Some(50)));
    assert_eq!(v["nextStart"], -1);
    let (listed, total) = list_all(&h, &t, &[]).await;
    assert_eq!((listed.len(), total), (50, 50));
    // A selection under the cap is served whole, and counted exactly.
    let admins = h.sim.org().members.iter().filter(|m| m.role_id == "org_admin").count();
    assert!(admins < 50);
    let (listed, total) = list_all(&h, &t, &[("role", "org_admin")]).await;
    assert_eq!((listed.len(), total), (admins, admins as u64));

    // The true total: what was not served shows.
    h.sim.update_behaviour(|b| {
        b.org_users_cap = Some(ListingCap {
            at: 50,
            total: CappedTotal::True,
            past: PastCap::Empty,
        })
    });
    let v = page("1", "100").await;
    assert_eq!(usernames(&v), all[..50]);
    assert_eq!((v["total"].as_u64(), v["nextStart"].as_i64()), (Some(120), Some(-1)));
    let v = page("101", "100").await;
    assert_eq!((usernames(&v).len(), v["total"].as_u64()), (0, Some(120)));

    // Pages past the cap refused outright; set as a script would, over the control API.
    let r = h
        .http
        .put(format!("{}/_sim/behaviour", h.sim.base_url()))
        .json(&serde_json::json!({"org_users_cap": {"at": 50, "total": "true", "past": "error"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.sim.sim().world().behaviour.org_users_cap,
        Some(ListingCap {
            at: 50,
            total: CappedTotal::True,
            past: PastCap::Error,
        })
    );
    let v = page("51", "10").await;
    assert_eq!(error_code(&v), 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("start"), "{v}");
    assert_eq!(usernames(&page("41", "100").await), all[40..50]);

    // Off again: everything.
    h.sim.update_behaviour(|b| b.org_users_cap = None);
    let (listed, total) = list_all(&h, &t, &[]).await;
    assert_eq!((listed, total), (all, 120));
}
