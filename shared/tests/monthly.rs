//! The monthly report end to end: portal-sim for ArcGIS, moto for S3 (and DynamoDB for the
//! ledger in the retry test), the report checked against sums computed here from the
//! simulator's own usage records.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use portal_sim::org::SERVICE_TYPES;
use portal_sim::{SimHandle, UsageRecord};
use serde_json::{Value, json};
use shared::arcgis::{Client, ClientConfig, NotifyChannel};
use shared::config::{ReportLinks, ReportSource};
use shared::credits::member::Credits;
use shared::credits::usage::BucketLabel;
use shared::ledger::{Ledger, RunClaim, RunStatus};
use shared::monthly::{
    self, Deps, EmailOutcome, Month, MonthFrom, MonthlyError, MonthlyReport, ReportKeys, ReportSettings, ReportStore,
    RunSummary, SnapshotOrigin, SourceKind,
};

use crate::support::{admin, admin_client, config_with, geocode_usage, sim};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn october() -> Month {
    "2026-10".parse().unwrap()
}

/// The scheduled run on the 1st and its clock.
const FIRST: &str = "2026-11-01T06:00:00Z";
fn first_run_now() -> DateTime<Utc> {
    at("2026-11-01T06:00:04Z")
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// An S3 client for moto: explicit endpoint, path-style, no environment.
fn s3() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&crate::support::moto_aws())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A fresh, empty bucket of its own.
async fn bucket(s3: &aws_sdk_s3::Client) -> ReportStore {
    let name = unique("monthly");
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("bucket created in moto");
    ReportStore::new(shared::s3::S3Client::new(&crate::support::moto_aws()), name)
}

async fn object(s3: &aws_sdk_s3::Client, store: &ReportStore, key: &str) -> (Vec<u8>, Option<String>) {
    let out = s3
        .get_object()
        .bucket(store.bucket())
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
    let content_type = out.content_type().map(str::to_owned);
    (out.body.collect().await.unwrap().to_vec(), content_type)
}

async fn keys_in(s3: &aws_sdk_s3::Client, store: &ReportStore) -> Vec<String> {
    let out = s3.list_objects_v2().bucket(store.bucket()).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// A DynamoDB ledger table of its own in moto, and its name.
async fn dynamo_ledger() -> (Ledger, String) {
    let client = crate::ledger::dynamodb();
    let table = crate::ledger::create_table(&client, "monthly").await;
    (Ledger::dynamo(client, table.clone()), table)
}

/// The table name the settings carry when the test hands the run an in-memory ledger.
const MEMORY_LEDGER: &str = "credit-steward-ledger (in memory)";

fn settings(source: ReportSource, keep_report_items: bool, store: &ReportStore, ledger_table: &str) -> ReportSettings {
    ReportSettings {
        bucket: store.bucket().to_owned(),
        ledger_table: ledger_table.to_owned(),
        source,
        keep_report_items,
        top_n: 5,
        notify_channel: NotifyChannel::Email,
        bucket_label: BucketLabel::Start,
        language: shared::i18n::Lang::En,
        links: ReportLinks::Presigned(Duration::from_secs(3_600)),
    }
}

fn client(sim: &SimHandle, report_deadline: Duration) -> Client {
    Client::new(ClientConfig {
        report_deadline,
        ..config_with(sim, admin())
    })
    .expect("client builds")
}

async fn run_once(
    event: Value,
    client: &Client,
    store: &ReportStore,
    ledger: &Ledger,
    settings: &ReportSettings,
    now: DateTime<Utc>,
) -> Result<RunSummary, MonthlyError> {
    let deps = Deps {
        client,
        store,
        ledger,
        settings,
    };
    monthly::run(event, deps, now).await
}

/// One record's credits as the exact amount it stands for.
fn exact(credits: f64) -> Credits {
    Credits::from_f64(credits).unwrap_or_else(|e| panic!("the simulator recorded {credits}: {e}"))
}

/// Credits per operation-type label in `month`, summed here from the simulator's records in
/// exact credits (each record read with `Credits::from_f64`, then exact addition), with the
/// simulator's own labels.
fn independent_by_label(sim: &SimHandle, month: Month) -> BTreeMap<String, Credits> {
    let (start, end) = (month.start().timestamp_millis(), month.end().timestamp_millis());
    let mut sums: BTreeMap<String, Credits> = BTreeMap::new();
    let org = sim.org();
    for r in org.usage.iter().filter(|r| start <= r.day && r.day < end) {
        *sums.entry(label_of(&r.stype).to_owned()).or_default() += exact(r.credits);
    }
    sums
}

fn label_of(code: &str) -> &'static str {
    SERVICE_TYPES
        .iter()
        .find(|s| s.code == code)
        .map(|s| s.label)
        .unwrap_or_else(|| panic!("the simulator used an unknown code {code}"))
}

fn independent_total(sim: &SimHandle, month: Month) -> Credits {
    independent_by_label(sim, month).values().sum()
}

/// Credits per username in `month` (attributed records only), exact.
fn independent_by_member(sim: &SimHandle, month: Month) -> BTreeMap<String, Credits> {
    let (start, end) = (month.start().timestamp_millis(), month.end().timestamp_millis());
    let mut sums: BTreeMap<String, Credits> = BTreeMap::new();
    for r in sim.org().usage.iter().filter(|r| start <= r.day && r.day < end) {
        if let Some(u) = &r.username {
            *sums.entry(u.clone()).or_default() += exact(r.credits);
        }
    }
    sums.retain(|_, c| !c.is_zero());
    sums
}

/// Every amount in the report equals the independent sums exactly: no tolerance.
fn assert_matches_independent_sums(report: &MonthlyReport, sim: &SimHandle) {
    let expected = independent_by_label(sim, report.month);
    assert!(
        !expected.is_empty(),
        "the generated org used credits in {}",
        report.month
    );
    let got: BTreeMap<String, Credits> = report
        .operation_types
        .iter()
        .map(|o| (o.label.clone(), o.credits))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "same operation types"
    );
    assert_eq!(got, expected, "each operation type, to the micro-credit");
    assert_eq!(report.total_credits, independent_total(sim, report.month));
    let sorted = report.operation_types.windows(2).all(|w| w[0].credits >= w[1].credits);
    assert!(sorted, "operation types sorted descending");
    let by_type: Credits = report.operation_types.iter().map(|o| o.credits).sum();
    assert_eq!(
        by_type, report.total_credits,
        "operation types add up to the total exactly"
    );
    let members: Credits = report.members.iter().map(|m| m.credits).sum::<Credits>() + report.unattributed_credits;
    assert_eq!(members, report.total_credits, "members + unattributed = total, exactly");
    assert!(
        report.unattributed_credits.is_positive(),
        "org-level storage is shown as unattributed"
    );
    if let Some(prev) = &report.previous {
        assert_eq!(
            prev.change_credits,
            report.total_credits - prev.total_credits,
            "the month-over-month change is exact"
        );
    }
}

/// The CSV's credits column is exact decimal text (never float noise: `parse_exact` refuses
/// more than six decimals) and its rows add up exactly, to the report's own amounts.
fn assert_csv_is_exact(csv_text: &str, report: &MonthlyReport) {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let mut sections: BTreeMap<String, Vec<Credits>> = BTreeMap::new();
    for row in reader.records() {
        let row = row.expect("a CSV row");
        let cell = &row[4];
        let credits = Credits::parse_exact(cell).unwrap_or_else(|e| panic!("credits cell {cell:?}: {e}"));
        assert_eq!(credits.to_string(), cell, "written as the exact decimal text");
        sections.entry(row[1].to_owned()).or_default().push(credits);
    }
    let sum = |section: &str| -> Credits { sections.get(section).into_iter().flatten().sum() };
    assert_eq!(sections["total"], vec![report.total_credits]);
    assert_eq!(
        sum("operation_type"),
        report.total_credits,
        "CSV operation types = total"
    );
    assert_eq!(
        sum("member") + sum("unattributed"),
        report.total_credits,
        "CSV members + unattributed = total"
    );
    assert_eq!(sections["unattributed"], vec![report.unattributed_credits]);
    let members: Vec<Credits> = report.members.iter().map(|m| m.credits).collect();
    assert_eq!(sections["member"], members, "member rows in report order");
    if let Some(prev) = &report.previous {
        assert_eq!(sections["previous_month_total"], vec![prev.total_credits]);
    }
}

#[tokio::test]
async fn both_sources_match_an_independent_sum_of_the_simulators_records() {
    let sim = sim(150).await;
    let s3 = s3();
    let event = json!({"scheduled_time": FIRST});
    let mut totals = Vec::new();
    for source in [ReportSource::Usage, ReportSource::ReportItem] {
        let store = bucket(&s3).await;
        let ledger = Ledger::memory();
        let summary = run_once(
            event.clone(),
            &client(&sim, Duration::from_secs(30)),
            &store,
            &ledger,
            &settings(source, false, &store, MEMORY_LEDGER),
            first_run_now(),
        )
        .await
        .unwrap_or_else(|e| panic!("{source:?}: {e}"));
        assert_eq!(
            (summary.month, summary.month_from),
            (october(), MonthFrom::ScheduleTime)
        );
        assert_eq!(summary.source, SourceKind::from(source));

        // The stored JSON is the full report; check it against the records.
        let keys = ReportKeys::for_month(october());
        let (json_bytes, json_type) = object(&s3, &store, &keys.json).await;
        let report: MonthlyReport = serde_json::from_slice(&json_bytes).unwrap();
        assert_matches_independent_sums(&report, &sim);
        assert_eq!(report.total_credits, summary.total_credits);
        assert_eq!(report.unattributed_credits, summary.unattributed_credits);
        assert_eq!(summary.members_with_credits, report.members.len());
        // The JSON holds every amount as its exact decimal text.
        let json_text = std::str::from_utf8(&json_bytes).unwrap();
        assert!(
            json_text.contains(&format!("\"total_credits\": {},", report.total_credits)),
            "total written exactly as {}",
            report.total_credits
        );
        assert_eq!(report.top_members.len(), 5);
        assert_eq!(report.top_members[..], report.members[..5]);

        // The previous month comes from the usage API for both sources.
        let prev = report.previous.as_ref().expect("September is within retention");
        assert_eq!(prev.month.to_string(), "2026-09");
        assert_eq!(prev.source, SourceKind::Usage);
        assert_eq!(prev.total_credits, independent_total(&sim, october().previous()));

        // Balance and runway from the org's properties (the balance exact; the rate and the
        // runway are ratios, in f64).
        let available = exact(sim.org().available_credits);
        assert_eq!(report.balance.available_credits, available);
        let rate = report.total_credits.to_f64() / 31.0;
        assert!((report.balance.credits_per_day - rate).abs() < 1e-5);
        let days = report.balance.days_until_empty.expect("credits are being spent");
        assert!((days - available.to_f64() / rate).abs() < 0.1, "{days}");

        // Three objects, with content types.
        assert_eq!(json_type.as_deref(), Some("application/json"));
        let (csv, csv_type) = object(&s3, &store, &keys.csv).await;
        assert_eq!(csv_type.as_deref(), Some("text/csv; charset=utf-8"));
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.starts_with("month,section,name,code,credits,share_percent\n"));
        assert!(csv.contains("2026-10,unattributed,"));
        assert_csv_is_exact(&csv, &report);
        let (html, html_type) = object(&s3, &store, &keys.html).await;
        assert_eq!(html_type.as_deref(), Some("text/html; charset=utf-8"));
        let html = String::from_utf8(html).unwrap();
        assert!(html.contains("<svg") && html.contains("October 2026"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "self-contained"
        );

        if source == ReportSource::Usage {
            // Per member too (the CSV source folds non-members into the unattributed row).
            let expected = independent_by_member(&sim, october());
            assert_eq!(report.members.len(), expected.len());
            for m in &report.members {
                assert_eq!(m.credits, expected[&m.username], "{}", m.username);
            }
            let got: BTreeMap<String, Credits> =
                report.members.iter().map(|m| (m.username.clone(), m.credits)).collect();
            assert_eq!(got, expected, "every member, to the micro-credit");
            assert!(summary.report_item.is_none());
        } else {
            let item = summary.report_item.as_ref().expect("report item outcome");
            assert!(item.deleted && item.kept_because.is_none());
            let reports = sim.reports();
            assert_eq!(reports.len(), 1);
            assert!(reports[0].deleted, "the report item is deleted by default");
            assert_eq!(reports[0].start_time, october().start().timestamp_millis());
        }
        totals.push(report.total_credits);
    }
    assert_eq!(
        totals[0], totals[1],
        "usage {} vs report item {}: the two sources agree exactly",
        totals[0], totals[1]
    );
}

#[tokio::test]
async fn a_retry_on_the_third_rewrites_the_same_objects_and_mails_once() {
    let sim = sim(80).await;
    let s3 = s3();
    let store = bucket(&s3).await;
    let (ledger, table) = dynamo_ledger().await;
    let client = client(&sim, Duration::from_secs(30));
    let settings = settings(ReportSource::Usage, false, &store, &table);
    let keys = ReportKeys::for_month(october());

    let first = run_once(
        json!({"scheduled_time": FIRST}),
        &client,
        &store,
        &ledger,
        &settings,
        first_run_now(),
    )
    .await
    .unwrap();
    assert_eq!(first.balance_snapshot, SnapshotOrigin::Fresh);
    assert!(first.warning.is_none());
    let EmailOutcome::Sent { recipients, subject } = &first.email else {
        panic!("{:?}", first.email)
    };
    assert_eq!(recipients, &sim.org().contacts);
    assert!(subject.contains("October 2026"), "{subject}");
    let notes = sim.notifications();
    assert_eq!(notes.len(), 1, "one email (one batch) to the admin contacts");
    assert_eq!(notes[0].users, sim.org().contacts);
    assert_eq!(notes[0].channel, "email");
    let mut before = Vec::new();
    for key in [&keys.csv, &keys.html, &keys.json] {
        before.push(object(&s3, &store, key).await.0);
    }
    // The email links to the HTML report: opened without AWS credentials, it is the report.
    let link = notes[0]
        .message
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(&keys.html))
        .unwrap_or_else(|| panic!("no link to {} in: {}", keys.html, notes[0].message));
    let opened = reqwest::get(link).await.expect("the link answers");
    assert_eq!(opened.status(), 200, "{link}");
    assert_eq!(
        opened.bytes().await.unwrap().to_vec(),
        before[1],
        "the link opens the HTML report"
    );

    // November usage moves the org's balance, but not October's figures.
    sim.consume(UsageRecord {
        day: at("2026-11-02T00:00:00Z").timestamp_millis(),
        username: None,
        stype: "featurestg".into(),
        etype: "stg".into(),
        credits: 500.0,
        num: 1,
    })
    .unwrap();
    let moved = exact(sim.org().available_credits);
    assert_eq!(
        moved,
        first.balance.available_credits - Credits::whole(500),
        "the org's credits moved by exactly the 500 consumed"
    );

    // Retried on the 3rd in every shape: the same month, the same bytes, no second email.
    let third = at("2026-11-03T10:30:00Z");
    let legacy = json!({
        "version": "0", "id": "0d0c7f8e-0000-4000-8000-000000000001", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": FIRST, "region": "us-east-1",
        "resources": [], "detail": {}
    });
    let mut default_envelope = legacy.clone();
    default_envelope["source"] = json!("aws.scheduler");
    default_envelope["detail"] = json!("{}");
    let retries = [
        (json!({"scheduled_time": FIRST}), MonthFrom::ScheduleTime),
        (legacy, MonthFrom::ScheduleTime),
        (default_envelope, MonthFrom::ScheduleTime),
        (json!({"month": "2026-10"}), MonthFrom::Input),
        (json!({}), MonthFrom::Now),
    ];
    for (event, from) in retries {
        let again = run_once(event.clone(), &client, &store, &ledger, &settings, third)
            .await
            .unwrap_or_else(|e| panic!("{event}: {e}"));
        assert_eq!((again.month, again.month_from), (october(), from), "{event}");
        assert_eq!(again.warning.is_some(), from == MonthFrom::Now, "{event}");
        assert_eq!(again.balance_snapshot, SnapshotOrigin::ReusedFromFirstRun);
        assert_eq!(again.total_credits, first.total_credits);
        assert_eq!(again.balance, first.balance);
        let EmailOutcome::AlreadyHandled {
            first_claimed_at,
            first_status,
        } = again.email
        else {
            panic!("{event}: {:?}", again.email)
        };
        assert_eq!((first_claimed_at, first_status), (first_run_now(), RunStatus::Done));
        for (key, was) in [&keys.csv, &keys.html, &keys.json].into_iter().zip(&before) {
            assert!(object(&s3, &store, key).await.0 == *was, "{key} changed after {event}");
        }
    }
    assert_eq!(sim.notifications().len(), 1, "still one email for October");
    assert_eq!(keys_in(&s3, &store).await.len(), 3);

    // The run record holds the first run's summary.
    let RunClaim::AlreadyClaimed { status, summary, .. } =
        ledger.claim_run(monthly::JOB, "2026-10", third).await.unwrap()
    else {
        panic!("October was claimed")
    };
    assert_eq!(status, RunStatus::Done);
    let summary = summary.expect("finished with a summary");
    assert_eq!(summary["month"], "2026-10");
    assert_eq!(summary["email"]["status"], "sent");
    assert_eq!(
        Credits::from_json(&summary["total_credits"]),
        Some(first.total_credits),
        "the stored summary keeps the exact total"
    );
    assert_eq!(
        Credits::from_json(&summary["balance"]["available_credits"]),
        Some(first.balance.available_credits)
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_clearly_and_nothing_is_written() {
    let sim = sim(20).await;
    let s3 = s3();
    let store = bucket(&s3).await;
    let ledger = Ledger::memory();
    let client = client(&sim, Duration::from_secs(30));
    let settings = settings(ReportSource::ReportItem, false, &store, MEMORY_LEDGER);
    let now = at("2026-11-26T08:00:00Z");
    let cases = [
        (json!({"month": "2026-13"}), "InvalidMonth", "does not exist"),
        (json!({"month": "2026-1"}), "InvalidMonth", "YYYY-MM"),
        (
            json!({"month": "2026-11"}),
            "MonthNotComplete",
            "not complete until 2026-12-01",
        ),
        (json!({"month": "2027-02"}), "MonthNotComplete", "in the future"),
        (
            json!({"month": "2024-10"}),
            "MonthOutsideUsageRetention",
            "earliest month",
        ),
        (json!({"month": 7}), "InvalidEvent", "invalid type"),
        (
            json!({"month": "2026-10", "force": true}),
            "InvalidEvent",
            "unknown field `force`",
        ),
        (
            json!({"scheduled_time": "tomorrow"}),
            "InvalidEvent",
            "scheduled_time 'tomorrow' is not an RFC 3339 timestamp",
        ),
        (json!([]), "InvalidEvent", "not a JSON object"),
        (
            json!({"scheduled_time": "2027-03-01T06:00:00Z"}),
            "MonthNotComplete",
            "2027-02",
        ),
    ];
    for (event, kind, text) in cases {
        let err = run_once(event.clone(), &client, &store, &ledger, &settings, now)
            .await
            .expect_err(&event.to_string());
        assert_eq!(err.kind(), kind, "{event}: {err}");
        assert!(err.is_bad_input());
        assert!(err.to_string().contains(text), "{event}: {err}");
    }
    assert!(keys_in(&s3, &store).await.is_empty(), "no S3 object");
    assert!(sim.notifications().is_empty(), "no email");
    assert!(sim.reports().is_empty(), "no report item");
    assert_eq!(sim.total_requests(), 0, "not even a read");
    for month in ["2026-10", "2026-11", "2027-02", "2024-10"] {
        let claim = ledger.claim_run(monthly::JOB, month, now).await.unwrap();
        assert_eq!(claim, RunClaim::Claimed, "no ledger record for {month}");
    }
}

#[tokio::test]
async fn the_report_item_is_kept_only_when_asked() {
    let sim = sim(20).await;
    let s3 = s3();
    let store = bucket(&s3).await;
    let summary = run_once(
        json!({"month": "2026-09"}),
        &client(&sim, Duration::from_secs(30)),
        &store,
        &Ledger::memory(),
        &settings(ReportSource::ReportItem, true, &store, MEMORY_LEDGER),
        at("2026-11-26T08:00:00Z"),
    )
    .await
    .unwrap();
    let item = summary.report_item.expect("report item outcome");
    assert!(!item.deleted);
    assert_eq!(item.kept_because.as_deref(), Some("KEEP_REPORT_ITEMS is true"));
    let reports = sim.reports();
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].deleted);
    assert_eq!(reports[0].id, item.item_id);
    assert_eq!(summary.month.to_string(), "2026-09");
}

#[tokio::test]
async fn a_report_item_stuck_in_processing_is_a_clear_timeout_and_nothing_is_sent() {
    let sim = sim(20).await;
    sim.update_behaviour(|b| b.report_stuck = true);
    let s3 = s3();
    let store = bucket(&s3).await;
    let ledger = Ledger::memory();
    let started = std::time::Instant::now();
    let err = run_once(
        json!({"scheduled_time": FIRST}),
        &client(&sim, Duration::from_millis(800)),
        &store,
        &ledger,
        &settings(ReportSource::ReportItem, false, &store, MEMORY_LEDGER),
        first_run_now(),
    )
    .await
    .expect_err("stuck");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by the deadline");
    assert_eq!(err.kind(), "ReportItemTimeout");
    let msg = err.to_string();
    assert!(
        msg.contains("still 'processing'") && msg.contains("waiting for the credits report item"),
        "{msg}"
    );
    assert!(keys_in(&s3, &store).await.is_empty());
    assert!(sim.notifications().is_empty());
    assert_eq!(
        ledger
            .claim_run(monthly::JOB, "2026-10", first_run_now())
            .await
            .unwrap(),
        RunClaim::Claimed,
        "no run record"
    );
    let reports = sim.reports();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].deleted, "the stuck item is cleaned up");

    // A failed report is its own error type.
    sim.update_behaviour(|b| {
        b.report_stuck = false;
        b.report_fail = true;
        b.report_processing_ms = 0;
    });
    let err = run_once(
        json!({"scheduled_time": FIRST}),
        &client(&sim, Duration::from_secs(5)),
        &store,
        &Ledger::memory(),
        &settings(ReportSource::ReportItem, false, &store, MEMORY_LEDGER),
        first_run_now(),
    )
    .await
    .expect_err("failed");
    assert_eq!(err.kind(), "ReportItemFailed", "{err}");
}

#[tokio::test]
async fn a_failed_email_is_recorded_and_not_resent() {
    let sim = sim(20).await;
    let s3 = s3();
    let store = bucket(&s3).await;
    let ledger = Ledger::memory();
    let client = client(&sim, Duration::from_secs(30));
    let settings = settings(ReportSource::Usage, false, &store, MEMORY_LEDGER);
    sim.set_faults(portal_sim::Faults {
        error_envelope: Some(portal_sim::EnvelopeFault {
            member: None,
            code: 500,
            message: "Unable to send notification".into(),
            when: portal_sim::Trigger {
                endpoint: Some("portals/self/createNotification".into()),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    let err = run_once(
        json!({"month": "2026-10"}),
        &client,
        &store,
        &ledger,
        &settings,
        first_run_now(),
    )
    .await
    .expect_err("email fails");
    assert_eq!(err.kind(), "EmailFailed", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("not resent automatically") && msg.contains("RUN#monthly-report/2026-10"),
        "{msg}"
    );
    assert_eq!(
        keys_in(&s3, &store).await.len(),
        3,
        "the report is written all the same"
    );
    sim.clear_faults();

    let retry = run_once(
        json!({"month": "2026-10"}),
        &client,
        &store,
        &ledger,
        &settings,
        first_run_now(),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            retry.email,
            EmailOutcome::AlreadyHandled {
                first_status: RunStatus::Failed,
                ..
            }
        ),
        "{:?}",
        retry.email
    );
    assert!(sim.notifications().is_empty(), "the failed email was not resent");
}

#[tokio::test]
async fn an_unreadable_stored_report_only_costs_the_balance_snapshot() {
    let sim = sim(20).await;
    let s3 = s3();
    let store = bucket(&s3).await;
    let keys = ReportKeys::for_month(october());
    store
        .put(&keys.json, b"not the report".to_vec(), "application/json")
        .await
        .unwrap();
    let summary = run_once(
        json!({"scheduled_time": FIRST}),
        &client(&sim, Duration::from_secs(30)),
        &store,
        &Ledger::memory(),
        &settings(ReportSource::Usage, false, &store, MEMORY_LEDGER),
        first_run_now(),
    )
    .await
    .unwrap();
    assert_eq!(summary.balance_snapshot, SnapshotOrigin::FreshStoredUnreadable);
    assert_eq!(summary.balance.available_credits, exact(sim.org().available_credits));
    let (bytes, _) = object(&s3, &store, &keys.json).await;
    let report: MonthlyReport = serde_json::from_slice(&bytes).expect("overwritten with the report");
    assert_eq!(report.balance, summary.balance);
}

/// The simulator's switch for the product's `USAGE_BUCKET_LABEL`.
fn sim_label(label: BucketLabel) -> portal_sim::BucketLabel {
    match label {
        BucketLabel::Start => portal_sim::BucketLabel::Start,
        BucketLabel::End => portal_sim::BucketLabel::End,
    }
}

/// Plants usage on the last day of September, the first and last days of October and the
/// first of November, each amount different, so that a month shifted by a day at either edge
/// has other totals. Returns the member charged.
fn plant_month_edges(sim: &SimHandle) -> String {
    let username = sim.members()[0].username.clone();
    for (day, credits) in [
        ("2026-09-30", 3.000_001),
        ("2026-10-01", 1.25),
        ("2026-10-31", 2.75),
        ("2026-11-01", 4.5),
    ] {
        geocode_usage(
            sim,
            &username,
            at(&format!("{day}T00:00:00Z")).timestamp_millis(),
            credits,
        );
    }
    username
}

/// The simulator's records over the whole UTC days `[from, to)`, exact.
fn independent_between(sim: &SimHandle, from: &str, to: &str) -> Credits {
    let (from, to) = (at(from).timestamp_millis(), at(to).timestamp_millis());
    sim.org()
        .usage
        .iter()
        .filter(|r| from <= r.day && r.day < to)
        .map(|r| exact(r.credits))
        .sum()
}

#[tokio::test]
async fn month_totals_are_exact_at_the_month_edges_under_either_bucket_label() {
    let s3 = s3();
    for label in [BucketLabel::Start, BucketLabel::End] {
        // Both sides agree on the convention: the simulator labels buckets as configured.
        let sim = sim(40).await;
        sim.set_behaviour(portal_sim::Behaviour {
            usage_bucket_label: sim_label(label),
            ..portal_sim::Behaviour::default()
        });
        let username = plant_month_edges(&sim);
        let (october, september) = (october(), october().previous());
        let total = independent_total(&sim, october);
        // A day too early or too late at the edges would give another total.
        assert_ne!(
            total,
            independent_between(&sim, "2026-09-30T00:00:00Z", "2026-10-31T00:00:00Z")
        );
        assert_ne!(
            total,
            independent_between(&sim, "2026-10-02T00:00:00Z", "2026-11-02T00:00:00Z")
        );

        let store = bucket(&s3).await;
        let settings = ReportSettings {
            bucket_label: label,
            ..settings(ReportSource::Usage, false, &store, MEMORY_LEDGER)
        };
        let summary = run_once(
            json!({"scheduled_time": FIRST}),
            &client(&sim, Duration::from_secs(30)),
            &store,
            &Ledger::memory(),
            &settings,
            first_run_now(),
        )
        .await
        .unwrap_or_else(|e| panic!("{label:?}: {e}"));
        assert_eq!(summary.total_credits, total, "{label:?}: October's total");
        let previous = summary.previous.expect("September is within retention");
        assert_eq!(
            previous.total_credits,
            independent_total(&sim, september),
            "{label:?}: September's total"
        );

        // Per member too: the member query's edges are those of the per-type query.
        let figures = monthly::source::from_usage(&admin_client(&sim), october, Some(september), label)
            .await
            .unwrap();
        let by_member = figures.by_member.expect("the usage source reads members on their own");
        assert_eq!(by_member.total, total, "{label:?}");
        let charged = by_member
            .by_member
            .iter()
            .find(|m| m.member.to_string() == username)
            .map(|m| m.credits);
        assert_eq!(
            charged,
            independent_by_member(&sim, october).get(&username).copied(),
            "{label:?}: {username}"
        );
        assert!(figures.notes.is_empty(), "{label:?}: {:?}", figures.notes);
    }
}

#[tokio::test]
async fn a_mismatched_bucket_label_shifts_the_month_by_exactly_one_day() {
    let (october, september) = (october(), october().previous());
    for (served, configured, from, to) in [
        // End labels read as starts: each day is taken for the day after it.
        (
            BucketLabel::End,
            BucketLabel::Start,
            "2026-09-30T00:00:00Z",
            "2026-10-31T00:00:00Z",
        ),
        // Start labels read as ends: each day is taken for the day before it.
        (
            BucketLabel::Start,
            BucketLabel::End,
            "2026-10-02T00:00:00Z",
            "2026-11-02T00:00:00Z",
        ),
    ] {
        let sim = sim(40).await;
        sim.set_behaviour(portal_sim::Behaviour {
            usage_bucket_label: sim_label(served),
            ..portal_sim::Behaviour::default()
        });
        plant_month_edges(&sim);
        let figures = monthly::source::from_usage(&admin_client(&sim), october, Some(september), configured)
            .await
            .unwrap();
        let shifted = independent_between(&sim, from, to);
        assert_eq!(
            figures.by_service.total, shifted,
            "served {served:?}, read as {configured:?}"
        );
        assert_ne!(figures.by_service.total, independent_total(&sim, october));
    }
}
