//! The complete member listing: each member once, ceil(N/100) + constant requests, and an org
//! that reaches the listing cap listed by partition, under every way a cap could show.

use std::collections::{BTreeMap, HashSet};

use portal_sim::org::MemberRecord;
use portal_sim::{
    CappedTotal, EnvelopeFault, Faults, HoldPhase, HoldSpec, ListingCap, PastCap, RoleFilter, SimHandle, Trigger,
};
use shared::arcgis::{ClientConfig, Error, ListingProblem, MemberList, Partition};
use shared::credits::member::{Balance, Credits};

use crate::support::{admin, admin_client, client, config_with, hold_roles_and_last_planned_page, planned_pages, sim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_25000_member_org_is_listed_completely_each_member_once() {
    let sim = sim(25_000).await;
    let expected = sim.members();
    assert_eq!(expected.len(), 25_000);
    let client = admin_client(&sim);

    let list = client.list_members().await.expect("listing succeeds");

    assert!(list.is_complete(), "{:?}", list.problems);
    assert_eq!(list.reported_total, 25_000);
    assert_eq!(list.members.len(), 25_000);
    assert_eq!(list.duplicates_dropped, 0);
    let unique: HashSet<&str> = list.members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(unique.len(), 25_000, "each member exactly once");
    assert!(
        list.members.windows(2).all(|w| w[0].username < w[1].username),
        "deterministic username order"
    );

    // Same balances as the simulator holds (the -1 sentinel read as unlimited), to the
    // micro-credit: what was consumed is exactly assigned − available.
    let exact = |x: f64| Credits::from_f64(x).expect("the simulator serves finite amounts");
    let truth: BTreeMap<&str, _> = expected.iter().map(|m| (m.username.as_str(), m)).collect();
    for m in &list.members {
        let t = truth[m.username.as_str()];
        match m.balance {
            Balance::Unlimited => assert_eq!(t.assigned_credits, -1.0, "{}", m.username),
            Balance::Limited { assigned, available } => {
                assert_eq!(
                    (assigned, available),
                    (exact(t.assigned_credits), exact(t.available_credits)),
                    "{}",
                    m.username
                );
                assert_eq!(m.balance.consumed(), Some(exact(t.consumed)), "{}", m.username);
            }
        }
        assert_eq!(m.disabled, t.disabled);
    }

    // 25,000 reaches the listing cap: listed by role, at the paging floor plus one first page
    // per part, the unfiltered first page and the roles listing; nothing per member.
    assert!(!list.partitions.is_empty(), "listed by partition");
    assert_eq!(sim.request_count("portals/self/users"), paging_floor(&sim, &list));
    assert_eq!(list.pages, paging_floor(&sim, &list));
    assert!(
        list.pages <= 250 + 2 * list.partitions.len() as u64 + 1,
        "{} pages",
        list.pages
    );
    assert_eq!(sim.request_count("portals/self/roles"), 1);
    assert_eq!(sim.request_count("community/users/{user}"), 0);
    assert_eq!(sim.request_count("generateToken"), 1);
    assert_eq!(client.requests_made(), list.pages + 2);
    // Every request asks for JSON; tokens travel in the header, never as a parameter (so
    // never in a URL).
    let log = sim.requests();
    assert!(
        log.iter()
            .all(|r| r.params.iter().any(|(k, v)| k == "f" && v == "json"))
    );
    assert!(log.iter().all(|r| r.params.iter().all(|(k, _)| k != "token")));
    assert!(
        log.iter()
            .filter(|r| r.endpoint != "generateToken")
            .all(|r| r.authenticated && r.method == "GET")
    );
}

#[tokio::test]
async fn token_expiry_in_the_middle_of_a_listing_re_signs_in_and_completes() {
    let sim = sim(3_000).await;
    let client = admin_client(&sim);
    // Sign in first, then let every token die after 12 more requests (mid-listing).
    client.org_properties().await.expect("org properties");
    sim.set_faults(Faults {
        expire_tokens_after: Some(12),
        ..Faults::default()
    });

    let list = client.list_members().await.expect("listing survives token expiry");

    assert!(list.is_complete(), "{:?}", list.problems);
    assert_eq!(list.members.len(), 3_000);
    assert_eq!(
        sim.request_count("generateToken"),
        2,
        "one re-sign-in, shared by concurrent pages"
    );
    let rejected = sim.requests().iter().filter(|r| r.outcome == "error:498").count() as u64;
    // At most the pages under way at once (twice the 8 in flight: an answer gives its place
    // back before it is decoded, so a page may leave with the dead token meanwhile).
    assert!(
        (1..=16).contains(&rejected),
        "{rejected} pages rejected (≤ pages under way)"
    );
    assert_eq!(sim.request_count("portals/self/users"), 30 + rejected);
}

#[tokio::test]
async fn members_without_credit_fields_fall_back_to_exact_lookup_and_one_failure_is_reported() {
    let sim = sim(250).await;
    sim.update_behaviour(|b| b.list_includes_credits = false);
    let victim = sim.members()[100].username.clone();
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: Some(victim.clone()),
            code: 500,
            message: "Unable to load user.".into(),
            when: Trigger::default(),
        }),
        ..Faults::default()
    });
    let client = admin_client(&sim);

    let list = client.list_members().await.expect("a per-member failure is not fatal");

    assert_eq!(list.members.len(), 249);
    assert!(list.members.iter().all(|m| m.username != victim));
    match list.problems.as_slice() {
        [ListingProblem::Lookup { username, error }] => {
            assert_eq!(username, &victim);
            let api = error.api().expect("the envelope is kept");
            assert_eq!(api.code, Some(500));
            assert!(error.to_string().contains(&victim), "{error}");
        }
        other => panic!("expected one lookup problem, got {other:?}"),
    }
    // 3 pages + 250 lookups + sign-in + one portals/self for the org id.
    assert_eq!(sim.request_count("portals/self/users"), 3);
    assert_eq!(sim.request_count("community/users/{user}"), 250);
    assert_eq!(client.requests_made(), 3 + 250 + 2);
}

#[tokio::test]
async fn a_page_that_keeps_failing_fails_the_listing_instead_of_returning_a_partial_list() {
    let sim = sim(500).await;
    sim.set_faults(Faults {
        error_envelope: Some(EnvelopeFault {
            member: None,
            code: 400,
            message: "Invalid parameter.".into(),
            when: Trigger {
                endpoint: Some("portals/self/users".into()),
                every_nth: Some(3),
                ..Trigger::default()
            },
        }),
        ..Faults::default()
    });
    let err = admin_client(&sim).list_members().await.expect_err("no partial list");
    assert!(matches!(err, Error::Api { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("portals/self/users (members from #"),
        "{err}"
    );
}

#[tokio::test]
async fn a_small_org_is_one_page_even_with_concurrency_one() {
    let sim = sim(7).await;
    let config = ClientConfig {
        list_concurrency: 1,
        ..config_with(&sim, admin())
    };
    let list = client(config).list_members().await.expect("listing");
    assert_eq!(list.members.len() as u64, list.reported_total);
    assert!(list.is_complete());
    assert_eq!(list.pages, 1);
}

#[tokio::test]
async fn a_listing_with_the_last_runs_count_is_complete_whether_the_org_is_the_same_size_smaller_or_larger() {
    let sim = sim(450).await;
    let truth: Vec<String> = sim.members().into_iter().map(|m| m.username).collect();
    // (the count the last run recorded, page requests expected)
    for (expected, pages) in [(450, 5), (1000, 10), (120, 5), (0, 5)] {
        let before = sim.request_count("portals/self/users");
        let list = admin_client(&sim)
            .list_members_expecting(Some(expected))
            .await
            .expect("listing succeeds");
        assert!(list.is_complete(), "expecting {expected}: {:?}", list.problems);
        let listed: Vec<&str> = list.members.iter().map(|m| m.username.as_str()).collect();
        assert_eq!(listed, truth, "expecting {expected}: every member once, in order");
        assert_eq!(list.reported_total, 450);
        assert_eq!(
            sim.request_count("portals/self/users") - before,
            pages,
            "expecting {expected}: the same size costs ceil(N/100); a shrunk org the empty pages"
        );
    }
    assert_eq!(
        sim.request_count("portals/self/roles"),
        0,
        "below the cap, no partitions"
    );
}

/// Whether a problem is the one expected for a part (the partition, its size).
type Reported = fn(&ListingProblem, &Partition, u64) -> bool;

/// Awaits `f`, failing the test after 10 s (a hold never reached).
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), f)
        .await
        .expect("not done within 10 s")
}

/// Whether `p` selects `m` (a role selects its members exactly, the simulator's default).
fn selects(p: &Partition, m: &MemberRecord) -> bool {
    p.role.as_ref().is_none_or(|r| *r == m.role_id) && p.user_type.as_ref().is_none_or(|t| *t == m.user_type)
}

/// The listing pages a listing by partition costs, counted from the simulator's members: the
/// unfiltered first page, the first page of each role split by user type, and
/// max(1, ceil(n/100)) for each part listed.
fn paging_floor(sim: &SimHandle, list: &MemberList) -> u64 {
    let org = sim.org();
    let split: HashSet<&Option<String>> = list
        .partitions
        .iter()
        .filter(|p| p.user_type.is_some())
        .map(|p| &p.role)
        .collect();
    let parts: u64 = list
        .partitions
        .iter()
        .map(|p| {
            let n = org.members.iter().filter(|m| selects(p, m)).count() as u64;
            n.div_ceil(100).max(1)
        })
        .sum();
    1 + split.len() as u64 + parts
}

/// A client for `sim` that takes `cap` for the listing cap, fetching `concurrency` pages at once.
fn capped_client(sim: &SimHandle, cap: u64, concurrency: usize) -> shared::arcgis::Client {
    client(ClientConfig {
        listing_cap: cap,
        list_concurrency: concurrency,
        ..config_with(sim, admin())
    })
}

/// Members per role, largest first.
fn role_sizes(sim: &SimHandle) -> Vec<(String, usize)> {
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for m in sim.org().members {
        *sizes.entry(m.role_id).or_default() += 1;
    }
    let mut sizes: Vec<_> = sizes.into_iter().collect();
    sizes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    sizes
}

/// The list holds every member of `sim` exactly once, with nothing reported.
fn assert_every_member_once(sim: &SimHandle, list: &MemberList, case: &str) {
    assert!(list.is_complete(), "{case}: {:#?}", list.problems);
    let truth: Vec<String> = sim.org().members.into_iter().map(|m| m.username).collect();
    let listed: Vec<&str> = list.members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(listed, truth, "{case}: every member exactly once, in username order");
}

#[tokio::test]
async fn an_org_past_the_listing_cap_is_listed_completely_by_partition_however_the_cap_shows() {
    let sim = sim(1_000).await;
    let sizes = role_sizes(&sim);
    // (the cap, how it shows, a role at least that large: split by user type)
    let cases = [
        (600, None, false),
        (
            600,
            Some(ListingCap {
                at: 600,
                total: CappedTotal::Cap,
                past: PastCap::Empty,
            }),
            false,
        ),
        (400, None, true),
        (
            400,
            Some(ListingCap {
                at: 400,
                total: CappedTotal::True,
                past: PastCap::Empty,
            }),
            true,
        ),
        (
            400,
            Some(ListingCap {
                at: 400,
                total: CappedTotal::True,
                past: PastCap::Error,
            }),
            true,
        ),
    ];
    for (cap, shown, split) in cases {
        let case = format!("cap {cap}, {shown:?}");
        assert_eq!(
            sizes[0].1 >= cap,
            split,
            "{case}: the org is as the case needs ({sizes:?})"
        );
        sim.update_behaviour(|b| b.org_users_cap = shown);
        sim.clear_log();

        let list = capped_client(&sim, cap as u64, 8)
            .list_members()
            .await
            .expect("the listing runs");

        assert_every_member_once(&sim, &list, &case);
        assert_eq!(list.duplicates_dropped, 0, "{case}: roles do not overlap");
        let expected_total = match shown {
            Some(ListingCap {
                total: CappedTotal::Cap,
                ..
            }) => cap as u64,
            _ => 1_000,
        };
        assert_eq!(list.reported_total, expected_total, "{case}");
        assert_eq!(
            list.partitions.iter().any(|p| p.user_type.is_some()),
            split,
            "{case}: {:?}",
            list.partitions
        );
        // Every part's pages and one first page per role split, nothing else.
        assert_eq!(
            sim.request_count("portals/self/users"),
            paging_floor(&sim, &list),
            "{case}"
        );
        assert_eq!(list.pages, paging_floor(&sim, &list), "{case}");
        assert_eq!(sim.request_count("portals/self/roles"), 1, "{case}");
        assert!(
            sim.requests()
                .iter()
                .filter(|r| r.endpoint == "portals/self/users")
                .all(|r| r.ok()),
            "{case}: no page past a cap was asked for"
        );
    }
}

#[tokio::test]
async fn the_last_runs_count_past_the_cap_goes_straight_to_partitions() {
    let sim = sim(1_000).await;
    sim.update_behaviour(|b| {
        b.org_users_cap = Some(ListingCap {
            at: 400,
            total: CappedTotal::True,
            past: PastCap::Error,
        })
    });
    let list = capped_client(&sim, 400, 8)
        .list_members_expecting(Some(1_000))
        .await
        .expect("no page past the cap is asked for");
    assert_every_member_once(&sim, &list, "expecting 1,000");
    assert_eq!(sim.request_count("portals/self/users"), paging_floor(&sim, &list));
}

#[tokio::test]
async fn a_part_the_endpoint_will_not_serve_whole_is_reported_never_passed_as_complete() {
    let sim = sim(1_000).await;
    let truth: HashSet<String> = sim.org().members.into_iter().map(|m| m.username).collect();
    let big = Partition {
        role: Some("org_user".into()),
        user_type: Some("creatorUT".into()),
    };
    let big_size = sim.org().members.iter().filter(|m| selects(&big, m)).count() as u64;
    assert!(big_size > 100, "{big_size}");
    // (how a cap of 100 shows, what the part at it is reported as)
    let cases: [(CappedTotal, PastCap, Reported); 3] = [
        (CappedTotal::True, PastCap::Error, |p, big, _| {
            matches!(p, ListingProblem::PastCap { partition, start: 101, cap: 100, error }
                if partition == big && error.api().is_some_and(|a| a.code == Some(400)))
        }),
        (CappedTotal::True, PastCap::Empty, |p, big, size| {
            matches!(p, ListingProblem::PartitionIncomplete { partition, total, listed: 100 }
                if partition == big && *total == size)
        }),
        // A total that stops at the cap proves nothing about what lies past it.
        (CappedTotal::Cap, PastCap::Empty, |p, _, _| {
            matches!(p, ListingProblem::Unprovable { partition, total: 100, cap: 100 }
                if *partition == Partition { role: Some("org_user".into()), user_type: None })
        }),
    ];
    for (total, past, expected) in cases {
        let case = format!("{total:?} / {past:?}");
        sim.update_behaviour(|b| b.org_users_cap = Some(ListingCap { at: 100, total, past }));

        let list = capped_client(&sim, 100, 8)
            .list_members()
            .await
            .expect("the listing runs");

        assert!(!list.is_complete(), "{case}");
        assert!(
            list.problems.iter().any(|p| expected(p, &big, big_size)),
            "{case}: {:#?}",
            list.problems
        );
        let text = list
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("role=org_user"), "{case}: names the part: {text}");
        // What was listed is real and once each.
        let listed: HashSet<&str> = list.members.iter().map(|m| m.username.as_str()).collect();
        assert_eq!(listed.len(), list.members.len(), "{case}");
        assert!(listed.iter().all(|u| truth.contains(*u)), "{case}");
        assert!(listed.len() < truth.len(), "{case}");
    }
}

#[tokio::test]
async fn overlapping_partitions_list_each_member_once() {
    // A base role that also selects the custom roles built on it: their members are in two
    // parts.
    let sim = sim(1_000).await;
    sim.update_behaviour(|b| b.org_users_role_filter = RoleFilter::Base);
    let list = capped_client(&sim, 600, 8)
        .list_members()
        .await
        .expect("the listing runs");
    assert_every_member_once(&sim, &list, "base roles");
    let custom = sim
        .org()
        .members
        .iter()
        .filter(|m| !["org_admin", "org_publisher", "org_user"].contains(&m.role_id.as_str()))
        .count() as u64;
    assert!(custom > 100, "{custom}");
    assert_eq!(
        list.duplicates_dropped, custom,
        "each custom role's members dropped once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_changing_role_mid_listing_is_listed_once_or_its_absence_reported() {
    let sim = sim(1_000).await;
    let org = sim.org();
    // The last member of a role: not on the unfiltered first page, which every partition
    // is checked against.
    let member_of = |role: &str| {
        org.members
            .iter()
            .rfind(|m| m.role_id == role)
            .unwrap()
            .username
            .clone()
    };
    let set_role = |username: &str, role: &str| {
        let mut w = sim.sim().world();
        let i = w.by_username[username];
        w.org.members[i].role_id = role.into();
    };
    // Lists one page at a time (the unfiltered first page, then org_admin's, org_publisher's
    // and org_user's first pages, in that order) and moves `username` to `role` just before
    // org_user's first page is answered.
    let listed_while_moving = async |username: &str, role: &str| {
        let hold = sim.hold(HoldSpec {
            endpoint: "portals/self/users".into(),
            nth: 4,
            phase: HoldPhase::BeforeProcessing,
        });
        let client = capped_client(&sim, 400, 1);
        let run = tokio::spawn(async move { client.list_members().await });
        within(hold.reached()).await;
        set_role(username, role);
        hold.release();
        run.await.unwrap().expect("the listing runs")
    };

    // Moved into a role not listed yet: seen in both.
    let mover = member_of("org_admin");
    let list = listed_while_moving(&mover, "org_user").await;
    assert_every_member_once(&sim, &list, "moved forward");
    assert_eq!(list.duplicates_dropped, 1);

    // Moved into a role already listed: seen in neither, and the count says so.
    let mover = member_of("org_user");
    let list = listed_while_moving(&mover, "org_admin").await;
    assert!(list.members.iter().all(|m| m.username != mover));
    assert!(
        matches!(
            list.problems.as_slice(),
            [ListingProblem::CountMismatch {
                reported_total: 1_000,
                listed: 999
            }]
        ),
        "{:#?}",
        list.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_12000_member_org_behind_a_search_like_10000_cap_is_listed_completely() {
    let sim = sim(12_000).await;
    sim.update_behaviour(|b| b.org_users_cap = Some(ListingCap::default()));
    assert!(role_sizes(&sim)[0].1 < 10_000);

    let list = admin_client(&sim).list_members().await.expect("the listing runs");

    assert_eq!(list.reported_total, 10_000, "the total stops at the cap");
    assert_every_member_once(&sim, &list, "12,000 behind 10,000");
    assert_eq!(list.pages, paging_floor(&sim, &list));
    assert!(list.pages <= 120 + list.partitions.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_planned_by_the_last_runs_parts_requests_every_page_before_the_roles_answer() {
    let sim = sim(1_200).await;
    // (the cap, whether a role reaches it and is split by user type)
    for (cap, split) in [(1_000, false), (400, true)] {
        let client = capped_client(&sim, cap, 8);
        let first = client.list_members().await.expect("the first listing runs");
        assert_every_member_once(&sim, &first, "first listing");
        let hint = first.hint().expect("a complete listing gives a hint");
        assert_eq!(hint.members, 1_200);
        assert_eq!(hint.parts.len(), first.partitions.len(), "cap {cap}: one size per part");
        assert_eq!(
            hint.parts.iter().any(|(p, _)| p.user_type.is_some()),
            split,
            "cap {cap}"
        );
        assert_eq!(hint.parts.iter().map(|(_, n)| n).sum::<u64>(), 1_200, "cap {cap}");
        for (part, n) in &hint.parts {
            let truth = sim.org().members.iter().filter(|m| selects(part, m)).count() as u64;
            assert_eq!(*n, truth, "cap {cap}: {part}");
        }

        // The roles listing is held unanswered; the last planned page is reached all the
        // same: no page waited for the roles.
        let planned = planned_pages(&hint);
        let (roles_hold, pages_hold) = hold_roles_and_last_planned_page(&sim, &hint);
        let pages_before = sim.request_count("portals/self/users");
        let run = {
            let (client, hint) = (client.clone(), hint.clone());
            tokio::spawn(async move { client.list_members_hinted(Some(&hint)).await })
        };
        within(roles_hold.reached()).await;
        within(pages_hold.reached()).await;
        roles_hold.release();
        pages_hold.release();
        let list = run.await.unwrap().expect("the planned listing runs");

        assert_every_member_once(&sim, &list, "planned listing");
        assert_eq!(
            sim.request_count("portals/self/users") - pages_before,
            planned,
            "cap {cap}: a stable org costs the pages it had, nothing more"
        );
        assert_eq!(list.pages, planned);
        assert_eq!(list.hint(), Some(hint));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_listing_of_an_org_whose_roles_changed_is_still_complete() {
    // Listed by role; and with the largest role split by user type (450 more members take
    // the smallest role to the cap too, so it is split where the plan listed it whole).
    for cap in [1_000, 400] {
        roles_changed_since_the_plan(cap).await;
    }
}

async fn roles_changed_since_the_plan(cap: u64) {
    let sim = sim(1_200).await;
    let client = capped_client(&sim, cap, 8);
    let hint = client
        .list_members()
        .await
        .expect("the first listing runs")
        .hint()
        .expect("complete");
    let sizes = role_sizes(&sim);
    let (largest, smallest) = (sizes[0].0.clone(), sizes[sizes.len() - 1].0.clone());
    {
        let mut w = sim.sim().world();
        // A new custom role, given 150 members of the largest role: the largest shrinks by
        // pages the plan requests for nothing, the new role costs its first page first.
        let mut role = w
            .org
            .roles
            .iter()
            .find(|r| r.has_role_id)
            .cloned()
            .expect("a custom role");
        role.id = "NewRole0123456789".into();
        role.name = "New role".into();
        w.org.roles.push(role);
        for m in w.org.members.iter_mut().filter(|m| m.role_id == largest).take(150) {
            m.role_id = "NewRole0123456789".into();
        }
        // And the smallest role grows by 450: pages the plan did not expect.
        for m in w.org.members.iter_mut().filter(|m| m.role_id == largest).take(450) {
            m.role_id = smallest.clone();
        }
    }
    let smallest_now = sim.org().members.iter().filter(|m| m.role_id == smallest).count() as u64;
    let split_now = smallest_now >= cap;
    let planned_whole = hint
        .parts
        .iter()
        .any(|(p, _)| p.role.as_ref() == Some(&smallest) && p.user_type.is_none());
    assert_eq!(
        split_now && planned_whole,
        cap == 400,
        "cap {cap}: {smallest} has {smallest_now}"
    );
    // A role recorded last time that no longer exists: its (empty) pages are dropped.
    let mut stale = hint.clone();
    stale.parts.push((
        Partition {
            role: Some("GoneRole0123456789".into()),
            user_type: None,
        },
        300,
    ));

    let list = client
        .list_members_hinted(Some(&stale))
        .await
        .expect("the listing runs");

    assert_every_member_once(&sim, &list, &format!("cap {cap}: roles changed since the plan"));
    let next = list.hint().expect("complete");
    let role = |p: &Partition, r: &str| p.role.as_deref() == Some(r);
    assert!(
        next.parts
            .iter()
            .any(|(p, n)| role(p, "NewRole0123456789") && *n == 150)
    );
    assert!(next.parts.iter().all(|(p, _)| !role(p, "GoneRole0123456789")));
    assert_eq!(next.parts.iter().map(|(_, n)| n).sum::<u64>(), 1_200);
}

#[tokio::test]
async fn a_planned_listing_of_an_org_back_below_the_cap_lists_it_whole() {
    let sim = sim(900).await;
    let hint = shared::arcgis::ListingHint {
        members: 1_200,
        parts: role_sizes(&sim)
            .into_iter()
            .map(|(r, n)| {
                (
                    Partition {
                        role: Some(r),
                        user_type: None,
                    },
                    n as u64,
                )
            })
            .collect(),
    };
    let list = capped_client(&sim, 1_000, 8)
        .list_members_hinted(Some(&hint))
        .await
        .expect("the listing runs");
    assert_every_member_once(&sim, &list, "below the cap");
    assert!(list.partitions.is_empty(), "listed whole");
    assert_eq!(list.hint().map(|h| h.parts), Some(Vec::new()));
}

#[test]
fn an_incomplete_listing_plans_nothing() {
    // Built by hand: the hint only reads the list's fields.
    let part = Partition {
        role: Some("org_user".into()),
        user_type: Some("creatorUT".into()),
    };
    let mut list = MemberList {
        members: Vec::new(),
        reported_total: 6,
        pages: 1,
        duplicates_dropped: 0,
        partitions: vec![part.clone()],
        partition_totals: vec![6],
        problems: Vec::new(),
    };
    assert_eq!(list.hint().map(|h| h.parts), Some(vec![(part, 6)]));
    list.problems.push(ListingProblem::CountMismatch {
        reported_total: 6,
        listed: 5,
    });
    assert_eq!(list.hint(), None, "a listing that missed someone plans nothing");
}
