//! Decoding what a schedule delivers, in its three shapes.
//!
//! EventBridge Scheduler with an `Input` delivers that JSON verbatim; the legacy EventBridge
//! rule delivers a "Scheduled Event" envelope whose `detail` is `{}`; Scheduler without `Input`
//! delivers an envelope whose `detail` is the *string* `"{}"` (see `docs/aws.md`). All
//! three become a [`ScheduledRun`]: the job's typed input plus the time the run was scheduled
//! for, which is what makes a retried invocation recognisably the same run.
//!
//! The SAM template passes `"scheduled_time": "<aws.scheduler.scheduled-time>"` in `Input`
//! (a Scheduler context attribute), so even the verbatim shape carries the schedule time.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::credits::percent::Percent;
use crate::i18n::Lang;

/// Keys scan-credits' `Input` accepts (the SAM template is checked against this list).
pub const SCAN_INPUT_KEYS: &[&str] = &[
    "dry_run",
    "critical_percent",
    "warning_percent",
    "scheduled_time",
    "language",
];
/// Keys monthly-report's `Input` accepts.
pub const REPORT_INPUT_KEYS: &[&str] = &["month", "scheduled_time", "language"];

/// scan-credits' input: everything optional, so `{}` is a normal daily scan.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanInput {
    /// Classify and report, but send no email and allocate nothing.
    pub dry_run: bool,
    /// Overrides `CRITICAL_PERCENT` for this run.
    pub critical_percent: Option<Percent>,
    /// Overrides `WARNING_PERCENT` for this run.
    pub warning_percent: Option<Percent>,
    /// When the schedule fired (Scheduler context attribute `<aws.scheduler.scheduled-time>`).
    pub scheduled_time: Option<DateTime<Utc>>,
    /// Overrides `LANGUAGE` for this run's email (`en` or `fr`).
    pub language: Option<Lang>,
}

/// monthly-report's input.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportInput {
    /// The month to report, `YYYY-MM`; default: the month before the schedule time.
    pub month: Option<String>,
    /// When the schedule fired.
    pub scheduled_time: Option<DateTime<Utc>>,
    /// Overrides `LANGUAGE` for this run's report and email (`en` or `fr`).
    pub language: Option<Lang>,
}

/// Inputs that may carry the schedule time themselves.
pub trait HasScheduledTime {
    /// The time in the input, if any.
    fn scheduled_time(&self) -> Option<DateTime<Utc>>;
}

impl HasScheduledTime for ScanInput {
    fn scheduled_time(&self) -> Option<DateTime<Utc>> {
        self.scheduled_time
    }
}

impl HasScheduledTime for ReportInput {
    fn scheduled_time(&self) -> Option<DateTime<Utc>> {
        self.scheduled_time
    }
}

/// One scheduled invocation, whatever shape it arrived in.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRun<T> {
    /// The job's input.
    pub input: T,
    /// When the run was scheduled for: from the input, else the envelope's `time`.
    pub scheduled_time: Option<DateTime<Utc>>,
    /// The envelope's event id, when there was an envelope.
    pub event_id: Option<String>,
}

impl<T> ScheduledRun<T> {
    /// The business key of this run: the same for every retry of one scheduled firing. Falls
    /// back to the Lambda request id (which async retries keep) for manual invocations.
    pub fn run_key(&self, request_id: &str) -> String {
        match (&self.scheduled_time, &self.event_id) {
            (Some(t), _) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            (None, Some(id)) => format!("event:{id}"),
            (None, None) => format!("request:{request_id}"),
        }
    }
}

/// Why an event could not be decoded. The message names the shape and the field.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not a JSON object at all.
    #[error("the event is not a JSON object (got {0}); send the schedule's Input object, e.g. {{}}")]
    NotAnObject(&'static str),
    /// An envelope's `detail` that is neither an object nor a string holding one.
    #[error("the Scheduled Event's detail is neither an object nor a JSON string: {0}")]
    BadDetail(String),
    /// An envelope `time` or an input `scheduled_time` that is not RFC 3339.
    #[error("{field} '{value}' is not an RFC 3339 timestamp (e.g. 2026-11-01T06:00:00Z)")]
    BadTime {
        /// Which field: the envelope's `time` or the input's `scheduled_time`.
        field: &'static str,
        /// The value received (cut to 80 characters).
        value: String,
    },
    /// The input object has unknown keys or wrong types.
    #[error("invalid input: {0}")]
    BadInput(#[source] serde_json::Error),
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes any of the three shapes into a [`ScheduledRun`].
pub fn decode<T: DeserializeOwned + HasScheduledTime>(event: Value) -> Result<ScheduledRun<T>, EventError> {
    let Value::Object(mut obj) = event else {
        return Err(EventError::NotAnObject(kind(&event)));
    };
    let is_envelope = obj.contains_key("detail-type") && obj.contains_key("source");
    if !is_envelope {
        check_time(&obj, "scheduled_time")?;
        let input: T = serde_json::from_value(Value::Object(obj)).map_err(EventError::BadInput)?;
        let scheduled_time = input.scheduled_time();
        return Ok(ScheduledRun {
            input,
            scheduled_time,
            event_id: None,
        });
    }
    let detail = match obj.remove("detail") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Default::default()),
        Some(Value::String(s)) => {
            serde_json::from_str(&s).map_err(|_| EventError::BadDetail(s.chars().take(80).collect()))?
        }
        Some(v @ Value::Object(_)) => v,
        Some(other) => return Err(EventError::BadDetail(kind(&other).into())),
    };
    if let Value::Object(d) = &detail {
        check_time(d, "scheduled_time")?;
    }
    let input: T = serde_json::from_value(detail).map_err(EventError::BadInput)?;
    check_time(&obj, "time")?;
    let envelope_time = obj
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let event_id = obj.get("id").and_then(Value::as_str).map(str::to_string);
    Ok(ScheduledRun {
        scheduled_time: input.scheduled_time().or(envelope_time),
        input,
        event_id,
    })
}

/// Names the field when a timestamp is malformed (serde's own message would not).
fn check_time(obj: &serde_json::Map<String, Value>, field: &'static str) -> Result<(), EventError> {
    match obj.get(field).and_then(Value::as_str) {
        Some(t) if DateTime::parse_from_rfc3339(t).is_err() => Err(EventError::BadTime {
            field,
            value: t.chars().take(80).collect(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scheduled_event(detail: Value) -> Value {
        json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-26T06:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"], "detail": detail
        })
    }

    #[test]
    fn scheduler_input_is_taken_verbatim_with_its_scheduled_time() {
        let run: ScheduledRun<ScanInput> =
            decode(json!({"dry_run": true, "scheduled_time": "2026-11-26T06:00:00Z"})).unwrap();
        assert!(run.input.dry_run);
        assert_eq!(run.run_key("req"), "2026-11-26T06:00:00Z");
        let plain: ScheduledRun<ScanInput> = decode(json!({})).unwrap();
        assert_eq!(plain.input, ScanInput::default());
        assert_eq!(plain.run_key("req-1"), "request:req-1");
    }

    #[test]
    fn legacy_scheduled_event_and_scheduler_default_envelope_decode_alike() {
        let legacy: ScheduledRun<ScanInput> = decode(scheduled_event(json!({}))).unwrap();
        let mut default_env = scheduled_event(json!("{}"));
        default_env["source"] = json!("aws.scheduler");
        let scheduler: ScheduledRun<ScanInput> = decode(default_env).unwrap();
        for run in [&legacy, &scheduler] {
            assert_eq!(run.input, ScanInput::default());
            assert_eq!(run.run_key("r"), "2026-11-26T06:00:00Z");
            assert_eq!(run.event_id.as_deref(), Some("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa"));
        }
    }

    #[test]
    fn bad_events_are_refused_with_the_reason() {
        let e = decode::<ScanInput>(json!({"dryrun": true})).unwrap_err().to_string();
        assert!(e.contains("unknown field `dryrun`"), "{e}");
        assert!(
            decode::<ScanInput>(json!([1]))
                .unwrap_err()
                .to_string()
                .contains("an array")
        );
        assert!(matches!(
            decode::<ScanInput>(scheduled_event(json!("{nope"))),
            Err(EventError::BadDetail(_))
        ));
        let mut bad_time = scheduled_event(json!({}));
        bad_time["time"] = json!("yesterday");
        assert!(matches!(
            decode::<ScanInput>(bad_time),
            Err(EventError::BadTime { field: "time", .. })
        ));
        let e = decode::<ReportInput>(json!({"scheduled_time": "tomorrow"}))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("scheduled_time 'tomorrow'"), "{e}");
        let r: ScheduledRun<ReportInput> = decode(json!({"month": "2026-10"})).unwrap();
        assert_eq!(r.input.month.as_deref(), Some("2026-10"));
        let e = decode::<ScanInput>(json!({"language": "de"})).unwrap_err().to_string();
        assert!(e.contains("'de' is not en or fr"), "{e}");
    }

    #[test]
    fn a_run_may_name_its_language_and_old_inputs_still_decode() {
        let r: ScheduledRun<ScanInput> = decode(json!({"language": "fr", "dry_run": true})).unwrap();
        assert_eq!(r.input.language, Some(Lang::Fr));
        let r: ScheduledRun<ReportInput> = decode(json!({"month": "2026-10", "language": "en"})).unwrap();
        assert_eq!(r.input.language, Some(Lang::En));
        let old: ScheduledRun<ScanInput> =
            decode(json!({"dry_run": false, "scheduled_time": "2026-11-26T06:00:00Z"})).unwrap();
        assert_eq!(old.input.language, None);
    }
}
