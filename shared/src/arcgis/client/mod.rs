//! The HTTP core shared by every operation: URL building, `f=json`, the Referer, the token
//! header, error envelopes, retries, redirects for downloads, and the request counter.

use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{self, HeaderValue};
use serde_json::Value;

use super::auth::{CachedToken, Token};
use super::credentials::Credentials;
use super::endpoint::{Endpoint, Method};
use super::error::{ApiError, Error, TransportKind, excerpt, redact_url};
use super::limiter::Limiter;
use super::retry::{self, RetryPolicy, jitter, parse_retry_after};

/// The header ArcGIS reads tokens from. Never the URL: URLs end up in logs.
const TOKEN_HEADER: &str = "x-esri-authorization";
/// Redirect hops followed for a download before giving up.
const MAX_REDIRECTS: u32 = 5;

/// Everything needed to build a [`Client`]. [`ClientConfig::new`] fills the defaults.
///
/// `Debug` shows the portal URL's scheme and host only: the URL comes from the secret and
/// may carry a password or a token.
#[derive(Clone)]
pub struct ClientConfig {
    /// The org URL (`https://<org>.maps.arcgis.com`) or its `.../sharing/rest` URL.
    pub portal_url: String,
    /// How to sign in.
    pub credentials: Credentials,
    /// The fixed Referer a `client=referer` token is bound to; sent on every request.
    pub referer: String,
    /// Lifetime asked of `generateToken`/`oauth2/token`, in minutes.
    pub token_minutes: u32,
    /// Per-request timeout (connect + response).
    pub http_timeout: Duration,
    /// Automatic retry bounds for repeatable operations.
    pub retry: RetryPolicy,
    /// The most requests in flight to the org at once (member-list pages, lookups, reads):
    /// the ceiling of the adaptive limit, which halves when ArcGIS throttles and grows back
    /// ([`super::limiter`]).
    pub list_concurrency: usize,
    /// The member count from which a `portals/self/users` total may be capped (search's
    /// documented cap; whether the listing has one is unverified), so that an org this large
    /// is listed by partition ([`crate::arcgis::users::LISTING_CAP`] by default). Never above
    /// the real cap: a capped total below it would pass for the org's size.
    pub listing_cap: u64,
    /// How long to wait for a report item to finish processing.
    pub report_deadline: Duration,
    /// First delay between report status polls (grows ×1.5 up to 10 s).
    pub report_poll_interval: Duration,
    /// How long a new report item may answer "item not found" before that is an error (a new
    /// item takes seconds to become visible; Esri's own client waits 15 s).
    pub report_visibility_grace: Duration,
    /// Extra trusted root certificates (PEM), e.g. a local simulator's self-signed CA.
    pub extra_root_certificates_pem: Option<Vec<u8>>,
}

impl ClientConfig {
    /// A configuration with credit-steward's defaults for everything but the portal and
    /// credentials.
    pub fn new(portal_url: impl Into<String>, credentials: Credentials) -> Self {
        ClientConfig {
            portal_url: portal_url.into(),
            credentials,
            referer: "credit-steward".to_owned(),
            token_minutes: 60,
            http_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            list_concurrency: 8,
            listing_cap: super::users::LISTING_CAP,
            report_deadline: Duration::from_secs(300),
            report_poll_interval: Duration::from_secs(1),
            report_visibility_grace: super::report::ITEM_VISIBILITY_GRACE,
            extra_root_certificates_pem: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("portal", &redact_url(&self.portal_url))
            .field("credentials", &self.credentials)
            .field("referer", &self.referer)
            .field("token_minutes", &self.token_minutes)
            .field("http_timeout", &self.http_timeout)
            .field("retry", &self.retry)
            .field("list_concurrency", &self.list_concurrency)
            .field("listing_cap", &self.listing_cap)
            .field("report_deadline", &self.report_deadline)
            .field("report_poll_interval", &self.report_poll_interval)
            .field("report_visibility_grace", &self.report_visibility_grace)
            .field(
                "extra_root_certificates_pem",
                &self.extra_root_certificates_pem.as_ref().map(Vec::len),
            )
            .finish()
    }
}

/// An ArcGIS Online client for one org and one set of credentials.
///
/// Cheap to clone (shared state behind an `Arc`): clones share the token cache, the
/// connection pool and the request counter. [`Client::until`] gives a clone whose every
/// call ends by an absolute instant, so a Lambda invocation returns before it is killed.
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<Inner>,
    /// No request is sent, and no retry wait ends, at or after this instant.
    deadline: Option<Instant>,
}

pub(super) struct Inner {
    http: reqwest::Client,
    /// `.../sharing/rest/`, always with a trailing slash.
    rest: Url,
    referer: HeaderValue,
    pub(super) credentials: Credentials,
    pub(super) referer_text: String,
    pub(super) token_minutes: u32,
    pub(super) token: Mutex<Option<CachedToken>>,
    /// Serialises sign-ins so concurrent calls that find the token stale sign in once.
    pub(super) sign_in: tokio::sync::Mutex<()>,
    pub(super) token_generation: AtomicU64,
    retry: RetryPolicy,
    /// The per-request timeout, shortened per request to the time left before a deadline.
    http_timeout: Duration,
    pub(super) list_concurrency: usize,
    /// How many requests the org gets at once, adapted to its throttling.
    pub(super) limiter: Limiter,
    pub(super) listing_cap: u64,
    pub(super) report_deadline: Duration,
    pub(super) report_poll_interval: Duration,
    pub(super) report_visibility_grace: Duration,
    /// The org's id, learnt from `portals/self` once: tells members from outside users.
    pub(super) org_id: tokio::sync::OnceCell<String>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("portal", &redact_url(self.inner.rest.as_str()))
            .field("credentials", &self.inner.credentials)
            .field("requests", &self.requests_made())
            .field(
                "time_left",
                &self.deadline.map(|d| d.saturating_duration_since(Instant::now())),
            )
            .finish_non_exhaustive()
    }
}

/// Why a successful (2xx) body could not be used.
pub(super) enum DecodeError {
    /// ArcGIS's error envelope, inside HTTP 200.
    Envelope(Box<ApiError>),
    /// Not the JSON expected (truncated, HTML, wrong shape).
    Json(serde_json::Error),
}

/// Turns a successful body into what the operation returns. A plain function, so decoding
/// happens inside the retry loop (a truncated body is retried like any transient failure).
pub(super) type Decoder<T> = fn(&Bytes) -> Result<T, DecodeError>;

/// Turns a successful body into what the operation returns *as it arrives*, on a blocking
/// thread, so an answer of tens of megabytes (usage per member of a large org, a credits
/// report) is never held whole. Called afresh on every attempt: a retry starts from nothing.
pub(super) type StreamDecoder<T> = Arc<dyn Fn(&mut dyn Read) -> Result<T, DecodeError> + Send + Sync>;

/// How a successful body is read.
enum BodyDecoder<T> {
    /// Read whole, then decoded.
    Whole(Decoder<T>),
    /// Decoded while it arrives.
    Streamed(StreamDecoder<T>),
}

/// A body excerpt's worth of bytes, kept from a streamed body for error messages.
const STREAM_EXCERPT_BYTES: usize = 512;

/// Decodes any JSON answer, checking for the error envelope.
pub(super) fn json_value(body: &Bytes) -> Result<Value, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    match ApiError::from_body(&value) {
        Some(api) => Err(DecodeError::Envelope(Box::new(api))),
        None => Ok(value),
    }
}

/// ArcGIS's error envelope, when `body` is one (JSON with `error`, or `status: failure`).
pub(super) fn envelope_in(body: &[u8]) -> Option<ApiError> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(ApiError::from_body)
}

/// Keeps a file body as is, unless it is an error envelope (item not ready, no access).
pub(super) fn file(body: &Bytes) -> Result<Bytes, DecodeError> {
    if body.first() == Some(&b'{')
        && let Some(api) = envelope_in(body)
    {
        return Err(DecodeError::Envelope(Box::new(api)));
    }
    Ok(body.clone())
}

/// One operation's request: what is called, where, with what, and how it is named in errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exchange<'a> {
    /// The operation (method, authentication, retry safety).
    pub(super) endpoint: Endpoint,
    /// Its URL.
    pub(super) url: &'a Url,
    /// Its parameters (`f=json` is added).
    pub(super) params: &'a [(&'a str, String)],
    /// Operation and target, for errors and logs.
    pub(super) what: &'a str,
}

impl Client {
    /// Builds a client; makes no request (sign-in happens on first use).
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        install_ring_provider();
        let rest = rest_base(&config.portal_url)?;
        let referer = HeaderValue::from_str(&config.referer).map_err(|_| Error::InvalidInput {
            what: "ArcGIS client".into(),
            reason: "the referer contains characters not allowed in an HTTP header".into(),
        })?;
        if config.token_minutes == 0
            || config.list_concurrency == 0
            || config.retry.max_attempts == 0
            || config.listing_cap == 0
        {
            return Err(Error::InvalidInput {
                what: "ArcGIS client".into(),
                reason: "token minutes, list concurrency, retry attempts and the listing cap must be at least 1".into(),
            });
        }
        let mut builder = reqwest::Client::builder()
            // Redirects are followed by hand, and only for downloads: reqwest would forward
            // X-Esri-Authorization to another host (it only strips `Authorization`).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.list_concurrency.max(2))
            .user_agent(concat!("credit-steward/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_root_certificates_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Build(e.to_string()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| Error::Build(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                rest,
                referer,
                credentials: config.credentials,
                referer_text: config.referer,
                token_minutes: config.token_minutes,
                token: Mutex::new(None),
                sign_in: tokio::sync::Mutex::new(()),
                token_generation: AtomicU64::new(0),
                retry: config.retry,
                http_timeout: config.http_timeout,
                list_concurrency: config.list_concurrency,
                limiter: Limiter::new(config.list_concurrency),
                listing_cap: config.listing_cap,
                report_deadline: config.report_deadline,
                report_poll_interval: config.report_poll_interval,
                report_visibility_grace: config.report_visibility_grace,
                org_id: tokio::sync::OnceCell::new(),
                requests: AtomicU64::new(0),
            }),
            deadline: None,
        })
    }

    /// This client bounded by `deadline` (the invocation's deadline minus a margin): the
    /// clone shares the token cache, sign-ins, connection pool and request counter, but no
    /// call it makes waits or sends past that instant. Calls begun later fail at once with
    /// [`Error::DeadlineReached`]; retries stop when the next wait would end past it, and
    /// each request's timeout is shortened to the time left. An earlier deadline this client
    /// already carries is kept: a bound is never extended.
    pub fn until(&self, deadline: Instant) -> Client {
        Client {
            inner: self.inner.clone(),
            deadline: Some(self.deadline.map_or(deadline, |d| d.min(deadline))),
        }
    }

    /// The absolute deadline every call of this client respects, if any ([`Client::until`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// HTTP requests sent so far by this client and its clones (sign-ins, retries and
    /// redirect hops included), for logs and benchmarks.
    pub fn requests_made(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The `.../sharing/rest/` base URL in use. Its path may come from the secret: for
    /// messages and logs use [`redact_url`], which keeps the scheme and host.
    pub fn rest_url(&self) -> &Url {
        &self.inner.rest
    }

    /// `rest` + path segments, each percent-encoded (usernames and ids are data, not paths).
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.rest.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Runs an operation that answers JSON: token, retries, one re-sign-in on 498/499.
    pub(super) async fn call(
        &self,
        endpoint: Endpoint,
        url: &Url,
        params: &[(&str, String)],
        what: &str,
    ) -> Result<Value, Error> {
        self.call_with(endpoint, url, params, what, json_value).await
    }

    /// Like [`Client::call`], decoding the body with `decode`.
    pub(super) async fn call_with<T: Send + 'static>(
        &self,
        endpoint: Endpoint,
        url: &Url,
        params: &[(&str, String)],
        what: &str,
        decode: Decoder<T>,
    ) -> Result<T, Error> {
        self.call_decoding(endpoint, url, params, what, &BodyDecoder::Whole(decode))
            .await
    }

    /// Like [`Client::call`], decoding the body with `decode` while it arrives (see
    /// [`StreamDecoder`]).
    pub(super) async fn call_streamed<T: Send + 'static>(
        &self,
        endpoint: Endpoint,
        url: &Url,
        params: &[(&str, String)],
        what: &str,
        decode: StreamDecoder<T>,
    ) -> Result<T, Error> {
        self.call_decoding(endpoint, url, params, what, &BodyDecoder::Streamed(decode))
            .await
    }

    async fn call_decoding<T: Send + 'static>(
        &self,
        endpoint: Endpoint,
        url: &Url,
        params: &[(&str, String)],
        what: &str,
        decode: &BodyDecoder<T>,
    ) -> Result<T, Error> {
        // Checked before a sign-in, so the error names this operation, not generateToken.
        self.check_deadline(what)?;
        let exchange = Exchange {
            endpoint,
            url,
            params,
            what,
        };
        if !endpoint.authenticated {
            return self.execute_decoding(&exchange, None, decode).await;
        }
        let token = self.access_token().await?;
        match self.execute_decoding(&exchange, Some(&token), decode).await {
            // Expired or revoked (e.g. the server restarted): sign in again once and repeat
            // this call. Safe for any operation: a rejected token means nothing was done.
            Err(e) if e.is_invalid_token() && self.can_sign_in_again() => {
                tracing::info!(operation = endpoint.name, what, "token rejected; signing in again");
                self.forget_token(token.generation);
                let token = self.access_token().await?;
                self.execute_decoding(&exchange, Some(&token), decode).await
            }
            other => other,
        }
    }

    /// The retry loop around [`Client::send_once`] and decoding. Retries end when the next
    /// wait would end past the policy's deadline (counted from here) or the client's
    /// absolute deadline, whichever comes first; a longer `Retry-After` ends the call at once.
    pub(super) async fn execute<T: Send + 'static>(
        &self,
        exchange: &Exchange<'_>,
        token: Option<&Token>,
        decode: Decoder<T>,
    ) -> Result<T, Error> {
        self.execute_decoding(exchange, token, &BodyDecoder::Whole(decode))
            .await
    }

    async fn execute_decoding<T: Send + 'static>(
        &self,
        exchange: &Exchange<'_>,
        token: Option<&Token>,
        decode: &BodyDecoder<T>,
    ) -> Result<T, Error> {
        let Exchange { endpoint, what, .. } = *exchange;
        self.check_deadline(what)?;
        let policy = self.inner.retry;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self.acquire(what).await?;
            let received = match self.send_once(exchange, token).await {
                Ok(answer) => self.receive(what, answer, decode).await,
                Err(e) => Err(e),
            };
            // The answer is in (or the exchange failed): its place goes to the next request
            // while it is decoded, and before any retry wait (a waiting retry holds no place).
            let answered = permit.answered();
            let result = received.and_then(|r| self.decoded(endpoint, what, token, r));
            match &result {
                Ok(_) => answered.succeeded(),
                Err(e) if is_throttling(endpoint, e) => answered.throttled(),
                // A failure other than throttling says nothing about ArcGIS's load.
                Err(_) => {}
            }
            let err = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if retry::is_transient(&err, endpoint.idempotency) {
                let retry_after = match &err {
                    Error::Http { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let delay = policy
                    .delay_before_retry(attempt, started.elapsed(), retry_after, jitter())
                    .filter(|delay| self.ends_in_time(*delay));
                if let Some(delay) = delay {
                    tracing::warn!(
                        operation = endpoint.name,
                        what,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %err,
                        "transient ArcGIS failure; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            return Err(if attempt > 1 {
                Error::GaveUp {
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    last: Box::new(err),
                }
            } else {
                err
            });
        }
    }

    /// A place among the org's requests in flight, waited for until the client's deadline.
    async fn acquire(&self, what: &str) -> Result<super::limiter::Permit<'_>, Error> {
        let acquire = self.inner.limiter.acquire();
        match self.deadline {
            None => Ok(acquire.await),
            Some(deadline) => tokio::time::timeout_at(deadline.into(), acquire)
                .await
                .map_err(|_| Error::DeadlineReached { what: what.to_owned() }),
        }
    }

    /// How many of a listing's requests are under way at once: twice what may be in flight,
    /// so that a page being decoded never keeps the next request from being sent. The
    /// limiter alone bounds what reaches ArcGIS.
    pub(super) fn pipeline(&self) -> usize {
        self.inner.list_concurrency.saturating_mul(2)
    }

    /// The current limit on requests in flight to the org (at most `list_concurrency`).
    pub fn concurrency(&self) -> usize {
        self.inner.limiter.limit()
    }

    /// [`Error::DeadlineReached`] once the client's absolute deadline has come.
    fn check_deadline(&self, what: &str) -> Result<(), Error> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Error::DeadlineReached { what: what.to_owned() }),
            _ => Ok(()),
        }
    }

    /// Whether a wait of `delay` starting now ends strictly before the absolute deadline, so
    /// the retry still has time to run. An end past what the clock can hold is too late.
    fn ends_in_time(&self, delay: Duration) -> bool {
        self.deadline
            .is_none_or(|deadline| Instant::now().checked_add(delay).is_some_and(|end| end < deadline))
    }

    /// The timeout for a request sent now: the configured one, shortened to the time left
    /// before the absolute deadline; and whether it was shortened.
    fn request_timeout(&self) -> (Duration, bool) {
        let configured = self.inner.http_timeout;
        match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (configured.min(left), left < configured)
            }
            None => (configured, false),
        }
    }

    /// Reads a successful answer's body: whole, to be decoded apart ([`Client::decoded`]),
    /// or through a streaming decoder as it arrives. reqwest's timeout covers the body too:
    /// it is read under the timeout the last hop was sent with.
    async fn receive<T: Send + 'static>(
        &self,
        what: &str,
        answer: Answer,
        decode: &BodyDecoder<T>,
    ) -> Result<Received<T>, Error> {
        let Answer {
            status,
            response,
            cut_short,
        } = answer;
        match decode {
            BodyDecoder::Whole(decode) => {
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| transport_error(what, e, cut_short))?;
                Ok(Received::Body {
                    status,
                    body,
                    decode: *decode,
                })
            }
            BodyDecoder::Streamed(decode) => {
                let streamed = stream_body(response, Arc::clone(decode)).await;
                if let Some(e) = streamed.transport {
                    return Err(transport_error(what, e, cut_short));
                }
                Ok(Received::Decoded {
                    status,
                    decoded: streamed.decoded,
                    head: streamed.head,
                })
            }
        }
    }

    /// The received answer decoded, or the error it is: ArcGIS's envelope, or a body that
    /// is not what the operation returns (quoted, secrets removed).
    fn decoded<T>(
        &self,
        endpoint: Endpoint,
        what: &str,
        token: Option<&Token>,
        received: Received<T>,
    ) -> Result<T, Error> {
        let (status, decoded, head) = match received {
            Received::Body { status, body, decode } => (status, decode(&body), body),
            Received::Decoded { status, decoded, head } => (status, decoded, head),
        };
        decoded.map_err(|e| {
            let secrets = self.secrets(token);
            match e {
                DecodeError::Envelope(api) => Error::Api {
                    what: what.to_owned(),
                    http_status: status,
                    api: Box::new(api.scrub(&secrets)),
                },
                DecodeError::Json(e) => Error::Decode {
                    what: what.to_owned(),
                    status,
                    reason: e.to_string(),
                    excerpt: quote(endpoint, &head, &secrets),
                },
            }
        })
    }

    /// Every secret value that must never appear in an error: credentials and the token.
    fn secrets<'a>(&'a self, token: Option<&'a Token>) -> Vec<&'a str> {
        let mut secrets = self.inner.credentials.secret_values();
        if let Some(t) = token {
            secrets.push(t.value.expose());
        }
        secrets
    }

    /// One HTTP exchange (plus redirect hops for downloads): a success status with its body
    /// still to read, or an error for transport failures and non-success statuses.
    async fn send_once(&self, exchange: &Exchange<'_>, token: Option<&Token>) -> Result<Answer, Error> {
        let Exchange {
            endpoint,
            url,
            params,
            what,
        } = *exchange;
        let mut current = url.clone();
        let mut send_auth = true;
        let mut hops = 0;
        let (response, cut_short) = loop {
            let mut request = match endpoint.method {
                Method::Get => self.inner.http.get(current.clone()),
                Method::Post => self.inner.http.post(current.clone()),
            };
            if hops == 0 {
                let mut form: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 1);
                form.push(("f", "json"));
                form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
                request = match endpoint.method {
                    Method::Get => request.query(&form),
                    Method::Post => request.form(&form),
                };
            }
            if send_auth {
                request = request.header(header::REFERER, self.inner.referer.clone());
                if let Some(t) = token {
                    request = request.header(TOKEN_HEADER, bearer(t)?);
                }
            }
            let (timeout, cut_short) = self.request_timeout();
            request = request.timeout(timeout);
            self.inner.requests.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await.map_err(|e| transport_error(what, e, cut_short))?;
            let status = response.status();
            if !(endpoint.download && status.is_redirection()) {
                break (response, cut_short);
            }
            hops += 1;
            let next = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| current.join(l).ok());
            let Some(next) = next.filter(|_| hops <= MAX_REDIRECTS) else {
                return Err(Error::Http {
                    what: what.to_owned(),
                    status: status.as_u16(),
                    excerpt: "redirect without a usable Location, or too many redirects".into(),
                    retry_after: None,
                });
            };
            // Leaving the portal's origin (host, port or scheme): the token and the Referer it
            // is bound to stay behind, for this hop and every later one.
            if next.origin() != self.inner.rest.origin() {
                send_auth = false;
            }
            current = next;
        };

        let status = response.status();
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                response,
                cut_short,
            });
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(what, e, cut_short))?;
        let secrets = self.secrets(token);
        // Gateways answer HTML; ArcGIS itself may send its envelope with a real status.
        if let Some(api) = envelope_in(&body) {
            return Err(Error::Api {
                what: what.to_owned(),
                http_status: status.as_u16(),
                api: Box::new(api.scrub(&secrets)),
            });
        }
        Err(Error::Http {
            what: what.to_owned(),
            status: status.as_u16(),
            excerpt: quote(endpoint, &body, &secrets),
            retry_after,
        })
    }
}

/// Whether an answer says ArcGIS is throttling the org: 429 (as the status or in the
/// envelope), or 403 on an allocation write, the bulk operation we send (ArcGIS has
/// answered bulk operations it throttles with 403). A 403 that was a missing privilege only
/// costs a smaller limit for a while.
fn is_throttling(endpoint: Endpoint, e: &Error) -> bool {
    let status = e.http_status();
    let code = e.api().and_then(|a| a.code);
    status == Some(429)
        || code == Some(429)
        || (endpoint.idempotency == retry::Idempotency::AbsoluteWrite && (status == Some(403) || code == Some(403)))
}

/// A successful answer whose body is still to be read.
struct Answer {
    status: u16,
    response: reqwest::Response,
    /// The timeout was shortened to the invocation's deadline.
    cut_short: bool,
}

/// An answer's body as [`Client::receive`] read it.
enum Received<T> {
    /// Read whole, to be decoded by `decode`.
    Body {
        status: u16,
        body: Bytes,
        decode: Decoder<T>,
    },
    /// Decoded as it arrived, with its first bytes for an error's excerpt.
    Decoded {
        status: u16,
        decoded: Result<T, DecodeError>,
        head: Bytes,
    },
}

/// What [`stream_body`] got: the decoder's result, the body's first bytes (for an error's
/// excerpt) and the transport failure that cut the body short, if any (which wins over the
/// decoder's complaint about a truncated document).
struct Streamed<T> {
    decoded: Result<T, DecodeError>,
    head: Bytes,
    transport: Option<reqwest::Error>,
}

/// Feeds the body to `decode` on a blocking thread as it arrives: at most a few chunks are
/// in memory at once, whatever the body's size.
async fn stream_body<T: Send + 'static>(response: reqwest::Response, decode: StreamDecoder<T>) -> Streamed<T> {
    use futures_util::TryStreamExt;
    let failure: Arc<Mutex<Option<reqwest::Error>>> = Arc::default();
    let seen = Arc::clone(&failure);
    let body = response.bytes_stream().map_err(move |e| {
        let text = e.to_string();
        if let Ok(mut slot) = seen.lock() {
            slot.get_or_insert(e);
        }
        std::io::Error::other(text)
    });
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    let joined = tokio::task::spawn_blocking(move || {
        let mut reader = Head::new(reader);
        let decoded = decode(&mut reader);
        (decoded, Bytes::from(reader.head))
    })
    .await;
    let transport = failure.lock().ok().and_then(|mut slot| slot.take());
    match joined {
        Ok((decoded, head)) => Streamed {
            decoded,
            head,
            transport,
        },
        // The decoder panicked (where panics unwind: the release profile aborts instead):
        // surfaced as a decoding failure, the panic's message kept.
        Err(e) => Streamed {
            decoded: Err(DecodeError::Json(serde::de::Error::custom(format!(
                "the body's decoder failed: {e}"
            )))),
            head: Bytes::new(),
            transport,
        },
    }
}

/// A reader that keeps the first [`STREAM_EXCERPT_BYTES`] bytes it passes on.
struct Head<R> {
    inner: R,
    head: Vec<u8>,
}

impl<R> Head<R> {
    fn new(inner: R) -> Self {
        Head {
            inner,
            head: Vec::new(),
        }
    }
}

impl<R: Read> Read for Head<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = STREAM_EXCERPT_BYTES.saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..room]);
        Ok(n)
    }
}

/// A body excerpt for an error message; never for token endpoints.
fn quote(endpoint: Endpoint, body: &[u8], secrets: &[&str]) -> String {
    if endpoint.secret_response {
        String::from("(not shown: token endpoint)")
    } else {
        excerpt(body, secrets)
    }
}

fn bearer(token: &Token) -> Result<HeaderValue, Error> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {}", token.value.expose())).map_err(|_| Error::Unexpected {
            what: "signing in".into(),
            reason: "the token contains characters not allowed in an HTTP header".into(),
        })?;
    // Keeps it out of HTTP/2 header compression tables and Debug output.
    value.set_sensitive(true);
    Ok(value)
}

/// The client's error for a failed exchange. reqwest's message carries the request URL, whose
/// path and query may hold data from the secret or the call: it is dropped (`what` names the
/// operation). `cut_short` says the timeout was shortened to the invocation's deadline.
fn transport_error(what: &str, e: reqwest::Error, cut_short: bool) -> Error {
    let e = e.without_url();
    let kind = if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Interrupted
    };
    // The chain carries the useful cause ("connection closed before message completed").
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if cut_short && kind == TransportKind::Timeout {
        detail.push_str("; cut short by the invocation's deadline");
    }
    Error::Transport {
        what: what.to_owned(),
        kind,
        detail,
    }
}

/// Installs rustls' ring provider as the process default, once: reqwest is built with
/// `rustls-no-provider` so aws-lc-sys (a slow C build the functions do not need) never enters
/// the build.
pub fn install_ring_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Err means another provider is already installed, which reqwest will use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The `.../sharing/rest/` base for an org URL, the way Esri's clients derive it: keep an
/// explicit `/sharing/rest`, otherwise append it. HTTPS only, except for loopback hosts
/// (simulators): a password must never cross the network in clear text. Errors show the
/// URL's scheme and host only ([`redact_url`]).
pub fn rest_base(portal_url: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: redact_url(portal_url),
        reason: reason.to_owned(),
    };
    let mut url = crate::web_url::parse(portal_url).map_err(|e| match e {
        crate::web_url::UrlError::Invalid(why) => invalid(&why),
        other => invalid(&other.to_string()),
    })?;
    if url.host_str().is_none() {
        return Err(invalid("no host"));
    }
    let loopback = crate::web_url::is_loopback(&url);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(invalid(
                "must be https (credentials and tokens would travel in clear text)",
            ));
        }
        _ => return Err(invalid("must be an https URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials"));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/sharing/rest") {
        path
    } else if path.ends_with("/sharing") {
        format!("{path}/rest")
    } else {
        format!("{path}/sharing/rest")
    };
    url.set_path(&format!("{path}/"));
    Ok(url)
}

#[cfg(test)]
mod tests;
