//! Credit usage time series, as `portals/self/usage` returns them, and the time window
//! they are read over.
//!
//! On the wire each series is `{"stype", "etype", "username", "credits": [[ts, value], ...]}`
//! where both timestamp and value are usually *strings* (`["1672185600000", "2.0E-4"]`).
//! The parsers here accept strings or numbers, exponent notation included (through the one
//! reader of ArcGIS numbers, [`Credits::from_json`]), and reject anything else with an error instead
//! of counting it as zero. Values are exact [`Credits`].

use chrono::{DateTime, Duration, Utc};
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

    /// Length in (possibly fractional) days; always > 0.
    pub fn days(&self) -> f64 {
        // i128: the difference of two extreme i64 values does not fit an i64.
        (i128::from(self.end_ms) - i128::from(self.start_ms)) as f64 / MS_PER_DAY as f64
    }
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
    /// `(epoch ms, credits)` pairs.
    pub points: Vec<(i64, Credits)>,
}

impl UsageSeries {
    /// Reads one entry of the usage response's `data` array. `stype`, `etype` and
    /// `username` are optional (they depend on `groupby`); an empty username is `None`.
    /// `credits` is required: a series without it cannot be summed.
    pub fn from_json(value: &Value) -> Result<Self, UsageError> {
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::trim);
        let points = value
            .get("credits")
            .and_then(Value::as_array)
            .ok_or(UsageError::BadField {
                field: "credits",
                expected: "an array of [timestamp, value] pairs",
            })?
            .iter()
            .map(parse_point)
            .collect::<Result<_, _>>()?;
        Ok(UsageSeries {
            stype: text("stype").unwrap_or_default().to_owned(),
            etype: text("etype").filter(|s| !s.is_empty()).map(str::to_owned),
            username: text("username").filter(|s| !s.is_empty()).map(str::to_owned),
            points,
        })
    }

    /// Reads a whole usage response (`{"data": [...]}`); an error names the failing series.
    pub fn from_response(response: &Value) -> Result<Vec<Self>, UsageError> {
        let data = response
            .get("data")
            .and_then(Value::as_array)
            .ok_or(UsageError::BadField {
                field: "data",
                expected: "an array of series",
            })?;
        data.iter()
            .enumerate()
            .map(|(index, series)| {
                UsageSeries::from_json(series).map_err(|e| {
                    let text = |f: &str| series.get(f).and_then(Value::as_str).map(str::to_owned);
                    UsageError::InSeries {
                        index,
                        stype: text("stype"),
                        username: text("username"),
                        source: Box::new(e),
                    }
                })
            })
            .collect()
    }

    /// The points whose timestamp lies in `window`.
    pub fn points_in<'a>(&'a self, window: &'a TimeWindow) -> impl Iterator<Item = (i64, Credits)> + 'a {
        self.points.iter().copied().filter(|(ts, _)| window.contains(*ts))
    }

    /// Total credits of the points in `window`.
    pub fn credits_in(&self, window: &TimeWindow) -> Credits {
        self.points_in(window).map(|(_, credits)| credits).sum()
    }
}

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
        .ok_or_else(|| bad("expected a [timestamp, credits] pair"))?;
    let ts = whole_ms(ts).ok_or_else(|| bad("the timestamp is not a whole number of epoch ms"))?;
    let credits = Credits::from_json(credits).ok_or_else(|| bad("the credits value is not a number"))?;
    Ok((ts, credits))
}

/// A timestamp in whole milliseconds, written as an integer or with an exponent
/// (`"1.6721856E12"`): read exactly as a decimal, refused when it has a fraction.
fn whole_ms(value: &Value) -> Option<i64> {
    // The amount reader is exact to 10⁻⁶ and holds far more than any epoch-ms value.
    Credits::from_json(value)?.whole_units()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
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
            assert!(matches!(err, UsageError::BadPoint { .. }), "{bad}");
        }
    }

    #[test]
    fn series_read_from_the_wire_shape() {
        let s = UsageSeries::from_json(&json!({
            "stype": "geocode", "etype": "geocodecnt", "username": "u1", "userOrgId": "x",
            "credits": [["1672099200000", "0.0"], ["1672185600000", "2.0E-4"]],
            "num": [["1672099200000", "0"]]
        }))
        .unwrap();
        assert_eq!(s.stype, "geocode");
        assert_eq!(s.etype.as_deref(), Some("geocodecnt"));
        assert_eq!(s.username.as_deref(), Some("u1"));
        assert_eq!(
            s.points,
            [(1_672_099_200_000, Credits::ZERO), (1_672_185_600_000, c("0.0002"))]
        );

        let unattributed = UsageSeries::from_json(&json!({"stype": "tiles", "username": " ", "credits": []})).unwrap();
        assert_eq!(unattributed.username, None);
        assert_eq!(unattributed.etype, None);
    }

    #[test]
    fn a_bad_series_is_named_in_the_error() {
        let response = json!({"data": [
            {"stype": "geocode", "credits": [["1", "1"]]},
            {"stype": "tiles", "username": "bob", "credits": [["1", "x"]]},
        ]});
        let err = UsageSeries::from_response(&response).unwrap_err();
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
            UsageSeries::from_json(&json!({"stype": "tiles"})),
            Err(UsageError::BadField { field: "credits", .. })
        ));
        assert!(UsageSeries::from_response(&json!({"nodata": []})).is_err());
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
    fn credits_are_summed_inside_the_window_only() {
        let s = UsageSeries {
            stype: "geocode".into(),
            etype: None,
            username: None,
            points: vec![(999, c("100")), (1_000, c("1")), (1_500, c("2.5")), (2_000, c("100"))],
        };
        let w = TimeWindow::new(1_000, 2_000).unwrap();
        assert_eq!(s.credits_in(&w), c("3.5"));
        assert_eq!(s.points_in(&w).count(), 2);
    }
}
