//! `fidelity-steward`: what credit-steward computes on an org, for `make fidelity` to hold the
//! original notebook's results against (tests/fidelity/run_notebook.py).
//!
//! Signs in like the Lambdas (`generateToken`), reads the org's credits (`portals/self`),
//! lists every member with the product's paged listing, classifies them with the product's
//! default thresholds (critical below 10 %, warning below 50 %), plans the critical top-up the
//! notebook's "allocate 200" stands for (top up to 200 available, never a bare set), and reads
//! the current UTC month's credits per operation type from a credits report item the way the
//! monthly report does (the item is deleted afterwards). Nothing else is written: no
//! allocation is sent. Prints one JSON document on stdout.
//!
//! `fidelity-steward --url <portal> --user <username> [--ca-file <pem>]`; the password comes
//! from the environment variable `FIDELITY_PASSWORD`, never from the command line.

use std::process::ExitCode;

use chrono::Utc;
use serde_json::{Value, json};
use shared::arcgis::{Client, ClientConfig, Credentials, Secret};
use shared::credits::amount::Credits;
use shared::credits::classify::{ClassifiedOrg, Thresholds, classify};
use shared::credits::member::Balance;
use shared::credits::plan::{Guardrails, OrgPosition, critical_top_up, plan};
use shared::credits::usage::BucketLabel;
use shared::monthly::Month;
use shared::monthly::source::from_report_item;

/// The notebook's top-up amount (`allocate(u, 200)`), read by credit-steward as "make 200
/// available".
const TOP_UP: i64 = 200;

struct Args {
    url: String,
    user: String,
    ca_file: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut url = None;
    let mut user = None;
    let mut ca_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(value()?),
            "--user" => user = Some(value()?),
            "--ca-file" => ca_file = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        user: user.ok_or("--user is required")?,
        ca_file,
    })
}

async fn run(args: Args) -> Result<Value, String> {
    let password = std::env::var("FIDELITY_PASSWORD")
        .map_err(|_| "set FIDELITY_PASSWORD to the account's password".to_string())?;
    let mut config = ClientConfig::new(
        args.url.clone(),
        Credentials::UserPassword {
            username: args.user.clone(),
            password: Secret::new(password),
        },
    );
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file {path}: {e}"))?;
        config.extra_root_certificates_pem = Some(pem);
    }
    let client = Client::new(config).map_err(|e| format!("cannot build the client: {e}"))?;
    let org = client
        .org_properties()
        .await
        .map_err(|e| format!("reading the org's properties: {e}"))?;
    let list = client
        .list_members()
        .await
        .map_err(|e| format!("listing the members: {e}"))?;
    let thresholds = Thresholds::default();
    let classified = ClassifiedOrg::from_members(&list.members, &thresholds);
    let members: Vec<Value> = list
        .members
        .iter()
        .map(|m| {
            let balance = match m.balance {
                Balance::Unlimited => json!({"kind": "unlimited"}),
                Balance::Limited { assigned, available } => {
                    json!({"kind": "limited", "assigned": assigned, "available": available})
                }
            };
            json!({
                "username": m.username,
                "disabled": m.disabled,
                "viewer": m.is_viewer(),
                "user_type": m.user_type,
                "balance": balance,
                "classification": classify(m, &thresholds),
            })
        })
        .collect();
    let top_up = critical_top_up(&list.members, &thresholds, Credits::whole(TOP_UP));
    let position = OrgPosition::from_members(org.available_credits, &list.members, Credits::ZERO);
    // Guardrails are the deployment's choice; here they must not hide what the policy sets.
    let open = Guardrails {
        max_per_member: Credits::MAX_ABS,
        max_per_plan: Credits::MAX_ABS,
        max_per_day: Credits::MAX_ABS,
        org_reserve: Credits::ZERO,
        allow_unlimited_change: false,
    };
    let allocations: Vec<Value> = match plan(&top_up, &list.members, &position, &open) {
        Ok(p) => p
            .entries
            .iter()
            .map(|e| json!({"username": e.username, "target": e.target(), "outcome": e.outcome}))
            .collect(),
        Err(e) => return Err(format!("planning the critical top-up: {e}")),
    };
    let month = Month::containing(Utc::now());
    let figures = from_report_item(&client, &args.user, month, None, false, BucketLabel::Start)
        .await
        .map_err(|e| {
            format!(
                "reading {}-{:02} from a credits report item: {e}",
                month.year(),
                month.month()
            )
        })?;
    let names = |list: &[shared::credits::classify::RatedMember]| -> Vec<String> {
        list.iter().map(|m| m.username.clone()).collect()
    };
    Ok(json!({
        "org_credits": org.available_credits,
        "budgeting_enabled": org.budgeting_enabled,
        "member_count": list.members.len(),
        "listing_complete": list.is_complete(),
        "members": members,
        "critical": names(&classified.critical),
        "warning": names(&classified.warning),
        "skipped": classified.skipped,
        "top_up_to": TOP_UP,
        "allocations": allocations,
        "month": format!("{}-{:02}", month.year(), month.month()),
        "by_service": figures.by_service.by_service,
        "report_total": figures.by_service.total,
        "report_notes": figures.notes,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let result = match args() {
        Ok(a) => run(a).await,
        Err(e) => Err(format!(
            "{e}\nusage: fidelity-steward --url <portal> --user <username> [--ca-file <pem>] (password in FIDELITY_PASSWORD)"
        )),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fidelity-steward: {e}");
            ExitCode::FAILURE
        }
    }
}
