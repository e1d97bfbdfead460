//! CloudWatch metrics as one Embedded Metric Format (EMF) line per run.
//!
//! Lambda ships every stdout line to CloudWatch Logs, and CloudWatch Logs turns a line shaped
//! like the EMF specification
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>)
//! into metrics: no `PutMetricData` call, no extra IAM permission, no network round trip, and
//! nothing to flush. The document is small and hand-written with serde_json rather than
//! pulled in through a metrics facade: three functions emit a handful of numbers once per run.
//!
//! Shape (one line, no pretty printing, since CloudWatch parses each log event as one JSON
//! object):
//!
//! ```json
//! {"_aws":{"Timestamp":1795672800000,"CloudWatchMetrics":[{"Namespace":"CreditSteward",
//!   "Dimensions":[["Stack"]],"Metrics":[{"Name":"MembersCritical","Unit":"Count"}]}]},
//!  "Stack":"credit-steward","MembersCritical":3,"function":"scan-credits"}
//! ```
//!
//! One dimension set, `Stack` (the CloudFormation stack's name, `STACK_NAME`): two stacks in
//! one account and region publish separate metrics, and each stack's alarms and dashboard
//! filter on their own stack. A stack serves one org, so the stack already tells orgs apart;
//! the org id rides along as a property, not as a second dimension set, which CloudWatch
//! would bill as a second copy of every metric. Without a stack name (local runs) the set is
//! empty (`[[]]`): each metric published once, undimensioned.
//! Extra members (such as `function` or `run_key`) are not metrics; CloudWatch Logs Insights
//! can still query them next to the numbers.
//!
//! The writer is a parameter, so tests capture the line and the Lambda writes it to stdout.

#![warn(missing_docs)]

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The CloudWatch namespace every credit-steward metric is published under.
pub const NAMESPACE: &str = "CreditSteward";

/// The dimension that names the stack a metric comes from.
pub const STACK_DIMENSION: &str = "Stack";

/// The dimensions every metric of a run is published with: the stack's name when the
/// function runs in a stack (`STACK_NAME`), none otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dimensions {
    stack: Option<String>,
}

impl Dimensions {
    /// No dimension (local runs and tests).
    pub fn none() -> Self {
        Dimensions::default()
    }

    /// The `Stack` dimension set to `stack`, when there is one.
    pub fn stack(stack: Option<&str>) -> Self {
        Dimensions {
            stack: stack.map(str::to_owned),
        }
    }

    /// (name, value) of each dimension, in the order of the EMF dimension set.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        self.stack.iter().map(|s| (STACK_DIMENSION, s.as_str())).collect()
    }
}

/// The EMF units credit-steward uses (a subset of CloudWatch's `StandardUnit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain number with no unit (credits are not a CloudWatch unit).
    None,
    /// A count of things (members, requests).
    Count,
    /// A duration.
    Milliseconds,
}

impl Unit {
    /// The spelling EMF expects in `MetricDefinition.Unit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::None => "None",
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric value to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// The metric name, e.g. `MembersCritical`.
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// The value. Non-finite values are left out of the document: EMF requires numbers, and
    /// JSON has no NaN.
    pub value: f64,
}

impl Metric {
    /// A metric with a unit.
    pub fn new(name: &'static str, unit: Unit, value: f64) -> Self {
        Metric { name, unit, value }
    }
}

/// Builds the EMF document for `metrics` at `timestamp`, published under `dimensions`, with
/// `properties` as extra (non-metric) members. Dimension values win over properties, metric
/// values over both, and the reserved `_aws` member cannot be overridden.
pub fn emf_document(
    timestamp: DateTime<Utc>,
    dimensions: &Dimensions,
    metrics: &[Metric],
    properties: &Map<String, Value>,
) -> Value {
    let published: Vec<&Metric> = metrics.iter().filter(|m| m.value.is_finite()).collect();
    let mut root = Map::new();
    for (key, value) in properties {
        if key != "_aws" {
            root.insert(key.clone(), value.clone());
        }
    }
    let pairs = dimensions.pairs();
    for (name, value) in &pairs {
        root.insert((*name).to_owned(), json!(value));
    }
    for m in &published {
        root.insert(m.name.to_owned(), number(m.value));
    }
    let names: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
    let definitions: Vec<Value> = published
        .iter()
        .map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()}))
        .collect();
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": definitions,
            }],
        }),
    );
    Value::Object(root)
}

/// Whole numbers (counts, milliseconds) as JSON integers, the rest as floats.
fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact in f64
    if value.fract() == 0.0 && value.abs() < EXACT {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// Writes the EMF document as one line (with its newline) in a single `write_all`, so a log
/// line from another thread cannot land in the middle of it.
pub fn write_emf(
    out: &mut impl Write,
    timestamp: DateTime<Utc>,
    dimensions: &Dimensions,
    metrics: &[Metric],
    properties: &Map<String, Value>,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(&emf_document(timestamp, dimensions, metrics, properties))?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_an_empty_dimension_set_and_every_metric_defined() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut props = Map::new();
        props.insert("function".into(), json!("scan-credits"));
        props.insert("_aws".into(), json!("ignored"));
        let metrics = [
            Metric::new("MembersCritical", Unit::Count, 3.0),
            Metric::new("DurationMs", Unit::Milliseconds, 1234.0),
            Metric::new("Broken", Unit::None, f64::NAN),
        ];
        let mut out = Vec::new();
        write_emf(&mut out, at, &Dimensions::none(), &metrics, &props).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        let doc: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(doc["_aws"]["Timestamp"], at.timestamp_millis());
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "CreditSteward");
        assert_eq!(directive["Dimensions"], json!([[]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "MembersCritical", "Unit": "Count"}, {"Name": "DurationMs", "Unit": "Milliseconds"}])
        );
        assert_eq!(doc["MembersCritical"], 3);
        assert_eq!(doc["DurationMs"], 1234);
        let fractional = emf_document(
            at,
            &Dimensions::none(),
            &[Metric::new("OrgAvailableCredits", Unit::None, 12.5)],
            &Map::new(),
        );
        assert_eq!(fractional["OrgAvailableCredits"], 12.5);
        assert!(doc.get("Broken").is_none());
        assert_eq!(doc["function"], "scan-credits");
    }

    #[test]
    fn two_stacks_publish_under_their_own_stack_dimension() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let metrics = [Metric::new("MembersCritical", Unit::Count, 3.0)];
        let mut props = Map::new();
        props.insert("Stack".into(), json!("a property cannot pose as the dimension"));
        let lines: Vec<Value> = ["credit-steward-prod", "credit-steward-test"]
            .into_iter()
            .map(|stack| {
                let mut out = Vec::new();
                write_emf(&mut out, at, &Dimensions::stack(Some(stack)), &metrics, &props).unwrap();
                serde_json::from_slice(&out).unwrap()
            })
            .collect();
        for (doc, stack) in lines.iter().zip(["credit-steward-prod", "credit-steward-test"]) {
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            // Every dimension set names Stack, and the member it names holds this stack.
            assert_eq!(directive["Dimensions"], json!([["Stack"]]));
            assert_eq!(doc["Stack"], stack);
            assert_eq!(doc["MembersCritical"], 3);
        }
        assert_ne!(lines[0]["Stack"], lines[1]["Stack"]);
        let local = emf_document(at, &Dimensions::stack(None), &metrics, &Map::new());
        assert_eq!(local["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert!(local.get("Stack").is_none());
    }
}
