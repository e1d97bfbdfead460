//! The HTTP server: request handling with faults, latency and hold points, the loopback-only
//! control API, the storage host for report downloads, and the handle tests hold.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::api::{self, Ctx};
use crate::endpoint::Endpoint;
use crate::faults::{Behaviour, FaultState, Faults};
use crate::holds::{Claimed, Hold, HoldSpec, HoldState, HoldStatus, Holds};
use crate::org::{Org, UsageRecord};
use crate::wire::{AgolError, Format, Params, Reply, render};
use crate::world::{AllocationCall, MemberState, Notification, ReportItem, RequestRecord, World};

/// One simulated ArcGIS Online: the world behind a mutex plus what `reset` goes back to.
pub struct Sim {
    world: Mutex<World>,
    /// Hold points set by tests (not world state: `reset` keeps them).
    holds: Holds,
    /// Set once the simulator stops: held requests are abandoned rather than left waiting.
    stopped: watch::Sender<bool>,
    pristine: Org,
    pristine_behaviour: Behaviour,
    tls: bool,
    port: AtomicU16,
    /// When each answered `/sharing/rest/...` request arrived and was answered: benchmarks
    /// use it to tell when the client was waiting on ArcGIS rather than on something else.
    busy: Mutex<Vec<(Instant, Instant)>>,
}

/// What the fault phase decided for a request.
enum Misbehave {
    None,
    Status {
        status: u16,
        retry_after: Option<u64>,
        after: bool,
    },
    Malformed {
        after: bool,
    },
    Drop {
        after: bool,
    },
    Envelope(AgolError),
}

/// What a request's arrival decided, under the world lock: its place in the sequence, its
/// fault, its latency (jitter drawn) and the holds it is the Nth for.
struct Arrival {
    seq: u64,
    ep: Endpoint,
    decision: Misbehave,
    latency: Duration,
    holds: Claimed,
}

/// A request once its parameters are parsed (a parse error rides along as `__parse_error`).
struct Incoming {
    method: Method,
    headers: HeaderMap,
    /// The host name and port the client used (see [`host_of`]).
    host: Option<String>,
    params: Params,
    token: Option<String>,
}

/// Keeps the books while a request is parked at a hold point: if the handler future is
/// dropped there (the client left) or the simulator stops, the request's holds are marked
/// abandoned and the request log says so.
struct Parked<'a> {
    sim: &'a Sim,
    holds: &'a [Arc<HoldState>],
    seq: u64,
    /// Held before processing: the record to log as never processed if abandoned. `None`:
    /// held after processing, the request is logged already.
    unprocessed: Option<RequestRecord>,
    armed: bool,
}

impl Parked<'_> {
    /// The request goes on: nothing to record on drop.
    fn resume(&mut self) {
        self.armed = false;
        for h in self.holds {
            h.set(HoldStatus::Resumed { seq: self.seq });
        }
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Log first, then tell the holds: a test woken by `settled()` must find the record.
        {
            let mut w = self.sim.world();
            match self.unprocessed.take() {
                Some(mut r) => {
                    // 499: the client closed the request (nginx's code); nothing was sent.
                    r.status = 499;
                    r.outcome = "held:before".into();
                    r.held = vec!["before".into(), "abandoned".into()];
                    w.log(r);
                }
                None => w.note_held(self.seq, "abandoned"),
            }
        }
        for h in self.holds {
            h.set(HoldStatus::Abandoned { seq: self.seq });
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn token_of(params: &Params, headers: &HeaderMap) -> Option<String> {
    params
        .get("token")
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("x-esri-authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(|t| t.trim().to_string())
        })
}

fn gateway_error(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = code.canonical_reason().unwrap_or("Error");
    let mut r = Response::new(Body::from(format!(
        "<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1></body></html>"
    )));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn malformed() -> Response {
    let mut r = Response::new(Body::from(
        r#"{"total":3,"start":1,"num":100,"nextStart":-1,"users":[{"username":"trunc"#,
    ));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated dropped connection",
        ))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The host the client used (`name:port`: the `Host` header, or HTTP/2's `:authority`), for
/// URLs the simulator hands back (sign-in redirects, `owningSystemUrl`, storage redirects).
/// `None` for anything that is not a plain host name or address, so a forged header cannot
/// inject text into a `Location`; callers then use `127.0.0.1:<port>`.
fn host_of(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map(str::to_string)
}

/// The request log's outcome for an operation's reply: `ok` or `error:<code>`.
fn outcome_of(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) => format!("error:{}", e.code),
        Reply::Json(v) if v.get("error").is_some() => {
            format!("error:{}", v["error"]["code"].as_u64().unwrap_or(0))
        }
        _ => "ok".into(),
    }
}

/// Renders what processing produced, outside the world lock.
async fn respond(answer: Result<Response, Reply>, format: Result<Format, AgolError>, ep: &Endpoint) -> Response {
    let format = format.unwrap_or(Format::Json);
    match answer {
        Ok(response) => response,
        // The OAuth pages are for browsers (and for Esri's client, which scrapes them): HTML
        // unless JSON is asked for.
        Err(reply) if format == Format::Html && matches!(ep, Endpoint::OAuthAuthorize | Endpoint::OAuthSignin) => {
            api::auth::oauth_page(reply)
        }
        // Rendering a deferred reply is CPU work (up to a usage series of every member):
        // on a blocking thread it cannot hold up the runtime's other requests.
        Err(reply @ Reply::Deferred(_)) => {
            let name = ep.name();
            tokio::task::spawn_blocking(move || render(reply, format, name))
                .await
                .unwrap_or_else(|e| {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the simulator failed to render {name}: {e}"),
                    )
                        .into_response()
                })
        }
        Err(reply) => render(reply, format, ep.name()),
    }
}

impl Sim {
    /// A simulator for `org` (not yet listening).
    pub fn new(org: Org, behaviour: Behaviour, tls: bool) -> Arc<Sim> {
        Arc::new(Sim {
            world: Mutex::new(World::new(org.clone(), behaviour.clone())),
            holds: Holds::default(),
            stopped: watch::Sender::new(false),
            pristine: org,
            pristine_behaviour: behaviour,
            tls,
            port: AtomicU16::new(0),
            busy: Mutex::new(Vec::new()),
        })
    }

    /// Locks the world for whatever the caller does with it, members included: the filtered
    /// listings kept for them are dropped.
    pub fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.lock_world();
        w.listings.get_mut().clear();
        w
    }

    /// Locks the world for a request. A panic while holding it cannot happen in handlers, but
    /// a poisoned lock must not take the simulator down either. No endpoint changes who is a
    /// member or their role or user type, so the filtered listings stay valid.
    fn lock_world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Back to the fixture: members, credits, tokens, records, faults and behaviour. Holds
    /// stay: they belong to the test driving the simulator, not to the org.
    pub fn reset(&self) {
        *self.world() = World::new(self.pristine.clone(), self.pristine_behaviour.clone());
    }

    /// Sets a hold point (see [`crate::holds`]). Refused when `nth` is 0.
    pub fn hold(&self, spec: HoldSpec) -> Result<Hold, String> {
        self.holds.add(spec).map(Hold::new)
    }

    /// Stops holding: every held request, and every one that reaches a hold point later, is
    /// abandoned (never processed, or its reply never sent), so no handler outlives the
    /// simulator waiting for a release. The handle calls it when dropped.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    fn decide(w: &mut World, ep: &Endpoint, params: &Params, seq: u64, now: Instant) -> Misbehave {
        let name = ep.name();
        let fs = &mut w.faults;
        if let Some(at) = fs.expire_tokens_at
            && seq >= at
        {
            w.tokens_invalid_before = seq;
            fs.expire_tokens_at = None;
        }
        if let Some(t) = fs.faults.drop_connection.clone()
            && fs.drop.check(&t, name, now)
        {
            return Misbehave::Drop {
                after: t.after_processing,
            };
        }
        if let Some(h) = fs.faults.http_error.clone()
            && fs.http_error.check(&h.when, name, now)
        {
            return Misbehave::Status {
                status: h.status,
                retry_after: h.retry_after_secs,
                after: h.when.after_processing,
            };
        }
        if let Some(t) = fs.faults.malformed_json.clone()
            && fs.malformed.check(&t, name, now)
        {
            return Misbehave::Malformed {
                after: t.after_processing,
            };
        }
        if let Some(e) = fs.faults.error_envelope.clone() {
            let about = |m: &str| ep.member() == Some(m) || params.get("username") == Some(m);
            if e.member.as_deref().is_none_or(about) && fs.envelope.check(&e.when, name, now) {
                return Misbehave::Envelope(AgolError::new(e.code, e.message));
            }
        }
        Misbehave::None
    }

    /// Answers one `/sharing/rest/...` request: arrival (sequence number, fault, latency,
    /// holds), the inbound half of the latency, a hold before processing, processing under
    /// the world lock, rendering, a hold after processing, the rest of the latency.
    async fn handle(self: Arc<Self>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let now = Instant::now();
        let parsed = Params::parse(uri.query(), &headers, &body);
        let Arrival {
            seq,
            ep,
            decision,
            latency,
            holds,
        } = self.arrive(uri.path(), parsed.as_ref().ok(), now);
        let params = parsed.unwrap_or_else(|e| {
            // Keep the parse error: answer it below through the normal path.
            let mut p = Params::default();
            p.0.push(("__parse_error".into(), e.message));
            p
        });
        let token = token_of(&params, &headers);
        let mut record = RequestRecord {
            seq,
            method: method.to_string(),
            endpoint: ep.name().to_string(),
            path: uri.path().to_string(),
            params: params.redacted(),
            authenticated: token.is_some(),
            status: 200,
            outcome: "ok".into(),
            held: Vec::new(),
        };
        let incoming = Incoming {
            host: host_of(&headers, &uri),
            method,
            headers,
            params,
            token,
        };
        // Latency is the round trip as the client sees it: half on the way in (a request
        // given up meanwhile is never processed), the rest on the way out, counted from the
        // arrival so that the simulator's own processing is part of it, not added to it.
        if !latency.is_zero() {
            tokio::time::sleep(latency / 2).await;
        }
        // Holds wait here, outside the world lock: a request whose client leaves while held
        // before processing is dropped with this future and never processed.
        if !holds.before.is_empty() {
            if !self.park(&holds.before, seq, Some(record.clone())).await {
                return dropped();
            }
            record.held.push("before".into());
        }
        if !holds.after.is_empty() {
            record.held.push("after".into());
        }
        let (answer, format) = self.process(&incoming, seq, &ep, decision, record);
        let response = respond(answer, format, &ep).await;
        if !holds.after.is_empty() && !self.park(&holds.after, seq, None).await {
            return dropped();
        }
        if !latency.is_zero() {
            crate::delay::until(now + latency).await;
        }
        response
    }

    /// The arrival, under the world lock: sequence number, endpoint, fault decision, this
    /// request's latency and the holds it is the Nth for.
    fn arrive(&self, path: &str, params: Option<&Params>, now: Instant) -> Arrival {
        let mut w = self.lock_world();
        w.seq += 1;
        let seq = w.seq;
        let ep = Endpoint::route(path, &w.org.id.clone());
        let decision = match params {
            Some(p) => Self::decide(&mut w, &ep, p, seq, now),
            None => Misbehave::None,
        };
        let latency = w.faults.latency();
        // Counted under the world lock, so a hold's Nth follows the sequence numbers.
        let holds = self.holds.claim(ep.name());
        Arrival {
            seq,
            ep,
            decision,
            latency,
            holds,
        }
    }

    /// Parks a request at a hold point until every hold that caught it is released; false if
    /// the simulator stopped first. Dropping the future while parked (the client left)
    /// records the abandonment (see [`Parked`]).
    async fn park(&self, holds: &[Arc<HoldState>], seq: u64, unprocessed: Option<RequestRecord>) -> bool {
        for h in holds {
            h.set(HoldStatus::Held { seq });
        }
        let mut parked = Parked {
            sim: self,
            holds,
            seq,
            unprocessed,
            armed: true,
        };
        let mut stopped = self.stopped.subscribe();
        for h in holds {
            tokio::select! {
                () = h.wait_released() => {}
                _ = stopped.wait_for(|s| *s) => return false,
            }
        }
        parked.resume();
        true
    }

    /// Runs the operation itself: authentication, then dispatch.
    fn run(&self, w: &mut World, req: &Incoming, ep: &Endpoint, seq: u64) -> Reply {
        if let Some(e) = req.params.get("__parse_error") {
            return AgolError::new(400, e).into();
        }
        let referer = req.headers.get(header::REFERER).and_then(|v| v.to_str().ok());
        let caller = match api::auth::authenticate(w, req.token.as_deref(), referer, now_ms()) {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let port = self.port.load(Ordering::Relaxed);
        let ctx = Ctx {
            params: &req.params,
            caller,
            method: &req.method,
            now_ms: now_ms(),
            seq,
            tls: self.tls,
            scheme: if self.tls { "https" } else { "http" },
            port,
            host: req.host.clone().unwrap_or_else(|| format!("127.0.0.1:{port}")),
        };
        api::dispatch(w, ep, &ctx)
    }

    /// Processes the request under the world lock and logs it. Faults answer at once; a
    /// normal reply is rendered after the lock is released, so serializing a page of members
    /// never blocks other requests.
    fn process(
        &self,
        req: &Incoming,
        seq: u64,
        ep: &Endpoint,
        decision: Misbehave,
        mut record: RequestRecord,
    ) -> (Result<Response, Reply>, Result<Format, AgolError>) {
        let format = Format::from_params(&req.params);
        // The world lock lives in this function only: nothing here awaits.
        let mut w = self.lock_world();
        let (answer, outcome) = match decision {
            Misbehave::Envelope(e) => {
                let o = format!("fault:error_envelope:{}", e.code);
                (Err(Reply::Error(e)), o)
            }
            Misbehave::Status {
                status,
                retry_after,
                after,
            } => {
                if after {
                    self.run(&mut w, req, ep, seq);
                }
                (Ok(gateway_error(status, retry_after)), format!("fault:http_{status}"))
            }
            Misbehave::Malformed { after } => {
                if after {
                    self.run(&mut w, req, ep, seq);
                }
                (Ok(malformed()), "fault:malformed_json".into())
            }
            Misbehave::Drop { after } => {
                if after {
                    self.run(&mut w, req, ep, seq);
                }
                (Ok(dropped()), "fault:drop_connection".into())
            }
            Misbehave::None => {
                let reply = match &format {
                    Ok(_) => self.run(&mut w, req, ep, seq),
                    Err(e) => Reply::Error(e.clone()),
                };
                let outcome = outcome_of(&reply);
                (Err(reply), outcome)
            }
        };
        record.status = match &answer {
            Ok(r) => r.status().as_u16(),
            Err(Reply::Redirect(_)) => 302,
            Err(_) => 200,
        };
        record.outcome = outcome;
        w.log(record);
        (answer, format)
    }

    /// The storage host's download: no token expected (a pre-signed URL); one that arrives
    /// anyway is counted as a leak.
    fn storage(&self, id: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
        let params = Params::parse(query, headers, &[]).unwrap_or_default();
        let mut w = self.lock_world();
        w.seq += 1;
        let carried_token = params.get("token").is_some()
            || headers.contains_key("x-esri-authorization")
            || headers.contains_key(header::AUTHORIZATION);
        if carried_token {
            w.storage_token_leaks += 1;
        }
        let ok = params.get("sig") == Some(api::reports::storage_sig(id).as_str());
        let reply = if ok {
            api::reports::download(&mut w, id)
        } else {
            let mut r = Response::new(Body::from("<Error><Code>AccessDenied</Code></Error>"));
            *r.status_mut() = StatusCode::FORBIDDEN;
            return r;
        };
        let seq = w.seq;
        w.log(RequestRecord {
            seq,
            method: "GET".into(),
            endpoint: "storage".into(),
            path: format!("/_storage/{id}"),
            params: params.redacted(),
            authenticated: carried_token,
            status: 200,
            outcome: "ok".into(),
            held: Vec::new(),
        });
        render(reply, Format::Json, "storage")
    }
}

/// The current state of every member and the org's credits (control API and handle).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Org available credits now.
    pub available_credits: f64,
    /// `creditAssignments`.
    pub budgeting: Option<bool>,
    /// Every member's credit state.
    pub members: Vec<MemberState>,
}

/// The control API changes state and shows the whole org: loopback clients only, even when
/// the simulator is bound to another address.
fn loopback_only(peer: &SocketAddr) -> Result<(), Box<Response>> {
    if peer.ip().is_loopback() {
        Ok(())
    } else {
        Err(Box::new(
            (StatusCode::FORBIDDEN, "the control API answers loopback clients only").into_response(),
        ))
    }
}

type S = State<Arc<Sim>>;
type Peer = ConnectInfo<SocketAddr>;

fn control_router() -> Router<Arc<Sim>> {
    fn view<T: Serialize>(sim: &Sim, peer: &SocketAddr, f: impl FnOnce(&World) -> T) -> Response {
        match loopback_only(peer) {
            Ok(()) => Json(f(&sim.world())).into_response(),
            Err(r) => *r,
        }
    }
    fn change(sim: &Sim, peer: &SocketAddr, f: impl FnOnce(&mut World) -> Result<(), String>) -> Response {
        if let Err(r) = loopback_only(peer) {
            return *r;
        }
        match f(&mut sim.world()) {
            Ok(()) => Json(json!({"success": true})).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
        }
    }
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route(
            "/_sim/state",
            get(|State(s): S, ConnectInfo(p): Peer| async move {
                view(&s, &p, |w| StateSnapshot {
                    available_credits: w.org.available_credits,
                    budgeting: w.org.credit_assignments,
                    members: w.member_states(),
                })
            }),
        )
        .route(
            "/_sim/org",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.org.clone()) }),
        )
        .route(
            "/_sim/requests",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.requests.clone()) }),
        )
        .route(
            "/_sim/counts",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.counts.clone()) }),
        )
        .route(
            "/_sim/notifications",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.notifications.clone()) }),
        )
        .route(
            "/_sim/allocations",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.allocation_calls.clone()) }),
        )
        .route(
            "/_sim/reports",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.reports.clone()) }),
        )
        .route(
            "/_sim/faults",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.faults.faults.clone()) })
                .put(|State(s): S, ConnectInfo(p): Peer, Json(f): Json<Faults>| async move {
                    change(&s, &p, |w| {
                        w.faults = FaultState::new(f, w.seq);
                        Ok(())
                    })
                })
                .delete(|State(s): S, ConnectInfo(p): Peer| async move {
                    change(&s, &p, |w| {
                        w.faults = FaultState::new(Faults::default(), w.seq);
                        Ok(())
                    })
                }),
        )
        .route(
            "/_sim/behaviour",
            get(|State(s): S, ConnectInfo(p): Peer| async move { view(&s, &p, |w| w.behaviour.clone()) }).put(
                |State(s): S, ConnectInfo(p): Peer, Json(b): Json<Behaviour>| async move {
                    change(&s, &p, |w| {
                        w.behaviour = b;
                        Ok(())
                    })
                },
            ),
        )
        .route(
            "/_sim/consume",
            post(
                |State(s): S, ConnectInfo(p): Peer, Json(r): Json<UsageRecord>| async move {
                    change(&s, &p, |w| w.consume(r))
                },
            ),
        )
        .route(
            "/_sim/reset",
            post(|State(s): S, ConnectInfo(p): Peer| async move {
                if let Err(r) = loopback_only(&p) {
                    return *r;
                }
                s.reset();
                Json(json!({"success": true})).into_response()
            }),
        )
}

/// Hold points over the control API, for scripts driving the binary: `POST /_sim/holds`
/// with a [`HoldSpec`] answers `{"id"}`; `GET /_sim/holds` lists them with their status;
/// `GET /_sim/holds/{id}/reached` answers once the request is held (a long poll: the client
/// chooses the timeout); `POST /_sim/holds/{id}/release` lets it go.
fn hold_router() -> Router<Arc<Sim>> {
    async fn list(State(s): S, ConnectInfo(p): Peer) -> Response {
        match loopback_only(&p) {
            Ok(()) => Json(s.holds.views()).into_response(),
            Err(r) => *r,
        }
    }
    async fn add(State(s): S, ConnectInfo(p): Peer, Json(spec): Json<HoldSpec>) -> Response {
        if let Err(r) = loopback_only(&p) {
            return *r;
        }
        match s.hold(spec) {
            Ok(h) => Json(json!({"id": h.id()})).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
        }
    }
    async fn reached(State(s): S, ConnectInfo(p): Peer, Path(id): Path<u64>) -> Response {
        if let Err(r) = loopback_only(&p) {
            return *r;
        }
        let Some(h) = s.holds.get(id) else {
            return (StatusCode::NOT_FOUND, "no such hold").into_response();
        };
        Hold::new(h.clone()).reached().await;
        Json(h.view()).into_response()
    }
    async fn release(State(s): S, ConnectInfo(p): Peer, Path(id): Path<u64>) -> Response {
        if let Err(r) = loopback_only(&p) {
            return *r;
        }
        match s.holds.get(id) {
            Some(h) => {
                Hold::new(h).release();
                Json(json!({"success": true})).into_response()
            }
            None => (StatusCode::NOT_FOUND, "no such hold").into_response(),
        }
    }
    Router::new()
        .route("/_sim/holds", get(list).post(add))
        .route("/_sim/holds/{id}/reached", get(reached))
        .route("/_sim/holds/{id}/release", post(release))
}

/// The whole application: control API, storage host, and sharing/rest for everything else.
pub fn app(sim: Arc<Sim>) -> Router {
    control_router()
        .merge(hold_router())
        .route(
            "/_storage/{id}",
            get(
                |State(s): S, Path(id): Path<String>, RawQuery(q): RawQuery, headers: HeaderMap| async move {
                    s.storage(&id, q.as_deref(), &headers)
                },
            ),
        )
        .fallback(
            |State(s): S, method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
                let arrived = Instant::now();
                let response = s.clone().handle(method, uri, headers, body).await;
                s.busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((arrived, Instant::now()));
                response
            },
        )
        .with_state(sim)
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, PEM-encoded.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate, to give clients as a trust root.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl TlsIdentity {
    /// Generates a fresh self-signed identity.
    pub fn self_signed() -> Result<TlsIdentity, String> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
        Ok(TlsIdentity {
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        })
    }
}

/// How to run a simulator.
#[derive(Clone, Default)]
pub struct SimOptions {
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
    /// Behaviour switches at start (and after `reset`).
    pub behaviour: Behaviour,
}

/// Serves `sim` on an already bound listener until the future is dropped.
pub async fn serve(listener: std::net::TcpListener, sim: Arc<Sim>, tls: Option<TlsIdentity>) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    sim.port.store(listener.local_addr()?.port(), Ordering::Relaxed);
    let make = app(sim).into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(tokio::net::TcpListener::from_std(listener)?, make).await,
        Some(id) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config =
                axum_server::tls_rustls::RustlsConfig::from_pem(id.cert_pem.into_bytes(), id.key_pem.into_bytes())
                    .await?;
            axum_server::from_tcp_rustls(listener, config)?.serve(make).await
        }
    }
}

/// A running simulator, for tests: inspection and fault switches. Stops when dropped.
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    scheme: &'static str,
    cert_pem: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // Connections already accepted outlive the listener task: stopping the simulator
        // abandons their held requests instead of leaving them parked forever.
        self.sim.stop();
        self.task.abort();
    }
}

/// Starts a plain-HTTP simulator for `org` on `127.0.0.1:0`.
pub async fn start(org: Org) -> std::io::Result<SimHandle> {
    start_with(org, SimOptions::default()).await
}

/// Starts a simulator with options on `127.0.0.1:0`.
pub async fn start_with(org: Org, opts: SimOptions) -> std::io::Result<SimHandle> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let tls = opts.tls.is_some();
    let sim = Sim::new(org, opts.behaviour, tls);
    let cert_pem = opts.tls.as_ref().map(|t| t.cert_pem.clone());
    let s = sim.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, s, opts.tls).await {
            tracing::error!(error = %e, "portal-sim stopped");
        }
    });
    Ok(SimHandle {
        sim,
        addr,
        scheme: if tls { "https" } else { "http" },
        cert_pem,
        task,
    })
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (or https).
    pub fn base_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.addr.port())
    }

    /// The portal URL clients are configured with: `<base>/sharing/rest`.
    pub fn rest_url(&self) -> String {
        format!("{}/sharing/rest", self.base_url())
    }

    /// The self-signed certificate when serving HTTPS.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Direct access to the simulator (for what the helpers below do not cover).
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Replaces the faults in force (trigger counters restart).
    pub fn set_faults(&self, faults: Faults) {
        let mut w = self.sim.world();
        let seq = w.seq;
        w.faults = FaultState::new(faults, seq);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// Replaces the behaviour switches.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.sim.world().behaviour = b;
    }

    /// Changes some behaviour switches.
    pub fn update_behaviour(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.sim.world().behaviour);
    }

    /// The request log (secrets redacted).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.sim.world().requests.clone()
    }

    /// Requests per endpoint name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.sim.world().counts.clone()
    }

    /// Requests to one endpoint (names as [`Endpoint::name`]).
    pub fn request_count(&self, endpoint: &str) -> u64 {
        self.sim.world().counts.get(endpoint).copied().unwrap_or(0)
    }

    /// When each answered ArcGIS request arrived and was answered (latency included), in
    /// the order they were answered: the time a client spent waiting on ArcGIS.
    pub fn busy_intervals(&self) -> Vec<(Instant, Instant)> {
        self.sim.busy.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All requests so far.
    pub fn total_requests(&self) -> u64 {
        self.sim.world().counts.values().sum()
    }

    /// Successful state-changing ArcGIS calls (allocation, notification, update, report,
    /// delete): what "nothing was written" assertions check.
    pub fn writes(&self) -> Vec<RequestRecord> {
        const WRITES: &[&str] = &[
            "portals/self/assignUserCredits",
            "portals/self/unassignUserCredits",
            "portals/self/createNotification",
            "portals/self/update",
            "community/users/{user}/report",
            "content/users/{owner}/items/{id}/delete",
        ];
        self.requests()
            .into_iter()
            .filter(|r| WRITES.contains(&r.endpoint.as_str()) && r.ok())
            .collect()
    }

    /// Forgets the request log and counts (state stays), so a test can measure one phase.
    pub fn clear_log(&self) {
        let mut w = self.sim.world();
        w.requests.clear();
        w.counts.clear();
    }

    /// Notifications sent.
    pub fn notifications(&self) -> Vec<Notification> {
        self.sim.world().notifications.clone()
    }

    /// Allocation calls received.
    pub fn allocation_calls(&self) -> Vec<AllocationCall> {
        self.sim.world().allocation_calls.clone()
    }

    /// Report items (including deleted ones).
    pub fn reports(&self) -> Vec<ReportItem> {
        self.sim.world().reports.clone()
    }

    /// Every member's current credit state.
    pub fn members(&self) -> Vec<MemberState> {
        self.sim.world().member_states()
    }

    /// One member's current credit state.
    pub fn member(&self, username: &str) -> Option<MemberState> {
        self.members().into_iter().find(|m| m.username == username)
    }

    /// The org as it is now (allocations and usage included).
    pub fn org(&self) -> Org {
        self.sim.world().org.clone()
    }

    /// Requests that reached the storage host with a token (must stay 0).
    pub fn storage_token_leaks(&self) -> u64 {
        self.sim.world().storage_token_leaks
    }

    /// Records consumption (usage record, member balance and org credits move together).
    pub fn consume(&self, rec: UsageRecord) -> Result<(), String> {
        self.sim.world().consume(rec)
    }

    /// Starts a new budget period on `day_ms` (midnight UTC): usage before it stops counting
    /// against allocations but stays in the usage history, as when allocations renew. What
    /// lets a member be far above the thresholds yet spending fast.
    pub fn start_budget_period(&self, day_ms: i64) {
        let mut w = self.sim.world();
        w.org.budget_period_start = day_ms;
        w.reindex();
    }

    /// Back to the fixture (holds stay).
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// Parks the Nth request to an endpoint at a phase of its handling until the returned
    /// [`Hold`] is released: the fault matrix's way to kill a client at an exact moment of a
    /// write (see [`crate::holds`]). Several holds may be active at once.
    ///
    /// # Panics
    /// When `spec.nth` is 0 (it is 1-based).
    pub fn hold(&self, spec: HoldSpec) -> Hold {
        self.sim.hold(spec).unwrap_or_else(|e| panic!("{e}"))
    }
}
