//! Which calendar month a run reports, and whether that month can be reported.
//!
//! The month comes from the event, never from the wall clock alone, so that a retried or late
//! invocation reports the same month as the first one:
//! 1. `{"month": "YYYY-MM"}` in the input wins;
//! 2. else the month *before* the schedule time (the Scheduler `Input`'s `scheduled_time`, or
//!    the envelope's `time`): a run scheduled on 1 November reports October, even when it is
//!    retried on the 3rd;
//! 3. else (a manual `{}` invoke) the month before `now`, flagged as [`MonthFrom::Now`] in the
//!    run summary.
//!
//! A month is reportable when it is complete (its last instant is in the past) and lies wholly
//! inside ArcGIS Online's usage retention ("the past two years"; see docs/arcgis.md, "Usage
//! buckets"): its first day is no earlier than `now` − 24 months. Everything is UTC: a naive
//! local start time picks the wrong month on a host off UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::credits::usage::TimeWindow;
use crate::schedule::{ReportInput, ScheduledRun};

/// How many months of usage ArcGIS Online keeps ("the past two years").
pub const RETENTION_MONTHS: u32 = 24;

/// A calendar month in UTC: what a report covers and the ledger key of its run (`2026-10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

/// Why a month was refused. Each message says what was given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonthError {
    /// Not `YYYY-MM`.
    #[error("month {0:?} is not in the form YYYY-MM (for example \"2026-10\")")]
    Malformed(String),
    /// `YYYY-MM` with a month outside 01–12 (or a year outside 0001–9999).
    #[error("month {0:?} does not exist: the month must be 01 to 12 and the year 0001 to 9999")]
    OutOfRange(String),
    /// The month has not started yet.
    #[error("month {month} is in the future (now is {now}); only complete past months can be reported")]
    Future {
        /// The month asked for.
        month: Month,
        /// The clock used.
        now: DateTime<Utc>,
    },
    /// The month is under way: its figures would be incomplete.
    #[error(
        "month {month} is not complete until {complete_at} (UTC); its figures would be partial. \
        Report a past month, e.g. {previous}"
    )]
    Incomplete {
        /// The month asked for.
        month: Month,
        /// When it ends.
        complete_at: DateTime<Utc>,
        /// The latest reportable month.
        previous: Month,
    },
    /// Part of the month is past ArcGIS Online's two-year usage retention.
    #[error(
        "month {month} is older than ArcGIS Online keeps usage (the past {RETENTION_MONTHS} months): \
        the earliest month that can be reported now is {earliest}"
    )]
    TooOld {
        /// The month asked for.
        month: Month,
        /// The earliest reportable month.
        earliest: Month,
    },
}

impl Month {
    /// `year`-`month`, or `None` for a month outside 1–12 or a year outside 1–9999 (so that the
    /// `YYYY-MM` key always has four digits).
    pub fn new(year: i32, month: u32) -> Option<Month> {
        ((1..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Month { year, month })
    }

    /// The month an instant falls in (UTC).
    pub fn containing(t: DateTime<Utc>) -> Month {
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1–12.
    pub fn month(self) -> u32 {
        self.month
    }

    /// The month before.
    pub fn previous(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The month after.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The 1st at 00:00 UTC.
    pub fn start(self) -> DateTime<Utc> {
        // Every (year, month) a `Month` can hold has a first day; the fallback is unreachable.
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The 1st of the next month at 00:00 UTC (exclusive end).
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }

    /// `[start, end)` as a usage window.
    #[allow(clippy::expect_used, reason = "a month ends after it starts")]
    pub fn window(self) -> TimeWindow {
        TimeWindow::between(self.start(), self.end()).expect("a month's window is never empty")
    }

    /// Days in the month (28–31).
    pub fn days(self) -> u32 {
        (self.end() - self.start()).num_days() as u32
    }

    /// "October 2026", for subjects and headings.
    pub fn long_name(self) -> String {
        self.long_name_in(crate::i18n::Lang::En)
    }

    /// The month's name and year in `lang`: "October 2026", "octobre 2026".
    pub fn long_name_in(self, lang: crate::i18n::Lang) -> String {
        lang.month_year(self.year, self.month)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = MonthError;

    /// Exactly `YYYY-MM`: four digits, a dash, two digits. Nothing else is guessed at
    /// (`2026-1`, `10/2026` and `2026-10-01` are refused), because a wrong guess would report
    /// and mail the wrong month.
    fn from_str(s: &str) -> Result<Month, MonthError> {
        let shown = || s.chars().take(40).collect::<String>();
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 7 || b[4] != b'-' || !digits(0..4) || !digits(5..7) {
            return Err(MonthError::Malformed(shown()));
        }
        let year: i32 = s[0..4].parse().map_err(|_| MonthError::Malformed(shown()))?;
        let month: u32 = s[5..7].parse().map_err(|_| MonthError::Malformed(shown()))?;
        Month::new(year, month).ok_or_else(|| MonthError::OutOfRange(shown()))
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Month, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the reported month came from, shown in the run summary so that a fall-back to the
/// wall clock is never silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MonthFrom {
    /// The input's `month`.
    Input,
    /// The month before the schedule time (input `scheduled_time` or envelope `time`).
    ScheduleTime,
    /// The month before the invocation time: a manual `{}` invoke with no schedule time.
    Now,
}

/// The month a run reports, and why that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResolvedMonth {
    /// The month.
    pub month: Month,
    /// Where it came from.
    pub from: MonthFrom,
    /// The schedule time, when the event carried one.
    pub scheduled_time: Option<DateTime<Utc>>,
    /// The language the run's Input asked for, if any (else `LANGUAGE`).
    pub language: Option<crate::i18n::Lang>,
}

/// Picks the month of `run` (rules in the module docs) and checks it is reportable at `now`.
pub fn resolve(run: &ScheduledRun<ReportInput>, now: DateTime<Utc>) -> Result<ResolvedMonth, MonthError> {
    let (month, from) = match (&run.input.month, run.scheduled_time) {
        (Some(text), _) => (text.parse::<Month>()?, MonthFrom::Input),
        (None, Some(t)) => (Month::containing(t).previous(), MonthFrom::ScheduleTime),
        (None, None) => (Month::containing(now).previous(), MonthFrom::Now),
    };
    check_reportable(month, now)?;
    Ok(ResolvedMonth {
        month,
        from,
        scheduled_time: run.scheduled_time,
        language: run.input.language,
    })
}

/// Ok when `month` is complete at `now` and wholly inside the usage retention.
pub fn check_reportable(month: Month, now: DateTime<Utc>) -> Result<(), MonthError> {
    if month.start() > now {
        return Err(MonthError::Future { month, now });
    }
    if month.end() > now {
        return Err(MonthError::Incomplete {
            month,
            complete_at: month.end(),
            previous: Month::containing(now).previous(),
        });
    }
    let earliest = earliest_reportable(now);
    if month < earliest {
        return Err(MonthError::TooOld { month, earliest });
    }
    Ok(())
}

/// The first month whose 1st is no earlier than `now` − [`RETENTION_MONTHS`] months.
pub fn earliest_reportable(now: DateTime<Utc>) -> Month {
    let cutoff = now
        .checked_sub_months(Months::new(RETENTION_MONTHS))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let m = Month::containing(cutoff);
    if m.start() >= cutoff { m } else { m.next() }
}

/// Whether `month`'s usage is still kept at `now` (for the month-over-month comparison).
pub fn within_retention(month: Month, now: DateTime<Utc>) -> bool {
    month >= earliest_reportable(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn m(s: &str) -> Month {
        s.parse().unwrap()
    }

    fn run(input: serde_json::Value) -> ScheduledRun<ReportInput> {
        crate::schedule::decode(input).unwrap()
    }

    #[test]
    fn parse_is_strict() {
        assert_eq!(m("2026-10"), Month::new(2026, 10).unwrap());
        assert_eq!(m("2026-10").to_string(), "2026-10");
        for bad in [
            "2026-1",
            "26-10",
            "2026/10",
            "2026-10-01",
            " 2026-10",
            "",
            "２０２６-10",
            "+202-10",
        ] {
            assert!(matches!(bad.parse::<Month>(), Err(MonthError::Malformed(_))), "{bad}");
        }
        for bad in ["2026-13", "2026-00", "0000-05"] {
            assert!(matches!(bad.parse::<Month>(), Err(MonthError::OutOfRange(_))), "{bad}");
        }
    }

    #[test]
    fn month_arithmetic_and_bounds() {
        assert_eq!(m("2026-01").previous(), m("2025-12"));
        assert_eq!(m("2025-12").next(), m("2026-01"));
        assert_eq!(m("2024-02").days(), 29);
        assert_eq!(m("2026-10").start(), t("2026-10-01T00:00:00Z"));
        assert_eq!(m("2026-10").end(), t("2026-11-01T00:00:00Z"));
        assert_eq!(
            m("2026-10").window().start_ms(),
            t("2026-10-01T00:00:00Z").timestamp_millis()
        );
        assert_eq!(m("2026-10").long_name(), "October 2026");
        assert_eq!(serde_json::to_value(m("2026-10")).unwrap(), json!("2026-10"));
        assert!(serde_json::from_value::<Month>(json!("2026-13")).is_err());
    }

    #[test]
    fn the_month_comes_from_the_input_then_the_schedule_then_now() {
        let now = t("2026-11-03T09:00:00Z");
        let r = resolve(&run(json!({"month": "2026-09"})), now).unwrap();
        assert_eq!((r.month, r.from), (m("2026-09"), MonthFrom::Input));
        let r = resolve(&run(json!({"scheduled_time": "2026-11-01T06:00:00Z"})), now).unwrap();
        assert_eq!((r.month, r.from), (m("2026-10"), MonthFrom::ScheduleTime));
        // Retried a month later, the schedule time still names October.
        let r = resolve(
            &run(json!({"scheduled_time": "2026-11-01T06:00:00Z"})),
            t("2026-12-02T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(r.month, m("2026-10"));
        let r = resolve(&run(json!({})), now).unwrap();
        assert_eq!((r.month, r.from), (m("2026-10"), MonthFrom::Now));
        // Midnight UTC on the 1st: the previous month is complete.
        let r = resolve(&run(json!({})), t("2026-11-01T00:00:00Z")).unwrap();
        assert_eq!(r.month, m("2026-10"));
    }

    #[test]
    fn incomplete_future_and_too_old_months_are_refused() {
        let now = t("2026-11-26T12:00:00Z");
        assert!(matches!(
            check_reportable(m("2026-11"), now),
            Err(MonthError::Incomplete { .. })
        ));
        assert!(matches!(
            check_reportable(m("2027-01"), now),
            Err(MonthError::Future { .. })
        ));
        // Retention: 2024-11-26 onwards, so 2024-12 is the earliest whole month.
        assert_eq!(earliest_reportable(now), m("2024-12"));
        assert!(check_reportable(m("2024-12"), now).is_ok());
        let err = check_reportable(m("2024-11"), now).unwrap_err();
        assert_eq!(
            err,
            MonthError::TooOld {
                month: m("2024-11"),
                earliest: m("2024-12")
            }
        );
        assert!(
            err.to_string()
                .contains("earliest month that can be reported now is 2024-12")
        );
        assert_eq!(earliest_reportable(t("2026-11-01T00:00:00Z")), m("2024-11"));
        let msg = check_reportable(m("2026-11"), now).unwrap_err().to_string();
        assert!(
            msg.contains("not complete until 2026-12-01") && msg.contains("2026-10"),
            "{msg}"
        );
    }
}
