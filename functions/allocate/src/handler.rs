//! The HTTP edge: an API Gateway (HTTP API v2) request becomes a
//! [`credit_core::allocate::Incoming`], the allocator's [`Reply`] becomes the response.
//!
//! The ArcGIS client is cached per secret value across warm invocations: it carries the token
//! (one `generateToken` per token lifetime instead of one per call, fewer sign-ins to trip
//! ArcGIS's lockout) and the TLS connection pool. When the secret cache returns a different
//! secret (rotation, after its TTL) a new client is built; when ArcGIS rejects the credentials
//! both caches are dropped so the next call reads the secret again.

use std::convert::Infallible;
use std::fmt;

use chrono::Utc;
use credit_core::allocate::{Allocator, Incoming, Reply, SetupError};
use credit_core::arcgis::Client;
use credit_core::config::{Config, ConfigError};
use credit_core::connect::{ArcgisSource, ConnectError};
use credit_core::ledger::Ledger;
use credit_core::secrets::SecretCache;
use lambda_http::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use lambda_http::http::{HeaderMap, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response, tracing};

/// Why the function cannot start; logged in full, then the init fails.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Environment variables are invalid (every problem listed).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Guardrails or thresholds cannot be used.
    #[error("invalid allocation settings: {0}")]
    Setup(#[from] SetupError),
    /// No ledger table: there would be no audit trail and no idempotency.
    #[error(
        "LEDGER_TABLE is not set: allocate records its audit trail and idempotency keys there. \
        (Only local runs with ALLOW_UNAUTHENTICATED=true fall back to an in-memory ledger.)"
    )]
    NoLedger,
}

/// Everything built once per cold start.
pub struct State {
    config: Config,
    allocator: Allocator,
    ledger: Ledger,
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
    pub async fn from_env() -> Result<State, StartupError> {
        let config = Config::from_env()?;
        let allocator = Allocator::from_config(&config)?;
        let ledger = match &config.ledger_table {
            Some(table) => Ledger::dynamo_from_env(table.clone()).await,
            None if config.allow_unauthenticated => {
                tracing::warn!("LEDGER_TABLE unset: local run, audit and idempotency keys kept in memory only");
                Ledger::memory()
            }
            None => return Err(StartupError::NoLedger),
        };
        let secrets = SecretCache::from_env(config.secret_ttl).await;
        let arcgis = ArcgisSource::from_secret(secrets, config.arcgis_secret_id.clone());
        Ok(State {
            config,
            allocator,
            ledger,
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
    let reply = respond(&state.allocator, &state.ledger, &request, state.client()).await;
    if reply.credentials_rejected {
        tracing::warn!("ArcGIS rejected the credentials: the secret will be read again on the next call");
        state.arcgis.forget_credentials();
    }
    Ok(into_response(reply))
}

/// Runs the allocator on one API Gateway request (tests call this with their own client).
pub async fn respond<F, E>(allocator: &Allocator, ledger: &Ledger, request: &Request, connect: F) -> Reply
where
    F: Future<Output = Result<Client, E>>,
    E: fmt::Display,
{
    let parts = RequestParts::from_request(request);
    let incoming = Incoming {
        method: &parts.method,
        path: &parts.path,
        content_type: parts.content_type.as_deref(),
        idempotency_key: parts.idempotency_key.as_deref(),
        caller: parts.caller.as_deref(),
        request_id: &parts.request_id,
        body: request.body().as_ref(),
        now: Utc::now(),
    };
    allocator.handle(ledger, &incoming, connect).await
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
    /// The authenticated caller: IAM `userArn` (else `callerId`), or the JWT `sub` claim.
    pub caller: Option<String>,
    /// API Gateway's request id (what clients see as `apigw-requestid`), else Lambda's.
    pub request_id: String,
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
        let caller = context.and_then(|c| c.authorizer.as_ref()).and_then(|a| {
            let iam = a
                .iam
                .as_ref()
                .and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone()));
            let jwt = a.jwt.as_ref().and_then(|jwt| jwt.claims.get("sub").cloned());
            iam.or(jwt).filter(|c| !c.trim().is_empty())
        });
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
            caller,
            request_id,
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
    use credit_core::arcgis::{ClientConfig, Credentials, Secret};
    use portal_sim::generate::{ADMIN_PASSWORD, ADMIN_USERNAME};
    use portal_sim::{GenParams, SimHandle, generate};

    const IAM: &str = include_str!("../../../tests/fixtures/apigw-v2-allocations-iam.json");
    const JWT: &str = include_str!("../../../tests/fixtures/apigw-v2-allocations-jwt.json");
    const ANONYMOUS: &str = include_str!("../../../tests/fixtures/apigw-v2-allocations-anonymous.json");

    fn request(fixture: &str) -> Request {
        lambda_http::request::from_str(fixture).expect("the fixture is an API Gateway v2 request")
    }

    fn allocator(vars: &[(&str, &str)]) -> Allocator {
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .or_else(|| (name == "ARCGIS_SECRET_ID").then(|| "arcgis/test".to_owned()))
        })
        .expect("valid test config");
        Allocator::from_config(&config).expect("valid settings")
    }

    async fn sim() -> SimHandle {
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).expect("a date");
        portal_sim::start(generate(&GenParams::new(40, 7, as_of)))
            .await
            .expect("portal-sim starts")
    }

    fn client(sim: &SimHandle) -> Client {
        Client::new(ClientConfig::new(
            sim.rest_url(),
            Credentials::UserPassword {
                username: ADMIN_USERNAME.to_owned(),
                password: Secret::new(ADMIN_PASSWORD),
            },
        ))
        .expect("client builds")
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
                caller: Some("arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice".into()),
                request_id: "CZB6jhN0joEEMsw=".into(),
            }
        );
    }

    #[test]
    fn jwt_fixture_yields_the_subject_and_strips_the_stage() {
        let req = request(JWT);
        let parts = RequestParts::from_request(&req);
        assert_eq!(parts.caller.as_deref(), Some("5f0c4b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f"));
        assert_eq!(parts.path, "/allocations");
        assert_eq!(parts.content_type.as_deref(), Some("application/json; charset=utf-8"));
        assert_eq!(parts.idempotency_key, None);
        // The base64 body arrives decoded.
        assert_eq!(
            req.body().as_ref(),
            br#"{"policy":"critical","top_up_to":200,"dry_run":true}"#
        );
    }

    #[test]
    fn anonymous_fixture_has_no_caller() {
        let parts = RequestParts::from_request(&request(ANONYMOUS));
        assert_eq!(parts.caller, None);
        assert_eq!(parts.request_id, "CZB8zYxWvUtSrQp=");
    }

    #[tokio::test]
    async fn an_authenticated_fixture_runs_end_to_end_against_the_simulator() {
        let sim = sim().await;
        let ledger = Ledger::memory();
        let allocator = allocator(&[]);
        let connect = async { Ok::<_, ConnectError>(client(&sim)) };

        // The fixture as sent: a dry run.
        let reply = respond(&allocator, &ledger, &request(IAM), connect).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["dry_run"], true);
        assert_eq!(reply.body["members"][0]["status"], "would_assign");
        assert_eq!(reply.body["members"][0]["after"]["allocation"], 1100.0);
        assert!(sim.writes().is_empty());

        // The same request applied.
        let mut req = request(IAM);
        *req.body_mut() =
            Body::from(r#"{"allocations":[{"username":"jdoe","top_up_to":700}],"reason":"ticket CS-42"}"#);
        let response =
            into_response(respond(&allocator, &ledger, &req, async { Ok::<_, ConnectError>(client(&sim)) }).await);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = json(&response);
        assert_eq!(body["members"][0]["status"], "assigned", "{body}");
        assert_eq!(
            body["caller"],
            "arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice"
        );
        // jdoe: 1000 allocated, 400 consumed → 1100 so that 700 are available.
        assert_eq!(sim.member("jdoe").and_then(|m| m.allocation), Some(1100.0));
        let audit = ledger.changes_on(Utc::now().date_naive()).await.expect("memory ledger");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].request_id, "CZB6jhN0joEEMsw=");
    }

    #[tokio::test]
    async fn an_anonymous_fixture_is_refused_before_anything_is_read() {
        let sim = sim().await;
        let ledger = Ledger::memory();
        let reply = respond(&allocator(&[]), &ledger, &request(ANONYMOUS), async {
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

        // The local-only switch lets it through under a fixed caller name.
        let local = allocator(&[("ALLOW_UNAUTHENTICATED", "true")]);
        let mut req = request(ANONYMOUS);
        *req.body_mut() = Body::from(r#"{"allocations":[{"username":"jdoe","set":500}],"dry_run":true}"#);
        let reply = respond(&local, &ledger, &req, async { Ok::<_, ConnectError>(client(&sim)) }).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["caller"], "unauthenticated-local");
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
