//! scan-credits: the daily credits watchdog.
//!
//! Thin on purpose: cold start builds the settings (failing with every problem at once), the
//! Secrets Manager cache and the DynamoDB ledger once, and hands each scheduled event to
//! [`shared::scan`], where the workflow and its once-only guarantees live. This file only
//! decodes the event (any of the three schedule shapes), picks the run key, writes the run's
//! metrics line, and maps errors to a meaningful Lambda `errorType`.

use std::io::Write;

use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Map, Value, json};
use shared::apply::Deadline;
use shared::channels::{Channels, SnsTopic};
use shared::config::Config;
use shared::connect::{ArcgisSource, ConnectError};
use shared::ledger::Ledger;
use shared::monthly::store::ReportStore;
use shared::scan::settings::FALLBACK_TIMEOUT;
use shared::scan::{self, ScanDeps, ScanError, ScanRequest, ScanSettings, ScanSummary};
use shared::schedule::{self, EventError, ScanInput};
use shared::startup::{self, StartupError};
use shared::telemetry;

/// The allocator is bounded before the runtime's threads exist ([`shared::startup::block_on`]).
fn main() -> Result<(), lambda_runtime::Error> {
    shared::startup::block_on(serve())?
}

async fn serve() -> Result<(), lambda_runtime::Error> {
    shared::logging::init_logging();
    let state = State::from_env().map_err(|e| startup::refuse(scan::JOB, e))?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handler(&state, event))).await
}

/// Built once per container: the scan's validated settings, the ArcGIS credentials source
/// (its secret cached between invocations), the ledger that keeps runs and alerts, the
/// bucket the complete member lists go to, and the SNS topic alerts are published to.
struct State {
    arcgis: ArcgisSource,
    ledger: Ledger,
    lists: Option<ReportStore>,
    sns: Option<SnsTopic>,
    config: Config,
    settings: ScanSettings,
}

impl State {
    fn from_env() -> Result<State, StartupError> {
        let config = Config::from_env()?;
        let settings = ScanSettings::from_config(&config)?;
        Ok(State {
            arcgis: ArcgisSource::from_config(&config),
            ledger: Ledger::dynamo_from_env(settings.ledger_table.clone()),
            lists: settings.lists_bucket.as_ref().map(|b| ReportStore::from_env(b.clone())),
            sns: settings
                .alert_topic_arn
                .as_ref()
                .map(|arn| SnsTopic::from_env(arn.clone())),
            config,
            settings,
        })
    }
}

/// Everything an invocation can fail with; [`Diagnostic::error_type`] says which.
#[derive(Debug, thiserror::Error)]
enum HandlerError {
    /// The event is not one of the three schedule shapes, or its Input is invalid.
    #[error(transparent)]
    Event(#[from] EventError),
    /// No ArcGIS client: the secret is unreadable or its settings unusable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The scan failed (see [`ScanError::kind`]).
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The summary could not be turned into JSON (a bug).
    #[error("could not serialize the scan summary: {0}")]
    Summary(#[source] serde_json::Error),
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        let error_type = match &e {
            HandlerError::Event(_) => "InvalidEvent",
            HandlerError::Connect(e) => e.kind(),
            HandlerError::Scan(s) => s.kind(),
            HandlerError::Summary(_) => "InternalError",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

async fn handler(state: &State, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    handle(state, event, &mut std::io::stdout()).await
}

/// The handler with its metrics sink as a parameter, so tests capture the EMF line.
async fn handle(state: &State, event: LambdaEvent<Value>, metrics_out: &mut impl Write) -> Result<Value, HandlerError> {
    let (payload, context) = event.into_parts();
    let now = Utc::now();
    let deadline = Deadline::from_context(context.deadline, now, FALLBACK_TIMEOUT);
    let request = decode(payload, &context.request_id, now, deadline)?;
    tracing::info!(
        run_key = %request.run_key,
        dry_run = request.input.dry_run,
        "scan-credits starting"
    );
    let client = state.arcgis.client(&state.config).await?.until(deadline.work_until());
    // The webhooks come with the secret just read (checked when it was parsed).
    let channels = Channels::new(state.sns.clone(), &state.arcgis.channel_secrets());
    let deps = ScanDeps {
        client: &client,
        ledger: &state.ledger,
        settings: &state.settings,
        lists: state.lists.as_ref(),
        channels: &channels,
    };
    let result = scan::scan(&deps, &request).await;
    let summary = match &result {
        Ok(s) => Some(s),
        Err(e) => e.summary(),
    };
    if let Some(s) = summary {
        let outcome = result.as_ref().err().map_or("ok", ScanError::kind);
        let dimensions = telemetry::Dimensions::stack(state.config.stack_name.as_deref());
        if let Err(e) = emit_metrics(metrics_out, &dimensions, s, &request, outcome) {
            tracing::warn!(error = %e, "could not write the metrics line");
        }
    }
    match result {
        // A small result (Lambda caps results at 6 MiB): the complete lists are in S3.
        Ok(s) => serde_json::to_value(s.into_result()).map_err(HandlerError::Summary),
        Err(e) => {
            if e.is_sign_in_refused() {
                state.arcgis.forget_credentials();
            }
            tracing::error!(kind = e.kind(), error = %e, "scan-credits failed");
            Err(e.into())
        }
    }
}

/// Decodes any of the three schedule shapes and picks the run key: the schedule time when the
/// event carries one (so every delivery of one firing shares it), else the request id.
fn decode(
    payload: Value,
    request_id: &str,
    now: DateTime<Utc>,
    deadline: Deadline,
) -> Result<ScanRequest, HandlerError> {
    let run = schedule::decode::<ScanInput>(payload)?;
    Ok(ScanRequest {
        run_key: run.run_key(request_id),
        request_id: request_id.to_owned(),
        as_of: run.scheduled_time.unwrap_or(now),
        input: run.input,
        now,
        deadline,
    })
}

/// One EMF line with the run's numbers under the stack's dimension, and properties to find
/// it by in Logs Insights. Every invocation that got as far as a summary writes one,
/// duplicate deliveries included (they did read ArcGIS; `duplicate: true` tells them apart).
fn emit_metrics(
    out: &mut impl Write,
    dimensions: &telemetry::Dimensions,
    summary: &ScanSummary,
    request: &ScanRequest,
    outcome: &str,
) -> std::io::Result<()> {
    let mut properties = Map::new();
    properties.insert("function".into(), json!(scan::JOB));
    properties.insert("run_key".into(), json!(summary.run_key));
    properties.insert("dry_run".into(), json!(summary.dry_run));
    properties.insert("duplicate".into(), json!(summary.duplicate_of.is_some()));
    properties.insert("outcome".into(), json!(outcome));
    telemetry::write_emf(out, request.now, dimensions, &summary.metrics(), &properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    use lambda_runtime::Context;
    use shared::credits::member::Credits;

    use testkit::fixtures::fixture;

    fn deadline() -> Deadline {
        Deadline::after(std::time::Duration::from_secs(60), now())
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T06:00:07Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_schedule_shape_decodes_to_its_schedule_time() {
        let cases = [
            ("scheduler-input.json", "2026-11-26T06:00:00Z"),
            ("scheduler-default-envelope.json", "2026-11-26T06:00:00Z"),
            ("eventbridge-scheduled-event.json", "2015-10-08T16:53:06Z"),
        ];
        for (name, key) in cases {
            let deadline = deadline();
            let req = decode(fixture(name), "req-1", now(), deadline).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(req.run_key, key, "{name}");
            assert_eq!(req.as_of.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), key);
            assert_eq!(
                req.input,
                ScanInput {
                    scheduled_time: req.input.scheduled_time,
                    ..ScanInput::default()
                }
            );
            assert_eq!((req.request_id.as_str(), req.now), ("req-1", now()));
            assert_eq!(req.deadline, deadline, "{name}: the invocation's deadline is passed on");
        }
        // A manual invocation without a schedule time is keyed by its request id.
        let manual = decode(json!({"dry_run": true}), "req-2", now(), deadline()).unwrap();
        assert_eq!(manual.run_key, "request:req-2");
        assert_eq!(manual.as_of, now());
        assert!(manual.input.dry_run);
    }

    #[test]
    fn a_bad_event_is_an_invalid_event_diagnostic() {
        let err = decode(json!({"dryRun": true}), "r", now(), deadline()).unwrap_err();
        let d = Diagnostic::from(err);
        assert_eq!(d.error_type, "InvalidEvent");
        assert!(
            d.error_message.contains("unknown field `dryRun`"),
            "{}",
            d.error_message
        );
        let d = Diagnostic::from(decode(json!("hello"), "r", now(), deadline()).unwrap_err());
        assert_eq!(d.error_type, "InvalidEvent");
    }

    /// A simulator with a generated org, and the handler's state for it with `vars` set
    /// (besides the secret id and the ledger table).
    async fn setup(vars: &[(&str, &str)]) -> (portal_sim::SimHandle, State) {
        let sim = testkit::arcgis::sim_with(120, 7).await;
        let client = testkit::arcgis::admin_client(&sim);
        let config = Config::from_lookup(|name| match name {
            "ARCGIS_SECRET_ID" => Some("test".to_owned()),
            "LEDGER_TABLE" => Some("ledger".to_owned()),
            _ => vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()),
        })
        .unwrap();
        let state = State {
            arcgis: ArcgisSource::Fixed(client),
            ledger: Ledger::memory(),
            lists: None,
            sns: None,
            settings: ScanSettings::from_config(&config).unwrap(),
            config,
        };
        (sim, state)
    }

    /// The scheduled firing of 2026-11-26 06:00, delivered under `request_id`.
    fn event(request_id: &str) -> LambdaEvent<Value> {
        let mut context = Context::default();
        context.request_id = request_id.to_owned();
        LambdaEvent::new(fixture("scheduler-default-envelope.json"), context)
    }

    fn credits(value: &Value) -> Credits {
        Credits::from_json(value).unwrap_or_else(|| panic!("{value} is not an amount"))
    }

    #[tokio::test]
    async fn the_handler_scans_once_per_run_key_and_writes_one_metrics_line() {
        let (sim, state) = setup(&[("STACK_NAME", "credit-steward-test")]).await;

        let mut metrics = Vec::new();
        let first = handle(&state, event("req-1"), &mut metrics).await.unwrap();
        assert_eq!(first["run_key"], "2026-11-26T06:00:00Z");
        assert_eq!(first["notification"]["status"], "sent", "{first:#}");
        assert!(first["duplicate_of"].is_null());
        let line: Value = serde_json::from_slice(&metrics).unwrap();
        assert_eq!(line["MembersScanned"], first["members_scanned"]);
        assert_eq!(line["outcome"], "ok");
        // Published under the stack the function runs in, so its alarms see only it.
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Stack"]]));
        assert_eq!(line["Stack"], "credit-steward-test");
        // The org's credits to the micro-credit; no top-up without AUTO_TOP_UP_TO.
        assert_eq!(
            credits(&first["org_available_credits"]),
            Credits::from_f64(sim.org().available_credits).unwrap()
        );
        assert_eq!(first["top_up"]["status"], "off", "{first:#}");
        assert!(sim.allocation_calls().is_empty());

        // The same firing delivered again (another request id): nothing is sent.
        let again = handle(&state, event("req-2"), &mut Vec::new()).await.unwrap();
        assert_eq!(again["duplicate_of"]["status"], "done");
        assert_eq!(again["notification"]["status"], "duplicate");
        assert_eq!(sim.notifications().len(), 1);
        assert!(sim.allocation_calls().is_empty());
    }

    #[tokio::test]
    async fn the_automatic_top_up_goes_through_the_apply_path_once_per_run() {
        let (sim, state) = setup(&[
            ("AUTO_TOP_UP_TO", "200"),
            ("MAX_CREDITS_PER_MEMBER", "100000"),
            ("MAX_CREDITS_PER_PLAN", "1000000"),
            ("MAX_CREDITS_PER_DAY", "1000000"),
        ])
        .await;
        let target = Credits::whole(200);

        let first = handle(&state, event("req-1"), &mut Vec::new()).await.unwrap();
        let top_up = &first["top_up"];
        assert_eq!(top_up["status"], "applied", "{first:#}");
        assert_eq!(top_up["resumed"], false);
        assert_eq!(top_up["incomplete"], false);
        assert_eq!(top_up["not_applied"], json!([]), "{top_up:#}");
        let applied = first["allocations_applied"].as_array().unwrap();
        assert!(!applied.is_empty(), "the generated org has critical members");
        assert_eq!(top_up["requested"], applied.len());
        assert_eq!(top_up["applied"], applied.len());
        // Exact: each member now has exactly the target available, raised by exactly what
        // was missing, and ArcGIS holds the allocation read back.
        for a in applied {
            let name = a["username"].as_str().unwrap();
            let (before, available_before) = (credits(&a["assigned_before"]), credits(&a["available_before"]));
            let after = credits(&a["assigned_after"]);
            assert_eq!(credits(&a["available_after"]), target, "{name}");
            assert_eq!(after - before, target - available_before, "{name}");
            let held = sim.member(name).and_then(|m| m.allocation).unwrap();
            assert_eq!(Credits::from_f64(held).unwrap(), after, "{name}");
        }
        let calls = sim.allocation_calls().len();
        assert!(calls >= 1);

        // Audited as the job, one intent per batch of at most 100 and one change per member.
        let day = Utc::now().date_naive();
        let changes = state.ledger.changes_on(day).await.unwrap();
        assert_eq!(changes.len(), applied.len());
        for c in &changes {
            let a = applied
                .iter()
                .find(|a| a["username"] == c.username.as_str())
                .unwrap_or_else(|| panic!("{} was audited but not reported", c.username));
            assert_eq!(c.planned, credits(&a["assigned_after"]), "{}", c.username);
            assert!(c.matches_plan, "{}", c.username);
            assert_eq!(c.source, scan::top_up::AUDIT_SOURCE);
            assert_eq!(c.caller.kind, shared::ledger::CallerKind::Job);
        }
        let intents = state.ledger.intents_on(day).await.unwrap();
        assert_eq!(intents.len(), calls, "one intent per batch sent");
        let intended: usize = intents.iter().map(|i| i.members.len()).sum();
        assert_eq!(intended, applied.len());
        assert!(intents.iter().all(|i| i.members.len() <= 100));

        // The same firing delivered again: its first delivery finished the top-up, so nothing
        // is allocated, audited or mailed again.
        let again = handle(&state, event("req-2"), &mut Vec::new()).await.unwrap();
        assert_eq!(again["duplicate_of"]["status"], "done");
        assert_ne!(again["top_up"]["status"], "applied", "{again:#}");
        assert_eq!(sim.allocation_calls().len(), calls);
        assert_eq!(state.ledger.changes_on(day).await.unwrap().len(), applied.len());
        assert_eq!(state.ledger.intents_on(day).await.unwrap().len(), intents.len());
        assert_eq!(sim.notifications().len(), 1);
    }
}
