//! The command line, as clap reads it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shared::i18n::Lang;

fn parse_lang(text: &str) -> Result<Lang, String> {
    text.parse()
}

impl Cli {
    /// The language chosen, or the one the locale suggests (`LANGUAGE`, then `LANG`:
    /// `fr`, `fr_FR.UTF-8`, `fr_CA:en`… read as French).
    pub fn language(&self) -> Lang {
        self.lang.unwrap_or_else(|| {
            let french = ["LANGUAGE", "LANG"]
                .iter()
                .filter_map(|v| std::env::var(v).ok())
                .find(|v| !v.trim().is_empty())
                .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("fr"));
            if french { Lang::Fr } else { Lang::En }
        })
    }
}

/// credit-steward for people: check the set-up, see balances, run a scan or a report by
/// hand, allocate credits through the deployed API, read the audit trail.
#[derive(Debug, Parser)]
#[command(name = "credit-steward", version, about, max_term_width = 100)]
pub struct Cli {
    /// Where the ArcGIS credentials and the deployment's resources come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The language of what is printed and of reports: en or fr (default: fr when LANGUAGE
    /// or LANG starts with fr, else en).
    #[arg(long, global = true, env = "CREDIT_STEWARD_LANGUAGE", value_parser = parse_lang)]
    pub lang: Option<Lang>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where things are. Credentials are looked for in this order: `--secret-file`, the
/// `CREDIT_STEWARD_SECRET` variable (the secret's JSON itself), `--secret-id`, the stack's
/// secret. AWS calls use the usual credential chain (`AWS_PROFILE`, SSO profiles included).
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// A local JSON file holding the ArcGIS credentials, with the deployed secret's keys.
    #[arg(long, global = true, env = "CREDIT_STEWARD_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The Secrets Manager secret (name or ARN) holding the ArcGIS credentials.
    #[arg(long, global = true, env = "ARCGIS_SECRET_ID", value_name = "ID")]
    pub secret_id: Option<String>,
    /// The deployed CloudFormation stack: its secret, ledger table, reports bucket and API
    /// are read from its parameters and outputs.
    #[arg(long, global = true, env = "CREDIT_STEWARD_STACK", value_name = "NAME")]
    pub stack: Option<String>,
    /// The ledger table (default: the stack's).
    #[arg(long, global = true, env = "LEDGER_TABLE", value_name = "TABLE")]
    pub table: Option<String>,
    /// The reports bucket (default: the stack's).
    #[arg(long, global = true, env = "REPORT_BUCKET", value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// The allocations API's base URL (default: the stack's `ApiUrl` output).
    #[arg(long, global = true, env = "CREDIT_STEWARD_API", value_name = "URL")]
    pub api: Option<String>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the set-up: secret, sign-in, privileges, budgeting, admin contacts, ledger
    /// table and reports bucket. Exits non-zero when something blocks the functions.
    Check,
    /// Members' balances: left, % left, days until empty.
    Members(MembersArgs),
    /// Run the daily scan here without sending or recording anything.
    Scan(ScanArgs),
    /// Build a month's credits report here; writes files only with `--out`.
    Report(ReportArgs),
    /// Change allocations through the deployed API: a dry run first, then a confirmation.
    Allocate(AllocateArgs),
    /// Read the audit trail of allocation changes.
    Audit(AuditArgs),
}

/// `members`.
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Only members at this level or worse.
    #[arg(long, value_enum, default_value_t = LevelFilter::Warning)]
    pub level: LevelFilter,
    /// The order of the list.
    #[arg(long, value_enum, default_value_t = SortBy::PercentLeft)]
    pub sort: SortBy,
    /// At most this many lines (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// Which members `members` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelFilter {
    /// Critical members only.
    Critical,
    /// Critical and warning members.
    Warning,
}

/// How `members` sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    /// Least left first (the scan's order).
    PercentLeft,
    /// Soonest empty first; members with no forecast last.
    DaysLeft,
    /// By username.
    Name,
}

/// `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Required: a real scan sends alerts and records them, which is the deployed
    /// function's job (`aws lambda invoke`); here the scan only shows what it would do.
    #[arg(long)]
    pub dry_run: bool,
    /// Show the alert email the run would send.
    #[arg(long)]
    pub show_email: bool,
}

/// `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The month, `YYYY-MM` (default: last month).
    #[arg(long, value_name = "YYYY-MM")]
    pub month: Option<String>,
    /// Write credits.csv, credits.html and credits.json into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `allocate`.
#[derive(Debug, Args)]
pub struct AllocateArgs {
    /// Set a member's allocation: `USERNAME=CREDITS` (repeatable).
    #[arg(long = "set", value_name = "USER=CREDITS")]
    pub set: Vec<String>,
    /// Raise a member's allocation so that CREDITS are available: `USERNAME=CREDITS`.
    #[arg(long = "top-up-to", value_name = "USER=CREDITS")]
    pub top_up_to: Vec<String>,
    /// A JSON plan, the API's request body (`{"allocations": [...], "reason": ...}`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["set", "top_up_to"])]
    pub plan: Option<PathBuf>,
    /// Why (kept in the audit trail).
    #[arg(long)]
    pub reason: Option<String>,
    /// Apply without asking after the dry run.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only the dry run.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for a job the API runs in the background, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub wait: u64,
    /// The AWS region of the API (default: the credential chain's, or the URL's).
    #[arg(long)]
    pub region: Option<String>,
}

/// `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// First day, `YYYY-MM-DD` (default: 7 days ago; at most 366 days back).
    #[arg(long, value_name = "DATE")]
    pub since: Option<chrono::NaiveDate>,
    /// Only this member's changes.
    #[arg(long, value_name = "USERNAME")]
    pub member: Option<String>,
}
