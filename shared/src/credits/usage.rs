//! Credit usage time series, as `portals/self/usage` returns them, and the time window
//! they are read over.
//!
//! On the wire each series is `{"stype", "etype", "username", "credits": [[ts, value], ...]}`
//! where both timestamp and value are usually *strings* (`["1672185600000", "2.0E-4"]`).
//! The parsers here accept strings or numbers, exponent notation included (through the one
//! reader of ArcGIS numbers, [`Credits::from_json`]), and reject anything else with an error instead
//! of counting it as zero. Values are exact [`Credits`].
//!
//! A timestamp labels a bucket of one period, but whether it names the bucket's start or its
//! end is unverified (docs/arcgis.md, "Usage buckets"). [`Buckets::interval`] is the one place
//! a label becomes the interval it covers, per the configured [`BucketLabel`]; from then on a
//! point is its interval, and sums select whole buckets inside a window
//! ([`UsageSeries::credits_in`]), so neither convention drops or double-counts a day.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, Months, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::amount::Credits;

/// Milliseconds in a day, the unit of burn rates.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Why usage data or a window was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsageError {
    /// A window must contain at least one millisecond.
    #[error("the usage window is empty: start {start_ms} is not before end {end_ms} (epoch ms); pass start < end")]
    EmptyWindow {
        /// Requested start, epoch ms.
        start_ms: i64,
        /// Requested end, epoch ms.
        end_ms: i64,
    },
    /// A window reaching before the earliest representable date.
    #[error("a window of {days} days reaches before the earliest supported date; ask for fewer days")]
    OutOfRange {
        /// The requested length.
        days: u32,
    },
    /// A window whose padding for the request ([`Buckets::request_window`]) leaves the
    /// representable dates.
    #[error(
        "the usage window {start_ms}..{end_ms} (epoch ms) cannot be widened by one bucket on each side without leaving the supported dates; ask for a nearer window"
    )]
    WindowOutOfRange {
        /// Requested start, epoch ms.
        start_ms: i64,
        /// Requested end, epoch ms.
        end_ms: i64,
    },
    /// A point that is not `[timestamp, credits]` with a whole-ms timestamp and an amount.
    #[error("usage point {point} is unreadable: {reason}; the usage API format may have changed")]
    BadPoint {
        /// The point as received (JSON text).
        point: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A series without the field it needs.
    #[error(
        "usage series field `{field}` is missing or not {expected}; request `vars=credits` and check the usage API format"
    )]
    BadField {
        /// The field name on the wire.
        field: &'static str,
        /// What was expected there.
        expected: &'static str,
    },
    /// An error inside one series of a response, with its position.
    #[error("usage series #{index} (stype {stype:?}, username {username:?}): {source}")]
    InSeries {
        /// 0-based position in `data`.
        index: usize,
        /// The series' `stype`, when readable.
        stype: Option<String>,
        /// The series' `username`, when readable.
        username: Option<String>,
        /// The underlying problem.
        source: Box<UsageError>,
    },
}

/// A half-open time range `[start, end)` in epoch milliseconds, never empty.
///
/// Half-open so that consecutive windows (months, days) never count a point twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WindowSpec")]
pub struct TimeWindow {
    start_ms: i64,
    end_ms: i64,
}

#[derive(Deserialize)]
struct WindowSpec {
    start_ms: i64,
    end_ms: i64,
}

impl TryFrom<WindowSpec> for TimeWindow {
    type Error = UsageError;

    fn try_from(spec: WindowSpec) -> Result<Self, Self::Error> {
        TimeWindow::new(spec.start_ms, spec.end_ms)
    }
}

impl TimeWindow {
    /// `[start_ms, end_ms)`; rejects `start_ms >= end_ms`.
    pub fn new(start_ms: i64, end_ms: i64) -> Result<Self, UsageError> {
        if start_ms < end_ms {
            Ok(TimeWindow { start_ms, end_ms })
        } else {
            Err(UsageError::EmptyWindow { start_ms, end_ms })
        }
    }

    /// `[start, end)` from UTC instants.
    pub fn between(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, UsageError> {
        TimeWindow::new(start.timestamp_millis(), end.timestamp_millis())
    }

    /// The `days` days before `end`, e.g. the last 30 days for a burn rate.
    pub fn last_days(end: DateTime<Utc>, days: u32) -> Result<Self, UsageError> {
        let start = end
            .checked_sub_signed(Duration::days(i64::from(days)))
            .ok_or(UsageError::OutOfRange { days })?;
        TimeWindow::between(start, end)
    }

    /// Inclusive start, epoch ms.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// Exclusive end, epoch ms.
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }

    /// Whether a timestamp falls inside `[start, end)`.
    pub fn contains(&self, ts_ms: i64) -> bool {
        self.start_ms <= ts_ms && ts_ms < self.end_ms
    }

    /// Whether `other` lies wholly inside this window (how buckets are selected).
    pub fn covers(&self, other: &TimeWindow) -> bool {
        self.start_ms <= other.start_ms && other.end_ms <= self.end_ms
    }

    /// Length in (possibly fractional) days; always > 0.
    pub fn days(&self) -> f64 {
        // i128: the difference of two extreme i64 values does not fit an i64.
        (i128::from(self.end_ms) - i128::from(self.start_ms)) as f64 / MS_PER_DAY as f64
    }
}

/// Bucket size of a usage series (the `period` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsagePeriod {
    /// `1h`
    Hour,
    /// `1d`
    Day,
    /// `1w`
    Week,
    /// `1m` (calendar months)
    Month,
}

impl UsagePeriod {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            UsagePeriod::Hour => "1h",
            UsagePeriod::Day => "1d",
            UsagePeriod::Week => "1w",
            UsagePeriod::Month => "1m",
        }
    }

    /// Whether `t_ms` can be a bucket's edge: a whole UTC hour for hourly buckets, a UTC
    /// midnight for daily and weekly ones, the 1st at midnight for monthly ones. Esri's
    /// recorded daily labels are UTC midnights; a label elsewhere would make its bucket
    /// straddle two days, and a month summed from whole days would quietly lose it.
    fn is_boundary(self, t_ms: i64) -> bool {
        match self {
            UsagePeriod::Hour => t_ms.rem_euclid(3_600_000) == 0,
            UsagePeriod::Day | UsagePeriod::Week => t_ms.rem_euclid(MS_PER_DAY) == 0,
            UsagePeriod::Month => {
                t_ms.rem_euclid(MS_PER_DAY) == 0
                    && DateTime::<Utc>::from_timestamp_millis(t_ms).is_some_and(|t| t.day() == 1)
            }
        }
    }

    /// `t_ms` moved by `periods` periods (calendar months for [`UsagePeriod::Month`]); `None`
    /// out of range.
    fn shift(self, t_ms: i64, periods: i32) -> Option<i64> {
        let fixed = |ms: i64| t_ms.checked_add(ms.checked_mul(i64::from(periods))?);
        match self {
            UsagePeriod::Hour => fixed(3_600_000),
            UsagePeriod::Day => fixed(MS_PER_DAY),
            UsagePeriod::Week => fixed(7 * MS_PER_DAY),
            UsagePeriod::Month => {
                let t = DateTime::<Utc>::from_timestamp_millis(t_ms)?;
                let months = Months::new(periods.unsigned_abs());
                let moved = if periods >= 0 {
                    t.checked_add_months(months)
                } else {
                    t.checked_sub_months(months)
                };
                Some(moved?.timestamp_millis())
            }
        }
    }
}

/// Which instant of its bucket a usage timestamp names (`USAGE_BUCKET_LABEL`). Unverified
/// for ArcGIS (docs/arcgis.md, "Usage buckets"), hence a setting rather than an assumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketLabel {
    /// The label is the bucket's first instant: it covers `[label, label + period)`.
    #[default]
    Start,
    /// The label is the instant the bucket ends: it covers `[label - period, label)`.
    End,
}

impl BucketLabel {
    /// The setting's value (`start` or `end`).
    pub fn as_str(self) -> &'static str {
        match self {
            BucketLabel::Start => "start",
            BucketLabel::End => "end",
        }
    }
}

impl FromStr for BucketLabel {
    type Err = String;

    /// `start` or `end`, exactly (a wrong guess shifts every month by a day).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "start" => Ok(BucketLabel::Start),
            "end" => Ok(BucketLabel::End),
            other => {
                let shown: String = other.chars().take(40).collect();
                Err(format!("'{shown}' is not start or end"))
            }
        }
    }
}

/// How the timestamps of one usage answer map to time: the bucket size asked for and which
/// end of its bucket a label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets {
    /// The `period` of the request.
    pub period: UsagePeriod,
    /// The label convention (`USAGE_BUCKET_LABEL`).
    pub label: BucketLabel,
}

impl Buckets {
    /// Daily buckets (what every reader of this product asks for) labelled per `label`.
    pub fn daily(label: BucketLabel) -> Self {
        Buckets {
            period: UsagePeriod::Day,
            label,
        }
    }

    /// The interval `[start, end)` the bucket labelled `label_ms` covers: the one place a
    /// label is interpreted. `None` when it is out of range or not on a UTC bucket boundary
    /// (refused rather than summed into the wrong day).
    pub fn interval(self, label_ms: i64) -> Option<TimeWindow> {
        if !self.period.is_boundary(label_ms) {
            return None;
        }
        let (start, end) = match self.label {
            BucketLabel::Start => (label_ms, self.period.shift(label_ms, 1)?),
            BucketLabel::End => (self.period.shift(label_ms, -1)?, label_ms),
        };
        TimeWindow::new(start, end).ok()
    }

    /// The window to send so that every bucket inside `wanted` comes back, whichever end its
    /// label names and whether ArcGIS treats `startTime` and `endTime` as inclusive or not:
    /// one period more on each side. The extra buckets fall outside `wanted` and are never
    /// counted ([`UsageSeries::credits_in`] selects whole buckets inside a window).
    pub fn request_window(self, wanted: &TimeWindow) -> Result<TimeWindow, UsageError> {
        let out_of_range = || UsageError::WindowOutOfRange {
            start_ms: wanted.start_ms,
            end_ms: wanted.end_ms,
        };
        let start = self.period.shift(wanted.start_ms, -1).ok_or_else(out_of_range)?;
        let end = self.period.shift(wanted.end_ms, 1).ok_or_else(out_of_range)?;
        TimeWindow::new(start, end)
    }
}

/// One point of a usage series: the bucket it covers and its credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsagePoint {
    /// The bucket's interval, from its label through [`Buckets::interval`].
    pub bucket: TimeWindow,
    /// Credits used in the bucket.
    pub credits: Credits,
}

/// One usage series: credits over time for one service type, event type and/or member,
/// depending on the `groupby` of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageSeries {
    /// Service type code (`geocode`, ...); empty when the request did not group by `stype`.
    pub stype: String,
    /// Event type, when grouped by `etype`.
    pub etype: Option<String>,
    /// Member, when grouped by `username`; `None` means unattributed usage.
    pub username: Option<String>,
    /// The buckets, in the answer's order.
    pub points: Vec<UsagePoint>,
}

impl UsageSeries {
    /// Builds a series from one entry of the usage answer's `data` array, each label read as
    /// `buckets` says. `stype`, `etype` and `username` are optional (they depend on `groupby`);
    /// an empty username is `None`. `credits` is required: a series without it cannot be
    /// summed.
    pub fn from_wire(
        stype: Option<&str>,
        etype: Option<&str>,
        username: Option<&str>,
        credits: Option<impl IntoIterator<Item = WirePoint>>,
        buckets: Buckets,
    ) -> Result<Self, UsageError> {
        let points = credits
            .ok_or(UsageError::BadField {
                field: "credits",
                expected: "an array of [timestamp, value] pairs",
            })?
            .into_iter()
            .map(|point| {
                let (label, credits) = point?;
                let bucket = buckets.interval(label).ok_or_else(|| UsageError::BadPoint {
                    point: format!(r#"["{label}","{credits}"]"#),
                    reason: "the timestamp is not a UTC bucket boundary (or is out of range)",
                })?;
                Ok(UsagePoint { bucket, credits })
            })
            .collect::<Result<_, UsageError>>()?;
        let text = |t: Option<&str>| t.map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(UsageSeries {
            stype: text(stype).unwrap_or_default(),
            etype: text(etype),
            username: text(username),
            points,
        })
    }

    /// The points whose whole bucket lies in `window`. Windows are whole UTC days and
    /// buckets days, so a bucket is either inside or outside; a bucket straddling the edge
    /// would belong to neither side, never to both.
    pub fn points_in<'a>(&'a self, window: &'a TimeWindow) -> impl Iterator<Item = UsagePoint> + 'a {
        self.points.iter().copied().filter(|p| window.covers(&p.bucket))
    }

    /// Total credits of the buckets inside `window`.
    pub fn credits_in(&self, window: &TimeWindow) -> Credits {
        self.points_in(window).map(|p| p.credits).sum()
    }
}

/// One series' credits summed over a window: what burn rates and totals per member need,
/// without the buckets (30 days of 100,000 members are 3 million points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotal {
    /// Service type code; empty when the request did not group by `stype`.
    pub stype: String,
    /// Event type, when grouped by `etype`.
    pub etype: Option<String>,
    /// Member, when grouped by `username`; `None` means unattributed usage.
    pub username: Option<String>,
    /// Credits of the series' buckets inside the window.
    pub credits: Credits,
}

impl UsageTotal {
    /// `series` summed over the buckets inside `window`.
    pub fn of(series: &UsageSeries, window: &TimeWindow) -> Self {
        UsageTotal {
            stype: series.stype.clone(),
            etype: series.etype.clone(),
            username: series.username.clone(),
            credits: series.credits_in(window),
        }
    }
}

/// A `[timestamp, credits]` point as a series' reader found it: its label (epoch ms) and
/// credits, or why it cannot be read ([`UsageError::BadPoint`]).
pub type WirePoint = Result<(i64, Credits), UsageError>;

/// Why a point that is not a pair is refused.
pub const NOT_A_PAIR: &str = "expected a [timestamp, credits] pair";

/// Parses one `[timestamp, credits]` point. Each element may be a JSON number or a string;
/// strings may use exponent notation (`"2.0E-4"`, `"1.6721856E12"`). The timestamp must be
/// a whole number of milliseconds and the credits an amount.
pub fn parse_point(point: &Value) -> Result<(i64, Credits), UsageError> {
    let bad = |reason| UsageError::BadPoint {
        point: point.to_string(),
        reason,
    };
    let [ts, credits] = point
        .as_array()
        .map(Vec::as_slice)
        .and_then(|pair| <&[Value; 2]>::try_from(pair).ok())
        .ok_or_else(|| bad(NOT_A_PAIR))?;
    read_point(Credits::from_json(ts), Credits::from_json(credits)).map_err(bad)
}

/// A point from its two elements, each already read as an amount where it is one
/// ([`Credits::from_json`]): the timestamp must be a whole number of milliseconds (written
/// as an integer or with an exponent, `"1.6721856E12"`, and read exactly as a decimal) and
/// the credits an amount. The error is the reason, for [`UsageError::BadPoint`].
pub fn read_point(ts: Option<Credits>, credits: Option<Credits>) -> Result<(i64, Credits), &'static str> {
    // The amount reader is exact to 10⁻⁶ and holds far more than any epoch-ms value.
    let ts = ts
        .and_then(Credits::whole_units)
        .ok_or("the timestamp is not a whole number of epoch ms")?;
    let credits = credits.ok_or("the credits value is not a number")?;
    Ok((ts, credits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arcgis::usage::{UsageReadError, read_usage};
    use serde_json::json;

    /// Reads a whole answer the way the client does, as it streams.
    fn read_all(response: &Value, buckets: Buckets) -> Result<Vec<UsageSeries>, UsageError> {
        let mut all = Vec::new();
        match read_usage(response.to_string().as_bytes(), buckets, |s| all.push(s)) {
            Ok(()) => Ok(all),
            Err(UsageReadError::Usage(e)) => Err(e),
            Err(other) => panic!("not a usage error: {other:?}"),
        }
    }

    /// Reads one series as the only one of an answer.
    fn read_one(series: &Value, buckets: Buckets) -> Result<UsageSeries, UsageError> {
        match read_all(&json!({ "data": [series] }), buckets) {
            Ok(mut all) => Ok(all.remove(0)),
            Err(UsageError::InSeries { source, .. }) => Err(*source),
            Err(e) => Err(e),
        }
    }

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
    }

    const DAILY: Buckets = Buckets {
        period: UsagePeriod::Day,
        label: BucketLabel::Start,
    };

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
    }

    fn window(start: &str, end: &str) -> TimeWindow {
        TimeWindow::new(ms(start), ms(end)).unwrap()
    }

    #[test]
    fn points_parse_from_strings_and_numbers() {
        assert_eq!(
            parse_point(&json!(["1672185600000", "2.0E-4"])).unwrap(),
            (1_672_185_600_000, c("0.0002"))
        );
        assert_eq!(
            parse_point(&json!([1672185600000_i64, 1.5])).unwrap(),
            (1_672_185_600_000, c("1.5"))
        );
        assert_eq!(
            parse_point(&json!(["1.6721856E12", " 3 "])).unwrap(),
            (1_672_185_600_000, c("3"))
        );
        assert_eq!(parse_point(&json!(["0", "0.0"])).unwrap(), (0, Credits::ZERO));
    }

    /// The streaming reader reads each point in place, without a JSON tree: it must read
    /// every spelling exactly as [`parse_point`] does.
    #[test]
    fn the_streaming_reader_reads_points_as_parse_point_does() {
        let day = 1_672_185_600_000_i64;
        for point in [
            json!([day.to_string(), "2.0E-4"]),
            json!([day, 1.5]),
            json!([day, 2]),
            json!(["1.6721856E12", " 3 "]),
            json!([day.to_string(), "-0.25"]),
            json!([day as f64, "1e-7"]),
        ] {
            let series = read_one(&json!({"username": "u", "credits": [point]}), DAILY).unwrap();
            let (label, credits) = parse_point(&point).unwrap();
            assert_eq!(series.points[0].bucket.start_ms(), label, "{point}");
            assert_eq!(series.points[0].credits, credits, "{point}");
        }
    }

    #[test]
    fn malformed_points_are_errors_not_zero() {
        for bad in [
            json!(["1672185600000"]),
            json!(["1672185600000", "2", "3"]),
            json!({"t": 1}),
            json!(["soon", "1.0"]),
            json!(["1672185600000.5", "1.0"]),
            json!(["1672185600000", "lots"]),
            json!(["1672185600000", "NaN"]),
            json!(["1672185600000", "inf"]),
            json!(["1672185600000", null]),
            json!(["1e30", "1.0"]),
        ] {
            let err = parse_point(&bad).unwrap_err();
            let UsageError::BadPoint { reason, .. } = err else {
                panic!("{bad}: {err}")
            };
            // The same point in an answer, read as it streams: refused for the same reason,
            // and the error shows the point.
            let streamed = read_one(&json!({"username": "u", "credits": [bad]}), DAILY).unwrap_err();
            let UsageError::BadPoint {
                reason: streamed_reason,
                point,
            } = &streamed
            else {
                panic!("{bad}: {streamed}")
            };
            assert_eq!(*streamed_reason, reason, "{bad}");
            assert!(point.starts_with(['[', '{']), "{bad}: {point}");
        }
    }

    #[test]
    fn series_read_from_the_wire_shape() {
        let s = read_one(
            &json!({
                "stype": "geocode", "etype": "geocodecnt", "username": "u1", "userOrgId": "x",
                "credits": [["1672099200000", "0.0"], ["1672185600000", "2.0E-4"]],
                "num": [["1672099200000", "0"]]
            }),
            DAILY,
        )
        .unwrap();
        assert_eq!(s.stype, "geocode");
        assert_eq!(s.etype.as_deref(), Some("geocodecnt"));
        assert_eq!(s.username.as_deref(), Some("u1"));
        let day = |start_ms: i64, credits| UsagePoint {
            bucket: TimeWindow::new(start_ms, start_ms + MS_PER_DAY).unwrap(),
            credits,
        };
        assert_eq!(
            s.points,
            [
                day(1_672_099_200_000, Credits::ZERO),
                day(1_672_185_600_000, c("0.0002"))
            ]
        );

        let unattributed = read_one(&json!({"stype": "tiles", "username": " ", "credits": []}), DAILY).unwrap();
        assert_eq!(unattributed.username, None);
        assert_eq!(unattributed.etype, None);
    }

    #[test]
    fn a_bad_series_is_named_in_the_error() {
        let response = json!({"data": [
            {"stype": "geocode", "credits": [["86400000", "1"]]},
            {"stype": "tiles", "username": "bob", "credits": [["86400000", "x"]]},
        ]});
        let err = read_all(&response, DAILY).unwrap_err();
        let UsageError::InSeries {
            index, stype, username, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(
            (*index, stype.as_deref(), username.as_deref()),
            (1, Some("tiles"), Some("bob"))
        );
        assert!(err.to_string().contains("credits value"));
        assert!(matches!(
            read_one(&json!({"stype": "tiles"}), DAILY),
            Err(UsageError::BadField { field: "credits", .. })
        ));
        assert!(read_all(&json!({"nodata": []}), DAILY).is_err());
    }

    #[test]
    fn window_is_half_open_and_never_empty() {
        let w = TimeWindow::new(1_000, 2_000).unwrap();
        assert!(w.contains(1_000) && w.contains(1_999));
        assert!(!w.contains(2_000) && !w.contains(999));
        assert!(matches!(TimeWindow::new(5, 5), Err(UsageError::EmptyWindow { .. })));
        assert!(TimeWindow::new(6, 5).is_err());
        assert!(TimeWindow::new(i64::MIN, i64::MAX).unwrap().days() > 0.0);
        assert!(serde_json::from_str::<TimeWindow>(r#"{"start_ms":5,"end_ms":1}"#).is_err());
    }

    #[test]
    fn window_from_dates() {
        let end = DateTime::parse_from_rfc3339("2024-03-31T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = TimeWindow::last_days(end, 30).unwrap();
        assert_eq!(w.days(), 30.0);
        assert_eq!(w.end_ms(), end.timestamp_millis());
        assert_eq!(w.start_ms(), end.timestamp_millis() - 30 * MS_PER_DAY);
        assert!(TimeWindow::last_days(end, 0).is_err());
        assert!(matches!(
            TimeWindow::last_days(end, u32::MAX),
            Err(UsageError::OutOfRange { .. })
        ));
    }

    #[test]
    fn credits_are_summed_over_whole_buckets_inside_the_window_only() {
        let point = |start, end, credits| UsagePoint {
            bucket: TimeWindow::new(start, end).unwrap(),
            credits: c(credits),
        };
        let s = UsageSeries {
            stype: "geocode".into(),
            etype: None,
            username: None,
            points: vec![
                point(999, 1_000, "100"),
                point(1_000, 1_500, "1"),
                point(1_500, 2_000, "2.5"),
                point(1_999, 2_001, "100"),
                point(2_000, 2_500, "100"),
            ],
        };
        let w = TimeWindow::new(1_000, 2_000).unwrap();
        assert_eq!(s.credits_in(&w), c("3.5"));
        assert_eq!(s.points_in(&w).count(), 2);
    }

    #[test]
    fn a_label_is_the_start_or_the_end_of_its_bucket() {
        let start = Buckets::daily(BucketLabel::Start);
        let end = Buckets::daily(BucketLabel::End);
        let label = ms("2026-11-01T00:00:00Z");
        assert_eq!(
            start.interval(label),
            Some(window("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"))
        );
        assert_eq!(
            end.interval(label),
            Some(window("2026-10-31T00:00:00Z", "2026-11-01T00:00:00Z"))
        );
        for (period, before, after) in [
            (UsagePeriod::Hour, "2026-10-31T23:00:00Z", "2026-11-01T01:00:00Z"),
            (UsagePeriod::Week, "2026-10-25T00:00:00Z", "2026-11-08T00:00:00Z"),
            (UsagePeriod::Month, "2026-10-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        ] {
            let labelled = |label| Buckets { period, label }.interval(ms("2026-11-01T00:00:00Z"));
            assert_eq!(
                labelled(BucketLabel::Start),
                Some(window("2026-11-01T00:00:00Z", after))
            );
            assert_eq!(labelled(BucketLabel::End), Some(window(before, "2026-11-01T00:00:00Z")));
        }
        assert_eq!(start.interval(i64::MAX), None);
        assert_eq!(end.interval(i64::MIN), None);
        // A daily label off midnight would straddle two days: refused, never summed.
        assert_eq!(start.interval(ms("2026-11-01T08:00:00Z")), None);
        assert_eq!(end.interval(ms("2026-11-01T00:00:01Z")), None);
        let monthly = Buckets {
            period: UsagePeriod::Month,
            label: BucketLabel::Start,
        };
        assert_eq!(monthly.interval(ms("2026-11-02T00:00:00Z")), None);
        let point = serde_json::json!({"credits": [[ms("2026-11-01T08:00:00Z").to_string(), "1.0"]]});
        let err = read_one(&point, start).unwrap_err();
        assert!(err.to_string().contains("UTC bucket boundary"), "{err}");
    }

    #[test]
    fn a_month_gets_exactly_its_own_days_under_either_label() {
        // The docstring's labels: UTC midnights, one per day, each carrying a full day.
        let october = window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z");
        let first = ms("2026-09-30T00:00:00Z");
        for label in [BucketLabel::Start, BucketLabel::End] {
            let buckets = Buckets::daily(label);
            let sent = buckets.request_window(&october).unwrap();
            assert_eq!(
                sent,
                window("2026-09-30T00:00:00Z", "2026-11-02T00:00:00Z"),
                "one day more on each side"
            );
            // Credits of day n = n micro-credits: the labels of every day the request spans.
            let labels = (0..=33).map(|n| first + n * MS_PER_DAY);
            let credits = json!(
                labels
                    .map(|t| {
                        let day = buckets.interval(t).unwrap().start_ms();
                        [t.to_string(), ((day - first) / MS_PER_DAY).to_string()]
                    })
                    .collect::<Vec<_>>()
            );
            let s = read_one(&json!({"username": "u1", "credits": credits}), buckets).unwrap();
            // October 1st is day 1, October 31st day 31.
            assert_eq!(s.credits_in(&october), Credits::whole((1..=31).sum()), "{label:?}");
            assert_eq!(s.points_in(&october).count(), 31, "{label:?}");
        }
    }

    #[test]
    fn the_setting_is_start_or_end_exactly() {
        assert_eq!("start".parse(), Ok(BucketLabel::Start));
        assert_eq!("end".parse(), Ok(BucketLabel::End));
        assert_eq!(BucketLabel::default(), BucketLabel::Start);
        for label in [BucketLabel::Start, BucketLabel::End] {
            assert_eq!(label.as_str().parse(), Ok(label));
        }
        assert_eq!(
            "End".parse::<BucketLabel>(),
            Err("'End' is not start or end".to_owned())
        );
    }

    #[test]
    fn member_series_without_user_org_id_are_read() {
        // Esri's docstring: `userOrgId` is absent (not null) for public accounts.
        let response = json!({
            "startTime": 1672099200000_i64, "endTime": 1672704000000_i64, "period": "1d",
            "data": [
                {"username": "public1", "credits": [["1672099200000", "0.0"], ["1672617600000", "2.0E-4"]]},
                {"username": "member1", "userOrgId": "JXrNeAy8ce1q2b4l", "credits": [["1672617600000", "0.0"]]}
            ]
        });
        let series = read_all(&response, DAILY).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].username.as_deref(), Some("public1"));
        let all = TimeWindow::new(0, i64::MAX).unwrap();
        assert_eq!(series[0].credits_in(&all), c("0.0002"));
    }
}
