//! Forwarding one HTTP request, unchanged, to another server: what the test proxies
//! ([`crate::proxy`], [`crate::latency`]) have in common.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An upstream server's answer, read whole.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Headers that describe one hop's framing, not the message.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ]
    .contains(name)
}

/// The request's head and whole body, or a 400 naming `who` (the proxy).
pub(crate) async fn read(request: Request, who: &str) -> Result<(Parts, Bytes), Response> {
    let (parts, body) = request.into_parts();
    match to_bytes(body, usize::MAX).await {
        Ok(body) => Ok((parts, body)),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("{who}: unreadable body: {e}")).into_response()),
    }
}

/// Sends the request (method, path and query, headers but the hop-by-hop ones, body) to
/// `base` and reads the answer whole, or a 502 naming `who` and `upstream`.
pub(crate) async fn send(
    http: &reqwest::Client,
    base: &str,
    parts: &Parts,
    body: Bytes,
    who: &str,
    upstream: &str,
) -> Result<Answer, Response> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http.request(parts.method.clone(), format!("{base}{path}")).body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            request = request.header(name, value);
        }
    }
    let bad_gateway = |message: String| (StatusCode::BAD_GATEWAY, message).into_response();
    let answer = request
        .send()
        .await
        .map_err(|e| bad_gateway(format!("{who}: {upstream} did not answer: {e}")))?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer
        .bytes()
        .await
        .map_err(|e| bad_gateway(format!("{who}: {upstream}'s answer broke off: {e}")))?;
    Ok(Answer { status, headers, body })
}

/// The answer as a response (hop-by-hop headers aside; repeated headers kept).
pub(crate) fn respond(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    for (name, value) in &answer.headers {
        if !hop_by_hop(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
