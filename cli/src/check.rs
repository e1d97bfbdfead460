//! `check`, the doctor: everything the functions need, one finding per line with its fix.
//!
//! Each finding is independent: a missing privilege does not hide a missing contact, and an
//! unreachable table does not hide a refused sign-in. Only a failure that makes the next
//! checks meaningless (no secret, no sign-in) skips them, and says so.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use shared::arcgis::portal::{CREATE_REPORTS, MANAGE_CREDITS, VIEW_USERS};
use shared::arcgis::{OrgProperties, SignedIn};
use shared::config::ReportSource;
use shared::secrets::ArcgisSecret;

use crate::context::Context;

/// How a finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// As the functions need it.
    Ok,
    /// The functions cannot do their job until it is fixed.
    Blocker,
    /// Works, but something will be missing.
    Warning,
    /// Not checked (what it needs is not given, or an earlier blocker).
    Skipped,
}

/// One line of the doctor's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked (`secret`, `sign-in`, `privilege portal:admin:manageCredits`…).
    pub check: String,
    /// Its outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: impl Into<String>, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Finding {
        Finding {
            check: check.into(),
            status,
            detail: detail.into(),
            fix: fix.map(str::to_owned),
        }
    }
}

/// How to grant a missing privilege.
const ROLE_FIX: &str =
    "give the account a role with this privilege (Organization > Member roles; a custom role is enough)";

/// Runs every check.
pub async fn run(ctx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    arcgis(ctx, &mut findings).await;
    ledger(ctx, &mut findings).await;
    bucket(ctx, &mut findings).await;
    findings
}

/// True when a finding blocks the functions.
pub fn has_blocker(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.status == Status::Blocker)
}

async fn arcgis(ctx: &Context, findings: &mut Vec<Finding>) {
    let skip_rest = |findings: &mut Vec<Finding>, why: &str| {
        for check in ["sign-in", "budgeting", "privileges", "admin contacts"] {
            findings.push(Finding::new(
                check,
                Status::Skipped,
                format!("not checked: {why}"),
                None,
            ));
        }
    };
    let (secret, origin) = match ctx.secret().await {
        Ok(found) => found,
        Err(e) => {
            findings.push(Finding::new(
                "secret",
                Status::Blocker,
                format!("{e:#}"),
                Some(
                    "store the credentials as JSON with portal_url and username + password (or client_id + \
                     client_secret, or api_key); see infra/README.md",
                ),
            ));
            return skip_rest(findings, "no usable secret");
        }
    };
    findings.push(Finding::new(
        "secret",
        Status::Ok,
        format!("{} for {} from {origin}", describe(&secret), secret_host(&secret)),
        None,
    ));
    let (client, config) = match ctx.client().await {
        Ok(found) => found,
        Err(e) => {
            findings.push(Finding::new("sign-in", Status::Blocker, format!("{e:#}"), None));
            return skip_rest(findings, "no ArcGIS client");
        }
    };
    let props = match client.org_properties().await {
        Ok(props) => props,
        // Signed in, but the account's view of the org hides its credits: name what it lacks.
        Err(shared::arcgis::Error::MissingPrivileges { account, missing, .. }) => {
            findings.push(Finding::new(
                "sign-in",
                Status::Ok,
                format!("signed in as {account}"),
                None,
            ));
            for privilege in [VIEW_USERS, MANAGE_CREDITS] {
                let check = format!("privilege {privilege}");
                findings.push(if missing.iter().any(|m| m == privilege) {
                    Finding::new(
                        check,
                        Status::Blocker,
                        format!("{account} lacks {privilege}"),
                        Some(ROLE_FIX),
                    )
                } else {
                    Finding::new(check, Status::Ok, format!("{account} has it"), None)
                });
            }
            for check in ["budgeting", "admin contacts"] {
                findings.push(Finding::new(
                    check,
                    Status::Skipped,
                    "not checked: the account cannot see the org's credit settings",
                    None,
                ));
            }
            return;
        }
        Err(e) => {
            findings.push(Finding::new(
                "sign-in",
                Status::Blocker,
                e.to_string(),
                Some("check the secret's portal_url and credentials by signing in to the org with them in a browser"),
            ));
            for check in ["budgeting", "privileges", "admin contacts"] {
                findings.push(Finding::new(
                    check,
                    Status::Skipped,
                    "not checked: sign-in failed",
                    None,
                ));
            }
            return;
        }
    };
    findings.push(Finding::new("sign-in", Status::Ok, signed_in(&props), None));
    findings.push(if props.budgeting_enabled {
        Finding::new("budgeting", Status::Ok, "credit budgeting is on", None)
    } else {
        Finding::new(
            "budgeting",
            Status::Blocker,
            "credit budgeting is off: members have no allocations to watch or set",
            Some("in ArcGIS Online: Organization > Settings > Credits > Enable credit budgeting"),
        )
    });
    privileges(&props, config.report_source, findings);
    findings.push(if props.admin_contacts.is_empty() {
        Finding::new(
            "admin contacts",
            Status::Blocker,
            "the org has no administrative contacts: no alert or report email would go out",
            Some("in ArcGIS Online: Organization > Settings > General > Administrative contacts"),
        )
    } else {
        Finding::new(
            "admin contacts",
            Status::Ok,
            format!("alerts and reports go to {}", props.admin_contacts.join(", ")),
            None,
        )
    });
}

fn privileges(props: &OrgProperties, source: ReportSource, findings: &mut Vec<Finding>) {
    let (held, who): (&[String], String) = match &props.signed_in {
        SignedIn::User(u) => (&u.privileges, format!("user '{}'", u.username)),
        SignedIn::App { app_id, privileges } => (privileges, format!("app '{}'", app_id.as_deref().unwrap_or("?"))),
    };
    let needed = [
        (VIEW_USERS, "read every member's credits", true),
        (MANAGE_CREDITS, "set allocations", true),
        (
            CREATE_REPORTS,
            "create the credits report item",
            source == ReportSource::ReportItem,
        ),
    ];
    for (privilege, what, required) in needed {
        let check = format!("privilege {privilege}");
        let has = held.iter().any(|p| p == privilege);
        findings.push(match (has, required) {
            (true, _) => Finding::new(check, Status::Ok, format!("{who} may {what}"), None),
            (false, true) => Finding::new(
                check,
                Status::Blocker,
                format!("{who} lacks {privilege}: it cannot {what}"),
                Some(ROLE_FIX),
            ),
            (false, false) => Finding::new(
                check,
                Status::Warning,
                format!("{who} lacks it: not needed while REPORT_SOURCE is usage, needed for report-item"),
                None,
            ),
        });
    }
}

async fn ledger(ctx: &Context, findings: &mut Vec<Finding>) {
    let table = match ctx.table().await {
        Ok(Some(table)) => table,
        Ok(None) => {
            return findings.push(Finding::new(
                "ledger table",
                Status::Skipped,
                "not checked: give --table or --stack",
                None,
            ));
        }
        Err(e) => return findings.push(Finding::new("ledger table", Status::Blocker, format!("{e:#}"), None)),
    };
    let client = aws_sdk_dynamodb::Client::new(ctx.aws().await);
    let described = client.describe_table().table_name(&table).send().await;
    let finding = match described {
        Err(e) => Finding::new(
            "ledger table",
            Status::Blocker,
            format!(
                "table '{table}' cannot be described: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ),
            Some("check the table name and region, and that your credentials may read it"),
        ),
        Ok(out) => {
            let keys: Vec<String> = out
                .table()
                .map(|t| t.key_schema().iter().map(|k| k.attribute_name().to_owned()).collect())
                .unwrap_or_default();
            if keys != ["pk", "sk"] {
                Finding::new(
                    "ledger table",
                    Status::Blocker,
                    format!("table '{table}' has the key {keys:?}, not (pk, sk): it is not a credit-steward ledger"),
                    Some("point LEDGER_TABLE at the stack's LedgerTableName output"),
                )
            } else {
                // A read the functions make at every run, proving access beyond the description.
                let read = client
                    .query()
                    .table_name(&table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", AttributeValue::S("RUN#scan-credits".into()))
                    .limit(1)
                    .send()
                    .await;
                match read {
                    Ok(_) => Finding::new("ledger table", Status::Ok, format!("table '{table}' is readable"), None),
                    Err(e) => Finding::new(
                        "ledger table",
                        Status::Blocker,
                        format!(
                            "table '{table}' cannot be read: {}",
                            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                        ),
                        Some("check your credentials' dynamodb:Query permission on it"),
                    ),
                }
            }
        }
    };
    findings.push(finding);
}

async fn bucket(ctx: &Context, findings: &mut Vec<Finding>) {
    let bucket = match ctx.bucket().await {
        Ok(Some(bucket)) => bucket,
        Ok(None) => {
            return findings.push(Finding::new(
                "reports bucket",
                Status::Skipped,
                "not checked: give --bucket or --stack",
                None,
            ));
        }
        Err(e) => return findings.push(Finding::new("reports bucket", Status::Blocker, format!("{e:#}"), None)),
    };
    let sdk = ctx.aws().await;
    let client = aws_sdk_s3::Client::from_conf(shared::monthly::store::s3_config(sdk, endpoint_override()));
    findings.push(match client.head_bucket().bucket(&bucket).send().await {
        Ok(_) => Finding::new(
            "reports bucket",
            Status::Ok,
            format!("bucket '{bucket}' is reachable"),
            None,
        ),
        Err(e) => Finding::new(
            "reports bucket",
            Status::Blocker,
            format!(
                "bucket '{bucket}' is not reachable: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ),
            Some("check the bucket name (the stack's ReportsBucketName output) and your credentials"),
        ),
    });
}

/// Whether an endpoint override is set (emulators want path-style S3 addressing).
pub fn endpoint_override() -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

fn describe(secret: &ArcgisSecret) -> &'static str {
    use shared::arcgis::Credentials;
    match secret.credentials {
        Credentials::UserPassword { .. } => "username + password",
        Credentials::OAuthApp { .. } => "client_id + client_secret",
        Credentials::ApiKey(_) => "api_key",
    }
}

/// The secret's org, by host only (a URL could carry more than it should).
fn secret_host(secret: &ArcgisSecret) -> String {
    shared::arcgis::redact_url(&secret.portal_url)
}

fn signed_in(props: &OrgProperties) -> String {
    let org = props.name.as_deref().unwrap_or("the org");
    let id = props.id.as_deref().unwrap_or("unknown id");
    match &props.signed_in {
        SignedIn::User(u) => format!("signed in as '{}' to {org} ({id})", u.username),
        SignedIn::App { app_id, .. } => format!(
            "signed in as app '{}' to {org} ({id})",
            app_id.as_deref().unwrap_or("?")
        ),
    }
}
