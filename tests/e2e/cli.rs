//! The `credit-steward` CLI end to end: the real binary against portal-sim and moto, and
//! for `allocate` through an HTTP API that checks SigV4 signatures in front of the real
//! allocate function. Assertions read what the simulator, the ledger and the files hold.

use std::path::{Path, PathBuf};
use std::process::Output;

use portal_sim::generate::*;
use portal_sim::{GenParams, Org, generate};
use serde_json::{Value, json};
use testkit::apigw::{CALLER_ARN, HttpApi};
use testkit::moto::moto;

use crate::monthly::{Ym, check_against_records, sim_today};
use crate::support::*;

/// The CLI binary, built with the functions.
fn binary() -> PathBuf {
    testkit::lambda::function_binaries().join("credit-steward")
}

/// Runs the CLI with loopback AWS and `args`; its output.
async fn run(args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(testkit::env::aws_local(&moto().endpoint))
        .envs(extra_env.iter().copied())
        .stdin(std::process::Stdio::null());
    cmd.output().await.expect("the CLI runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// A secret file `name`.json for `org_url`, signing in as `username`.
fn secret_file(dir: &Path, name: &str, org_url: &str, username: &str, password: &str) -> String {
    let path = dir.join(format!("{name}.json"));
    let secret = json!({"portal_url": org_url, "username": username, "password": password});
    std::fs::write(&path, secret.to_string()).unwrap();
    path.display().to_string()
}

/// The finding named `check` in `check --json`'s answer.
fn finding<'a>(findings: &'a Value, check: &str) -> &'a Value {
    findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no finding '{check}' in {findings:#}"))
}

fn org(members: usize, seed: u64) -> Org {
    generate(&GenParams::new(members, seed, chrono::Utc::now().date_naive()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_is_all_green_on_a_proper_account_and_its_deployment() {
    let world = World::new(org(60, 3)).await;
    let bucket = Bucket::create().await;
    let args = [
        "--secret-id",
        &world.secret_id,
        "--table",
        &world.table,
        "--bucket",
        &bucket.name,
    ];
    let out = run(&[&args[..], &["check"]].concat(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let human = text(&out);
    assert!(human.contains("Nothing blocks credit-steward."), "{human}");
    assert!(!human.contains("BLOCKER"), "{human}");

    let out = run(&[&args[..], &["--json", "check"]].concat(), &[]).await;
    let findings = json_out(&out);
    for f in findings.as_array().unwrap() {
        assert_eq!(f["status"], "ok", "{f}");
    }
    assert!(
        finding(&findings, "sign-in")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("'{ADMIN_USERNAME}'"))
    );
    for check in ["ledger table", "reports bucket", "budgeting", "admin contacts"] {
        finding(&findings, check);
    }
    assert!(world.sim.writes().is_empty(), "check changes nothing in ArcGIS");
    assert!(world.ledger().await.is_empty(), "check writes nothing to the ledger");

    // The same from the deployed stack alone: its secret parameter and its outputs.
    let stack = deploy_stack(&world, &bucket).await;
    let out = run(&["--stack", &stack, "--json", "check"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let findings = json_out(&out);
    assert!(
        finding(&findings, "ledger table")["detail"]
            .as_str()
            .unwrap()
            .contains(&world.table)
    );
    assert!(
        finding(&findings, "secret")["detail"]
            .as_str()
            .unwrap()
            .contains(&world.secret_id)
    );
    let out = run(&["--stack", "no-such-stack", "check"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("could not read stack 'no-such-stack'"),
        "{}",
        text(&out)
    );
}

/// A CloudFormation stack in moto with what the CLI reads of a deployed one: the secret
/// parameter and the table and bucket outputs.
async fn deploy_stack(world: &World, bucket: &Bucket) -> String {
    let template = json!({
        "Parameters": {"ArcgisSecretArn": {"Type": "String"}},
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "LedgerTableName": {"Value": world.table},
            "ReportsBucketName": {"Value": bucket.name},
        },
    });
    let name = format!("credit-steward-{}", bucket.name);
    aws_sdk_cloudformation::Client::new(&aws().await)
        .create_stack()
        .stack_name(&name)
        .template_body(template.to_string())
        .parameters(
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key("ArcgisSecretArn")
                .parameter_value(&world.secret_id)
                .build(),
        )
        .send()
        .await
        .expect("stack created in moto");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_blocker_with_its_fix_and_fails() {
    let dir = tempdir();
    // An account without portal:admin:manageCredits (the simulated org's auditor).
    let sim = portal_sim::start(org(40, 4)).await.unwrap();
    let auditor = secret_file(&dir, "auditor", &sim.base_url(), AUDITOR_USERNAME, AUDITOR_PASSWORD);
    // Budgeting off, and no administrative contacts, each in an org of its own.
    let mut off = org(40, 5);
    off.credit_assignments = Some(false);
    let off = portal_sim::start(off).await.unwrap();
    let off_secret = secret_file(&dir, "off", &off.base_url(), ADMIN_USERNAME, ADMIN_PASSWORD);
    let mut alone = org(40, 6);
    alone.contacts.clear();
    let alone = portal_sim::start(alone).await.unwrap();
    let alone_secret = secret_file(&dir, "alone", &alone.base_url(), ADMIN_USERNAME, ADMIN_PASSWORD);

    let cases = [
        (&auditor, "privilege portal:admin:manageCredits", "Member roles"),
        (&off_secret, "budgeting", "Enable credit budgeting"),
        (&alone_secret, "admin contacts", "Administrative contacts"),
    ];
    for (secret, blocker, fix) in cases {
        let out = run(&["--secret-file", secret, "check"], &[]).await;
        let human = text(&out);
        assert_eq!(out.status.code(), Some(1), "{blocker}: {human}");
        let line = human
            .lines()
            .find(|l| l.starts_with("BLOCKER") && l.contains(&format!("{blocker}:")))
            .unwrap_or_else(|| panic!("no blocker line for {blocker}: {human}"));
        assert!(line.contains(fix), "the fix is on the line: {line}");
        assert_eq!(
            human.lines().filter(|l| l.starts_with("BLOCKER")).count(),
            1,
            "only {blocker} blocks: {human}"
        );

        let findings = json_out(&run(&["--secret-file", secret, "--json", "check"], &[]).await);
        let f = finding(&findings, blocker);
        assert_eq!(f["status"], "blocker", "{f}");
        assert!(f["fix"].as_str().unwrap().contains(fix), "{f}");
    }
    // In French, for a French-speaking administrator; the JSON ids stay the same.
    let out = run(&["--secret-file", &auditor, "--lang", "fr", "check"], &[]).await;
    let human = text(&out);
    assert_eq!(out.status.code(), Some(1), "{human}");
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("BLOQUANT") && l.contains("Rôles des membres")),
        "{human}"
    );
    assert!(human.contains("1 point bloquant"), "{human}");
    let findings = json_out(&run(&["--secret-file", &auditor, "--lang", "fr", "--json", "check"], &[]).await);
    assert_eq!(
        finding(&findings, "privilege portal:admin:manageCredits")["status"],
        "blocker"
    );

    // The other privileges of the auditor are reported as held.
    let findings = json_out(&run(&["--secret-file", &auditor, "--json", "check"], &[]).await);
    assert_eq!(finding(&findings, "privilege portal:admin:viewUsers")["status"], "ok");

    // A wrong password and an unknown table are blockers too; the password never shows.
    let wrong = dir.join("wrong.json");
    let secret = json!({"portal_url": sim.base_url(), "username": ADMIN_USERNAME, "password": "not-the-password-123"});
    std::fs::write(&wrong, secret.to_string()).unwrap();
    let out = run(
        &[
            "--secret-file",
            wrong.to_str().unwrap(),
            "--table",
            "no-such-table",
            "check",
        ],
        &[],
    )
    .await;
    let human = text(&out);
    assert_eq!(out.status.code(), Some(1), "{human}");
    assert!(human.lines().any(|l| l.starts_with("BLOCKER  sign-in:")), "{human}");
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("BLOCKER  ledger table:") && l.contains("no-such-table")),
        "{human}"
    );
    assert!(!human.contains("not-the-password-123"), "the password leaked: {human}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_a_dry_scan_show_balances_and_change_nothing() {
    let world = World::new(org(120, 7)).await;
    let args = ["--secret-id", world.secret_id.as_str(), "--table", world.table.as_str()];

    let out = run(
        &[&args[..], &["--json", "members", "--level", "critical", "--limit", "0"]].concat(),
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let critical = json_out(&out);
    let critical = critical.as_array().unwrap();
    assert!(!critical.is_empty(), "the generated org has critical members");
    // Each is critical by the simulator's own figures: under 10 % of the allocation left.
    for m in critical {
        assert_eq!(m["level"], "critical", "{m}");
        let sim = world.sim.member(m["username"].as_str().unwrap()).unwrap();
        let allocation = sim.allocation.expect("a critical member has an allocation");
        assert!(sim.available_credits < allocation * 0.10, "{m} vs {sim:?}");
    }
    // And every enabled member under 10 % is listed (disabled members cannot spend: skipped).
    let expected = world
        .sim
        .members()
        .into_iter()
        .filter(|m| !m.disabled && m.allocation.is_some_and(|a| a > 0.0 && m.available_credits < a * 0.10))
        .count();
    assert_eq!(critical.len(), expected);

    // Sorted by days left: soonest first, unknown last.
    let out = run(
        &[&args[..], &["--json", "members", "--sort", "days-left", "--limit", "0"]].concat(),
        &[],
    )
    .await;
    let days: Vec<f64> = json_out(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["days_until_empty"].as_f64().unwrap_or(f64::INFINITY))
        .collect();
    assert!(days.windows(2).all(|w| w[0] <= w[1]), "{days:?}");

    // The human table: a header, one line per member, the total line.
    let out = run(&[&args[..], &["members", "--limit", "5"]].concat(), &[]).await;
    let human = text(&out);
    assert!(human.starts_with("member "), "{human}");
    assert!(human.contains("(first 5 shown; --limit 0 for all)"), "{human}");

    let out = run(&[&args[..], &["--json", "scan", "--dry-run"]].concat(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let summary = json_out(&out);
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["critical"].as_array().unwrap().len(), critical.len());
    assert_eq!(summary["notification"]["would_send"], true, "{summary:#}");

    // Without --dry-run the CLI refuses: the deployed function owns real runs.
    let out = run(&[&args[..], &["scan"]].concat(), &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--dry-run"), "{}", text(&out));

    assert!(world.sim.notifications().is_empty(), "nothing was sent");
    assert!(world.sim.writes().is_empty(), "nothing was written to ArcGIS");
    assert!(world.ledger().await.is_empty(), "nothing was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_computes_the_month_from_the_records_and_writes_only_where_asked() {
    let sim = portal_sim::start(generate(&GenParams::new(80, 11, testkit::arcgis::as_of())))
        .await
        .unwrap();
    let dir = tempdir();
    let secret = secret_file(&dir, "admin", &sim.base_url(), ADMIN_USERNAME, ADMIN_PASSWORD);
    let month = Ym::containing(sim_today(&sim)).previous();
    let out_dir = dir.join("report");

    let out = run(&["--secret-file", &secret, "report", "--month", &month.key()], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Nothing written"), "{}", text(&out));
    assert!(!out_dir.exists());

    // `report --month` of that month into `dir`, with `env`.
    let report_into = |dir: PathBuf, env: &'static [(&'static str, &'static str)]| {
        let (secret, month) = (secret.clone(), month.key());
        async move {
            let args = [
                "--secret-file",
                &secret,
                "report",
                "--month",
                &month,
                "--out",
                dir.to_str().unwrap(),
            ];
            run(&args, env).await
        }
    };
    let out = report_into(out_dir.clone(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(out_dir.join("credits.json")).unwrap()).unwrap();
    let csv = std::fs::read_to_string(out_dir.join("credits.csv")).unwrap();
    check_against_records(&report, &csv, &sim, month);
    let html = std::fs::read_to_string(out_dir.join("credits.html")).unwrap();
    assert!(html.contains("<html lang=\"en\""), "{}", &html[..200.min(html.len())]);

    // French when the deployment's language is French.
    let fr = dir.join("fr");
    let out = report_into(fr.clone(), &[("LANGUAGE", "fr")]).await;
    assert!(out.status.success(), "{}", text(&out));
    let html = std::fs::read_to_string(fr.join("credits.html")).unwrap();
    assert!(html.contains("<html lang=\"fr\""));

    // A bad month is refused before anything is read.
    sim.clear_log();
    let out = run(&["--secret-file", &secret, "report", "--month", "2026-13"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("2026-13"), "{}", text(&out));
    assert_eq!(sim.total_requests(), 0);
    assert!(
        sim.notifications().is_empty(),
        "the report is never mailed from the CLI"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_signs_shows_the_dry_run_applies_once_and_audit_reads_it_back() {
    let world = World::new(org(60, 9)).await;
    let _function = world.start("allocate", &[]);
    let api = HttpApi::start(world.invoker(), "allocate", "testing", "testing").await;
    let url = api.url();
    let base = ["--api", url.as_str(), "--table", world.table.as_str()];
    let before = world.sim.member("jdoe").unwrap().allocation;
    assert_ne!(before, Some(1500.0));

    // No terminal and no --yes: the dry run is shown, nothing is applied.
    let out = run(
        &[&base[..], &["allocate", "--set", "jdoe=1500", "--reason", "CS-7"]].concat(),
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let human = text(&out);
    assert!(human.contains("would assign"), "the plan is shown: {human}");
    assert!(human.contains("--yes"), "{human}");
    assert_eq!(world.sim.member("jdoe").unwrap().allocation, before);
    assert!(world.sim.writes().is_empty());

    // A wrong secret key: API Gateway refuses the signature; nothing reaches the function.
    let seen = api.seen().len();
    let out = run(
        &[&base[..], &["allocate", "--set", "jdoe=1500", "--yes"]].concat(),
        &[("AWS_SECRET_ACCESS_KEY", "not-the-key")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("refused your credentials (403)"), "{}", text(&out));
    assert!(!text(&out).contains("not-the-key"), "{}", text(&out));
    assert_eq!(api.seen()[seen..].iter().map(|s| s.status).collect::<Vec<_>>(), [403]);

    // Confirmed: a dry run, then one apply under one key.
    let seen = api.seen().len();
    let out = run(
        &[
            &base[..],
            &["allocate", "--set", "jdoe=1500", "--reason", "CS-7", "--yes"],
        ]
        .concat(),
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let calls = api.seen()[seen..].to_vec();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0].idempotency_key.as_ref(), calls[0].status),
        (None, 200),
        "dry run first"
    );
    assert!(calls[1].idempotency_key.is_some(), "{calls:?}");
    assert_eq!(calls[1].status, 200);
    assert_eq!(world.sim.member("jdoe").unwrap().allocation, Some(1500.0));
    assert_eq!(world.sim.allocation_calls().len(), 1, "applied once");

    // The audit trail names the signed caller and the reason.
    let out = run(&[&base[..], &["--json", "audit", "--member", "jdoe"]].concat(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let entries = json_out(&out);
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["caller"]["arn"], CALLER_ARN);
    assert_eq!(entries[0]["reason"], "CS-7");
    assert_eq!(entries[0]["planned"], json!(1500));
    let out = run(&[&base[..], &["audit", "--member", "nobody"]].concat(), &[]).await;
    assert!(text(&out).contains("0 change(s)"), "{}", text(&out));
}

/// A fresh directory under the target dir (kept small; removed with `cargo clean`).
fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = testkit::lambda::workspace_root().join("target/tmp").join(format!(
        "cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
