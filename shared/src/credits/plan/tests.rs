use super::*;

fn c(text: &str) -> Credits {
    Credits::parse_exact(text).unwrap()
}

fn member(username: &str, balance: Balance) -> Member {
    Member {
        username: username.into(),
        full_name: None,
        disabled: false,
        user_type: Some("creatorUT".into()),
        balance,
    }
}

fn limited(username: &str, assigned: &str, available: &str) -> Member {
    member(
        username,
        Balance::Limited {
            assigned: c(assigned),
            available: c(available),
        },
    )
}

fn loose() -> Guardrails {
    Guardrails {
        max_per_member: c("1000000"),
        max_per_plan: c("10000000"),
        max_per_day: c("10000000"),
        org_reserve: Credits::ZERO,
        allow_unlimited_change: false,
    }
}

/// An org with `available` credits, nothing promised, nothing granted today.
fn org(available: &str) -> OrgPosition {
    OrgPosition {
        available: c(available),
        promised: Credits::ZERO,
        granted_last_24h: Credits::ZERO,
    }
}

fn set(u: &str, x: &str) -> Request {
    Request::Set {
        username: u.into(),
        credits: c(x),
    }
}
fn add(u: &str, x: &str) -> Request {
    Request::Add {
        username: u.into(),
        credits: c(x),
    }
}
fn top_up(u: &str, x: &str) -> Request {
    Request::TopUpTo {
        username: u.into(),
        credits: c(x),
    }
}

fn only_outcome(requests: &[Request], members: &[Member]) -> Outcome {
    let plan = plan(requests, members, &org("1000000000"), &loose()).unwrap();
    plan.entries[0].outcome.clone()
}

fn sent(plan: &Plan) -> Vec<(String, String)> {
    plan.assignments()
        .map(|a| (a.username.to_owned(), a.credits.to_string()))
        .collect()
}

fn pair(u: &str, x: &str) -> (String, String) {
    (u.to_owned(), x.to_owned())
}

#[test]
fn top_up_sends_the_absolute_allocation_not_the_target() {
    // 1000 assigned, 950 consumed: a bare "set to 200" would leave −750 available.
    let members = [limited("jdoe", "1000", "50")];
    let p = plan(&[top_up("jdoe", "200")], &members, &org("5000"), &loose()).unwrap();
    assert_eq!(sent(&p), [pair("jdoe", "1150")]);
    let Outcome::Change {
        delta,
        increase,
        available_after,
        below_consumed,
        ..
    } = p.entries[0].outcome
    else {
        panic!("expected a change");
    };
    assert_eq!(
        (delta, increase, available_after, below_consumed),
        (Some(c("150")), c("150"), Some(c("200")), false)
    );
    assert_eq!((p.total_increase, p.org_unpromised_after), (c("150"), c("4850")));
}

#[test]
fn float_noise_never_reaches_the_plan() {
    // top_up_to 200 with 1000 assigned and 949.9 available sent 250.10000000000002 once;
    // add 0.2 to 0.1 sent 0.30000000000000004.
    let members = [limited("a", "1000", "949.9"), limited("b", "0.1", "0.1")];
    let p = plan(
        &[top_up("a", "1150"), add("b", "0.2")],
        &members,
        &org("100000"),
        &loose(),
    )
    .unwrap();
    assert_eq!(sent(&p), [pair("a", "1200.1"), pair("b", "0.3")]);
    let wire = serde_json::to_string(&p.assignments().collect::<Vec<_>>()).unwrap();
    assert_eq!(
        wire,
        r#"[{"username":"a","credits":1200.1},{"username":"b","credits":0.3}]"#
    );
    assert_eq!(p.total_increase.to_string(), "200.3");
    // Consumed 1000 − 949.9 = 50.1 (50.10000000000002 in f64): top up so that 1200.2 are
    // available.
    let members = [limited("n", "1000", "949.9")];
    let p = plan(&[top_up("n", "1200.2")], &members, &org("100000"), &loose()).unwrap();
    assert_eq!(sent(&p), [pair("n", "1250.3")]);
}

#[test]
fn set_and_add_arithmetic() {
    let members = [limited("a", "1000", "50"), limited("b", "100", "100")];
    let p = plan(&[set("a", "1200"), add("b", "25.5")], &members, &org("5000"), &loose()).unwrap();
    assert_eq!(sent(&p), [pair("a", "1200"), pair("b", "125.5")]);
    assert_eq!(p.total_increase, c("225.5"));
    assert_eq!(p.total_decrease, Credits::ZERO);
}

#[test]
fn top_up_is_a_no_change_when_enough_is_available() {
    let members = [
        limited("a", "1000", "200"),
        limited("b", "1000", "250"),
        limited("c", "0.3", "0.3"),
    ];
    let p = plan(
        &[top_up("a", "200"), top_up("b", "200"), top_up("c", "0.3")],
        &members,
        &org("10000"),
        &loose(),
    )
    .unwrap();
    assert!(p.entries.iter().all(|e| matches!(e.outcome, Outcome::NoChange { .. })));
    assert_eq!(p.assignments().count(), 0);
    assert_eq!(p.total_increase, Credits::ZERO);
}

#[test]
fn same_allocation_is_a_no_change() {
    let members = [limited("a", "100", "10")];
    assert!(matches!(
        only_outcome(&[set("a", "100")], &members),
        Outcome::NoChange { .. }
    ));
    assert!(matches!(
        only_outcome(&[add("a", "0")], &members),
        Outcome::NoChange { .. }
    ));
}

#[test]
fn set_below_consumed_is_allowed_but_flagged() {
    let members = [limited("a", "1000", "50")];
    let p = plan(&[set("a", "200")], &members, &org("100"), &loose()).unwrap();
    let Outcome::Change {
        delta,
        increase,
        available_after,
        below_consumed,
        ..
    } = p.entries[0].outcome
    else {
        panic!("expected a change");
    };
    assert_eq!(
        (delta, increase, available_after, below_consumed),
        (Some(c("-800")), Credits::ZERO, Some(c("-750")), true)
    );
    assert_eq!((p.total_increase, p.total_decrease), (Credits::ZERO, c("800")));
    assert_eq!(sent(&p), [pair("a", "200")]);
}

#[test]
fn unknown_users_are_reported_and_never_sent() {
    let members = [limited("jdoe", "100", "0")];
    let p = plan(
        &[top_up("JDoe", "50"), top_up("jdoe2", "50")],
        &members,
        &org("10000"),
        &loose(),
    )
    .unwrap();
    assert!(p.entries.iter().all(|e| e.outcome == Outcome::UnknownUser));
    assert_eq!(p.assignments().count(), 0);
}

#[test]
fn disabled_and_viewer_members_are_skipped() {
    let mut disabled = limited("d", "100", "0");
    disabled.disabled = true;
    let mut viewer = limited("v", "100", "0");
    viewer.user_type = Some("viewerUT".into());
    let p = plan(
        &[add("d", "10"), add("v", "10")],
        &[disabled, viewer],
        &org("10000"),
        &loose(),
    )
    .unwrap();
    let reasons: Vec<_> = p
        .entries
        .iter()
        .map(|e| match e.outcome {
            Outcome::Skipped { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [Some(PlanSkip::Disabled), Some(PlanSkip::Viewer)]);
    assert_eq!(p.assignments().count(), 0);
}

#[test]
fn unlimited_members_need_the_explicit_guardrail() {
    let members = [member("u", Balance::Unlimited)];
    let err = plan(&[top_up("u", "200")], &members, &org("10000"), &loose()).unwrap_err();
    assert_eq!(
        err,
        PlanError::GuardrailBreaches(vec![Breach::UnlimitedChange { username: "u".into() }])
    );

    let allowed = Guardrails {
        allow_unlimited_change: true,
        ..loose()
    };
    for request in [set("u", "200"), add("u", "200"), top_up("u", "200")] {
        let p = plan(&[request], &members, &org("10000"), &allowed).unwrap();
        let Outcome::Change {
            after,
            delta,
            increase,
            available_after,
            ..
        } = p.entries[0].outcome
        else {
            panic!("expected a change");
        };
        assert_eq!(after, Allocation::limited(c("200")).unwrap());
        assert_eq!((delta, increase, available_after), (None, c("200"), None));
        assert_eq!(sent(&p), [pair("u", "200")]);
    }
}

#[test]
fn invalid_requests_are_all_listed() {
    let members = [limited("a", "1", "1")];
    let requests = [set("a", "-5"), set("", "1"), add("a", "1")];
    let Err(PlanError::InvalidRequests(problems)) = plan(&requests, &members, &org("10000"), &loose()) else {
        panic!("expected validation errors");
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(matches!(
        problems[0],
        RequestProblem::BadCredits {
            index: 0,
            reason: InvalidCredits::Negative(_),
            ..
        }
    ));
    assert_eq!(problems[1], RequestProblem::EmptyUsername { index: 1 });
    assert_eq!(
        problems[2],
        RequestProblem::Duplicate {
            username: "a".into(),
            first: 0,
            second: 2
        }
    );
    let message = PlanError::InvalidRequests(problems).to_string();
    assert!(
        message.starts_with("3 invalid request(s)") && message.contains("both name \"a\""),
        "{message}"
    );
}

#[test]
fn every_guardrail_breach_is_listed_with_its_numbers() {
    let members = [
        limited("a", "100", "0"),
        limited("b", "100", "0"),
        member("u", Balance::Unlimited),
    ];
    let guardrails = Guardrails {
        max_per_member: c("300"),
        max_per_plan: c("500"),
        max_per_day: c("1000"),
        org_reserve: c("1100"),
        allow_unlimited_change: false,
    };
    let position = OrgPosition {
        available: c("2000"),
        promised: c("300"),
        granted_last_24h: c("600"),
    };
    let requests = [add("a", "400"), add("b", "250"), set("u", "10")];
    let Err(PlanError::GuardrailBreaches(breaches)) = plan(&requests, &members, &position, &guardrails) else {
        panic!("expected breaches");
    };
    assert_eq!(
        breaches,
        [
            Breach::MaxPerMember {
                username: "a".into(),
                increase: c("400"),
                limit: c("300")
            },
            Breach::UnlimitedChange { username: "u".into() },
            Breach::MaxPerPlan {
                total_increase: c("660"),
                limit: c("500")
            },
            Breach::MaxPerDay {
                granted_last_24h: c("600"),
                total_increase: c("660"),
                left: c("400"),
                limit: c("1000")
            },
            Breach::OrgReserve {
                org_available: c("2000"),
                promised: c("300"),
                total_increase: c("660"),
                unpromised_after: c("1040"),
                reserve: c("1100")
            },
        ]
    );
}

#[test]
fn guardrails_allow_their_exact_limits() {
    let members = [limited("a", "0.1", "0.1")];
    let guardrails = Guardrails {
        max_per_member: c("12.245"),
        max_per_plan: c("12.245"),
        max_per_day: c("12.245"),
        org_reserve: c("7.755"),
        allow_unlimited_change: false,
    };
    // consumed 0 + 12.345 − 0.1 assigned = exactly 12.245: not a breach.
    let p = plan(&[top_up("a", "12.345")], &members, &org("20"), &guardrails).unwrap();
    assert_eq!(p.total_increase, c("12.245"));
    assert_eq!(p.org_unpromised_after, c("7.755"));
    // One micro-credit more breaks all four.
    let Err(PlanError::GuardrailBreaches(b)) = plan(&[top_up("a", "12.345001")], &members, &org("20"), &guardrails)
    else {
        panic!("expected breaches");
    };
    let names: Vec<&str> = b.iter().map(Breach::guardrail).collect();
    assert_eq!(names, ["max_per_member", "max_per_plan", "max_per_day", "org_reserve"]);
}

#[test]
fn the_daily_budget_counts_what_was_already_granted() {
    // Five sequential add 250 under a per-plan limit of 300: the day's budget stops them.
    let guardrails = Guardrails {
        max_per_plan: c("300"),
        max_per_day: c("400"),
        ..loose()
    };
    let members = [limited("a", "100", "100")];
    let mut granted = Credits::ZERO;
    let mut applied = 0;
    for _ in 0..5 {
        let position = OrgPosition {
            granted_last_24h: granted,
            ..org("100000")
        };
        if let Ok(p) = plan(&[add("a", "250")], &members, &position, &guardrails) {
            granted += p.total_increase;
            applied += 1;
        }
    }
    assert_eq!((applied, granted), (1, c("250")));
}

#[test]
fn the_org_reserve_counts_what_members_were_already_promised() {
    let guardrails = Guardrails {
        org_reserve: c("1000"),
        ..loose()
    };
    // 1600 credits, 200 promised to a, 0 to the overspent b: 400 may still be promised.
    let members = [limited("a", "300", "200"), limited("b", "100", "-50")];
    let position = OrgPosition::from_members(c("1600"), &members, Credits::ZERO);
    assert_eq!(position.promised, c("200"));
    assert!(plan(&[add("a", "400")], &members, &position, &guardrails).is_ok());
    let Err(PlanError::GuardrailBreaches(b)) = plan(&[add("a", "400.000001")], &members, &position, &guardrails) else {
        panic!("expected a breach");
    };
    assert_eq!(b[0].guardrail(), "org_reserve");
    assert!(b[0].to_string().contains("200 are already promised"), "{}", b[0]);
}

#[test]
fn the_org_reserve_only_binds_plans_that_add_credits() {
    let members = [limited("a", "100", "50")];
    let guardrails = Guardrails {
        org_reserve: c("1000"),
        ..loose()
    };
    assert!(plan(&[set("a", "80")], &members, &org("-20"), &guardrails).is_ok());
    assert!(plan(&[set("a", "120")], &members, &org("-20"), &guardrails).is_err());
}

#[test]
fn critical_top_up_targets_only_critical_rated_members() {
    let mut disabled = limited("dis", "100", "1");
    disabled.disabled = true;
    let mut viewer = limited("view", "100", "1");
    viewer.user_type = Some("viewerUT".into());
    let members = [
        limited("zed", "100", "5"),
        limited("amy", "1000", "-750"),
        limited("ten", "300", "30"),
        limited("ok", "100", "90"),
        limited("zero", "0", "0"),
        member("unl", Balance::Unlimited),
        disabled,
        viewer,
        limited("zed", "100", "5"),
    ];
    let requests = critical_top_up(&members, &Thresholds::default(), c("200"));
    assert_eq!(requests, [top_up("amy", "200"), top_up("zed", "200")]);
    let p = plan(&requests, &members, &org("10000"), &loose()).unwrap();
    assert_eq!(sent(&p), [pair("amy", "1950"), pair("zed", "295")]);
}

#[test]
fn plans_round_trip_through_json() {
    let members = [limited("a", "100", "10"), limited("b", "100", "90")];
    let p = plan(
        &[top_up("a", "50"), top_up("b", "50"), set("x", "1")],
        &members,
        &org("10000"),
        &loose(),
    )
    .unwrap();
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["entries"][0]["status"], "change");
    assert_eq!(json["entries"][0]["request"]["action"], "top_up_to");
    assert_eq!(
        json["entries"][0]["after"],
        serde_json::json!({"kind": "limited", "credits": 140})
    );
    assert_eq!(json["entries"][1]["status"], "no_change");
    assert_eq!(json["entries"][2]["status"], "unknown_user");
    let back: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(back, p);
    let wire = serde_json::to_string(&p.assignments().collect::<Vec<_>>()).unwrap();
    assert_eq!(wire, r#"[{"username":"a","credits":140}]"#);
}

#[test]
fn requests_deserialize_from_the_api_shape() {
    let r: Vec<Request> = serde_json::from_str(
        r#"[{"action":"set","username":"a","credits":5},{"action":"top_up_to","username":"b","credits":2.5}]"#,
    )
    .unwrap();
    assert_eq!(r, [set("a", "5"), top_up("b", "2.5")]);
}
