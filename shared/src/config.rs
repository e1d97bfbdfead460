//! Environment variables, parsed and validated once into a typed [`Config`].
//!
//! Every problem is collected and reported together, each naming its variable, so one failed
//! deploy shows everything to fix. Empty values count as unset. Amounts are exact
//! [`Credits`] and percentages exact [`Percent`]s, so `inf`, `NaN` and float noise are refused
//! here rather than discovered at run time. No variable holds a secret: credentials live in
//! the Secrets Manager secret named by `ARCGIS_SECRET_ID`.
//!
//! `Config` is the raw layer, shared by the three functions; each function then builds its
//! own settings from it once at cold start (`ScanSettings`, `AllocateSettings`,
//! `ReportSettings`), holding exactly what it uses in domain types, and refuses to start when
//! something it needs is missing ([`crate::startup::StartupError`]).

#![warn(missing_docs)]

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::str::FromStr;
use std::time::Duration;

use crate::arcgis::{ClientConfig, NotifyChannel, RetryPolicy};
use crate::credits::amount::Credits;
use crate::credits::percent::Percent;
use crate::credits::plan::Guardrails;
use crate::credits::usage::BucketLabel;
use crate::i18n::Lang;
use crate::secrets::ArcgisSecret;

/// Validated settings for the credit-steward functions.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `ARCGIS_SECRET_ID` (required): the Secrets Manager secret with the ArcGIS credentials.
    pub arcgis_secret_id: String,
    /// `ARCGIS_REFERER` (default `credit-steward`): the Referer tokens are bound to.
    pub referer: String,
    /// `ARCGIS_TOKEN_MINUTES` (default 60, 1–20160): token lifetime to request.
    pub token_minutes: u32,
    /// `HTTP_TIMEOUT_SECS` (default 30, 1–300): per-request timeout.
    pub http_timeout: Duration,
    /// `RETRY_MAX_ATTEMPTS` (default 5, 1–10) and `RETRY_DEADLINE_SECS` (default 60, 1–900).
    pub retry: RetryPolicy,
    /// `LIST_CONCURRENCY` (default 8, 1–32): the most requests in flight to the org at once,
    /// the ceiling of an adaptive limit that halves when ArcGIS throttles and grows back.
    pub list_concurrency: usize,
    /// `CRITICAL_PERCENT` (default 10): below this share of their allocation left, a member is
    /// critical.
    pub critical_percent: Percent,
    /// `WARNING_PERCENT` (default 50, above `CRITICAL_PERCENT`): below this, a warning.
    pub warning_percent: Percent,
    /// `ORG_MIN_CREDITS` (optional, ≥ 0): alert when the org's credits fall below it.
    pub org_min_credits: Option<Credits>,
    /// `NOTIFY_CHANNEL` (`email` or `builtin`, default `email`).
    pub notify_channel: NotifyChannel,
    /// `LEDGER_TABLE` (optional): the DynamoDB table for run records.
    pub ledger_table: Option<String>,
    /// `SECRET_TTL_SECS` (default 300, 0–3600): how long the secret is cached.
    pub secret_ttl: Duration,
    /// `AUTO_TOP_UP_TO` (optional, > 0): scan-credits tops critical members up so that this
    /// many credits are available, through the same apply path and guardrails as allocate.
    pub auto_top_up_to: Option<Credits>,
    /// `MAX_CREDITS_PER_MEMBER`, `MAX_CREDITS_PER_PLAN`, `MAX_CREDITS_PER_DAY`,
    /// `ORG_RESERVE_CREDITS`: the guardrails every allocation plan is checked against.
    pub guardrails: GuardrailSettings,
    /// `MAX_MEMBERS_PER_REQUEST` (default 500, 1–2000): the most members one allocation (a
    /// request, the critical policy or the automatic top-up) may change. Bounded so that every
    /// reply can be stored under its idempotency key and replayed.
    pub max_members_per_request: usize,
    /// `ALLOW_UNAUTHENTICATED` (default false): let allocate accept calls without a caller
    /// identity. For local runs only; the SAM template never sets it.
    pub allow_unauthenticated: bool,
    /// `ALLOCATION_QUEUE_URL` (optional): the SQS queue of allocation jobs. Without it,
    /// allocate answers every request itself, however long it takes.
    pub allocation_queue_url: Option<String>,
    /// `ASYNC_ABOVE_MEMBERS` (default 100, 1–2000): requests naming more members (more than
    /// one ArcGIS batch) are answered 202 and applied in the background, when a queue is
    /// configured.
    pub async_above_members: usize,
    /// `REPORT_BUCKET` (required by monthly-report): where reports are archived, and where
    /// scan-credits writes each real run's complete member lists.
    pub report_bucket: Option<String>,
    /// `REPORT_LINKS` (`presigned` | `none`, default `presigned`) and `REPORT_LINK_HOURS`
    /// (default 24, 1–168): how the emails link to the reports and member lists.
    pub report_links: ReportLinks,
    /// `REPORT_SOURCE` (`usage` | `report-item`, default `usage`).
    pub report_source: ReportSource,
    /// `KEEP_REPORT_ITEMS` (default false): keep the ArcGIS report items instead of deleting them.
    pub keep_report_items: bool,
    /// `REPORT_TOP_N` (default 10, 1–1000): members shown in the report's top list.
    pub report_top_n: usize,
    /// `USAGE_BUCKET_LABEL` (`start` | `end`, default `start`): which end of its bucket a
    /// usage timestamp names, unverified for ArcGIS (docs/arcgis.md, "Usage buckets"); read by
    /// the scan's forecast and the monthly report.
    pub usage_bucket_label: BucketLabel,
    /// `LANGUAGE` (`en` | `fr`, default `en`): the language of the emails and reports people
    /// read; a scheduled run's Input may override it.
    pub language: Lang,
    /// `FORECAST_DAYS` (default 7, 0–365): scan-credits alerts about a member (or the org)
    /// whose credits run out within this many days at the recent rate, even above the
    /// thresholds, because a balance alone misses a fast spender; 0 turns these alerts off.
    pub forecast_days: u32,
    /// `NOTIFY_MEMBERS` (`off` | `critical` | `warning`, default `off`): whether members are
    /// told themselves when they cross a level, as ArcGIS Online's own budgeting emails a
    /// member over their allocation; opt-in, since it writes to people who did not ask.
    pub notify_members: MemberNotices,
    /// `NOTIFY_MEMBERS_CONTACT` (optional, at most 200 characters): who a member's notice
    /// says to ask for more credits ("the GIS team, gis@example.org"); without it, the org's
    /// administrative contacts.
    pub notify_members_contact: Option<String>,
    /// `ALERT_TOPIC_ARN` (optional): an SNS topic scan-credits also publishes each alert to,
    /// once per run that reports crossings (e-mail, SMS, on-call tools subscribe to it).
    pub alert_topic_arn: Option<String>,
    /// `STACK_NAME` (optional, at most 255 printable characters): the `Stack` dimension of
    /// every metric (see [`crate::telemetry`]), so two stacks in one account and region
    /// publish separate metrics and each stack's alarms read only its own. The template sets
    /// it to the CloudFormation stack's name; local runs leave it unset (no dimension).
    pub stack_name: Option<String>,
    /// `AWS_LAMBDA_LOG_LEVEL` (`TRACE` … `ERROR`, default `INFO`): set by Lambda from the
    /// function's application log level, and read by the log subscriber, which silently
    /// falls back to INFO on a value it cannot parse; refused here instead.
    pub log_level: LogLevel,
}

/// The log levels the tracing subscriber understands (`AWS_LAMBDA_LOG_LEVEL`). Lambda's
/// advanced logging controls also offer `FATAL`, which tracing has no level for: it is
/// refused rather than quietly read as INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything, including per-request detail.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Normal operation (the default).
    #[default]
    Info,
    /// Problems that did not stop the work.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// Every level, in the spelling Lambda's `ApplicationLogLevel` and the template use.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    /// The `tracing` level it lets through (and everything more severe).
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }

    /// The level's name, upper case (`INFO`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        if let Some(level) = LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(wanted))
        {
            return Ok(level);
        }
        let shown: String = wanted.chars().take(40).collect();
        let hint = if wanted.eq_ignore_ascii_case("fatal") {
            " (the log subscriber has no FATAL level: use ERROR)"
        } else {
            ""
        };
        Err(format!("'{shown}' is not TRACE, DEBUG, INFO, WARN or ERROR{hint}"))
    }
}

/// Which crossings members are told about themselves (`NOTIFY_MEMBERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberNotices {
    /// Nobody is told but the admin contacts.
    #[default]
    Off,
    /// Members falling below the critical threshold.
    Critical,
    /// Members falling below either threshold.
    Warning,
}

impl MemberNotices {
    /// Whether a member at `level` is told.
    pub fn tells(self, level: crate::credits::classify::Level) -> bool {
        use crate::credits::classify::Level;
        match (self, level) {
            (MemberNotices::Off, _) | (_, Level::Ok) => false,
            (MemberNotices::Critical, level) => level == Level::Critical,
            (MemberNotices::Warning, _) => true,
        }
    }
}

impl FromStr for MemberNotices {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(MemberNotices::Off),
            "critical" => Ok(MemberNotices::Critical),
            "warning" => Ok(MemberNotices::Warning),
            other => {
                let shown: String = other.chars().take(40).collect();
                Err(format!("'{shown}' is not off, critical or warning"))
            }
        }
    }
}

/// The allocation guardrails as configured (see `credits::plan::Guardrails`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardrailSettings {
    /// `MAX_CREDITS_PER_MEMBER` (default 1000, > 0): the most one request may add to a member.
    pub max_per_member: Credits,
    /// `MAX_CREDITS_PER_PLAN` (default 10000, > 0): the most one plan may add in total.
    pub max_per_plan: Credits,
    /// `MAX_CREDITS_PER_DAY` (default 20000, > 0): the most all allocations together may add in
    /// any 24 hours (allocate and the automatic top-up share it).
    pub max_per_day: Credits,
    /// `ORG_RESERVE_CREDITS` (default 0, ≥ 0): org credits that must stay unpromised after an
    /// allocation that adds credits.
    pub org_reserve: Credits,
}

impl GuardrailSettings {
    /// The guardrails every allocation plan is checked against. Turning an unlimited member
    /// into a limited one is a policy change, not a top-up: no allocation may do it.
    pub fn guardrails(&self) -> Guardrails {
        Guardrails {
            max_per_member: self.max_per_member,
            max_per_plan: self.max_per_plan,
            max_per_day: self.max_per_day,
            org_reserve: self.org_reserve,
            allow_unlimited_change: false,
        }
    }
}

/// How the emails let people outside AWS open what they point at (the month's report, a
/// scan's complete lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportLinks {
    /// S3 pre-signed GET links, valid this long: they open in a browser without AWS access.
    /// S3 stops honouring one when the credentials that signed it expire, and a function's
    /// role credentials are temporary, so a link can stop working before its lifetime ends
    /// (docs/aws.md, "Links in emails").
    Presigned(Duration),
    /// No links: the email names the bucket and the key.
    Off,
}

/// The longest pre-signed link S3 accepts (SigV4: seven days), in hours.
pub const MAX_LINK_HOURS: u64 = 168;

/// Where monthly-report reads consumption from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    /// `portals/self/usage`: synchronous JSON, nothing left behind.
    Usage,
    /// ArcGIS's monthly credits report item (create, poll, download CSV, delete); see
    /// docs/arcgis.md, "Report items".
    ReportItem,
}

/// Every environment variable the functions read, with the functions that read it. The SAM
/// template is checked against this list (`cargo run -p shared --example manifest`), so
/// the two cannot drift.
pub const VARIABLES: &[(&str, &[&str])] = &[
    ("ARCGIS_SECRET_ID", ALL),
    ("ARCGIS_REFERER", ALL),
    ("ARCGIS_TOKEN_MINUTES", ALL),
    ("HTTP_TIMEOUT_SECS", ALL),
    ("RETRY_MAX_ATTEMPTS", ALL),
    ("RETRY_DEADLINE_SECS", ALL),
    ("LIST_CONCURRENCY", ALL),
    ("CRITICAL_PERCENT", ALL),
    ("WARNING_PERCENT", ALL),
    ("NOTIFY_CHANNEL", ALL),
    ("LEDGER_TABLE", ALL),
    ("SECRET_TTL_SECS", ALL),
    ("ORG_MIN_CREDITS", &["scan-credits"]),
    ("AUTO_TOP_UP_TO", &["scan-credits"]),
    (
        "MAX_CREDITS_PER_MEMBER",
        &["scan-credits", "allocate", "allocation-jobs"],
    ),
    ("MAX_CREDITS_PER_PLAN", &["scan-credits", "allocate", "allocation-jobs"]),
    ("MAX_CREDITS_PER_DAY", &["scan-credits", "allocate", "allocation-jobs"]),
    ("ORG_RESERVE_CREDITS", &["scan-credits", "allocate", "allocation-jobs"]),
    (
        "MAX_MEMBERS_PER_REQUEST",
        &["scan-credits", "allocate", "allocation-jobs"],
    ),
    ("ALLOW_UNAUTHENTICATED", &["allocate"]),
    ("ALLOCATION_QUEUE_URL", &["allocate"]),
    ("ASYNC_ABOVE_MEMBERS", &["allocate"]),
    ("REPORT_BUCKET", &["scan-credits", "monthly-report"]),
    ("REPORT_SOURCE", &["monthly-report"]),
    ("REPORT_LINKS", &["scan-credits", "monthly-report"]),
    ("REPORT_LINK_HOURS", &["scan-credits", "monthly-report"]),
    ("KEEP_REPORT_ITEMS", &["monthly-report"]),
    ("REPORT_TOP_N", &["monthly-report"]),
    ("USAGE_BUCKET_LABEL", &["scan-credits", "monthly-report"]),
    ("LANGUAGE", &["scan-credits", "monthly-report"]),
    ("FORECAST_DAYS", &["scan-credits"]),
    ("NOTIFY_MEMBERS", &["scan-credits"]),
    ("NOTIFY_MEMBERS_CONTACT", &["scan-credits"]),
    ("ALERT_TOPIC_ARN", &["scan-credits"]),
    ("STACK_NAME", &["scan-credits"]),
    ("AWS_LAMBDA_LOG_LEVEL", ALL),
];

const ALL: &[&str] = &["scan-credits", "allocate", "allocation-jobs", "monthly-report"];

/// The largest `MAX_MEMBERS_PER_REQUEST`: a reply naming more members would not fit under its
/// idempotency key (DynamoDB items are at most 400 KB each) nor read well.
pub const MAX_MEMBERS_CAP: usize = 2_000;

/// What one variable accepts, stated once so the SAM template's parameter constraints can be
/// checked against it: `cargo run -p shared --example manifest` prints each variable's
/// [`Accepts::probes`] with the answer [`accepts`] gives, and `scripts/infra-drift.py`
/// requires the template's parameter to agree. A unit test holds this table to what
/// [`Config::from_lookup`] does, so neither can drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// A whole number from `min` to `max` (no decimal point).
    Whole {
        /// The smallest accepted.
        min: u64,
        /// The largest accepted.
        max: u64,
    },
    /// A decimal number with at most `places` decimals, above `min` (or equal to it when
    /// `min_included`), and below `max` (or equal when `max_included`) when bounded.
    Decimal {
        /// The most decimals.
        places: u32,
        /// The lower bound, in whole units.
        min: u64,
        /// Whether `min` itself is accepted.
        min_included: bool,
        /// The upper bound in whole units, and whether it is accepted; `None`: unbounded.
        max: Option<(u64, bool)>,
    },
    /// One of these words, spelled as the template spells them (some variables take any case).
    OneOf(&'static [&'static str]),
}

/// A value to try on a variable ([`Accepts::probes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The text to set the variable to.
    pub value: String,
    /// `Some(answer)` for a bound (the smallest or largest accepted, or just outside): the
    /// code answers this and the template must answer the same. `None` for other shapes
    /// (too many decimals, a negative number): the template must not accept what the code
    /// refuses, and may refuse more.
    pub bound: Option<bool>,
}

impl Accepts {
    /// The values that tell whether a parameter constraint matches this one: each bound,
    /// the nearest values outside it, and shapes the code refuses.
    pub fn probes(&self) -> Vec<Probe> {
        let mut out = Vec::new();
        let mut push = |value: String, bound: Option<bool>| out.push(Probe { value, bound });
        match *self {
            Accepts::Whole { min, max } => {
                push(min.to_string(), Some(true));
                push(max.to_string(), Some(true));
                if min > 0 {
                    push((min - 1).to_string(), Some(false));
                }
                push((max + 1).to_string(), Some(false));
                push(min.saturating_add(1).min(max).to_string(), None);
                push(format!("{}.5", min + (max - min) / 2), None);
                push("-1".into(), None);
            }
            Accepts::Decimal {
                places,
                min,
                min_included,
                max,
            } => {
                let step = |whole: u64| format!("{whole}.{:0>width$}", 1, width = places as usize);
                let below = |whole: u64| format!("{}.{}", whole - 1, "9".repeat(places as usize));
                if min_included {
                    push(min.to_string(), Some(true));
                    if min > 0 {
                        push(below(min), Some(false));
                    } else {
                        push(format!("-{}", step(0)), Some(false));
                    }
                } else {
                    push(min.to_string(), Some(false));
                    push(step(min), Some(true));
                    push(format!("{min}.0"), None);
                }
                if let Some((max, included)) = max {
                    if included {
                        push(max.to_string(), Some(true));
                        push(step(max), Some(false));
                    } else {
                        push(max.to_string(), Some(false));
                        push(below(max), Some(true));
                    }
                }
                push(format!("1.{:0>width$}", 1, width = places as usize + 1), None);
                push("-1".into(), None);
                push("1.5".into(), None);
            }
            Accepts::OneOf(words) => {
                for word in words {
                    push((*word).to_owned(), Some(true));
                }
                push("something-else".into(), Some(false));
            }
        }
        out
    }
}

/// What each variable with a constrained value accepts; see [`Accepts`].
pub const LIMITS: &[(&str, Accepts)] = &[
    ("ARCGIS_TOKEN_MINUTES", Accepts::Whole { min: 1, max: 20_160 }),
    ("HTTP_TIMEOUT_SECS", Accepts::Whole { min: 1, max: 300 }),
    ("RETRY_MAX_ATTEMPTS", Accepts::Whole { min: 1, max: 10 }),
    ("RETRY_DEADLINE_SECS", Accepts::Whole { min: 1, max: 900 }),
    ("LIST_CONCURRENCY", Accepts::Whole { min: 1, max: 32 }),
    // Below WARNING_PERCENT, which is at most 100: 100 itself can never be valid.
    ("CRITICAL_PERCENT", PERCENT_BELOW_100),
    ("WARNING_PERCENT", PERCENT),
    ("ORG_MIN_CREDITS", CREDITS_AT_LEAST_0),
    ("NOTIFY_CHANNEL", Accepts::OneOf(&["email", "builtin"])),
    ("SECRET_TTL_SECS", Accepts::Whole { min: 0, max: 3_600 }),
    ("AUTO_TOP_UP_TO", CREDITS_ABOVE_0),
    ("MAX_CREDITS_PER_MEMBER", CREDITS_ABOVE_0),
    ("MAX_CREDITS_PER_PLAN", CREDITS_ABOVE_0),
    ("MAX_CREDITS_PER_DAY", CREDITS_ABOVE_0),
    ("ORG_RESERVE_CREDITS", CREDITS_AT_LEAST_0),
    (
        "MAX_MEMBERS_PER_REQUEST",
        Accepts::Whole {
            min: 1,
            max: MAX_MEMBERS_CAP as u64,
        },
    ),
    ("ALLOW_UNAUTHENTICATED", BOOLEAN),
    (
        "ASYNC_ABOVE_MEMBERS",
        Accepts::Whole {
            min: 1,
            max: MAX_MEMBERS_CAP as u64,
        },
    ),
    ("REPORT_SOURCE", Accepts::OneOf(&["usage", "report-item"])),
    ("REPORT_LINKS", Accepts::OneOf(&["presigned", "none"])),
    (
        "REPORT_LINK_HOURS",
        Accepts::Whole {
            min: 1,
            max: MAX_LINK_HOURS,
        },
    ),
    ("KEEP_REPORT_ITEMS", BOOLEAN),
    ("REPORT_TOP_N", Accepts::Whole { min: 1, max: 1_000 }),
    ("USAGE_BUCKET_LABEL", Accepts::OneOf(&["start", "end"])),
    ("LANGUAGE", Accepts::OneOf(&["en", "fr"])),
    ("FORECAST_DAYS", Accepts::Whole { min: 0, max: 365 }),
    ("NOTIFY_MEMBERS", Accepts::OneOf(&["off", "critical", "warning"])),
    (
        "AWS_LAMBDA_LOG_LEVEL",
        Accepts::OneOf(&["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]),
    ),
];

const PERCENT: Accepts = Accepts::Decimal {
    places: 2,
    min: 0,
    min_included: false,
    max: Some((100, true)),
};
const PERCENT_BELOW_100: Accepts = Accepts::Decimal {
    places: 2,
    min: 0,
    min_included: false,
    max: Some((100, false)),
};
const CREDITS_ABOVE_0: Accepts = Accepts::Decimal {
    places: 6,
    min: 0,
    min_included: false,
    max: None,
};
const CREDITS_AT_LEAST_0: Accepts = Accepts::Decimal {
    places: 6,
    min: 0,
    min_included: true,
    max: None,
};
const BOOLEAN: Accepts = Accepts::OneOf(&["true", "false"]);

/// Whether the functions start with `variable` set to `value`: no problem names `variable`.
/// The other variables are set to what lets it take its widest range (`WARNING_PERCENT` at
/// 100 when `CRITICAL_PERCENT` is tried, which must stay below it).
pub fn accepts(variable: &str, value: &str) -> bool {
    let lookup = |name: &str| match name {
        _ if name == variable => Some(value.to_owned()),
        "ARCGIS_SECRET_ID" => Some("probe".to_owned()),
        "WARNING_PERCENT" => Some("100".to_owned()),
        _ => None,
    };
    match Config::from_lookup(lookup) {
        Ok(_) => true,
        Err(e) => !e.problems.iter().any(|p| p.variable == variable),
    }
}

/// One invalid or missing variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The variable's name.
    pub variable: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// All configuration problems found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Each problem, in variable order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problems): ", self.problems.len())?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.variable, p.message)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map instead of mutating the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut env = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };
        let defaults = RetryPolicy::default();

        let arcgis_secret_id = env.required("ARCGIS_SECRET_ID");
        let referer = env.get("ARCGIS_REFERER").unwrap_or_else(|| "credit-steward".to_owned());
        if referer.chars().any(|c| c.is_control()) {
            env.problem("ARCGIS_REFERER", "must not contain control characters".into());
        }
        let token_minutes = env.number("ARCGIS_TOKEN_MINUTES", 60u32, 1..=20_160);
        let http_timeout = env.number("HTTP_TIMEOUT_SECS", 30u64, 1..=300);
        let max_attempts = env.number("RETRY_MAX_ATTEMPTS", defaults.max_attempts, 1..=10);
        let deadline = env.number("RETRY_DEADLINE_SECS", defaults.deadline.as_secs(), 1..=900);
        let list_concurrency = env.number("LIST_CONCURRENCY", 8usize, 1..=32);
        let critical_percent = env.percent("CRITICAL_PERCENT", 10);
        let warning_percent = env.percent("WARNING_PERCENT", 50);
        if critical_percent >= warning_percent {
            env.problem(
                "CRITICAL_PERCENT",
                format!("must be below WARNING_PERCENT ({critical_percent} ≥ {warning_percent})"),
            );
        }
        let org_min_credits = env.optional_amount("ORG_MIN_CREDITS", Bound::Included(Credits::ZERO));
        let notify_channel = match env.get("NOTIFY_CHANNEL") {
            None => NotifyChannel::Email,
            Some(v) => v.parse().unwrap_or_else(|e| {
                env.problem("NOTIFY_CHANNEL", e);
                NotifyChannel::Email
            }),
        };
        let ledger_table = env.get("LEDGER_TABLE");
        let secret_ttl = env.number("SECRET_TTL_SECS", 300u64, 0..=3_600);
        let auto_top_up_to = env.optional_amount("AUTO_TOP_UP_TO", Bound::Excluded(Credits::ZERO));
        let guardrails = GuardrailSettings {
            max_per_member: env.amount("MAX_CREDITS_PER_MEMBER", 1_000, Bound::Excluded(Credits::ZERO)),
            max_per_plan: env.amount("MAX_CREDITS_PER_PLAN", 10_000, Bound::Excluded(Credits::ZERO)),
            max_per_day: env.amount("MAX_CREDITS_PER_DAY", 20_000, Bound::Excluded(Credits::ZERO)),
            org_reserve: env.amount("ORG_RESERVE_CREDITS", 0, Bound::Included(Credits::ZERO)),
        };
        let max_members_per_request = env.number("MAX_MEMBERS_PER_REQUEST", 500usize, 1..=MAX_MEMBERS_CAP);
        let allow_unauthenticated = env.boolean("ALLOW_UNAUTHENTICATED", false);
        let allocation_queue_url = env.get("ALLOCATION_QUEUE_URL");
        let async_above_members = env.number("ASYNC_ABOVE_MEMBERS", 100usize, 1..=MAX_MEMBERS_CAP);
        let report_bucket = env.get("REPORT_BUCKET");
        let report_source = match env.get("REPORT_SOURCE").as_deref() {
            None | Some("usage") => ReportSource::Usage,
            Some("report-item") => ReportSource::ReportItem,
            Some(other) => {
                let shown: String = other.chars().take(40).collect();
                env.problem("REPORT_SOURCE", format!("'{shown}' is not usage or report-item"));
                ReportSource::Usage
            }
        };
        let link_hours = env.number("REPORT_LINK_HOURS", 24u64, 1..=MAX_LINK_HOURS);
        let report_links = match env.get("REPORT_LINKS").as_deref() {
            None | Some("presigned") => ReportLinks::Presigned(Duration::from_secs(link_hours * 3_600)),
            Some("none") => ReportLinks::Off,
            Some(other) => {
                let shown: String = other.chars().take(40).collect();
                env.problem("REPORT_LINKS", format!("'{shown}' is not presigned or none"));
                ReportLinks::Off
            }
        };
        let keep_report_items = env.boolean("KEEP_REPORT_ITEMS", false);
        let report_top_n = env.number("REPORT_TOP_N", 10usize, 1..=1_000);
        let usage_bucket_label = match env.get("USAGE_BUCKET_LABEL") {
            None => BucketLabel::default(),
            Some(v) => v.parse().unwrap_or_else(|e| {
                env.problem("USAGE_BUCKET_LABEL", e);
                BucketLabel::default()
            }),
        };
        let language = match env.get("LANGUAGE") {
            None => Lang::default(),
            Some(v) => v.parse().unwrap_or_else(|e| {
                env.problem("LANGUAGE", e);
                Lang::default()
            }),
        };
        let forecast_days = env.number("FORECAST_DAYS", 7u32, 0..=365);
        let notify_members = match env.get("NOTIFY_MEMBERS") {
            None => MemberNotices::Off,
            Some(v) => v.parse().unwrap_or_else(|e| {
                env.problem("NOTIFY_MEMBERS", e);
                MemberNotices::Off
            }),
        };
        let notify_members_contact = env.get("NOTIFY_MEMBERS_CONTACT");
        if let Some(contact) = &notify_members_contact {
            if contact.chars().count() > 200 {
                env.problem("NOTIFY_MEMBERS_CONTACT", "must be at most 200 characters".into());
            } else if contact.chars().any(char::is_control) {
                env.problem("NOTIFY_MEMBERS_CONTACT", "must be one line".into());
            }
        }
        let alert_topic_arn = env.get("ALERT_TOPIC_ARN");
        if let Some(arn) = &alert_topic_arn
            && !(arn.starts_with("arn:") && arn.split(':').nth(2) == Some("sns") && arn.split(':').count() == 6)
        {
            env.problem(
                "ALERT_TOPIC_ARN",
                "must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)".into(),
            );
        }

        let stack_name = env.get("STACK_NAME");
        if stack_name
            .as_deref()
            .is_some_and(|stack| stack.chars().count() > 255 || stack.chars().any(char::is_control))
        {
            env.problem("STACK_NAME", "must be at most 255 characters on one line".into());
        }
        let log_level = match env.get("AWS_LAMBDA_LOG_LEVEL") {
            None => LogLevel::default(),
            Some(v) => v.parse().unwrap_or_else(|e| {
                env.problem("AWS_LAMBDA_LOG_LEVEL", e);
                LogLevel::default()
            }),
        };

        if !env.problems.is_empty() {
            return Err(ConfigError { problems: env.problems });
        }
        Ok(Config {
            arcgis_secret_id: arcgis_secret_id.unwrap_or_default(),
            referer,
            token_minutes,
            http_timeout: Duration::from_secs(http_timeout),
            retry: RetryPolicy {
                max_attempts,
                deadline: Duration::from_secs(deadline),
                ..defaults
            },
            list_concurrency,
            critical_percent,
            warning_percent,
            org_min_credits,
            notify_channel,
            ledger_table,
            secret_ttl: Duration::from_secs(secret_ttl),
            auto_top_up_to,
            guardrails,
            max_members_per_request,
            allow_unauthenticated,
            allocation_queue_url,
            async_above_members,
            report_bucket,
            report_source,
            report_links,
            keep_report_items,
            report_top_n,
            usage_bucket_label,
            language,
            forecast_days,
            notify_members,
            notify_members_contact,
            alert_topic_arn,
            stack_name,
            log_level,
        })
    }

    /// The ArcGIS client settings for `secret`; the secret's own referer wins over
    /// `ARCGIS_REFERER` (whoever stored the credentials knows what the token is bound to).
    pub fn client_config(&self, secret: &ArcgisSecret) -> ClientConfig {
        ClientConfig {
            referer: secret.referer.clone().unwrap_or_else(|| self.referer.clone()),
            token_minutes: self.token_minutes,
            http_timeout: self.http_timeout,
            retry: self.retry,
            list_concurrency: self.list_concurrency,
            ..ClientConfig::new(secret.portal_url.clone(), secret.credentials.clone())
        }
    }
}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
    problems: Vec<ConfigProblem>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, variable: &'static str, message: String) {
        self.problems.push(ConfigProblem { variable, message });
    }

    fn required(&mut self, name: &'static str) -> Option<String> {
        let value = self.get(name);
        if value.is_none() {
            self.problem(name, "required but not set".into());
        }
        value
    }

    /// `true`/`false` (any case), or `default` when unset; a problem (and the default) otherwise.
    fn boolean(&mut self, name: &'static str, default: bool) -> bool {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => default,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                let shown: String = other.chars().take(40).collect();
                self.problem(name, format!("'{shown}' is not true or false"));
                default
            }
        }
    }

    /// A percentage (0–100, two decimals), or `default` when unset; above 0, since 0 flags nobody.
    fn percent(&mut self, name: &'static str, default: u32) -> Percent {
        let fallback = Percent::whole(default).unwrap_or(Percent::HUNDRED);
        let Some(raw) = self.get(name) else { return fallback };
        match Percent::parse(&raw) {
            Ok(p) if p.is_zero() => {
                self.problem(
                    name,
                    "must be above 0 (0 flags nobody and the classifier refuses it)".into(),
                );
                fallback
            }
            Ok(p) => p,
            Err(e) => {
                self.problem(name, e.to_string());
                fallback
            }
        }
    }

    /// An exact amount of credits above (or at) `min`, or `default` credits when unset.
    fn amount(&mut self, name: &'static str, default: i64, min: Bound<Credits>) -> Credits {
        self.optional_amount(name, min).unwrap_or(Credits::whole(default))
    }

    /// An exact amount of credits above (or at) `min`, or `None` when unset; `None` and a
    /// problem when invalid.
    fn optional_amount(&mut self, name: &'static str, min: Bound<Credits>) -> Option<Credits> {
        let raw = self.get(name)?;
        let shown: String = raw.chars().take(40).collect();
        match Credits::parse_exact(&raw) {
            Ok(c) => match min {
                Bound::Excluded(m) if c <= m => {
                    self.problem(
                        name,
                        format!("'{shown}' must be above {m} (leave it unset for the default or to turn it off)"),
                    );
                    None
                }
                Bound::Included(m) if c < m => {
                    self.problem(name, format!("'{shown}' must be at least {m}"));
                    None
                }
                _ => Some(c),
            },
            Err(e) => {
                self.problem(name, e.to_string());
                None
            }
        }
    }

    /// A number within `range`, or `default` when unset; a problem (and the default) when invalid.
    fn number<T, R>(&mut self, name: &'static str, default: T, range: R) -> T
    where
        T: FromStr + PartialOrd + fmt::Display,
        R: RangeBounds<T>,
    {
        let Some(raw) = self.get(name) else { return default };
        let shown: String = raw.chars().take(40).collect();
        match raw.parse::<T>() {
            Ok(v) if range.contains(&v) => v,
            Ok(_) => {
                self.problem(name, format!("'{shown}' must be {}", describe(&range)));
                default
            }
            Err(_) => {
                self.problem(name, format!("'{shown}' is not a number"));
                default
            }
        }
    }
}

fn describe<T: fmt::Display>(range: &impl RangeBounds<T>) -> String {
    match (range.start_bound(), range.end_bound()) {
        (Bound::Included(a), Bound::Included(b)) => format!("between {a} and {b}"),
        (Bound::Included(a), Bound::Unbounded) => format!("at least {a}"),
        _ => "in range".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
    }

    fn p(text: &str) -> Percent {
        Percent::parse(text).unwrap()
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn job_settings_are_read_and_validated() {
        let c = config(&[
            ("ARCGIS_SECRET_ID", "s"),
            ("AUTO_TOP_UP_TO", "200"),
            ("MAX_CREDITS_PER_MEMBER", "300"),
            ("ALLOW_UNAUTHENTICATED", "TRUE"),
            ("REPORT_SOURCE", "report-item"),
            ("KEEP_REPORT_ITEMS", "true"),
            ("USAGE_BUCKET_LABEL", "end"),
            ("LANGUAGE", "FR"),
        ])
        .unwrap();
        assert_eq!(c.language, Lang::Fr);
        assert_eq!(c.auto_top_up_to, Some(Credits::whole(200)));
        assert_eq!(
            c.guardrails,
            GuardrailSettings {
                max_per_member: Credits::whole(300),
                max_per_plan: Credits::whole(10_000),
                max_per_day: Credits::whole(20_000),
                org_reserve: Credits::ZERO,
            }
        );
        assert!(c.allow_unauthenticated && c.keep_report_items);
        assert_eq!(c.report_source, ReportSource::ReportItem);
        assert_eq!(c.usage_bucket_label, BucketLabel::End);
        let d = config(&[("ARCGIS_SECRET_ID", "s")]).unwrap();
        assert_eq!(
            (d.auto_top_up_to, d.allow_unauthenticated, d.report_source),
            (None, false, ReportSource::Usage)
        );
        assert_eq!(d.usage_bucket_label, BucketLabel::Start);
        assert_eq!(d.language, Lang::En);
        let err = config(&[
            ("ARCGIS_SECRET_ID", "s"),
            ("AUTO_TOP_UP_TO", "0"),
            ("ALLOW_UNAUTHENTICATED", "yes"),
            ("REPORT_SOURCE", "csv"),
            ("ORG_RESERVE_CREDITS", "-1"),
            ("USAGE_BUCKET_LABEL", "middle"),
            ("LANGUAGE", "español"),
            ("ASYNC_ABOVE_MEMBERS", "0"),
            ("REPORT_LINKS", "s3"),
            ("REPORT_LINK_HOURS", "169"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            [
                "AUTO_TOP_UP_TO",
                "ORG_RESERVE_CREDITS",
                "ALLOW_UNAUTHENTICATED",
                "ASYNC_ABOVE_MEMBERS",
                "REPORT_SOURCE",
                "REPORT_LINK_HOURS",
                "REPORT_LINKS",
                "USAGE_BUCKET_LABEL",
                "LANGUAGE"
            ]
        );
        assert!(err.to_string().contains("LANGUAGE: 'español' is not en or fr"), "{err}");
        assert!(
            err.to_string().contains("REPORT_LINKS: 's3' is not presigned or none"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("USAGE_BUCKET_LABEL: 'middle' is not start or end"),
            "{err}"
        );
    }

    #[test]
    fn every_variable_is_in_the_manifest() {
        let source = include_str!("config.rs");
        for (name, functions) in VARIABLES {
            assert!(!functions.is_empty(), "{name}");
            assert!(
                source.matches(&format!("\"{name}\"")).count() >= 2,
                "{name} listed but never read"
            );
        }
    }

    #[test]
    fn every_limit_holds_at_its_bounds() {
        // The table the template's parameters are checked against says what the code does:
        // each bound accepted, each value just outside refused.
        for (variable, spec) in LIMITS {
            assert!(
                VARIABLES.iter().any(|(name, _)| name == variable),
                "{variable} has limits but is not read"
            );
            let probes = spec.probes();
            assert!(probes.iter().any(|p| p.bound == Some(true)), "{variable}");
            assert!(probes.iter().any(|p| p.bound == Some(false)), "{variable}");
            for probe in probes {
                if let Some(expected) = probe.bound {
                    assert_eq!(
                        accepts(variable, &probe.value),
                        expected,
                        "{variable}={} should be {}",
                        probe.value,
                        if expected { "accepted" } else { "refused" }
                    );
                }
            }
        }
        // The values the template used to let through.
        assert!(!accepts("CRITICAL_PERCENT", "0"));
        assert!(!accepts("AUTO_TOP_UP_TO", "0"));
        assert!(!accepts("FORECAST_DAYS", "7.5"));
        assert!(!accepts("WARNING_PERCENT", "12.345"));
    }

    #[test]
    fn log_levels_are_the_ones_the_subscriber_parses() {
        use tracing::level_filters::LevelFilter;
        let expected = [
            LevelFilter::TRACE,
            LevelFilter::DEBUG,
            LevelFilter::INFO,
            LevelFilter::WARN,
            LevelFilter::ERROR,
        ];
        for (level, filter) in LogLevel::ALL.into_iter().zip(expected) {
            assert_eq!(level.as_str().parse::<LevelFilter>().ok(), Some(filter), "{level:?}");
            let c = config(&[("ARCGIS_SECRET_ID", "s"), ("AWS_LAMBDA_LOG_LEVEL", level.as_str())]).unwrap();
            assert_eq!(c.log_level, level);
        }
        assert_eq!(config(&[("ARCGIS_SECRET_ID", "s")]).unwrap().log_level, LogLevel::Info);
        assert_eq!(
            config(&[("ARCGIS_SECRET_ID", "s"), ("AWS_LAMBDA_LOG_LEVEL", "warn")])
                .unwrap()
                .log_level,
            LogLevel::Warn
        );
        // What Lambda offers beyond tracing: the subscriber would read it as INFO without a
        // word, so the functions refuse to start, saying what to use.
        assert!("FATAL".parse::<LevelFilter>().is_err());
        for (value, said) in [
            (
                "FATAL",
                "AWS_LAMBDA_LOG_LEVEL: 'FATAL' is not TRACE, DEBUG, INFO, WARN or ERROR (the log subscriber has no FATAL level: use ERROR)",
            ),
            (
                "WARNING",
                "AWS_LAMBDA_LOG_LEVEL: 'WARNING' is not TRACE, DEBUG, INFO, WARN or ERROR",
            ),
        ] {
            let err = config(&[("ARCGIS_SECRET_ID", "s"), ("AWS_LAMBDA_LOG_LEVEL", value)]).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert!(err.to_string().ends_with(said), "{err}");
        }
    }

    #[test]
    fn the_stack_name_is_read_and_kept_to_one_line() {
        let c = config(&[("ARCGIS_SECRET_ID", "s"), ("STACK_NAME", "credit-steward-prod")]).unwrap();
        assert_eq!(c.stack_name.as_deref(), Some("credit-steward-prod"));
        assert_eq!(config(&[("ARCGIS_SECRET_ID", "s")]).unwrap().stack_name, None);
        let long = "s".repeat(256);
        let err = config(&[("ARCGIS_SECRET_ID", "s"), ("STACK_NAME", &long)]).unwrap_err();
        assert_eq!(err.problems[0].variable, "STACK_NAME");
    }

    #[test]
    fn defaults() {
        let c = config(&[("ARCGIS_SECRET_ID", "arcgis/admin")]).unwrap();
        assert_eq!(c.arcgis_secret_id, "arcgis/admin");
        assert_eq!(c.referer, "credit-steward");
        assert_eq!(c.token_minutes, 60);
        assert_eq!(c.list_concurrency, 8);
        assert_eq!((c.critical_percent, c.warning_percent), (p("10"), p("50")));
        assert_eq!(c.max_members_per_request, 500);
        assert_eq!(c.org_min_credits, None);
        assert_eq!(c.notify_channel, NotifyChannel::Email);
        assert_eq!(c.ledger_table, None);
        assert_eq!(c.secret_ttl, Duration::from_secs(300));
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.http_timeout, Duration::from_secs(30));
        assert_eq!(c.forecast_days, 7);
    }

    #[test]
    fn every_variable_read() {
        let c = config(&[
            ("ARCGIS_SECRET_ID", "s"),
            ("ARCGIS_REFERER", "my-ref"),
            ("ARCGIS_TOKEN_MINUTES", "120"),
            ("HTTP_TIMEOUT_SECS", "10"),
            ("RETRY_MAX_ATTEMPTS", "3"),
            ("RETRY_DEADLINE_SECS", "20"),
            ("LIST_CONCURRENCY", "4"),
            ("CRITICAL_PERCENT", "7.5"),
            ("WARNING_PERCENT", "40"),
            ("ORG_MIN_CREDITS", "1000"),
            ("NOTIFY_CHANNEL", "BuiltIn"),
            ("LEDGER_TABLE", "ledger"),
            ("SECRET_TTL_SECS", "0"),
            ("FORECAST_DAYS", "14"),
            ("NOTIFY_MEMBERS", "Warning"),
            ("NOTIFY_MEMBERS_CONTACT", " the GIS team, gis@example.org "),
            ("ALERT_TOPIC_ARN", "arn:aws:sns:eu-west-3:123456789012:credit-alerts"),
        ])
        .unwrap();
        assert_eq!(c.referer, "my-ref");
        assert_eq!(c.token_minutes, 120);
        assert_eq!(c.http_timeout, Duration::from_secs(10));
        assert_eq!((c.retry.max_attempts, c.retry.deadline), (3, Duration::from_secs(20)));
        assert_eq!(c.list_concurrency, 4);
        assert_eq!((c.critical_percent, c.warning_percent), (p("7.5"), p("40")));
        assert_eq!(c.org_min_credits, Some(Credits::whole(1000)));
        assert_eq!(c.notify_channel, NotifyChannel::Builtin);
        assert_eq!(c.ledger_table.as_deref(), Some("ledger"));
        assert_eq!(c.secret_ttl, Duration::ZERO);
        assert_eq!(c.forecast_days, 14);
        assert_eq!(c.notify_members, MemberNotices::Warning);
        assert_eq!(
            c.notify_members_contact.as_deref(),
            Some("the GIS team, gis@example.org")
        );
        assert_eq!(
            c.alert_topic_arn.as_deref(),
            Some("arn:aws:sns:eu-west-3:123456789012:credit-alerts")
        );
        let err = config(&[("ARCGIS_SECRET_ID", "s"), ("ALERT_TOPIC_ARN", "credit-alerts")]).unwrap_err();
        assert!(
            err.to_string().contains("ALERT_TOPIC_ARN: must be an SNS topic ARN"),
            "{err}"
        );
    }

    #[test]
    fn member_notices_are_off_by_default_and_say_which_levels() {
        use crate::credits::classify::Level;
        let c = config(&[("ARCGIS_SECRET_ID", "s")]).unwrap();
        assert_eq!((c.notify_members, c.notify_members_contact), (MemberNotices::Off, None));
        assert!(!MemberNotices::Off.tells(Level::Critical));
        assert!(MemberNotices::Critical.tells(Level::Critical) && !MemberNotices::Critical.tells(Level::Warning));
        assert!(MemberNotices::Warning.tells(Level::Warning) && !MemberNotices::Warning.tells(Level::Ok));
        let err = config(&[
            ("ARCGIS_SECRET_ID", "s"),
            ("NOTIFY_MEMBERS", "everyone"),
            ("NOTIFY_MEMBERS_CONTACT", "line one\nline two"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("NOTIFY_MEMBERS: 'everyone' is not off, critical or warning"),
            "{text}"
        );
        assert!(text.contains("NOTIFY_MEMBERS_CONTACT: must be one line"), "{text}");
    }

    #[test]
    fn all_problems_reported_together_each_naming_its_variable() {
        let err = config(&[
            ("ARCGIS_TOKEN_MINUTES", "sixty"),
            ("LIST_CONCURRENCY", "0"),
            ("CRITICAL_PERCENT", "60"),
            ("ORG_MIN_CREDITS", "-5"),
            ("NOTIFY_CHANNEL", "sms"),
            ("SECRET_TTL_SECS", "99999"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            vec![
                "ARCGIS_SECRET_ID",
                "ARCGIS_TOKEN_MINUTES",
                "LIST_CONCURRENCY",
                "CRITICAL_PERCENT",
                "ORG_MIN_CREDITS",
                "NOTIFY_CHANNEL",
                "SECRET_TTL_SECS"
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration (7 problems): ARCGIS_SECRET_ID: required"),
            "{text}"
        );
        assert!(text.contains("ARCGIS_TOKEN_MINUTES: 'sixty' is not a number"), "{text}");
        assert!(
            text.contains("LIST_CONCURRENCY: '0' must be between 1 and 32"),
            "{text}"
        );
        assert!(
            text.contains("CRITICAL_PERCENT: must be below WARNING_PERCENT"),
            "{text}"
        );
        assert!(text.contains("ORG_MIN_CREDITS: '-5' must be at least 0"), "{text}");
    }

    #[test]
    fn non_finite_and_noisy_numbers_are_refused_at_start() {
        // `inf` used to pass every `0.0..` range: ORG_MIN_CREDITS=inf alerted on every run and
        // guardrails set to `inf` stopped allocate from starting only later.
        let err = config(&[
            ("ARCGIS_SECRET_ID", "s"),
            ("ORG_MIN_CREDITS", "inf"),
            ("MAX_CREDITS_PER_MEMBER", "NaN"),
            ("MAX_CREDITS_PER_PLAN", "1e400"),
            ("MAX_CREDITS_PER_DAY", "0.30000000000000004"),
            ("CRITICAL_PERCENT", "infinity"),
            ("WARNING_PERCENT", "12.345"),
            ("AUTO_TOP_UP_TO", "0"),
            ("MAX_MEMBERS_PER_REQUEST", "10000"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            [
                "CRITICAL_PERCENT",
                "WARNING_PERCENT",
                "ORG_MIN_CREDITS",
                "AUTO_TOP_UP_TO",
                "MAX_CREDITS_PER_MEMBER",
                "MAX_CREDITS_PER_PLAN",
                "MAX_CREDITS_PER_DAY",
                "MAX_MEMBERS_PER_REQUEST"
            ],
            "{err}"
        );
        let ok = config(&[("ARCGIS_SECRET_ID", "s"), ("MAX_CREDITS_PER_DAY", "1234.5")]).unwrap();
        assert_eq!(ok.guardrails.max_per_day, c("1234.5"));
    }

    #[test]
    fn empty_values_are_unset() {
        let err = config(&[("ARCGIS_SECRET_ID", "  "), ("LIST_CONCURRENCY", "")]).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].variable, "ARCGIS_SECRET_ID");
    }

    #[test]
    fn secret_referer_wins() {
        let c = config(&[("ARCGIS_SECRET_ID", "s"), ("LIST_CONCURRENCY", "3")]).unwrap();
        let secret =
            ArcgisSecret::parse(r#"{"portal_url":"https://o","api_key":"k","referer":"from-secret"}"#).unwrap();
        let cc = c.client_config(&secret);
        assert_eq!(cc.referer, "from-secret");
        assert_eq!(cc.list_concurrency, 3);
        let secret = ArcgisSecret::parse(r#"{"portal_url":"https://o","api_key":"k"}"#).unwrap();
        assert_eq!(c.client_config(&secret).referer, "credit-steward");
    }
}
