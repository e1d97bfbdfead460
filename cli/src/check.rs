//! `check`, the doctor: everything the functions need, one finding per line with its fix.
//!
//! Each finding is independent: a missing privilege does not hide a missing contact, and an
//! unreachable table does not hide a refused sign-in. Only a failure that makes the next
//! checks meaningless (no secret, no sign-in) skips them, and says so. The `check` field is
//! a stable English id for scripts; what people read is in the deployment's language.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use shared::arcgis::portal::{CREATE_REPORTS, MANAGE_CREDITS, VIEW_USERS};
use shared::arcgis::{OrgProperties, SignedIn};
use shared::config::ReportSource;
use shared::i18n::Lang;

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

impl Status {
    /// Its label for people.
    pub fn label(self, lang: Lang) -> &'static str {
        lang.t(match self {
            Status::Ok => "cli.status.ok",
            Status::Blocker => "cli.status.blocker",
            Status::Warning => "cli.status.warning",
            Status::Skipped => "cli.status.skipped",
        })
    }
}

/// One line of the doctor's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked, as a stable id (`secret`, `sign-in`, `privilege portal:admin:…`).
    pub check: String,
    /// Its outcome.
    pub status: Status,
    /// What was checked, for people.
    pub title: String,
    /// What was found.
    pub detail: String,
    /// What to do, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What a check is, by id and title key.
#[derive(Clone, Copy)]
enum Check {
    Secret,
    SignIn,
    Budgeting,
    Privilege(&'static str),
    Contacts,
    Table,
    Bucket,
}

impl Check {
    fn id(self) -> String {
        match self {
            Check::Secret => "secret".into(),
            Check::SignIn => "sign-in".into(),
            Check::Budgeting => "budgeting".into(),
            Check::Privilege(p) => format!("privilege {p}"),
            Check::Contacts => "admin contacts".into(),
            Check::Table => "ledger table".into(),
            Check::Bucket => "reports bucket".into(),
        }
    }

    fn title(self, lang: Lang) -> String {
        match self {
            Check::Secret => lang.t("cli.check.secret").into(),
            Check::SignIn => lang.t("cli.check.sign_in").into(),
            Check::Budgeting => lang.t("cli.check.budgeting").into(),
            Check::Privilege(p) => lang.f("cli.check.privilege", &[("privilege", p)]),
            Check::Contacts => lang.t("cli.check.contacts").into(),
            Check::Table => lang.t("cli.check.table").into(),
            Check::Bucket => lang.t("cli.check.bucket").into(),
        }
    }
}

/// The findings being gathered, in one language.
struct Findings {
    lang: Lang,
    list: Vec<Finding>,
}

impl Findings {
    fn push(&mut self, check: Check, status: Status, detail: impl Into<String>, fix: Option<&str>) {
        self.list.push(Finding {
            check: check.id(),
            status,
            title: check.title(self.lang),
            detail: detail.into(),
            fix: fix.map(|key| self.lang.t(key).to_owned()),
        });
    }

    fn skip(&mut self, checks: &[Check], why_key: &str) {
        let detail = self.lang.f("cli.check.not_checked", &[("why", self.lang.t(why_key))]);
        for check in checks {
            self.push(*check, Status::Skipped, detail.clone(), None);
        }
    }
}

/// The privileges checked, with what each lets the account do.
const PRIVILEGES: [(&str, &str); 3] = [
    (VIEW_USERS, "cli.check.what_view"),
    (MANAGE_CREDITS, "cli.check.what_manage"),
    (CREATE_REPORTS, "cli.check.what_reports"),
];

/// Runs every check.
pub async fn run(ctx: &Context, lang: Lang) -> Vec<Finding> {
    let mut findings = Findings { lang, list: Vec::new() };
    arcgis(ctx, &mut findings).await;
    ledger(ctx, &mut findings).await;
    bucket(ctx, &mut findings).await;
    findings.list
}

/// True when a finding blocks the functions.
pub fn has_blocker(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.status == Status::Blocker)
}

async fn arcgis(ctx: &Context, findings: &mut Findings) {
    let lang = findings.lang;
    let all_privileges = PRIVILEGES.map(|(p, _)| Check::Privilege(p));
    let rest = [
        &[Check::SignIn, Check::Budgeting][..],
        &all_privileges[..],
        &[Check::Contacts][..],
    ]
    .concat();
    let (secret, origin) = match ctx.secret().await {
        Ok(found) => found,
        Err(e) => {
            findings.push(
                Check::Secret,
                Status::Blocker,
                format!("{e:#}"),
                Some("cli.check.secret_fix"),
            );
            return findings.skip(&rest, "cli.check.why_no_secret");
        }
    };
    let detail = lang.f(
        "cli.check.secret_ok",
        &[
            ("account", &secret.credentials.describe()),
            ("host", &shared::arcgis::redact_url(&secret.portal_url)),
            ("origin", &origin.to_string()),
        ],
    );
    findings.push(Check::Secret, Status::Ok, detail, None);
    let (client, config) = match ctx.client_for(&secret, &origin) {
        Ok(found) => found,
        Err(e) => {
            findings.push(Check::SignIn, Status::Blocker, format!("{e:#}"), None);
            return findings.skip(&rest[1..], "cli.check.why_no_client");
        }
    };
    let props = match client.org_properties().await {
        Ok(props) => props,
        // Signed in, but the account's view of the org hides its credits: name what it lacks.
        Err(shared::arcgis::Error::MissingPrivileges { account, missing, .. }) => {
            let signed_in = lang.f("cli.check.sign_in_as", &[("account", &account)]);
            findings.push(Check::SignIn, Status::Ok, signed_in, None);
            for privilege in [VIEW_USERS, MANAGE_CREDITS] {
                let args = [("account", account.as_str()), ("privilege", privilege)];
                if missing.iter().any(|m| m == privilege) {
                    let detail = lang.f("cli.check.privilege_lacks", &args);
                    findings.push(
                        Check::Privilege(privilege),
                        Status::Blocker,
                        detail,
                        Some("cli.check.privilege_fix"),
                    );
                } else {
                    let detail = lang.f("cli.check.privilege_held", &args);
                    findings.push(Check::Privilege(privilege), Status::Ok, detail, None);
                }
            }
            return findings.skip(&[Check::Budgeting, Check::Contacts], "cli.check.why_hidden");
        }
        Err(e) => {
            findings.push(
                Check::SignIn,
                Status::Blocker,
                e.to_string(),
                Some("cli.check.sign_in_fix"),
            );
            return findings.skip(&rest[1..], "cli.check.why_sign_in");
        }
    };
    findings.push(Check::SignIn, Status::Ok, signed_in(&props, lang), None);
    if props.budgeting_enabled {
        findings.push(Check::Budgeting, Status::Ok, lang.t("cli.check.budgeting_on"), None);
    } else {
        findings.push(
            Check::Budgeting,
            Status::Blocker,
            lang.t("cli.check.budgeting_off"),
            Some("cli.check.budgeting_fix"),
        );
    }
    privileges(&props, config.report_source, findings);
    if props.admin_contacts.is_empty() {
        findings.push(
            Check::Contacts,
            Status::Blocker,
            lang.t("cli.check.contacts_none"),
            Some("cli.check.contacts_fix"),
        );
    } else {
        let detail = lang.f("cli.check.contacts_ok", &[("names", &props.admin_contacts.join(", "))]);
        findings.push(Check::Contacts, Status::Ok, detail, None);
    }
}

fn privileges(props: &OrgProperties, source: ReportSource, findings: &mut Findings) {
    let lang = findings.lang;
    let (held, account): (&[String], String) = match &props.signed_in {
        SignedIn::User(u) => (&u.privileges, format!("'{}'", u.username)),
        SignedIn::App { app_id, privileges } => (privileges, format!("app '{}'", app_id.as_deref().unwrap_or("?"))),
    };
    for (privilege, what) in PRIVILEGES {
        let required = privilege != CREATE_REPORTS || source == ReportSource::ReportItem;
        let args = [
            ("account", account.as_str()),
            ("privilege", privilege),
            ("what", lang.t(what)),
        ];
        let check = Check::Privilege(privilege);
        match (held.iter().any(|p| p == privilege), required) {
            (true, _) => findings.push(check, Status::Ok, lang.f("cli.check.privilege_ok", &args), None),
            (false, true) => findings.push(
                check,
                Status::Blocker,
                lang.f("cli.check.privilege_missing", &args),
                Some("cli.check.privilege_fix"),
            ),
            (false, false) => findings.push(
                check,
                Status::Warning,
                lang.f("cli.check.privilege_optional", &args),
                None,
            ),
        }
    }
}

async fn ledger(ctx: &Context, findings: &mut Findings) {
    let lang = findings.lang;
    let table = match ctx.table().await {
        Ok(Some(table)) => table,
        Ok(None) => return findings.skip(&[Check::Table], "cli.check.why_table"),
        Err(e) => return findings.push(Check::Table, Status::Blocker, format!("{e:#}"), None),
    };
    let client = aws_sdk_dynamodb::Client::new(ctx.aws().await);
    match client.describe_table().table_name(&table).send().await {
        Err(e) => {
            let e = aws_sdk_dynamodb::error::DisplayErrorContext(&e);
            let detail = lang.f(
                "cli.check.table_missing",
                &[("table", &table), ("error", &e.to_string())],
            );
            findings.push(
                Check::Table,
                Status::Blocker,
                detail,
                Some("cli.check.table_missing_fix"),
            );
        }
        Ok(out) => {
            let keys: Vec<String> = out
                .table()
                .map(|t| t.key_schema().iter().map(|k| k.attribute_name().to_owned()).collect())
                .unwrap_or_default();
            if keys != ["pk", "sk"] {
                let detail = lang.f(
                    "cli.check.table_wrong",
                    &[("table", &table), ("keys", &format!("{keys:?}"))],
                );
                findings.push(Check::Table, Status::Blocker, detail, Some("cli.check.table_wrong_fix"));
                return;
            }
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
                Ok(_) => findings.push(
                    Check::Table,
                    Status::Ok,
                    lang.f("cli.check.table_ok", &[("table", &table)]),
                    None,
                ),
                Err(e) => {
                    let e = aws_sdk_dynamodb::error::DisplayErrorContext(&e);
                    let detail = lang.f(
                        "cli.check.table_unreadable",
                        &[("table", &table), ("error", &e.to_string())],
                    );
                    findings.push(
                        Check::Table,
                        Status::Blocker,
                        detail,
                        Some("cli.check.table_unreadable_fix"),
                    );
                }
            }
        }
    }
}

async fn bucket(ctx: &Context, findings: &mut Findings) {
    let lang = findings.lang;
    let bucket = match ctx.bucket().await {
        Ok(Some(bucket)) => bucket,
        Ok(None) => return findings.skip(&[Check::Bucket], "cli.check.why_bucket"),
        Err(e) => return findings.push(Check::Bucket, Status::Blocker, format!("{e:#}"), None),
    };
    let sdk = ctx.aws().await;
    match shared::s3::S3Client::new(sdk).head_bucket(&bucket).await {
        Ok(_) => findings.push(
            Check::Bucket,
            Status::Ok,
            lang.f("cli.check.bucket_ok", &[("bucket", &bucket)]),
            None,
        ),
        Err(e) => {
            let e = e.to_string();
            let detail = lang.f("cli.check.bucket_missing", &[("bucket", &bucket), ("error", &e)]);
            findings.push(Check::Bucket, Status::Blocker, detail, Some("cli.check.bucket_fix"));
        }
    }
}

fn signed_in(props: &OrgProperties, lang: Lang) -> String {
    let org = props.name.as_deref().unwrap_or("?");
    let id = props.id.as_deref().unwrap_or("?");
    let account = match &props.signed_in {
        SignedIn::User(u) => format!("'{}'", u.username),
        SignedIn::App { app_id, .. } => format!("app '{}'", app_id.as_deref().unwrap_or("?")),
    };
    lang.f(
        "cli.check.sign_in_ok",
        &[("account", &account), ("org", org), ("id", id)],
    )
}
