//! Credit usage time series (`portals/self/usage`; see docs/arcgis.md, "Usage buckets"):
//! synchronous JSON with no item left behind, grouped by service type or by member. The series
//! are read by the domain's parser ([`crate::credits::usage::UsageSeries`]), which accepts
//! values as strings with exponents (`"2.0E-4"`) or as numbers and rejects anything else
//! instead of counting it as 0.
//!
//! A query names the window whose buckets it wants and how labels are read ([`Buckets`]);
//! the request spans one bucket more on each side, so the buckets at the window's edges come
//! back whichever end of its bucket a label names, and only the buckets inside the window are
//! returned.
//!
//! The answer is decoded while it arrives, one series at a time ([`read_usage`]): grouped by
//! member, a 100,000-member org's 30 days are tens of megabytes of JSON, which neither the
//! body nor a document tree may hold at once. [`Client::usage_totals`] keeps only each
//! series' sum.

use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::credits::amount::Credits;
use crate::credits::forecast::Spent;
pub use crate::credits::usage::{BucketLabel, Buckets, UsagePeriod, UsageTotal};
use crate::credits::usage::{NOT_A_PAIR, TimeWindow, UsageError, UsageSeries, WirePoint, read_point};

use super::client::{Client, DecodeError};
use super::endpoint::USAGE;
use super::error::{ApiError, Error};

/// What to ask `portals/self/usage` for.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// The buckets wanted: those wholly inside this half-open window (epoch ms).
    pub window: TimeWindow,
    /// Bucket size and label convention.
    pub buckets: Buckets,
    /// `groupby` dimensions, e.g. `["stype", "etype"]` or `["username", "userorgid"]`.
    pub group_by: Vec<String>,
    /// `vars`; must include `credits`, which every series is read for.
    pub vars: Vec<String>,
}

impl UsageQuery {
    /// Credits and counts per service and event type (the credits dashboard's view).
    pub fn by_service(window: TimeWindow, buckets: Buckets) -> Self {
        UsageQuery {
            window,
            buckets,
            group_by: vec!["stype".into(), "etype".into()],
            vars: vec!["credits".into(), "num".into()],
        }
    }

    /// Credits per member (may include users from outside the org; see docs/arcgis.md,
    /// "Usage buckets").
    pub fn by_member(window: TimeWindow, buckets: Buckets) -> Self {
        UsageQuery {
            window,
            buckets,
            group_by: vec!["username".into(), "userorgid".into()],
            vars: vec!["credits".into()],
        }
    }
}

/// Why a usage answer could not be read.
#[derive(Debug)]
pub enum UsageReadError {
    /// ArcGIS's error envelope instead of data.
    Envelope(Box<ApiError>),
    /// Not JSON, or not the JSON shape of a usage answer (truncated, HTML, a field of the
    /// wrong type).
    Json(serde_json::Error),
    /// Well-formed JSON whose series cannot be summed (a bad point, no `data`).
    Usage(UsageError),
}

/// One series as it comes over the wire; anything else (`userOrgId`, the `num` var) is
/// skipped unread.
#[derive(Deserialize)]
struct WireSeries {
    #[serde(default)]
    stype: Option<String>,
    #[serde(default)]
    etype: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    credits: Option<Vec<Point>>,
}

/// One `[timestamp, credits]` point, each element read as an amount while it is decoded
/// ([`read_point`]): no JSON tree per point, whose three allocations (the pair and its two
/// strings) were most of the decoding's cost, a 100,000-member month being three million
/// points. A point that cannot be read keeps the domain's reason and its JSON text.
struct Point(WirePoint);

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PointVisitor)
    }
}

/// Reads a point; anything but an array is a point that is not a pair.
struct PointVisitor;

impl PointVisitor {
    fn not_a_pair(value: Value) -> Point {
        Point(Err(UsageError::BadPoint {
            point: value.to_string(),
            reason: NOT_A_PAIR,
        }))
    }
}

impl<'de> Visitor<'de> for PointVisitor {
    type Value = Point;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a [timestamp, credits] pair")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Point, A::Error> {
        let first = seq.next_element::<Element>()?;
        let second = seq.next_element::<Element>()?;
        let third = seq.next_element::<Element>()?;
        match (first, second, third) {
            (Some(ts), Some(credits), None) => {
                let read = read_point(ts.amount(), credits.amount());
                Ok(Point(read.map_err(|reason| UsageError::BadPoint {
                    point: Value::Array(vec![ts.into_value(), credits.into_value()]).to_string(),
                    reason,
                })))
            }
            (first, second, third) => {
                let mut all: Vec<Value> = [first, second, third]
                    .into_iter()
                    .flatten()
                    .map(Element::into_value)
                    .collect();
                while let Some(more) = seq.next_element::<Value>()? {
                    all.push(more);
                }
                Ok(Self::not_a_pair(Value::Array(all)))
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Point, A::Error> {
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Self::not_a_pair)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Point, E> {
        Ok(Self::not_a_pair(Value::from(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Point, E> {
        Ok(Self::not_a_pair(Value::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Point, E> {
        Ok(Self::not_a_pair(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Point, E> {
        Ok(Self::not_a_pair(Value::from(v)))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Point, E> {
        Ok(Self::not_a_pair(Value::from(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Point, E> {
        Ok(Self::not_a_pair(Value::Null))
    }
}

/// One element of a point: read as an amount where it is one, as [`Credits::from_json`]
/// reads it, without allocating; kept as JSON otherwise, for the error message.
enum Element {
    Amount(Credits),
    Other(Value),
}

impl Element {
    fn amount(&self) -> Option<Credits> {
        match self {
            Element::Amount(c) => Some(*c),
            Element::Other(_) => None,
        }
    }

    /// The element as JSON, for an error message: an amount read from a string is written
    /// back as its exact decimal.
    fn into_value(self) -> Value {
        match self {
            Element::Amount(c) => Value::String(c.to_string()),
            Element::Other(v) => v,
        }
    }

    fn of(value: Value) -> Self {
        match Credits::from_json(&value) {
            Some(c) => Element::Amount(c),
            None => Element::Other(value),
        }
    }
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a timestamp or an amount")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Element, E> {
        Ok(match Credits::parse_rounded(v) {
            Ok(c) => Element::Amount(c),
            Err(_) => Element::Other(Value::from(v)),
        })
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Element, E> {
        Ok(Element::of(Value::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Element, E> {
        Ok(Element::of(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Element, E> {
        Ok(Element::of(Value::from(v)))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Element, E> {
        Ok(Element::Other(Value::from(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Element, E> {
        Ok(Element::Other(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Element::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Element, A::Error> {
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Element::Other)
    }
}

/// Reads a usage answer (`{"data": [...]}`, or an error envelope) from `body`, handing each
/// series to `each` as soon as it is decoded, its labels read per `buckets`. Holds one series
/// at a time: memory does not grow with the answer. An error names the failing series.
pub fn read_usage(body: impl Read, buckets: Buckets, mut each: impl FnMut(UsageSeries)) -> Result<(), UsageReadError> {
    let mut failure = None;
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(body));
    let root = Root {
        buckets,
        each: &mut each,
        failure: &mut failure,
    };
    let decoded = root.deserialize(&mut de).and_then(|root| de.end().map(|()| root));
    // A series refused by the domain stops the decoding with a placeholder error: the real
    // reason is the one kept aside.
    if let Some(e) = failure {
        return Err(UsageReadError::Usage(e));
    }
    let (saw_data, others) = decoded.map_err(UsageReadError::Json)?;
    if let Some(api) = ApiError::from_body(&Value::Object(others)) {
        return Err(UsageReadError::Envelope(Box::new(api)));
    }
    if !saw_data {
        return Err(UsageReadError::Usage(UsageError::BadField {
            field: "data",
            expected: "an array of series",
        }));
    }
    Ok(())
}

/// The answer's top level: `data` is streamed; the other keys (a few scalars, or an error
/// envelope) are kept to recognise an envelope.
struct Root<'a, F> {
    buckets: Buckets,
    each: &'a mut F,
    failure: &'a mut Option<UsageError>,
}

impl<'de, F: FnMut(UsageSeries)> DeserializeSeed<'de> for Root<'_, F> {
    type Value = (bool, serde_json::Map<String, Value>);

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F: FnMut(UsageSeries)> Visitor<'de> for Root<'_, F> {
    type Value = (bool, serde_json::Map<String, Value>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a usage answer object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut saw_data = false;
        let mut others = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "data" && !saw_data {
                saw_data = true;
                map.next_value_seed(Data {
                    buckets: self.buckets,
                    each: &mut *self.each,
                    failure: &mut *self.failure,
                })?;
            } else {
                others.insert(key, map.next_value()?);
            }
        }
        Ok((saw_data, others))
    }
}

/// The `data` array, read one series at a time.
struct Data<'a, F> {
    buckets: Buckets,
    each: &'a mut F,
    failure: &'a mut Option<UsageError>,
}

impl<'de, F: FnMut(UsageSeries)> DeserializeSeed<'de> for Data<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(UsageSeries)> Visitor<'de> for Data<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of usage series")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(wire) = seq.next_element::<WireSeries>()? {
            let series = UsageSeries::from_wire(
                wire.stype.as_deref(),
                wire.etype.as_deref(),
                wire.username.as_deref(),
                wire.credits.map(|points| points.into_iter().map(|p| p.0)),
                self.buckets,
            );
            match series {
                Ok(series) => (self.each)(series),
                Err(e) => {
                    *self.failure = Some(UsageError::InSeries {
                        index,
                        stype: wire.stype,
                        username: wire.username,
                        source: Box::new(e),
                    });
                    return Err(serde::de::Error::custom("a usage series was refused"));
                }
            }
            index += 1;
        }
        Ok(())
    }
}

impl Client {
    /// Sends `query` and folds each series of the answer into `A` with `keep`, as the answer
    /// arrives (the window passed to `keep` is the query's).
    async fn read_usage_into<A, K>(&self, query: &UsageQuery, keep: K) -> Result<A, Error>
    where
        A: Default + Send + 'static,
        K: Fn(&mut A, UsageSeries, &TimeWindow) + Send + Sync + 'static,
    {
        let what = format!(
            "portals/self/usage ({}..{} ms, {}, labels at the bucket {}, by {})",
            query.window.start_ms(),
            query.window.end_ms(),
            query.buckets.period.as_str(),
            query.buckets.label.as_str(),
            query.group_by.join(",")
        );
        if !query.vars.iter().any(|v| v == "credits") {
            return Err(Error::InvalidInput {
                what,
                reason: "vars must include credits".into(),
            });
        }
        let sent = query
            .buckets
            .request_window(&query.window)
            .and_then(|w| {
                // Never ask about the future (unverified whether ArcGIS accepts it): the padding
                // past the window's end stops at now, unless the window itself reaches further.
                let now = chrono::Utc::now().timestamp_millis();
                TimeWindow::new(w.start_ms(), w.end_ms().min(now.max(query.window.end_ms())))
            })
            .map_err(|e| Error::InvalidInput {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        let url = self.url(&["portals", "self", "usage"]);
        let params = [
            ("startTime", sent.start_ms().to_string()),
            ("endTime", sent.end_ms().to_string()),
            ("period", query.buckets.period.as_str().to_owned()),
            ("groupby", query.group_by.join(",")),
            ("vars", query.vars.join(",")),
        ];
        let (buckets, window) = (query.buckets, query.window);
        let decode: super::client::StreamDecoder<Result<A, UsageError>> = Arc::new(move |body: &mut dyn Read| {
            let mut acc = A::default();
            match read_usage(body, buckets, |s| keep(&mut acc, s, &window)) {
                Ok(()) => Ok(Ok(acc)),
                Err(UsageReadError::Usage(e)) => Ok(Err(e)),
                Err(UsageReadError::Envelope(api)) => Err(DecodeError::Envelope(api)),
                Err(UsageReadError::Json(e)) => Err(DecodeError::Json(e)),
            }
        });
        self.call_streamed(USAGE, &url, &params, &what, decode)
            .await?
            .map_err(|e| Error::Unexpected {
                what,
                reason: e.to_string(),
            })
    }

    /// Reads credit usage: one series per group, holding the buckets inside the query's
    /// window (its labels read per `query.buckets`). For few series (per service type); per
    /// member, [`Client::usage_totals`] keeps a sum instead of every bucket.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageSeries>, Error> {
        self.read_usage_into(query, |all: &mut Vec<UsageSeries>, mut s, window| {
            s.points.retain(|p| window.covers(&p.bucket));
            all.push(s);
        })
        .await
    }

    /// Reads credit usage summed per member and for the whole org over the query's window
    /// ([`Spent`]), as the answer arrives: what a forecast needs, without a record per series.
    pub async fn usage_spent(&self, query: &UsageQuery) -> Result<Spent, Error> {
        self.read_usage_into(query, |spent: &mut Spent, s, window| {
            let credits = s.credits_in(window);
            spent.add(s.username, credits);
        })
        .await
    }

    /// Reads credit usage summed per group over the query's window: what a burn rate or a
    /// month's total per member needs, in a few dozen bytes per series.
    pub async fn usage_totals(&self, query: &UsageQuery) -> Result<Vec<UsageTotal>, Error> {
        self.read_usage_into(query, |all: &mut Vec<UsageTotal>, s, window| {
            all.push(UsageTotal::of(&s, window));
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let w = TimeWindow::new(1_672_099_200_000, 1_672_704_000_000).unwrap();
        let q = UsageQuery::by_service(w, Buckets::daily(BucketLabel::Start));
        assert_eq!(
            (q.group_by.join(","), q.vars.join(",")),
            ("stype,etype".into(), "credits,num".into())
        );
        let q = UsageQuery::by_member(
            w,
            Buckets {
                period: UsagePeriod::Month,
                label: BucketLabel::End,
            },
        );
        assert_eq!(
            (q.group_by.join(","), q.buckets.period.as_str()),
            ("username,userorgid".into(), "1m")
        );
    }
}
