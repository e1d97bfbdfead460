//! monthly-report: the monthly credits report, triggered on the 1st of each month.
//!
//! Thin on purpose: cold start builds the settings (failing with every problem at once, and
//! with a clear message when `REPORT_BUCKET` or `LEDGER_TABLE` is missing), the Secrets
//! Manager cache, the S3 store and the DynamoDB ledger once, and hands each event to
//! [`shared::monthly`], where the month rules, the report and the once-only email live.
//! The event is checked before anything else happens: bad input fails without a request to
//! ArcGIS, AWS or anything else.

use chrono::Utc;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::Config;
use shared::connect::{ArcgisSource, ConnectError};
use shared::ledger::Ledger;
use shared::monthly::{self, Deps, MonthlyError, ReportSettings, ReportStore, RunSummary};
use shared::startup::{self, StartupError};

/// The allocator is bounded before the runtime's threads exist ([`shared::startup::block_on`]).
fn main() -> Result<(), lambda_runtime::Error> {
    shared::startup::block_on(serve())?
}

async fn serve() -> Result<(), lambda_runtime::Error> {
    shared::logging::init_logging();
    let state = State::from_env().map_err(|e| startup::refuse(monthly::JOB, e))?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handler(&state, event))).await
}

/// Built once per container: the report's validated settings, the ArcGIS credentials
/// source, the S3 store the reports go to and the ledger that keeps each month's run.
struct State {
    config: Config,
    settings: ReportSettings,
    arcgis: ArcgisSource,
    store: ReportStore,
    ledger: Ledger,
}

impl State {
    fn from_env() -> Result<State, StartupError> {
        let config = Config::from_env()?;
        let settings = ReportSettings::from_config(&config)?;
        Ok(State {
            arcgis: ArcgisSource::from_config(&config),
            store: ReportStore::from_env(settings.bucket.clone()),
            ledger: Ledger::dynamo_from_env(settings.ledger_table.clone()),
            settings,
            config,
        })
    }
}

/// Everything an invocation can fail with; [`Diagnostic::error_type`] says which.
#[derive(Debug, thiserror::Error)]
enum HandlerError {
    /// No ArcGIS client: the secret is unreadable or its settings unusable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The report failed (see [`MonthlyError::kind`]), bad input included.
    #[error(transparent)]
    Report(#[from] MonthlyError),
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        let error_type = match &e {
            HandlerError::Connect(e) => e.kind(),
            HandlerError::Report(r) => r.kind(),
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// One invocation: the month is decided and checked first (no I/O), then the report is made.
async fn handler(state: &State, event: LambdaEvent<Value>) -> Result<RunSummary, HandlerError> {
    let now = Utc::now();
    let resolved = monthly::resolve_month(event.payload, now).inspect_err(|e| {
        tracing::error!(kind = e.kind(), error = %e, "monthly-report refused its input");
    })?;
    let client = state.arcgis.client(&state.config).await?;
    let deps = Deps {
        client: &client,
        store: &state.store,
        ledger: &state.ledger,
        settings: &state.settings,
    };
    monthly::execute(resolved, deps, now).await.map_err(|e| {
        if e.is_sign_in_failure() {
            state.arcgis.forget_credentials();
        }
        tracing::error!(kind = e.kind(), error = %e, "monthly-report failed");
        e.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::DateTime;

    use lambda_runtime::Context;
    use shared::monthly::{Month, MonthFrom};
    use shared::schedule::{self, ReportInput};

    use serde_json::json;

    use testkit::fixtures::fixture;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn month(s: &str) -> Month {
        s.parse().unwrap()
    }

    #[test]
    fn every_schedule_shape_decodes_to_the_month_it_reports() {
        let now = at("2026-11-26T06:00:07Z");
        let cases = [
            ("scheduler-input-monthly.json", "2026-10", MonthFrom::Input),
            ("scheduler-default-envelope.json", "2026-10", MonthFrom::ScheduleTime),
            ("scheduler-input.json", "2026-10", MonthFrom::ScheduleTime),
        ];
        for (name, want, from) in cases {
            if name == "scheduler-input.json" {
                // scan-credits' Input: monthly-report refuses its keys rather than guess.
                let err = monthly::resolve_month(fixture(name), now).unwrap_err();
                assert_eq!(err.kind(), "InvalidEvent", "{name}");
                assert!(err.to_string().contains("unknown field `dry_run`"), "{err}");
                continue;
            }
            let r = monthly::resolve_month(fixture(name), now).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((r.month, r.from), (month(want), from), "{name}");
        }
        // The legacy rule's envelope: the month before its `time` (2015-10-08) — reportable
        // when the run happens then, refused as past the usage retention today.
        let legacy = fixture("eventbridge-scheduled-event.json");
        let run = schedule::decode::<ReportInput>(legacy.clone()).unwrap();
        assert_eq!(run.scheduled_time, Some(at("2015-10-08T16:53:06Z")));
        let r = monthly::resolve_month(legacy.clone(), at("2015-10-08T16:53:07Z")).unwrap();
        assert_eq!((r.month, r.from), (month("2015-09"), MonthFrom::ScheduleTime));
        let err = monthly::resolve_month(legacy, now).unwrap_err();
        assert_eq!(err.kind(), "MonthOutsideUsageRetention");
    }

    #[test]
    fn bad_input_maps_to_meaningful_error_types() {
        let now = at("2026-11-26T06:00:07Z");
        let cases = [
            (json!({"month": "2026-13"}), "InvalidMonth"),
            (json!({"month": "Oct 2026"}), "InvalidMonth"),
            (json!({"month": "2026-11"}), "MonthNotComplete"),
            (json!({"month": "2027-01"}), "MonthNotComplete"),
            (json!({"month": "2024-01"}), "MonthOutsideUsageRetention"),
            (json!({"month": 7}), "InvalidEvent"),
            (json!({"month": "2026-10", "bucket": "x"}), "InvalidEvent"),
            (json!("2026-10"), "InvalidEvent"),
        ];
        for (event, kind) in cases {
            let err = monthly::resolve_month(event.clone(), now).unwrap_err();
            let d = Diagnostic::from(HandlerError::from(err));
            assert_eq!(d.error_type, kind, "{event}: {}", d.error_message);
            assert!(!d.error_message.is_empty());
        }
    }

    /// A configuration from `vars` alone (no process environment).
    fn config_of(vars: &[(&str, &str)]) -> Result<Config, shared::config::ConfigError> {
        Config::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn startup_errors_name_the_variable() {
        let secret = ("ARCGIS_SECRET_ID", "test");
        let cases = [
            (vec![secret, ("LEDGER_TABLE", "ledger")], "REPORT_BUCKET"),
            // Empty counts as unset.
            (
                vec![secret, ("REPORT_BUCKET", "  "), ("LEDGER_TABLE", "ledger")],
                "REPORT_BUCKET",
            ),
            (vec![secret, ("REPORT_BUCKET", "reports")], "LEDGER_TABLE"),
            (vec![secret], "REPORT_BUCKET"),
        ];
        for (vars, missing) in cases {
            let config = config_of(&vars).expect("the shared configuration is valid");
            let err = ReportSettings::from_config(&config).expect_err(missing);
            assert!(
                matches!(err, StartupError::Required { variable, function: monthly::JOB, .. } if variable == missing),
                "{vars:?}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{missing}: required by monthly-report")),
                "{text}"
            );
            // `main` returns the error, which Rust prints with Debug: the same readable line.
            let refused = startup::refuse(monthly::JOB, err);
            assert_eq!(format!("{refused:?}"), text);
        }

        // Invalid shared variables are a start-up error too, each named.
        let err: StartupError = config_of(&[
            secret,
            ("REPORT_BUCKET", "reports"),
            ("LEDGER_TABLE", "ledger"),
            ("REPORT_TOP_N", "0"),
            ("REPORT_SOURCE", "spreadsheet"),
        ])
        .expect_err("invalid")
        .into();
        let text = err.to_string();
        assert!(matches!(err, StartupError::Config(_)), "{text}");
        assert!(
            text.contains("REPORT_TOP_N") && text.contains("REPORT_SOURCE"),
            "{text}"
        );
    }

    #[test]
    fn settings_hold_exactly_what_the_report_uses() {
        let config = config_of(&[
            ("ARCGIS_SECRET_ID", "test"),
            ("REPORT_BUCKET", "reports"),
            ("LEDGER_TABLE", "ledger"),
            ("REPORT_SOURCE", "report-item"),
            ("KEEP_REPORT_ITEMS", "true"),
            ("REPORT_TOP_N", "5"),
            ("NOTIFY_CHANNEL", "builtin"),
            ("USAGE_BUCKET_LABEL", "end"),
            ("LANGUAGE", "fr"),
            ("REPORT_LINKS", "none"),
        ])
        .unwrap();
        assert_eq!(
            ReportSettings::from_config(&config).unwrap(),
            ReportSettings {
                bucket: "reports".into(),
                ledger_table: "ledger".into(),
                source: shared::config::ReportSource::ReportItem,
                keep_report_items: true,
                top_n: 5,
                notify_channel: shared::arcgis::NotifyChannel::Builtin,
                bucket_label: shared::credits::usage::BucketLabel::End,
                language: shared::i18n::Lang::Fr,
                links: shared::config::ReportLinks::Off,
            }
        );
        let defaults = config_of(&[
            ("ARCGIS_SECRET_ID", "test"),
            ("REPORT_BUCKET", "reports"),
            ("LEDGER_TABLE", "ledger"),
        ])
        .unwrap();
        let settings = ReportSettings::from_config(&defaults).unwrap();
        assert_eq!(settings.source, shared::config::ReportSource::Usage);
        assert!(!settings.keep_report_items);
        assert_eq!(settings.top_n, 10);
        assert_eq!(settings.notify_channel, shared::arcgis::NotifyChannel::Email);
        assert_eq!(settings.bucket_label, shared::credits::usage::BucketLabel::Start);
        assert_eq!(
            settings.links,
            shared::config::ReportLinks::Presigned(std::time::Duration::from_secs(24 * 3_600)),
            "the email links to the report for a day by default"
        );
    }

    /// A store whose endpoint refuses connections: any S3 call would fail loudly.
    fn unreachable_store() -> ReportStore {
        use aws_credential_types::Credentials;
        use aws_credential_types::provider::SharedCredentialsProvider;
        let config = aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "t", "t", None, None, "tests",
            )))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        ReportStore::new(shared::s3::S3Client::new(&config), "reports")
    }

    #[tokio::test]
    async fn bad_input_fails_before_any_request() {
        let sim = testkit::arcgis::sim_with(20, 7).await;
        let client = testkit::arcgis::admin_client(&sim);
        let config = Config::from_lookup(|name| match name {
            "ARCGIS_SECRET_ID" => Some("test".to_owned()),
            "REPORT_BUCKET" => Some("reports".to_owned()),
            "LEDGER_TABLE" => Some("ledger".to_owned()),
            _ => None,
        })
        .unwrap();
        let state = State {
            settings: ReportSettings::from_config(&config).expect("valid settings"),
            arcgis: ArcgisSource::Fixed(client),
            store: unreachable_store(),
            ledger: Ledger::memory(),
            config,
        };
        let event = LambdaEvent::new(json!({"month": "2026-13"}), Context::default());
        let err = handler(&state, event).await.unwrap_err();
        assert_eq!(Diagnostic::from(err).error_type, "InvalidMonth");
        assert_eq!(sim.total_requests(), 0, "nothing was asked of ArcGIS");
    }
}
