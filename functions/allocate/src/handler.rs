//! The HTTP edge: an API Gateway (HTTP API v2) request becomes a
//! [`shared::allocate::Incoming`], the allocator's [`Reply`] becomes the response.
//!
//! The ArcGIS client is cached per secret value across warm invocations: it carries the token
//! (one `generateToken` per token lifetime instead of one per call, fewer sign-ins to trip
//! ArcGIS's lockout) and the TLS connection pool. When the secret cache returns a different
//! secret (rotation, after its TTL) a new client is built; when ArcGIS rejects the credentials
//! both caches are dropped so the next call reads the secret again.

use std::convert::Infallible;
use std::fmt;

use chrono::Utc;
use lambda_http::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use lambda_http::http::{HeaderMap, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use shared::allocate::jobs::RESPOND_ASYNC;
use shared::allocate::settings::{FALLBACK_TIMEOUT, LedgerTarget};
use shared::allocate::{self, AllocateSettings, Incoming, JobQueue, Reply};
use shared::apply::Deadline;
use shared::arcgis::Client;
use shared::config::Config;
use shared::connect::{ArcgisSource, ConnectError};
use shared::ledger::{Caller, CallerKind, Ledger};
use shared::startup::{Platform, StartupError};

/// Everything built once per cold start.
pub struct State {
    config: Config,
    settings: AllocateSettings,
    ledger: Ledger,
    queue: Option<JobQueue>,
    arcgis: ArcgisSource,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Reads the configuration and builds the clients; fails fast with every problem.
    pub fn from_env() -> Result<State, StartupError> {
        let config = Config::from_env()?;
        let settings = AllocateSettings::from_config(&config, Platform::from_env())?;
        let ledger = match &settings.ledger {
            LedgerTarget::Table(table) => Ledger::dynamo_from_env(table.clone()),
            LedgerTarget::Memory => {
                tracing::warn!("LEDGER_TABLE unset: local run, audit and idempotency keys kept in memory only");
                Ledger::memory()
            }
        };
        let queue = match &settings.queue_url {
            Some(url) => Some(JobQueue::sqs_from_env(url.clone())),
            None => {
                tracing::warn!(
                    "ALLOCATION_QUEUE_URL unset: every request is answered synchronously, however long it takes"
                );
                None
            }
        };
        let arcgis = ArcgisSource::from_config(&config);
        Ok(State {
            config,
            settings,
            ledger,
            queue,
            arcgis,
        })
    }

    /// The ArcGIS client for the current secret (cached while the secret is unchanged).
    async fn client(&self) -> Result<Client, ConnectError> {
        self.arcgis.client(&self.config).await
    }
}

/// The invocation handler: every outcome is an HTTP response, so it cannot fail.
pub async fn handle(state: &State, request: Request) -> Result<Response<Body>, Infallible> {
    let reply = respond(
        &state.settings,
        &state.ledger,
        state.queue.as_ref(),
        &request,
        state.client(),
    )
    .await;
    if reply.credentials_rejected {
        tracing::warn!("ArcGIS rejected the credentials: the secret will be read again on the next call");
        state.arcgis.forget_credentials();
    }
    Ok(into_response(reply))
}

/// Runs the allocator on one API Gateway request (tests call this with their own client).
pub async fn respond<F, E>(
    settings: &AllocateSettings,
    ledger: &Ledger,
    queue: Option<&JobQueue>,
    request: &Request,
    connect: F,
) -> Reply
where
    F: Future<Output = Result<Client, E>>,
    E: fmt::Display,
{
    let parts = RequestParts::from_request(request);
    let now = Utc::now();
    let deadline_ms = request.lambda_context_ref().map_or(0, |c| c.deadline);
    let incoming = Incoming {
        method: &parts.method,
        path: &parts.path,
        content_type: parts.content_type.as_deref(),
        idempotency_key: parts.idempotency_key.as_deref(),
        caller: parts.caller.clone(),
        request_id: &parts.request_id,
        body: request.body().as_ref(),
        respond_async: parts.respond_async,
        deadline: Deadline::from_context(deadline_ms, now, FALLBACK_TIMEOUT),
    };
    allocate::handle(settings, ledger, queue, &incoming, connect).await
}

/// What allocate reads from an API Gateway request, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParts {
    /// HTTP method.
    pub method: String,
    /// Path without the stage prefix (`/prod/allocations` → `/allocations`).
    pub path: String,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Idempotency-Key` (non-UTF-8 bytes replaced, so validation names the problem).
    pub idempotency_key: Option<String>,
    /// The authenticated caller, as the IAM or JWT authorizer established it.
    pub caller: Option<Caller>,
    /// API Gateway's request id (what clients see as `apigw-requestid`), else Lambda's.
    pub request_id: String,
    /// `Prefer: respond-async` (RFC 7240): the caller wants a 202 and a job to poll.
    pub respond_async: bool,
}

/// The caller from the authorizer context: for IAM the principal id (`userId`, `AROA…:session`
/// for a role), the account and the ARN, never only the session name the caller chose; for a
/// JWT the subject and the issuer.
fn caller(ctx: &lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext) -> Option<Caller> {
    let authorizer = ctx.authorizer.as_ref()?;
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    if let Some(iam) = &authorizer.iam {
        let principal_id = nonempty(&iam.user_id)
            .or_else(|| nonempty(&iam.caller_id))
            .or_else(|| nonempty(&iam.user_arn))?;
        return Some(Caller {
            kind: CallerKind::Iam,
            principal_id,
            account: nonempty(&iam.account_id),
            arn: nonempty(&iam.user_arn),
            issuer: None,
        });
    }
    let jwt = authorizer.jwt.as_ref()?;
    let sub = jwt.claims.get("sub").cloned().filter(|s| !s.trim().is_empty())?;
    Some(Caller {
        kind: CallerKind::Jwt,
        principal_id: sub,
        account: None,
        arn: None,
        issuer: jwt.claims.get("iss").cloned(),
    })
}

impl RequestParts {
    /// Extracts the parts from a request built by lambda_http.
    pub fn from_request(request: &Request) -> RequestParts {
        let context = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => Some(ctx),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let stage = context.and_then(|c| c.stage.as_deref());
        let raw = request.raw_http_path();
        let raw = if raw.is_empty() { request.uri().path() } else { raw };
        let path = match stage {
            Some(stage) if stage != "$default" => raw
                .strip_prefix(&format!("/{stage}"))
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .unwrap_or(raw),
            _ => raw,
        };
        let request_id = context
            .and_then(|c| c.request_id.clone())
            .or_else(|| request.lambda_context_ref().map(|c| c.request_id.clone()))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        let headers = request.headers();
        RequestParts {
            method: request.method().as_str().to_owned(),
            path: path.to_owned(),
            content_type: header(headers, "content-type"),
            idempotency_key: header(headers, "idempotency-key"),
            caller: context.and_then(caller),
            request_id,
            respond_async: headers.get_all("prefer").iter().any(|v| {
                String::from_utf8_lossy(v.as_bytes()).split(',').any(|p| {
                    p.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case(RESPOND_ASYNC))
                })
            }),
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The HTTP response for a reply: JSON body, status, extra headers.
pub fn into_response(reply: Reply) -> Response<Body> {
    let mut response = Response::new(Body::from(reply.body.to_string()));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use shared::credits::member::{Balance, Credits};
    use shared::ledger::{IntendedChange, Scope};

    use portal_sim::SimHandle;

    const IAM: &str = include_str!("../../../tests/fixtures/apigw-v2-allocations-iam.json");
    const JWT: &str = include_str!("../../../tests/fixtures/apigw-v2-allocations-jwt.json");
    const ANONYMOUS: &str = include_str!("../../../tests/fixtures/apigw-v2-allocations-anonymous.json");

    fn request(fixture: &str) -> Request {
        lambda_http::request::from_str(fixture).expect("the fixture is an API Gateway v2 request")
    }

    fn allocator(vars: &[(&str, &str)]) -> AllocateSettings {
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .or_else(|| (name == "ARCGIS_SECRET_ID").then(|| "arcgis/test".to_owned()))
                .or_else(|| (name == "LEDGER_TABLE").then(|| "ledger".to_owned()))
        })
        .expect("valid test config");
        AllocateSettings::from_config(&config, Platform::Local).expect("valid settings")
    }

    async fn sim() -> SimHandle {
        testkit::arcgis::sim_with(40, 7).await
    }

    fn client(sim: &SimHandle) -> Client {
        testkit::arcgis::admin_client(sim)
    }

    fn json(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).expect("a JSON body")
    }

    #[test]
    fn iam_fixture_yields_the_caller_arn_and_request_parts() {
        let parts = RequestParts::from_request(&request(IAM));
        assert_eq!(
            parts,
            RequestParts {
                method: "POST".into(),
                path: "/allocations".into(),
                content_type: Some("application/json".into()),
                idempotency_key: Some("7d7e9b2e-4c1a-4f57-9a57-5b0b2b8d1c11".into()),
                caller: Some(Caller {
                    kind: CallerKind::Iam,
                    principal_id: "AROAEXAMPLEROLEID:alice".into(),
                    account: Some("111122223333".into()),
                    arn: Some("arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice".into()),
                    issuer: None,
                }),
                request_id: "CZB6jhN0joEEMsw=".into(),
                respond_async: false,
            }
        );
    }

    #[test]
    fn prefer_respond_async_is_read_among_other_preferences() {
        let mut req = request(IAM);
        req.headers_mut().insert(
            "prefer",
            HeaderValue::from_static("return=minimal, Respond-Async; wait=5"),
        );
        assert!(RequestParts::from_request(&req).respond_async);
        req.headers_mut()
            .insert("prefer", HeaderValue::from_static("return=respond-async"));
        assert!(!RequestParts::from_request(&req).respond_async);
    }

    #[test]
    fn jwt_fixture_yields_the_subject_and_strips_the_stage() {
        let req = request(JWT);
        let parts = RequestParts::from_request(&req);
        assert_eq!(
            parts.caller.as_ref().map(|c| c.principal_id.as_str()),
            Some("5f0c4b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f")
        );
        // The issuer is kept beside the subject (a `sub` means something only with its `iss`).
        assert_eq!(
            parts.caller,
            Some(Caller {
                kind: CallerKind::Jwt,
                principal_id: "5f0c4b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f".into(),
                account: None,
                arn: None,
                issuer: Some("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_EXAMPLE".into()),
            })
        );
        assert_eq!(parts.path, "/allocations");
        assert_eq!(parts.content_type.as_deref(), Some("application/json; charset=utf-8"));
        assert_eq!(parts.idempotency_key, None);
        // The base64 body arrives decoded.
        assert_eq!(
            req.body().as_ref(),
            br#"{"policy":"critical","top_up_to":200,"dry_run":true}"#
        );
        // What people read as the caller (the reply's `caller`, logs) names this subject: the
        // issuer alone is the same for every user of the identity provider.
        let shown = parts.caller.as_ref().map(Caller::display).unwrap_or_default();
        assert!(
            shown.contains("5f0c4b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f"),
            "a JWT caller is displayed as {shown:?}"
        );
    }

    #[test]
    fn anonymous_fixture_has_no_caller() {
        let parts = RequestParts::from_request(&request(ANONYMOUS));
        assert_eq!(parts.caller, None);
        assert_eq!(parts.idempotency_key, None);
        assert_eq!(parts.request_id, "CZB8zYxWvUtSrQp=");
    }

    /// The IAM fixture's Idempotency-Key, caller and request id.
    const KEY: &str = "7d7e9b2e-4c1a-4f57-9a57-5b0b2b8d1c11";
    const ALICE_PRINCIPAL: &str = "AROAEXAMPLEROLEID:alice";
    const ALICE_ACCOUNT: &str = "111122223333";
    const ALICE_ARN: &str = "arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice";
    const IAM_REQUEST_ID: &str = "CZB6jhN0joEEMsw=";

    fn with_body(mut req: Request, body: &str) -> Request {
        *req.body_mut() = Body::from(body.to_owned());
        req
    }

    fn with_key(mut req: Request, key: &str) -> Request {
        req.headers_mut()
            .insert("idempotency-key", HeaderValue::from_str(key).expect("a header value"));
        req
    }

    fn credits(value: &serde_json::Value) -> Credits {
        Credits::from_json(value).unwrap_or_else(|| panic!("{value} is not an amount"))
    }

    #[tokio::test]
    async fn an_authenticated_fixture_runs_end_to_end_against_the_simulator() {
        let sim = sim().await;
        let ledger = Ledger::memory();
        let allocator = allocator(&[]);
        let connect = || async { Ok::<_, ConnectError>(client(&sim)) };
        let alice_scope = Scope::of_key(Some(ALICE_ACCOUNT), ALICE_PRINCIPAL, KEY);
        // jdoe: 1000 allocated, 400 consumed.
        let jdoe_before = Balance::Limited {
            assigned: Credits::whole(1000),
            available: Credits::whole(600),
        };

        // The fixture as sent: a dry run. It neither claims the key nor writes anything.
        let reply = respond(&allocator, &ledger, None, &request(IAM), connect()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["dry_run"], true);
        assert_eq!(reply.body["members"][0]["status"], "would_assign");
        assert_eq!(reply.body["members"][0]["after"]["allocation"], 1100.0);
        // Exact amounts are written as exact JSON numbers: 1100, never 1100.0 or float noise.
        assert_eq!(reply.body["members"][0]["after"]["allocation"], serde_json::json!(1100));
        assert_eq!(reply.body["members"][0]["after"]["available"], serde_json::json!(700));
        assert_eq!(reply.body["summary"]["total_increase"], serde_json::json!(100));
        let text = into_response(reply).into_body();
        let text = std::str::from_utf8(text.as_ref()).unwrap();
        assert!(
            text.contains(r#""allocation":1100,"#) && !text.contains("1100.0"),
            "{text}"
        );
        assert!(sim.writes().is_empty());
        assert!(sim.allocation_calls().is_empty());
        assert_eq!(
            ledger.load_request(&alice_scope).await.unwrap(),
            None,
            "a dry run claims nothing"
        );

        // The same request applied, but without an Idempotency-Key: refused before anything
        // is read, naming the header.
        let apply_body = r#"{"allocations":[{"username":"jdoe","top_up_to":700}],"reason":"ticket CS-42"}"#;
        let mut keyless = with_body(request(IAM), apply_body);
        keyless.headers_mut().remove("idempotency-key");
        let requests_before = sim.total_requests();
        let reply = respond(&allocator, &ledger, None, &keyless, connect()).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.body["code"], "invalid_request");
        assert!(
            reply.body["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["field"] == "Idempotency-Key"),
            "{}",
            reply.body
        );
        assert_eq!(sim.total_requests(), requests_before, "nothing read");
        assert!(sim.writes().is_empty());

        // With the fixture's key: applied.
        let org_before = Credits::from_f64(sim.org().available_credits).unwrap();
        let response = into_response(
            respond(
                &allocator,
                &ledger,
                None,
                &with_body(request(IAM), apply_body),
                connect(),
            )
            .await,
        );
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert!(response.headers().get(allocate::REPLAY_HEADER).is_none());
        let body = json(&response);
        assert_eq!(body["members"][0]["status"], "assigned", "{body}");
        assert_eq!(body["caller"], ALICE_ARN);
        assert_eq!(
            body["caller_identity"],
            serde_json::json!({
                "kind": "iam",
                "principal_id": ALICE_PRINCIPAL,
                "account": ALICE_ACCOUNT,
                "arn": ALICE_ARN,
            })
        );
        assert_eq!(body["request_id"], IAM_REQUEST_ID);
        assert_eq!(body["reason"], "ticket CS-42");
        assert_eq!(body["summary"]["assigned"], 1);
        assert_eq!(body["incomplete"], serde_json::Value::Null);
        assert_eq!(
            body["members"][0]["after"],
            serde_json::json!({"allocation": 1100, "available": 700})
        );
        // The org's figures add up exactly.
        let increase = credits(&body["summary"]["total_increase"]);
        assert_eq!(increase, Credits::whole(100));
        assert_eq!(credits(&body["org"]["available_before"]), org_before);
        assert_eq!(credits(&body["org"]["available_after"]), org_before - increase);
        assert_eq!(
            credits(&body["org"]["unpromised_after"]),
            org_before - credits(&body["org"]["promised_to_members"]) - increase
        );
        // jdoe: 1000 allocated, 400 consumed → 1100 so that 700 are available, sent as exact
        // decimal text.
        assert_eq!(sim.member("jdoe").and_then(|m| m.allocation), Some(1100.0));
        let calls = sim.allocation_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].requested(), vec![("jdoe".to_owned(), Some(1100.0))]);
        let sent = sim
            .requests()
            .into_iter()
            .find(|r| r.endpoint == "portals/self/assignUserCredits")
            .expect("assignUserCredits was called");
        assert_eq!(
            sent.param("userAssignments"),
            Some(r#"[{"username":"jdoe","credits":1100}]"#)
        );

        // The audit trail: one intent for the batch, written before it was sent, and one
        // change, read back at the plan.
        let day = Utc::now().date_naive();
        let alice = Caller {
            kind: CallerKind::Iam,
            principal_id: ALICE_PRINCIPAL.into(),
            account: Some(ALICE_ACCOUNT.into()),
            arn: Some(ALICE_ARN.into()),
            issuer: None,
        };
        let audit = ledger.changes_on(day).await.expect("memory ledger");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].request_id, IAM_REQUEST_ID);
        assert_eq!(audit[0].scope, alice_scope.as_str());
        assert_eq!(audit[0].caller, alice);
        assert_eq!(audit[0].source, allocate::AUDIT_SOURCE);
        assert_eq!(audit[0].reason.as_deref(), Some("ticket CS-42"));
        assert_eq!(audit[0].username, "jdoe");
        assert_eq!(audit[0].before, jdoe_before);
        assert_eq!(audit[0].planned, Credits::whole(1100));
        assert_eq!(
            audit[0].observed,
            Balance::Limited {
                assigned: Credits::whole(1100),
                available: Credits::whole(700)
            }
        );
        assert!(audit[0].matches_plan);
        let intents = ledger.intents_on(day).await.expect("memory ledger");
        assert_eq!(intents.len(), 1, "one batch, one intent");
        assert_eq!(intents[0].batch, 0);
        assert_eq!(intents[0].scope, alice_scope.as_str());
        assert_eq!(intents[0].request_id, IAM_REQUEST_ID);
        assert_eq!(intents[0].caller, alice);
        assert_eq!(intents[0].planned_at, audit[0].planned_at);
        assert!(intents[0].at <= audit[0].at, "the intent precedes the change");
        assert_eq!(
            intents[0].members,
            vec![IntendedChange {
                username: "jdoe".into(),
                before: jdoe_before,
                target: Credits::whole(1100),
            }]
        );

        // A retry with the same key and body is a replay: the same answer, nothing sent again.
        let replay = respond(
            &allocator,
            &ledger,
            None,
            &with_body(request(IAM), apply_body),
            connect(),
        )
        .await;
        assert_eq!(replay.status, 200, "{}", replay.body);
        assert!(
            replay.headers.contains(&(allocate::REPLAY_HEADER, "true".to_owned())),
            "{:?}",
            replay.headers
        );
        assert_eq!(replay.body, body);
        // The same key with another body: refused, nothing sent.
        let reused = respond(
            &allocator,
            &ledger,
            None,
            &with_body(
                request(IAM),
                r#"{"allocations":[{"username":"jdoe","top_up_to":900}],"reason":"ticket CS-42"}"#,
            ),
            connect(),
        )
        .await;
        assert_eq!(reused.status, 409, "{}", reused.body);
        assert_eq!(reused.body["code"], "idempotency_key_reused");

        // Another caller's same key is a fresh request of its own: planned anew (jdoe already
        // has 700 available, so nothing to change), never alice's replay.
        let jwt = with_key(with_body(request(JWT), apply_body), KEY);
        let other = respond(&allocator, &ledger, None, &jwt, connect()).await;
        assert_eq!(other.status, 200, "{}", other.body);
        assert!(!other.headers.iter().any(|(name, _)| *name == allocate::REPLAY_HEADER));
        assert_eq!(other.body["caller_identity"]["kind"], "jwt");
        assert_eq!(other.body["members"][0]["status"], "skipped", "{}", other.body);
        assert_eq!(other.body["summary"]["total_increase"], serde_json::json!(0));

        assert_eq!(sim.allocation_calls().len(), 1, "one allocation call in all");
        assert_eq!(ledger.changes_on(day).await.unwrap().len(), 1);
        assert_eq!(ledger.intents_on(day).await.unwrap().len(), 1);
    }

    /// The JWT fixture's subject and issuer, as API Gateway's JWT authorizer passes them.
    const JWT_SUBJECT: &str = "5f0c4b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f";
    const JWT_ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_EXAMPLE";

    #[tokio::test]
    async fn a_jwt_authorized_allocation_is_audited_under_the_tokens_subject() {
        // What the optional JWT API delivers: no IAM identity, the verified token's claims.
        let sim = sim().await;
        let ledger = Ledger::memory();
        let allocator = allocator(&[]);
        let body = r#"{"allocations":[{"username":"jdoe","top_up_to":700}],"reason":"Power Automate flow 12"}"#;
        let req = with_key(with_body(request(JWT), body), KEY);
        let reply = respond(&allocator, &ledger, None, &req, async {
            Ok::<_, ConnectError>(client(&sim))
        })
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["caller"], JWT_SUBJECT);
        assert_eq!(reply.body["caller_identity"]["kind"], "jwt");
        assert_eq!(sim.allocation_calls().len(), 1, "the change was sent");

        let subject = Caller {
            kind: CallerKind::Jwt,
            principal_id: JWT_SUBJECT.into(),
            account: None,
            arn: None,
            issuer: Some(JWT_ISSUER.into()),
        };
        let day = Utc::now().date_naive();
        let audit = ledger.changes_on(day).await.expect("memory ledger");
        assert_eq!(audit.len(), 1);
        assert_eq!(
            audit[0].caller, subject,
            "the audit trail names the token's subject and issuer"
        );
        assert_eq!(audit[0].username, "jdoe");
        assert_eq!(audit[0].reason.as_deref(), Some("Power Automate flow 12"));
        assert_eq!(
            audit[0].scope,
            Scope::of_key(Some(JWT_ISSUER), JWT_SUBJECT, KEY).as_str()
        );
        let intents = ledger.intents_on(day).await.expect("memory ledger");
        assert_eq!(intents[0].caller, subject);
    }

    #[tokio::test]
    async fn an_anonymous_fixture_is_refused_before_anything_is_read() {
        let sim = sim().await;
        let ledger = Ledger::memory();
        let reply = respond(&allocator(&[]), &ledger, None, &request(ANONYMOUS), async {
            Ok::<_, ConnectError>(client(&sim))
        })
        .await;
        assert_eq!(reply.status, 401);
        assert!(
            reply.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("no authenticated caller"))
        );
        assert_eq!(sim.total_requests(), 0);

        // The local-only switch lets it through under a fixed caller name, but a change still
        // needs an Idempotency-Key (the fixture as sent has none): refused before any read.
        let local = allocator(&[("ALLOW_UNAUTHENTICATED", "true")]);
        let reply = respond(&local, &ledger, None, &request(ANONYMOUS), async {
            Ok::<_, ConnectError>(client(&sim))
        })
        .await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert!(
            reply.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid request"))
        );
        assert!(
            reply.body["problems"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["field"] == "Idempotency-Key")),
            "{}",
            reply.body
        );
        assert_eq!(sim.total_requests(), 0);

        let req = with_body(
            request(ANONYMOUS),
            r#"{"allocations":[{"username":"jdoe","set":500}],"dry_run":true}"#,
        );
        let reply = respond(&local, &ledger, None, &req, async {
            Ok::<_, ConnectError>(client(&sim))
        })
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["caller"], "unauthenticated-local");
        assert_eq!(reply.body["caller_identity"]["kind"], "local");
        assert_eq!(reply.body["members"][0]["status"], "would_assign");
        assert_eq!(reply.body["members"][0]["after"]["allocation"], serde_json::json!(500));
        assert!(sim.writes().is_empty());
    }

    #[test]
    fn replies_become_json_responses_with_their_headers() {
        let response = into_response(Reply {
            status: 405,
            headers: vec![("allow", "POST".into())],
            body: serde_json::json!({"error": "x"}),
            credentials_rejected: false,
        });
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "POST");
        assert_eq!(json(&response)["error"], "x");
    }
}
