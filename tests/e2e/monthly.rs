//! monthly-report end to end: the real binary, under the Runtime API emulator, against
//! portal-sim, an S3 bucket and a DynamoDB ledger in moto. The report's figures are checked
//! against sums of the simulator's own usage records, computed here in micro-credits.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use portal_sim::{GenParams, SimHandle, UsageRecord, generate};
use serde_json::{Value, json};

use crate::support::*;

const FUNCTION: &str = "monthly-report";

/// A calendar month, with its own arithmetic (independent of the shared crate's `Month`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ym {
    year: i32,
    month: u32,
}

impl Ym {
    pub(crate) fn containing(day: NaiveDate) -> Ym {
        Ym {
            year: day.year(),
            month: day.month(),
        }
    }

    pub(crate) fn previous(self) -> Ym {
        match self.month {
            1 => Ym {
                year: self.year - 1,
                month: 12,
            },
            m => Ym {
                year: self.year,
                month: m - 1,
            },
        }
    }

    fn next(self) -> Ym {
        match self.month {
            12 => Ym {
                year: self.year + 1,
                month: 1,
            },
            m => Ym {
                year: self.year,
                month: m + 1,
            },
        }
    }

    fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap()
    }

    /// `[start, end)` in epoch ms, UTC.
    fn window_ms(self) -> (i64, i64) {
        let ms = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
        (ms(self.first_day()), ms(self.next().first_day()))
    }

    pub(crate) fn key(self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// "October 2026".
    fn long_name(self) -> String {
        self.first_day().format("%B %Y").to_string()
    }
}

/// The simulator's "today" (its generated usage ends there).
pub(crate) fn sim_today(sim: &SimHandle) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(sim.org().as_of)
        .unwrap()
        .date_naive()
}

/// The simulator's `f64` credits in micro-credits.
fn micros(credits: f64) -> i64 {
    (credits * 1e6).round() as i64
}

/// An amount the report wrote, in micro-credits, read from its text: amounts are exact
/// decimals now, so anything but `[-]digits[.digits]` with at most six decimals (`1100.0`
/// noise like `43945.364000000045`, an exponent) is a failure, not something to round away.
fn exact_micros(text: &str) -> i64 {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.len() <= 6
            && fraction.bytes().all(|b| b.is_ascii_digit()),
        "'{text}' is not an exact amount (at most six decimals, no exponent)"
    );
    assert!(
        !(digits.contains('.') && (fraction.is_empty() || fraction.ends_with('0'))),
        "'{text}' is not written in its shortest exact form"
    );
    let micros = whole.parse::<i64>().unwrap() * 1_000_000 + format!("{fraction:0<6}").parse::<i64>().unwrap();
    if negative { -micros } else { micros }
}

/// A JSON amount of the report, in micro-credits (see [`exact_micros`]).
fn json_micros(value: &Value) -> i64 {
    assert!(value.is_number(), "an amount is a JSON number: {value}");
    exact_micros(&value.to_string())
}

/// Micro-credits per service type code in `month`, summed from the simulator's records.
fn independent_by_stype(sim: &SimHandle, month: Ym) -> BTreeMap<String, i64> {
    let (start, end) = month.window_ms();
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for r in sim.org().usage.iter().filter(|r| start <= r.day && r.day < end) {
        *sums.entry(r.stype.clone()).or_default() += micros(r.credits);
    }
    sums.retain(|_, m| *m != 0);
    sums
}

/// Micro-credits per operation type code in a stored `credits.json`.
fn report_by_code(report: &Value) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for op in report["operation_types"]
        .as_array()
        .unwrap_or_else(|| panic!("no operation_types in {report}"))
    {
        let code = op["code"]
            .as_str()
            .unwrap_or_else(|| panic!("an operation type without a code: {op}"));
        assert!(
            out.insert(code.to_owned(), json_micros(&op["credits"])).is_none(),
            "{code} twice"
        );
    }
    out
}

/// Micro-credits per operation type code in the stored `credits.csv` (`operation_type` rows).
fn csv_by_code(csv: &str, month: Ym) -> BTreeMap<String, i64> {
    let prefix = format!("{},operation_type,", month.key());
    csv.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let cells: Vec<&str> = rest.split(',').collect();
            (cells[1].to_owned(), exact_micros(cells[2]))
        })
        .collect()
}

/// The three objects of `month`: (key, expected content type).
fn objects_of(month: Ym) -> [(String, &'static str); 3] {
    let prefix = format!("reports/{}/credits", month.key());
    [
        (format!("{prefix}.csv"), "text/csv; charset=utf-8"),
        (format!("{prefix}.json"), "application/json"),
        (format!("{prefix}.html"), "text/html; charset=utf-8"),
    ]
}

/// Reads the month's three objects, checking each exists with its content type.
async fn stored(bucket: &Bucket, month: Ym) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (key, content_type) in objects_of(month) {
        let (bytes, got) = bucket
            .object(&key)
            .await
            .unwrap_or_else(|| panic!("s3://{}/{key} missing", bucket.name));
        assert_eq!(got.as_deref(), Some(content_type), "{key}");
        out.push(bytes);
    }
    out
}

fn succeeded(out: &testkit::lambda::Invocation, logs: &str) -> Value {
    assert!(
        out.function_error.is_none(),
        "the function failed: {}\n{logs}",
        out.payload
    );
    out.payload.clone()
}

/// Checks a stored report against the simulator's records; returns its per-code micro-credits.
pub(crate) fn check_against_records(report: &Value, csv: &str, sim: &SimHandle, month: Ym) -> BTreeMap<String, i64> {
    let expected = independent_by_stype(sim, month);
    assert!(expected.len() > 2, "the generated org used credits in {}", month.key());
    let got = report_by_code(report);
    assert_eq!(got, expected, "per operation type, report vs the simulator's records");
    let total = json_micros(&report["total_credits"]);
    assert_eq!(total, expected.values().sum::<i64>(), "total");
    // Exact money adds up exactly: every member plus the unattributed credits is the total.
    let members: i64 = report["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {report}"))
        .iter()
        .map(|m| json_micros(&m["credits"]))
        .sum();
    assert_eq!(
        members + json_micros(&report["unattributed_credits"]),
        total,
        "members + unattributed"
    );
    assert_eq!(csv_by_code(csv, month), expected, "the CSV's operation_type rows");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_report_archives_mails_once_and_both_sources_agree() {
    let params = GenParams::new(120, 17, Utc::now().date_naive());
    let world = World::new(generate(&params)).await;
    let bucket = Bucket::create().await;
    let function = world.start(FUNCTION, &[("REPORT_BUCKET", &bucket.name), ("REPORT_SOURCE", "usage")]);
    let today = sim_today(&world.sim);
    let month = Ym::containing(today).previous();

    // (1) The Scheduler Input naming the last complete month.
    let first = world.invoke(FUNCTION, &json!({"month": month.key()})).await;
    let s = succeeded(&first, &function.output());
    assert_eq!(s["month"], month.key(), "{s}");
    assert_eq!(s["month_from"], "input");
    assert_eq!(s["source"], "usage");
    assert_eq!(s["balance_snapshot"], "fresh");
    assert!(s["warning"].is_null() && s["report_item"].is_null(), "{s}");
    let uris: Vec<String> = objects_of(month)
        .iter()
        .map(|(k, _)| format!("s3://{}/{k}", bucket.name))
        .collect();
    let mut listed: Vec<String> = serde_json::from_value(s["objects"].clone()).unwrap();
    listed.sort();
    let mut want = uris.clone();
    want.sort();
    assert_eq!(listed, want);

    let mut keys = bucket.keys().await;
    keys.sort();
    assert_eq!(keys.len(), 3, "exactly the three objects: {keys:?}");
    let before = stored(&bucket, month).await;
    let csv = String::from_utf8(before[0].clone()).unwrap();
    let report: Value = serde_json::from_slice(&before[1]).expect("credits.json is JSON");
    let html = String::from_utf8(before[2].clone()).unwrap();
    assert_eq!(report["month"], month.key());
    assert_eq!(report["source"], "usage");
    let usage_totals = check_against_records(&report, &csv, &world.sim, month);
    assert_eq!(report["total_credits"], s["total_credits"]);
    assert_eq!(report["operation_types"], s["operation_types"]);
    assert_eq!(
        json_micros(&report["balance"]["available_credits"]),
        micros(world.sim.org().available_credits)
    );
    assert!(
        csv.starts_with("month,section,name,code,credits,share_percent\n"),
        "{csv}"
    );
    assert!(html.contains(&month.long_name()), "the HTML names the month");

    // One email, to the admin contacts, pointing at the HTML report.
    let mails = world.sim.notifications();
    assert_eq!(mails.len(), 1, "one email for the month");
    let contacts = world.sim.org().contacts;
    assert!(!contacts.is_empty());
    assert_eq!(mails[0].users, contacts);
    assert_eq!(mails[0].channel, "email");
    assert!(mails[0].subject.contains(&month.long_name()), "{}", mails[0].subject);
    // The link opens the HTML report without AWS credentials.
    let html_key = format!("reports/{}/credits.html", month.key());
    let link = mails[0]
        .message
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(&html_key))
        .unwrap_or_else(|| panic!("no link to {html_key}: {}", mails[0].message));
    let opened = reqwest::get(link).await.expect("the link answers");
    assert_eq!(opened.status(), 200, "{link}");
    assert_eq!(opened.text().await.unwrap(), html, "the link opens the stored report");
    assert_eq!(s["email"]["status"], "sent");
    assert_eq!(s["email"]["recipients"], json!(contacts));

    // One run record for the month, finished.
    let runs = world.ledger_where("RUN#monthly-report").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(attr(&runs[0], "sk"), Some(month.key().as_str()));
    assert_eq!(attr(&runs[0], "status"), Some("done"));

    // Usage in the current month moves the org's balance, not the reported month's figures.
    world
        .sim
        .consume(UsageRecord {
            day: Ym::containing(today).window_ms().0,
            username: None,
            stype: "featurestg".into(),
            etype: "storagemb".into(),
            credits: 500.0,
            num: 1,
        })
        .unwrap();

    // (2) Retried through the legacy Scheduled Event, on the 3rd of the following month:
    // the same month, the same bytes, no second email.
    let scheduled = format!("{}-03T06:00:00Z", Ym::containing(today).key());
    let mut legacy = fixture("eventbridge-scheduled-event.json");
    legacy["time"] = json!(scheduled);
    let retry = world.invoke(FUNCTION, &legacy).await;
    let r = succeeded(&retry, &function.output());
    assert_eq!(r["month"], month.key(), "{r}");
    assert_eq!(r["month_from"], "schedule_time");
    assert_eq!(
        r["scheduled_time"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(scheduled.parse().unwrap())
    );
    assert_eq!(r["balance_snapshot"], "reused_from_first_run", "{r}");
    assert_eq!(r["email"]["status"], "already_handled", "{r}");
    assert_eq!(r["email"]["first_status"], "done");
    assert_eq!(r["total_credits"], s["total_credits"]);
    assert_eq!(r["operation_types"], s["operation_types"]);
    let after = stored(&bucket, month).await;
    for ((key, _), (was, now)) in objects_of(month).iter().zip(before.iter().zip(&after)) {
        assert!(was == now, "{key} changed on the retry");
    }
    assert_eq!(bucket.keys().await.len(), 3);
    assert_eq!(world.sim.notifications().len(), 1, "a retried month sends nothing");
    assert_eq!(world.ledger_where("RUN#monthly-report").await.len(), 1);
    assert!(
        !function.output().contains(portal_sim::generate::ADMIN_PASSWORD),
        "the password reached the logs"
    );
    drop(function);
    drop(world);

    // (3) REPORT_SOURCE=report-item in a process of its own (a fresh world holding the same
    // generated org): the same per-operation totals, and the report item is deleted.
    let world = World::new(generate(&params)).await;
    world.sim.update_behaviour(|b| b.report_processing_ms = 0);
    let bucket = Bucket::create().await;
    let function = world.start(
        FUNCTION,
        &[("REPORT_BUCKET", &bucket.name), ("REPORT_SOURCE", "report-item")],
    );
    // This run also asks for French in its Input (the deployment is English).
    let out = world
        .invoke(FUNCTION, &json!({"month": month.key(), "language": "fr"}))
        .await;
    let s = succeeded(&out, &function.output());
    assert_eq!(s["source"], "report-item", "{s}");
    assert_eq!(s["report_item"]["deleted"], true, "{s}");
    assert!(s["report_item"]["kept_because"].is_null(), "{s}");
    let objects = stored(&bucket, month).await;
    let report: Value = serde_json::from_slice(&objects[1]).unwrap();
    assert_eq!(report["source"], "report-item");
    let csv = String::from_utf8(objects[0].clone()).unwrap();
    let item_totals = check_against_records(&report, &csv, &world.sim, month);
    assert_eq!(
        item_totals, usage_totals,
        "report item vs usage API, per operation type"
    );
    let reports = world.sim.reports();
    assert_eq!(reports.len(), 1, "one report item created");
    assert_eq!(reports[0].id, s["report_item"]["item_id"].as_str().unwrap());
    assert_eq!(reports[0].start_time, month.window_ms().0);
    assert!(reports[0].deleted, "the report item is deleted afterwards");
    assert_eq!(world.sim.notifications().len(), 1);
    assert_eq!(world.ledger_where("RUN#monthly-report").await.len(), 1);

    // In French: the email the simulator received and the HTML; the CSV keeps its machine ids
    // (check_against_records parsed it above).
    let mail = &world.sim.notifications()[0];
    let french_month = format!("{} {}", FRENCH_MONTHS[month.month as usize - 1], month.year);
    assert!(
        mail.subject
            .starts_with(&format!("Crédits ArcGIS Online de {french_month} : ")),
        "{}",
        mail.subject
    );
    assert!(
        mail.message.contains("Crédits consommés : ") && mail.message.contains("Rapport complet"),
        "{}",
        mail.message
    );
    assert!(!mail.message.contains("Credits used"), "{}", mail.message);
    let html = String::from_utf8(objects[2].clone()).unwrap();
    assert!(html.contains("<html lang=\"fr\">"), "the HTML says its language");
    assert!(html.contains(&format!("Crédits ArcGIS Online — {french_month}")));
    assert!(
        csv.starts_with("month,section,name,code,credits,share_percent\n"),
        "{csv}"
    );
}

/// French month names, written here independently of the catalogue.
const FRENCH_MONTHS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_report_refuses_bad_months_and_writes_nothing() {
    let world = World::new(generate(&GenParams::new(30, 5, Utc::now().date_naive()))).await;
    let bucket = Bucket::create().await;
    let function = world.start(FUNCTION, &[("REPORT_BUCKET", &bucket.name), ("REPORT_SOURCE", "usage")]);
    let this_month = Ym::containing(sim_today(&world.sim));
    let future = this_month.next().key();
    let current = this_month.key();
    let cases = [
        (
            json!({"month": "2026-13"}),
            "InvalidMonth",
            vec!["2026-13", "does not exist"],
        ),
        (
            json!({"month": future}),
            "MonthNotComplete",
            vec![future.as_str(), "in the future"],
        ),
        (
            json!({"month": current}),
            "MonthNotComplete",
            vec![current.as_str(), "not complete"],
        ),
    ];
    for (event, kind, words) in &cases {
        let out = world.invoke(FUNCTION, event).await;
        assert!(out.function_error.is_some(), "{event}: {}", out.payload);
        assert_eq!(out.payload["errorType"], *kind, "{event}: {}", out.payload);
        let message = out.payload["errorMessage"].as_str().unwrap_or_default();
        for w in words {
            assert!(message.contains(w), "{event}: the error does not say '{w}': {message}");
        }
    }
    for month in ["2026-13", future.as_str(), current.as_str()] {
        let key = format!("reports/{month}/credits.json");
        assert!(bucket.object(&key).await.is_none(), "{key} written");
    }
    assert!(bucket.keys().await.is_empty(), "nothing in the bucket");
    assert!(world.sim.notifications().is_empty(), "no email");
    assert!(world.ledger_where("RUN#").await.is_empty(), "no run record");
    assert_eq!(world.sim.total_requests(), 0, "nothing was asked of ArcGIS");
    assert!(function.output().contains("refused its input"), "{}", function.output());
}
