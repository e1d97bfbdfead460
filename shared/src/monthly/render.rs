//! The report as files and as an email: `credits.csv`, `credits.json`, `credits.html`, and a
//! plain-text summary, in the run's language ([`Lang`]).
//!
//! - The CSV is one tidy table (`month,section,name,code,credits,share_percent`), so a
//!   spreadsheet filter on `section` gives the operation types, the members, the unattributed
//!   bucket or the total. Its header and `section` values are machine ids, the same in every
//!   language (tools parse them); the human labels in its `name` column follow the language.
//!   Numbers stay machine numbers (`1234.5`), so every spreadsheet reads them. Text cells
//!   that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR) get a leading
//!   `'` (OWASP's CSV-injection advice).
//! - The HTML is self-contained and fetches nothing: inline CSS, an inline SVG bar chart, a
//!   Content-Security-Policy of `default-src 'none'`, and `lang` set to the language. Every
//!   string from ArcGIS (labels, usernames, the org's name) is escaped.
//! - Every rendering is a pure function of the report and the language, so a retried run
//!   writes the same bytes.

use std::fmt::Write as _;

use super::report::{MonthlyReport, SourceKind};
use crate::credits::amount::Credits;
use crate::i18n::Lang;
use crate::member_text::safe_one_line;

/// Usernames shown to people are cut at this length (ArcGIS usernames are far shorter).
const USERNAME_MAX_CHARS: usize = 64;

/// The CSV's header row: machine ids, the same in every language.
pub const CSV_HEADER: [&str; 6] = ["month", "section", "name", "code", "credits", "share_percent"];

/// `credits.json`: the whole report, pretty-printed.
pub fn json(report: &MonthlyReport) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec_pretty(report)?;
    out.push(b'\n');
    Ok(out)
}

/// `credits.csv` (layout in the module docs).
pub fn csv(report: &MonthlyReport, lang: Lang) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    let month = report.month.to_string();
    let mut row = |section: &str, name: &str, code: Option<&str>, credits: Credits, share: Option<f64>| {
        w.write_record([
            month.as_str(),
            section,
            &defuse(name),
            &defuse(code.unwrap_or("")),
            &credits.to_string(),
            &share.map(|s| s.to_string()).unwrap_or_default(),
        ])
    };
    for op in &report.operation_types {
        row(
            "operation_type",
            &op.label,
            op.code.as_deref(),
            op.credits,
            op.share_percent,
        )?;
    }
    for m in &report.members {
        row("member", &m.username, None, m.credits, m.share_percent)?;
    }
    let unattributed_share = report.unattributed_share_percent();
    row(
        "unattributed",
        lang.t("monthly.csv_unattributed"),
        None,
        report.unattributed_credits,
        unattributed_share,
    )?;
    let full = (!report.total_credits.is_zero()).then_some(100.0);
    row("total", lang.t("monthly.total"), None, report.total_credits, full)?;
    if let Some(prev) = &report.previous {
        row(
            "previous_month_total",
            &prev.month.to_string(),
            None,
            prev.total_credits,
            None,
        )?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Makes a text cell inert in spreadsheets.
fn defuse(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567.891` → `1,234,567.89` (two decimals, thousands grouped), in English.
pub fn credits_text(x: Credits) -> String {
    Lang::En.credits(x, 2)
}

/// A rate (credits per day) for people, two decimals.
fn rate_text(lang: Lang, x: f64) -> String {
    lang.number(x, 2)
}

fn percent_text(lang: Lang, p: Option<f64>) -> String {
    p.map(|p| lang.percent_with(p, 1)).unwrap_or_else(|| "–".to_owned())
}

fn signed_percent_text(lang: Lang, p: Option<f64>) -> String {
    match p {
        Some(p) if p > 0.0 => format!("+{}", lang.percent_with(p, 1)),
        Some(p) => lang.percent_with(p, 1),
        None => lang.t("monthly.change_na").to_owned(),
    }
}

fn days_text(lang: Lang, days: Option<f64>) -> String {
    match days {
        None => lang.t("monthly.not_running_out").to_owned(),
        Some(d) if d <= 0.0 => lang.t("monthly.none_left").to_owned(),
        Some(d) => {
            let rounded = d.round().max(1.0);
            lang.p("monthly.days", rounded as usize, &[("days", &lang.number(rounded, 0))])
        }
    }
}

/// A moment for people: `November 1, 2026, 06:00 UTC` / `1er novembre 2026, 06:00 UTC`.
fn moment(lang: Lang, t: chrono::DateTime<chrono::Utc>) -> String {
    format!("{}, {}", lang.date(t.date_naive()), t.format("%H:%M UTC"))
}

fn source_text(lang: Lang, source: SourceKind) -> &'static str {
    match source {
        SourceKind::Usage => lang.t("monthly.source_usage"),
        SourceKind::ReportItem => lang.t("monthly.source_report_item"),
    }
}

/// Cuts a label for the chart; the full text stays in the bar's tooltip and the table.
fn short(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_owned()
    } else {
        let cut: String = label.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;\
background:#f5f6f8;color:#1d2330}\
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px}\
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:32px 0 10px}\
.sub{color:#5b6475;margin:0 0 20px}\
.cards{display:flex;flex-wrap:wrap;gap:14px}\
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:14px 18px;min-width:200px;flex:1}\
.card .k{font-size:13px;color:#5b6475;text-transform:uppercase;letter-spacing:.04em}\
.card .v{font-size:24px;font-weight:600;margin-top:4px}.card .d{font-size:13px;color:#5b6475;margin-top:2px}\
.up{color:#b3261e}.down{color:#1e7b34}\
.chart{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:12px}\
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}\
th,td{padding:6px 10px;border-bottom:1px solid #eceef2;text-align:left;font-size:14px}\
th{background:#eef1f5;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.un td{font-style:italic;color:#5b6475}\
details{margin-top:14px}summary{cursor:pointer;font-weight:600}\
.notes li{margin:4px 0;color:#3c4353}\
footer{margin-top:36px;font-size:12px;color:#7a8294}";

/// `credits.html`: self-contained (module docs).
pub fn html(report: &MonthlyReport, lang: Lang) -> String {
    let mut h = String::with_capacity(16 * 1024 + report.members.len() * 120);
    let month_name = report.month.long_name_in(lang);
    let org = report.org_name.as_deref().map(escape);
    let last_day = report.period_end - chrono::TimeDelta::days(1);
    let c = |x: Credits| lang.credits(x, 2);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        lang.code(),
        lang.f(
            "monthly.html_title",
            &[
                ("month", &escape(&month_name)),
                ("org", org.as_deref().unwrap_or("ArcGIS Online"))
            ]
        ),
    );
    let _ = write!(
        h,
        "<h1>{}</h1>\n<p class=\"sub\">{}{}</p>\n",
        lang.f("monthly.html_heading", &[("month", &escape(&month_name))]),
        org.map(|o| format!("{o} · ")).unwrap_or_default(),
        lang.f(
            "monthly.html_period",
            &[
                ("from", &lang.date(report.period_start.date_naive())),
                ("to", &lang.date(last_day.date_naive())),
                ("source", &escape(source_text(lang, report.source))),
            ]
        ),
    );

    // Headline cards.
    h.push_str("<section class=\"cards\">\n");
    card(
        &mut h,
        lang.t("monthly.card_used"),
        &c(report.total_credits),
        &lang.f("monthly.card_used_in", &[("month", &escape(&month_name))]),
        "",
    );
    match &report.previous {
        Some(prev) => {
            let class = if prev.change_credits.is_positive() {
                "up"
            } else if prev.change_credits.is_negative() {
                "down"
            } else {
                ""
            };
            let sign = if prev.change_credits.is_positive() { "+" } else { "" };
            card(
                &mut h,
                lang.t("monthly.card_vs_previous"),
                &signed_percent_text(lang, prev.change_percent),
                &lang.f(
                    "monthly.card_change",
                    &[
                        ("change", &format!("{sign}{}", c(prev.change_credits))),
                        ("month", &escape(&prev.month.long_name_in(lang))),
                        ("total", &c(prev.total_credits)),
                    ],
                ),
                class,
            );
        }
        None => card(
            &mut h,
            lang.t("monthly.card_vs_previous"),
            lang.t("monthly.na"),
            lang.t("monthly.no_previous"),
            "",
        ),
    }
    let b = &report.balance;
    card(
        &mut h,
        lang.t("monthly.card_remaining"),
        &c(b.available_credits),
        &lang.f("monthly.as_of", &[("date", &moment(lang, b.as_of))]),
        "",
    );
    let rate = rate_text(lang, b.credits_per_day);
    card(
        &mut h,
        lang.t("monthly.card_runway"),
        &days_text(lang, b.days_until_empty),
        &match b.empty_on {
            Some(d) if b.days_until_empty.is_some_and(|d| d > 0.0) => {
                lang.f("monthly.rate_empty_on", &[("rate", &rate), ("date", &lang.date(d))])
            }
            _ => lang.f("monthly.rate", &[("rate", &rate)]),
        },
        "",
    );
    h.push_str("</section>\n");

    // Operation types: chart and table.
    let _ = writeln!(h, "<h2>{}</h2>", lang.t("monthly.by_type"));
    h.push_str(&bar_chart(report, lang));
    let _ = write!(
        h,
        "<table>\n<thead><tr><th>{}</th><th>{}</th><th class=\"n\">{}</th>\
         <th class=\"n\">{}</th></tr></thead>\n<tbody>\n",
        lang.t("monthly.col_operation"),
        lang.t("monthly.col_code"),
        lang.t("monthly.col_credits"),
        lang.t("monthly.col_share"),
    );
    for op in &report.operation_types {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&op.label),
            escape(op.code.as_deref().unwrap_or("")),
            c(op.credits),
            percent_text(lang, op.share_percent)
        );
    }
    let _ = writeln!(
        h,
        "<tr><th>{}</th><th></th><th class=\"n\">{}</th><th class=\"n\"></th></tr>\n</tbody>\n</table>",
        lang.t("monthly.total"),
        c(report.total_credits)
    );

    // Members.
    let unattributed = format!(
        "<tr class=\"un\"><td></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
        lang.t("monthly.unattributed_long"),
        c(report.unattributed_credits),
        percent_text(lang, report.unattributed_share_percent())
    );
    let _ = writeln!(
        h,
        "<h2>{}</h2>",
        lang.f("monthly.top", &[("count", &lang.count(report.top_members.len()))])
    );
    member_table(&mut h, lang, &report.top_members, &unattributed);
    let _ = writeln!(
        h,
        "<details><summary>{}</summary>",
        lang.f("monthly.all", &[("count", &lang.count(report.members.len()))])
    );
    member_table(&mut h, lang, &report.members, &unattributed);
    h.push_str("</details>\n");

    if !report.notes.is_empty() {
        let _ = writeln!(h, "<h2>{}</h2>\n<ul class=\"notes\">", lang.t("monthly.notes"));
        for note in &report.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(note));
        }
        h.push_str("</ul>\n");
    }
    let _ = write!(
        h,
        "<footer>{}</footer>\n</main>\n</body>\n</html>\n",
        lang.f("monthly.footer", &[("month", &report.month.to_string())])
    );
    h
}

fn card(h: &mut String, key: &str, value: &str, detail: &str, class: &str) {
    let _ = writeln!(
        h,
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v {class}\">{}</div><div class=\"d\">{}</div></div>",
        escape(key),
        // Values and details are built from escaped parts and formatted numbers.
        value,
        detail
    );
}

/// A ranked member table; `last_row` (already escaped HTML) closes it.
fn member_table(h: &mut String, lang: Lang, members: &[super::report::MemberLine], last_row: &str) {
    let _ = write!(
        h,
        "<table>\n<thead><tr><th class=\"n\">#</th><th>{}</th><th class=\"n\">{}</th>\
         <th class=\"n\">{}</th></tr></thead>\n<tbody>\n",
        lang.t("monthly.col_member"),
        lang.t("monthly.col_credits"),
        lang.t("monthly.col_share"),
    );
    if members.is_empty() {
        let _ = writeln!(
            h,
            "<tr><td></td><td>{}</td><td></td><td></td></tr>",
            lang.t("monthly.no_member")
        );
    }
    for (i, m) in members.iter().enumerate() {
        let _ = writeln!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            i + 1,
            escape(&safe_one_line(&m.username, USERNAME_MAX_CHARS)),
            lang.credits(m.credits, 2),
            percent_text(lang, m.share_percent)
        );
    }
    h.push_str(last_row);
    h.push_str("</tbody>\n</table>\n");
}

/// The inline SVG: one horizontal bar per operation type, longest = largest.
pub fn bar_chart(report: &MonthlyReport, lang: Lang) -> String {
    const WIDTH: f64 = 1000.0;
    const LABEL_W: f64 = 230.0;
    const VALUE_W: f64 = 150.0;
    const ROW: f64 = 30.0;
    const BAR: f64 = 20.0;
    const TOP: f64 = 8.0;
    let ops = &report.operation_types;
    let max = ops.iter().map(|o| o.credits.to_f64()).fold(0.0_f64, f64::max);
    let height = TOP * 2.0 + ROW * ops.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<div class=\"chart\"><svg role=\"img\" aria-label=\"{}\" \
         viewBox=\"0 0 {WIDTH} {height}\" style=\"display:block;width:100%;height:auto;max-width:{WIDTH}px\" \
         font-family=\"system-ui,Segoe UI,Roboto,Helvetica,Arial,sans-serif\" font-size=\"14\">",
        lang.f(
            "monthly.chart_label",
            &[("month", &escape(&report.month.long_name_in(lang)))]
        )
    );
    if ops.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" fill=\"#5b6475\">{}</text>",
            TOP + ROW * 0.6,
            lang.t("monthly.chart_empty")
        );
    }
    let span = WIDTH - LABEL_W - VALUE_W;
    for (i, op) in ops.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let w = if max > 0.0 {
            (op.credits.to_f64().max(0.0) / max * span).max(if op.credits.is_positive() { 1.0 } else { 0.0 })
        } else {
            0.0
        };
        let fill = if i == 0 { "#1f5fbf" } else { "#4f86d9" };
        let credits = lang.credits(op.credits, 2);
        let _ = writeln!(
            s,
            "<g><title>{title}</title>\
             <text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"#1d2330\">{short}</text>\
             <rect x=\"{LABEL_W}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{BAR}\" rx=\"3\" fill=\"{fill}\"/>\
             <text x=\"{vx:.1}\" y=\"{ty:.1}\" fill=\"#3c4353\">{credits}</text></g>",
            title = lang.f(
                "monthly.chart_bar",
                &[
                    ("label", &escape(&op.label)),
                    ("credits", &credits),
                    ("share", &percent_text(lang, op.share_percent)),
                ]
            ),
            lx = LABEL_W - 10.0,
            ty = y + BAR * 0.5 + 5.0,
            short = escape(&short(&op.label, 28)),
            by = y,
            vx = LABEL_W + w + 8.0,
        );
    }
    s.push_str("</svg></div>\n");
    s
}

/// The email: a subject and a plain-text body naming where the full report is.
pub fn email(report: &MonthlyReport, location: &str, lang: Lang) -> (String, String) {
    let month_name = report.month.long_name_in(lang);
    let c = |x: Credits| lang.credits(x, 2);
    let org = report
        .org_name
        .as_deref()
        .unwrap_or(lang.t("monthly.email_org_default"));
    let subject = lang.f(
        "monthly.email_subject",
        &[("month", &month_name), ("credits", &c(report.total_credits))],
    );
    let mut b = String::new();
    let _ = writeln!(
        b,
        "{}\n",
        lang.f("monthly.email_title", &[("org", org), ("month", &month_name)])
    );
    let _ = writeln!(
        b,
        "{}",
        lang.f("monthly.email_used", &[("credits", &c(report.total_credits))])
    );
    if let Some(prev) = &report.previous {
        let _ = writeln!(
            b,
            "{}",
            lang.f(
                "monthly.email_previous",
                &[
                    ("month", &prev.month.long_name_in(lang)),
                    ("credits", &c(prev.total_credits)),
                    ("change", &signed_percent_text(lang, prev.change_percent)),
                ]
            )
        );
    }
    let bal = &report.balance;
    let around = match bal.empty_on {
        Some(d) if bal.days_until_empty.is_some_and(|x| x > 0.0) => {
            lang.f("monthly.email_around", &[("date", &lang.date(d))])
        }
        _ => String::new(),
    };
    let _ = writeln!(
        b,
        "{}{around}",
        lang.f(
            "monthly.email_remaining",
            &[
                ("credits", &c(bal.available_credits)),
                ("date", &moment(lang, bal.as_of)),
                ("rate", &rate_text(lang, bal.credits_per_day)),
                ("days", &days_text(lang, bal.days_until_empty)),
            ]
        )
    );
    let _ = writeln!(b, "\n{}", lang.t("monthly.email_by_type"));
    for op in &report.operation_types {
        let _ = writeln!(
            b,
            "  {:<28} {:>14}  {}",
            op.label,
            c(op.credits),
            percent_text(lang, op.share_percent)
        );
    }
    let _ = writeln!(
        b,
        "\n{}",
        lang.f("monthly.email_top", &[("count", &lang.count(report.top_members.len()))])
    );
    for (i, m) in report.top_members.iter().enumerate() {
        let _ = writeln!(
            b,
            "  {:>3}. {:<28} {:>14}  {}",
            i + 1,
            safe_one_line(&m.username, USERNAME_MAX_CHARS),
            c(m.credits),
            percent_text(lang, m.share_percent)
        );
    }
    let _ = writeln!(
        b,
        "  {}",
        lang.f(
            "monthly.email_unattributed",
            &[("credits", &c(report.unattributed_credits))]
        )
    );
    for note in &report.notes {
        let _ = writeln!(b, "\n{}", lang.f("monthly.email_note", &[("note", note)]));
    }
    let _ = writeln!(
        b,
        "\n{}\n{}",
        lang.f("monthly.email_full", &[("location", location)]),
        lang.f("monthly.email_figures", &[("source", source_text(lang, report.source))])
    );
    (subject, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monthly::report::{BalanceSnapshot, MemberLine, OperationTypeCredits, OrgRunway};
    use chrono::{DateTime, Utc};

    fn c(x: f64) -> Credits {
        Credits::from_f64(x).unwrap()
    }

    fn report() -> MonthlyReport {
        let month: crate::monthly::Month = "2026-10".parse().unwrap();
        let as_of = DateTime::parse_from_rfc3339("2026-11-01T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        MonthlyReport {
            month,
            period_start: month.start(),
            period_end: month.end(),
            source: SourceKind::Usage,
            org_name: Some("<Org & \"Co\">".into()),
            total_credits: c(1234.5),
            previous: None,
            operation_types: vec![
                OperationTypeCredits {
                    label: "<script>alert(1)</script>".into(),
                    code: None,
                    credits: c(1000.0),
                    share_percent: Some(81.0),
                },
                OperationTypeCredits {
                    label: "Geocoding".into(),
                    code: Some("geocode".into()),
                    credits: c(234.5),
                    share_percent: Some(19.0),
                },
            ],
            top_members: vec![MemberLine {
                username: "=cmd|' /C calc'!A0".into(),
                credits: c(200.0),
                share_percent: Some(16.2),
            }],
            members: vec![MemberLine {
                username: "=cmd|' /C calc'!A0".into(),
                credits: c(200.0),
                share_percent: Some(16.2),
            }],
            unattributed_credits: c(1034.5),
            balance: OrgRunway::new(
                BalanceSnapshot {
                    available_credits: c(5000.0),
                    as_of,
                },
                c(1234.5),
                month,
            ),
            notes: vec!["a <note>".into()],
        }
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(credits_text(c(1_234_567.891)), "1,234,567.89");
        assert_eq!(credits_text(c(0.0)), "0.00");
        assert_eq!(credits_text(c(-1234.5)), "-1,234.50");
        assert_eq!(credits_text(c(-0.001)), "0.00");
        assert_eq!(credits_text(c(999.999)), "1,000.00");
        assert_eq!(credits_text(c(100.0)), "100.00");
    }

    #[test]
    fn html_escapes_every_string_and_fetches_nothing() {
        let h = html(&report(), Lang::En);
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("&lt;Org &amp; &quot;Co&quot;&gt;"));
        assert!(h.contains("a &lt;note&gt;"));
        assert!(h.contains("<svg") && h.contains("<rect"));
        assert!(
            !h.contains("http:") && !h.contains("https:") && !h.contains("src="),
            "no network"
        );
        assert!(h.contains("default-src 'none'"));
        assert_eq!(h.matches("<rect").count(), 2);
    }

    #[test]
    fn csv_is_one_tidy_table_without_formulas() {
        let text = String::from_utf8(csv(&report(), Lang::En).unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("month,section,name,code,credits,share_percent"));
        assert!(
            text.contains("2026-10,operation_type,Geocoding,geocode,234.5,19\n"),
            "{text}"
        );
        assert!(
            text.contains("2026-10,member,'=cmd|' /C calc'!A0,,200,16.2\n"),
            "{text}"
        );
        assert!(text.contains("2026-10,unattributed,(not attributed to a member),,1034.5,83.8\n"));
        assert!(text.contains("2026-10,total,Total,,1234.5,100\n"));
    }

    #[test]
    fn email_names_the_month_the_total_and_where_the_report_is() {
        let (subject, body) = email(&report(), "s3://bucket/reports/2026-10/credits.html", Lang::En);
        assert_eq!(subject, "ArcGIS Online credits for October 2026: 1,234.50 credits used");
        assert!(body.contains("s3://bucket/reports/2026-10/credits.html"));
        assert!(body.contains("Geocoding") && body.contains("Not attributed"));
        assert!(
            body.contains("Remaining credits: 5,000.00 (as of November 1, 2026, 06:00 UTC)"),
            "{body}"
        );
    }

    #[test]
    fn the_report_reads_in_french() {
        let sp = crate::i18n::FR_SPACE;
        let (subject, body) = email(&report(), "s3://bucket/reports/2026-10/credits.html", Lang::Fr);
        assert_eq!(
            subject,
            format!("Crédits ArcGIS Online de octobre 2026 : 1{sp}234,50 crédits consommés")
        );
        assert!(
            body.contains(&format!(
                "Crédits restants : 5{sp}000,00 (au 1er novembre 2026, 06:00 UTC)"
            )),
            "{body}"
        );
        assert!(
            body.contains("  Geocoding ") && body.contains(&format!(" 234,50  19,0{sp}%\n")),
            "{body}"
        );
        let h = html(&report(), Lang::Fr);
        assert!(h.contains("<html lang=\"fr\">"), "{h}");
        assert!(h.contains("<h1>Crédits ArcGIS Online — octobre 2026</h1>"), "{h}");
        assert!(h.contains("du 1er octobre 2026 au 31 octobre 2026 (UTC)"), "{h}");
        assert!(
            h.contains("<th>Type d&#39;opération</th>") || h.contains("<th>Type d'opération</th>"),
            "{h}"
        );
        assert!(!h.contains("Credits used") && !h.contains("October"), "{h}");
        assert!(html(&report(), Lang::En).contains("<html lang=\"en\">"));
        // Machine ids stay: tools parse the header and the sections, whatever the language.
        let text = String::from_utf8(csv(&report(), Lang::Fr).unwrap()).unwrap();
        assert!(
            text.starts_with("month,section,name,code,credits,share_percent\n"),
            "{text}"
        );
        assert!(
            text.contains("2026-10,unattributed,(non attribué à un membre),,1034.5,83.8\n"),
            "{text}"
        );
        assert!(text.contains("2026-10,total,Total,,1234.5,100\n"), "{text}");
    }
}
