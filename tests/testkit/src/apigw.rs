//! An HTTP API in front of the allocate function, as API Gateway's HTTP API with the IAM
//! authorizer serves it: each request's SigV4 signature is checked against the one access
//! key it knows (a wrong or missing signature is refused with 403 before the function is
//! invoked, as API Gateway does), then the request becomes the API Gateway v2 event, with the
//! authorizer's identity, and the function's answer becomes the HTTP response.
//!
//! What a client such as the `credit-steward` CLI sends is thus checked end to end: the
//! signature, the route, the headers and the body the function reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fixtures::fixture;
use crate::lambda::Invoker;

/// The region the API claims to be in.
pub const REGION: &str = "us-east-1";

/// The identity API Gateway's IAM authorizer reports for the known key (the fixture's).
pub const CALLER_ARN: &str = "arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice";

/// A running API; stopped when dropped.
pub struct HttpApi {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A request the API received.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// `POST`, `GET`…
    pub method: String,
    /// The path.
    pub path: String,
    /// The status it answered.
    pub status: u16,
    /// Its Idempotency-Key header.
    pub idempotency_key: Option<String>,
}

struct State {
    invoker: Invoker,
    function: String,
    access_key: String,
    secret_key: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    requests: AtomicU64,
}

impl HttpApi {
    /// Serves on a free loopback port, invoking `function` through `invoker`; requests must be
    /// signed with `access_key`/`secret_key` for [`REGION`] and `execute-api`.
    pub async fn start(invoker: Invoker, function: &str, access_key: &str, secret_key: &str) -> HttpApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API");
        let port = listener.local_addr().expect("local address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            invoker,
            function: function.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            seen: seen.clone(),
            requests: AtomicU64::new(0),
        });
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { handle(&state, method, uri, headers, body).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpApi { port, seen, task }
    }

    /// The API's root URL, as the stack's `ApiUrl` output gives it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for HttpApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: &State, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, reply) = match verify(state, &method, &uri, &headers, &body) {
        Err(message) => (StatusCode::FORBIDDEN, json!({ "message": message })),
        Ok(()) => route(state, &method, &path, &headers, &body).await,
    };
    state.seen.lock().expect("not poisoned").push(Seen {
        method: method.to_string(),
        path,
        status: status.as_u16(),
        idempotency_key: header("idempotency-key"),
    });
    (status, axum::Json(reply)).into_response()
}

/// Checks the SigV4 signature as API Gateway would: same key, region and service, and the
/// signature recomputed over the signed headers and the body matches.
fn verify(state: &State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("Missing Authentication Token")?;
    let fields = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires 'AWS4-HMAC-SHA256'")?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
    };
    let credential = field("Credential").ok_or("no Credential")?;
    let signed_headers = field("SignedHeaders").ok_or("no SignedHeaders")?;
    let signature = field("Signature").ok_or("no Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != state.access_key {
        return Err("The security token included in the request is invalid.".into());
    }
    if scope[2] != REGION || scope[3] != "execute-api" {
        return Err(format!(
            "Credential should be scoped to a valid region and service: {credential}"
        ));
    }
    let date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .and_then(|d| chrono::NaiveDateTime::parse_from_str(d, "%Y%m%dT%H%M%SZ").ok())
        .ok_or("no valid X-Amz-Date")?;
    let time: SystemTime = date.and_utc().into();
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let url = format!(
        "http://{host}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let to_sign: Vec<(String, String)> = signed_headers
        .split(';')
        .filter(|h| !matches!(*h, "x-amz-date" | "x-amz-security-token" | "x-amz-content-sha256"))
        .map(|h| {
            let value = headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or_default();
            (h.to_owned(), value.to_owned())
        })
        .collect();
    // A session token, when sent, is part of what was signed.
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let identity = Credentials::new(&state.access_key, &state.secret_key, token, None, "apigw").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("execute-api")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        method.as_str(),
        url,
        to_sign.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    let expected = instructions
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| value.rsplit("Signature=").next().map(str::to_owned))
        .ok_or("no signature computed")?;
    if expected == signature {
        Ok(())
    } else {
        Err("The request signature we calculated does not match the signature you provided.".into())
    }
}

/// The API's two routes, as the template declares them.
async fn route(state: &State, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Value) {
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let mut event = fixture("apigw-v2-allocations-iam.json");
    let job = path
        .strip_prefix("/allocations/")
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let route_key = match (method.as_str(), path, job) {
        ("POST", "/allocations", _) => "POST /allocations",
        ("GET", _, Some(id)) => {
            event["pathParameters"] = json!({ "job_id": id });
            "GET /allocations/{job_id}"
        }
        _ => return (StatusCode::NOT_FOUND, json!({ "message": "Not Found" })),
    };
    event["routeKey"] = json!(route_key);
    event["requestContext"]["routeKey"] = json!(route_key);
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method.as_str());
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["requestId"] = json!(format!("apigw-{}-{n}", std::process::id()));
    event["requestContext"]["authorizer"]["iam"]["accessKey"] = json!(state.access_key);
    event["requestContext"]["authorizer"]["iam"]["userArn"] = json!(CALLER_ARN);
    let mut forwarded = serde_json::Map::new();
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            forwarded.insert(name.as_str().to_ascii_lowercase(), json!(v));
        }
    }
    event["headers"] = Value::Object(forwarded);
    if body.is_empty() {
        event.as_object_mut().map(|m| m.remove("body"));
    } else {
        event["body"] = json!(String::from_utf8_lossy(body));
    }
    let out = state.invoker.invoke(&state.function, &event).await;
    if out.function_error.is_some() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "message": "Internal Server Error" }),
        );
    }
    let status = out.payload["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let raw = out.payload["body"].as_str().unwrap_or("null");
    (status, serde_json::from_str(raw).unwrap_or_else(|_| json!(raw)))
}
