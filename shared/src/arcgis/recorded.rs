//! Recorded public responses, read by the client's own decoders.
//!
//! Nothing here can reach ArcGIS Online, so these bodies are the closest thing to it: answers
//! published by Esri (REST reference samples, Esri's own client test mocks) and two live
//! captures, kept verbatim with their source lines in `tests/fixtures/agol/`. Each test asserts
//! the typed result the product relies on; a decoder change that misreads a real answer fails
//! here, not in a customer's org.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::credits::amount::Credits;
use crate::credits::member::Balance;
use crate::credits::usage::{BucketLabel, Buckets};

use super::allocation::refused;
use super::auth::{parse_generate_token, parse_oauth_token};
use super::error::{ApiError, Error};
use super::portal::{CREATE_REPORTS, Capability, MANAGE_CREDITS, parse_org_properties};
use super::report::{ItemStatus, parse_status};
use super::users::{member_from_json, read_lookup};

/// The recorded bodies, by file name, embedded at compile time (a missing file fails the build).
pub(crate) const SAMPLES: &[(&str, &str)] = &[
    (
        "01_generateToken_success.jsonc",
        include_str!("../../../tests/fixtures/agol/01_generateToken_success.jsonc"),
    ),
    (
        "02_generateToken_bad_password.jsonc",
        include_str!("../../../tests/fixtures/agol/02_generateToken_bad_password.jsonc"),
    ),
    (
        "03_oauth2_token.jsonc",
        include_str!("../../../tests/fixtures/agol/03_oauth2_token.jsonc"),
    ),
    (
        "04_portals_self_restjs.jsonc",
        include_str!("../../../tests/fixtures/agol/04_portals_self_restjs.jsonc"),
    ),
    (
        "05_portals_self_docs_excerpt.jsonc",
        include_str!("../../../tests/fixtures/agol/05_portals_self_docs_excerpt.jsonc"),
    ),
    (
        "06_portals_self_subscriptionInfo.jsonc",
        include_str!("../../../tests/fixtures/agol/06_portals_self_subscriptionInfo.jsonc"),
    ),
    (
        "07_community_user_unlimited_live_capture.jsonc",
        include_str!("../../../tests/fixtures/agol/07_community_user_unlimited_live_capture.jsonc"),
    ),
    (
        "08_community_user_views_restjs.jsonc",
        include_str!("../../../tests/fixtures/agol/08_community_user_views_restjs.jsonc"),
    ),
    (
        "09_org_user_search_page_restjs.jsonc",
        include_str!("../../../tests/fixtures/agol/09_org_user_search_page_restjs.jsonc"),
    ),
    (
        "10_assignUserCredits_docs.jsonc",
        include_str!("../../../tests/fixtures/agol/10_assignUserCredits_docs.jsonc"),
    ),
    (
        "11_unassignUserCredits_docs.jsonc",
        include_str!("../../../tests/fixtures/agol/11_unassignUserCredits_docs.jsonc"),
    ),
    (
        "12_createNotification_restjs.jsonc",
        include_str!("../../../tests/fixtures/agol/12_createNotification_restjs.jsonc"),
    ),
    (
        "13_usage_by_member_docstring.jsonc",
        include_str!("../../../tests/fixtures/agol/13_usage_by_member_docstring.jsonc"),
    ),
    (
        "14_item_status_restjs.jsonc",
        include_str!("../../../tests/fixtures/agol/14_item_status_restjs.jsonc"),
    ),
    (
        "15_error_envelopes_restjs.jsonc",
        include_str!("../../../tests/fixtures/agol/15_error_envelopes_restjs.jsonc"),
    ),
];

/// A sample's JSON body: its text without the `//` source lines.
pub(crate) fn sample(name: &str) -> Value {
    let (_, text) = SAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no recorded sample {name}"));
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

fn exact(text: &str) -> Credits {
    Credits::parse_exact(text).expect("an exact amount")
}

fn envelope(body: &Value) -> ApiError {
    ApiError::from_body(body).unwrap_or_else(|| panic!("an error envelope: {body}"))
}

#[test]
fn every_sample_carries_its_source_and_parses() {
    for (name, text) in SAMPLES {
        let source = text
            .lines()
            .take_while(|l| l.starts_with("//"))
            .any(|l| l.contains("source"));
        assert!(source, "{name} names its source");
        let _ = sample(name);
    }
}

#[test]
fn generate_token_reads_the_token_and_its_epoch_ms_expiry() {
    let body = sample("01_generateToken_success.jsonc");
    let expires = body["expires"].as_u64().expect("epoch ms");
    // Half an hour before the recorded expiry, the token has half an hour left.
    let now = UNIX_EPOCH + Duration::from_millis(expires) - Duration::from_secs(1800);
    let (token, lifetime) = parse_generate_token(&body, now, Duration::from_secs(3600)).unwrap();
    assert_eq!(token.expose(), body["token"].as_str().unwrap());
    assert_eq!(lifetime, Duration::from_secs(1800));
    // Read today, the recorded expiry is long past: the requested lifetime is trusted instead.
    let (_, lifetime) = parse_generate_token(&body, SystemTime::now(), Duration::from_secs(3600)).unwrap();
    assert_eq!(lifetime, Duration::from_secs(3600));
}

#[test]
fn a_refused_sign_in_is_an_error_envelope_not_a_token() {
    let body = sample("02_generateToken_bad_password.jsonc");
    assert!(parse_generate_token(&body, SystemTime::now(), Duration::from_secs(60)).is_err());
    let api = envelope(&body);
    assert_eq!(api.code, Some(400));
    assert_eq!(api.message, "Unable to generate token.");
    assert_eq!(api.details, vec!["Invalid username or password."]);
    assert!(!api.is_invalid_token());
}

#[test]
fn oauth_client_credentials_read_seconds_and_the_oauth_error() {
    let body = sample("03_oauth2_token.jsonc");
    let (token, lifetime) = parse_oauth_token(&body["success"], Duration::from_secs(7200)).unwrap();
    assert_eq!(token.expose(), "token");
    assert_eq!(lifetime, Duration::from_secs(1800), "expires_in is seconds");
    let api = envelope(&body["error"]);
    assert_eq!(api.code, Some(400));
    assert_eq!(api.oauth_error.as_deref(), Some("invalid_request"));
    assert_eq!(api.message, "Invalid client_secret");
}

#[test]
fn portals_self_without_a_signed_in_user_is_not_an_admin_view() {
    // Esri's mock leaves `user` and `appInfo` as empty placeholders.
    let body = sample("04_portals_self_restjs.jsonc");
    match parse_org_properties(&body) {
        Err(Error::NotAdminView { missing, .. }) => assert_eq!(missing, vec!["user"]),
        other => panic!("{other:?}"),
    }
    // The documented excerpt has no `user` either; its Java-spelled credits read exactly.
    let docs = sample("05_portals_self_docs_excerpt.jsonc");
    assert_eq!(
        Credits::from_json(&docs["availableCredits"]),
        Some(Credits::whole(50_018_196))
    );
    assert!(matches!(parse_org_properties(&docs), Err(Error::NotAdminView { .. })));
}

#[test]
fn portals_self_with_an_admin_reads_credits_budgeting_contacts_and_privileges() {
    let mut body = sample("04_portals_self_restjs.jsonc");
    let views = sample("08_community_user_views_restjs.jsonc");
    body["user"] = views["OrgAdminUserResponse"].clone();
    let props = parse_org_properties(&body).unwrap();
    assert_eq!(props.id.as_deref(), Some("LjjARY1mkhxulWPq"));
    assert_eq!(props.available_credits, exact("9584.193"));
    assert!(props.budgeting_enabled);
    assert_eq!(props.default_user_credit_assignment, Some(Credits::whole(100)));
    assert_eq!(props.admin_contacts, vec!["dcadmin"]);
    // The org credits are `portals/self.availableCredits`: its `subscriptionInfo` is empty, and
    // the figure in the separate `portals/self/subscriptionInfo` answer is not read.
    assert_eq!(body["subscriptionInfo"], serde_json::json!({}));
    let subscription = sample("06_portals_self_subscriptionInfo.jsonc");
    assert!(subscription.get("availableCredits").is_some());
    // This org_admin's recorded privileges lack manageCredits: privileges decide, not the role.
    match props.ensure(Capability::ManageCredits) {
        Err(Error::MissingPrivileges { missing, .. }) => assert_eq!(missing, vec![MANAGE_CREDITS]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        props.ensure(Capability::CreateReports),
        Err(Error::MissingPrivileges { missing, .. }) if missing == vec![CREATE_REPORTS]
    ));
}

#[test]
fn the_live_unlimited_member_is_unlimited_whatever_available_says() {
    let body = sample("07_community_user_unlimited_live_capture.jsonc");
    assert_eq!(Credits::from_json(&body["assignedCredits"]), Some(-Credits::whole(1)));
    assert_eq!(
        Credits::from_json(&body["availableCredits"]),
        Some(Credits::whole(14_562_242)),
        "1.4562242E7 is the org's credits, read exactly"
    );
    let member = read_lookup(&body, "mokced_user", Some("mockedOrgId12345")).unwrap();
    assert_eq!(member.balance, Balance::Unlimited);
    assert_eq!(member.balance.headroom(), None);
    assert_eq!(member.user_type.as_deref(), Some("GISProfessionalAdvUT"));
    assert_eq!(member_from_json(&body).unwrap().balance, Balance::Unlimited);
    // The same answer naming another org is not a member of this one.
    assert!(matches!(
        read_lookup(&body, "mokced_user", Some("anotherOrg000001")),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn the_public_view_of_a_user_is_not_a_member_of_this_org() {
    let views = sample("08_community_user_views_restjs.jsonc");
    let public = &views["AnonUserResponse"];
    assert!(public.get("orgId").is_none() && public.get("assignedCredits").is_none());
    match read_lookup(public, "jsmith", None) {
        Err(Error::NotFound { username, .. }) => assert_eq!(username, "jsmith"),
        other => panic!("the public view must read as not a member: {other:?}"),
    }
}

#[test]
fn the_admin_views_of_a_member_read_the_exact_balance() {
    let views = sample("08_community_user_views_restjs.jsonc");
    for key in ["GroupMemberUserResponse", "OrgAdminUserResponse"] {
        let view = &views[key];
        let org = view["orgId"].as_str().unwrap();
        let member = read_lookup(view, "jsmith", Some(org)).unwrap();
        assert_eq!(
            member.balance,
            Balance::Limited {
                assigned: Credits::whole(500),
                available: exact("479.50998")
            },
            "{key}"
        );
        assert_eq!(member.balance.consumed(), Some(exact("20.49002")), "{key}");
        // A case-insensitive match is not the member asked for.
        assert!(matches!(
            read_lookup(view, "JSmith", Some(org)),
            Err(Error::NotFound { .. })
        ));
    }
    let custom = read_lookup(&views["GroupMemberUserResponse"], "jsmith", Some("qWAReEOCnD7eTxOe")).unwrap();
    // A custom role (role org_publisher plus a roleId) reads as the member all the same.
    assert_eq!(custom.full_name.as_deref(), Some("John Smith"));
}

#[test]
fn a_page_of_org_users_reads_unlimited_limited_and_disabled_members() {
    let page = sample("09_org_user_search_page_restjs.jsonc");
    assert_eq!(page["nextStart"], -1, "the last page");
    let members: Vec<_> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| member_from_json(u).expect("a complete record"))
        .collect();
    assert_eq!(members.len() as u64, page["total"].as_u64().unwrap());
    let unlimited = members.iter().filter(|m| m.balance == Balance::Unlimited).count();
    assert_eq!(unlimited, 10);
    let jcrozier = members.iter().find(|m| m.username == "jcrozier_dcdev").unwrap();
    assert_eq!(
        jcrozier.balance,
        Balance::Limited {
            assigned: exact("21839.219"),
            available: exact("21839.219")
        }
    );
    assert_eq!(members.iter().filter(|m| m.disabled).count(), 3);
    // Usernames keep their case (`RGwozdz_dcdev`).
    assert!(members.iter().any(|m| m.username == "RGwozdz_dcdev"));
}

#[test]
fn assign_and_unassign_report_refused_members_inside_a_success() {
    let assign = sample("10_assignUserCredits_docs.jsonc");
    assert_eq!(
        refused(&assign["response"], "notAssignedUsers", "assign").unwrap(),
        vec!["user3", "user6"]
    );
    // The request's userAssignments is JSON text of {username, credits} objects.
    let sent: Value = serde_json::from_str(assign["request_form"]["userAssignments"].as_str().unwrap()).unwrap();
    assert_eq!(sent[0]["username"], "user1");
    assert_eq!(Credits::from_json(&sent[3]["credits"]), Some(Credits::whole(500)));
    let unassign = sample("11_unassignUserCredits_docs.jsonc");
    assert_eq!(
        refused(&unassign["response"], "notUnAssignedUsers", "unassign").unwrap(),
        vec!["user8"]
    );
}

#[test]
fn a_notification_answer_is_success_or_a_typed_envelope() {
    let notify = sample("12_createNotification_restjs.jsonc");
    assert!(ApiError::from_body(&notify["response_ok"]).is_none());
    assert_eq!(notify["response_ok"]["success"], true);
    let api = envelope(&notify["response_error"]);
    assert_eq!((api.code, api.message_code.as_deref()), (Some(400), Some("ORG_9001")));
    // Recipients go comma-joined, 25 at most.
    let users = notify["request_form"]["users"].as_str().unwrap();
    assert!(users.starts_with("username0,username1,"));
}

#[test]
fn usage_points_are_strings_with_java_exponents() {
    let usage = sample("13_usage_by_member_docstring.jsonc");
    let point = &usage["data[1]"]["credits"][2];
    let (ts, credits) = crate::credits::usage::parse_point(point).unwrap();
    assert_eq!(ts, 1_672_617_600_000);
    assert_eq!(credits, exact("0.0002"));
    assert!(usage["data[1]"].get("userOrgId").is_none(), "absent, not null");
    // Whole series, with and without `userOrgId`, under either bucket convention.
    for label in [BucketLabel::Start, BucketLabel::End] {
        for (key, user) in [("data[1]", "<user_name1>"), ("data[2]", "<user_name2>")] {
            let body = serde_json::json!({ "data": [usage[key]] }).to_string();
            let mut read = Vec::new();
            crate::arcgis::usage::read_usage(body.as_bytes(), Buckets::daily(label), |s| read.push(s)).unwrap();
            let series = read.pop().unwrap();
            assert_eq!(series.username.as_deref(), Some(user));
            assert_eq!(series.points.len(), 3);
            let total: Credits = series.points.iter().map(|p| p.credits).sum();
            let expected = if key == "data[1]" {
                exact("0.0002")
            } else {
                Credits::ZERO
            };
            assert_eq!(total, expected, "{key} {label:?}");
        }
    }
}

#[test]
fn item_status_reads_completed_and_task_failures() {
    assert_eq!(
        parse_status(&sample("14_item_status_restjs.jsonc")),
        ItemStatus::Completed
    );
    let errors = sample("15_error_envelopes_restjs.jsonc");
    assert_eq!(parse_status(&errors["TaskError"]), ItemStatus::Failed("failed".into()));
    match parse_status(&errors["TaskErrorWithJSON"]) {
        ItemStatus::Failed(message) => assert!(message.contains("Index was outside"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_recorded_error_envelope_is_typed() {
    let errors = sample("15_error_envelopes_restjs.jsonc");
    let api = |key: &str| envelope(&errors[key]);
    assert_eq!(api("ArcGISOnlineError").code, Some(400));
    assert!(api("ArcGISOnlineAuthError").is_invalid_token(), "498");
    let forbidden = api("ArcGISOnlineErrorNoMessageCode");
    assert_eq!((forbidden.code, forbidden.message_code.as_deref()), (Some(403), None));
    let no_code = api("ArcGISOnlineErrorNoCode");
    assert_eq!(no_code.code, None);
    assert!(no_code.message.starts_with("You do not have permissions"));
    let required = api("ArcGISServerTokenRequired");
    assert!(required.is_invalid_token(), "499");
    assert_eq!(required.message_code.as_deref(), Some("GWM_0003"));
    assert_eq!(api("BillingError").code, Some(500));
    // `status: failure` is an error even with code 200.
    assert_eq!(api("BillingErrorWithCode200").code, Some(200));
    // A task failure is a job status, not an envelope.
    assert!(ApiError::from_body(&errors["TaskError"]).is_none());
    assert_eq!(api("GenerateTokenError").details, vec!["Invalid username or password."]);
    let refresh = api("RefreshTokenError");
    assert!(refresh.is_invalid_token());
    assert_eq!(refresh.oauth_error.as_deref(), Some("invalid_request"));
    // Not recorded bodies: envelopes written here from what the file's source lines name
    // (CONT_0001 served with status 200, and the unknown-user message Esri's Python client
    // matches), to pin what the decoders make of them.
    let item = envelope(&serde_json::json!({"error": {"code": 400, "messageCode": "CONT_0001",
        "message": "Item does not exist or is inaccessible.", "details": []}}));
    assert!(item.is_item_not_found());
    let user = envelope(&serde_json::json!({"error": {"code": 400,
        "message": "User does not exist or is inaccessible.", "details": []}}));
    assert!(!user.is_item_not_found());
    assert!(!api("ArcGISOnlineError").is_item_not_found());
}
