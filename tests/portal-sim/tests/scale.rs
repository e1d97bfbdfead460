//! The simulator at scale: 25,000 members, listing without a cap, search capped.

use std::collections::HashSet;

use portal_sim::{GenParams, generate};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_25000_member_org_lists_completely_and_searches_cap_at_10000() {
    let h = Harness::new(generate(&GenParams::new(25_000, 7, as_of()))).await;
    let t = h.admin_token().await;
    let mut seen = HashSet::new();
    let mut pages = 0;
    let mut start = 1i64;
    while start > 0 {
        let s = start.to_string();
        let v = h
            .post_json(
                "portals/self/users",
                &[("f", "json"), ("token", &t), ("start", &s), ("num", "100")],
            )
            .await;
        assert_eq!(v["total"], 25_000);
        for u in v["users"].as_array().unwrap() {
            assert!(
                seen.insert(u["username"].as_str().unwrap().to_string()),
                "{} served twice",
                u["username"]
            );
        }
        pages += 1;
        start = v["nextStart"].as_i64().unwrap();
    }
    assert_eq!((pages, seen.len()), (250, 25_000));
    assert_eq!(h.sim.request_count("portals/self/users"), 250);

    let q = format!("accountid:{}", h.sim.org().id);
    let v = h
        .post_json(
            "community/users",
            &[
                ("f", "json"),
                ("token", &t),
                ("q", &q),
                ("start", "9901"),
                ("num", "100"),
            ],
        )
        .await;
    assert_eq!(v["total"], 10_000, "the search total is capped");
    assert_eq!(v["results"].as_array().unwrap().len(), 100);
    assert_eq!(v["nextStart"], -1, "nothing past 10,000");
    let v = h
        .post_json(
            "community/users",
            &[
                ("f", "json"),
                ("token", &t),
                ("q", &q),
                ("start", "10001"),
                ("num", "100"),
            ],
        )
        .await;
    assert_eq!(v["results"].as_array().unwrap().len(), 0);
    let v = h
        .post_json(
            "portals/self/users/search",
            &[
                ("f", "json"),
                ("token", &t),
                ("q", "*"),
                ("start", "9950"),
                ("num", "100"),
            ],
        )
        .await;
    assert_eq!(
        (v["total"].as_u64(), v["results"].as_array().unwrap().len()),
        (Some(10_000), 51)
    );
}
