//! The four S3 calls the functions and the CLI make: put an object, get one, sign a link to
//! one, and check that a bucket answers. Each request is signed with Signature Version 4 by
//! `aws-sigv4` (the signer the AWS SDKs use) and sent on reqwest, as the ArcGIS calls are.
//!
//! Why not `aws-sdk-s3`: it always links its flexible-checksum crate, whose CRC library holds
//! lookup tables for every CRC variant it knows, plus S3's endpoint rules and S3 Express
//! support: 0.58 MB of scan-credits' 6.7 MB arm64 bootstrap (1.38 MB on x86_64, where the
//! tables alone are 660 KB) for calls that are these four. Integrity is kept without it: every
//! body's SHA-256 is signed (`x-amz-content-sha256`), and S3 refuses a body that does not
//! match.
//!
//! Addressing follows S3's rules: virtual-hosted (`https://<bucket>.s3.<region>.amazonaws.com`,
//! `.amazonaws.com.cn` in the China regions), path-style for bucket names with a dot (a
//! wildcard certificate cannot cover them), and path-style under an endpoint override
//! (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`), which is how emulators such as moto are
//! reached. Keys are percent-encoded once, as S3 canonicalizes them for signing.

#![warn(missing_docs)]

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_types::service_config::ServiceConfigKey;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode, Url};

/// Attempts per call: S3 asks clients to retry 500 and 503 (`SlowDown`) with backoff.
const ATTEMPTS: u32 = 3;
/// The first retry's delay; each next one is four times longer.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Per-request time limit: a report or a complete member list is a few MB at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a pre-signed link may live (Signature Version 4 caps it at seven days).
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3_600);

/// What a key segment keeps as is: S3 signs keys with everything but these encoded.
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why an S3 call failed: what S3 answered (status, its error code and message), or why no
/// answer came. Never holds a credential or a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Error {
    /// S3 answered with an error status.
    Status {
        /// The HTTP status.
        status: u16,
        /// S3's error code (`NoSuchBucket`, `AccessDenied`, …), when the answer had a body.
        code: Option<String>,
        /// S3's message, when the answer had a body.
        message: Option<String>,
    },
    /// No answer: connection refused, timed out, TLS failure.
    Transport(String),
    /// The request could not be made here (no region, no credentials, a bad link lifetime).
    Setup(String),
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Error::Status { status, code, message } => {
                write!(f, "S3 answered HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            S3Error::Transport(e) => write!(f, "S3 could not be reached: {e}"),
            S3Error::Setup(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for S3Error {}

impl S3Error {
    /// Whether S3 said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, S3Error::Status { status: 404, code, .. } if code.as_deref().is_none_or(|c| c == "NoSuchKey"))
    }
}

/// An S3 client for one account and region.
#[derive(Clone)]
pub struct S3Client {
    /// The HTTP client, or why it could not start (TLS): each call then fails with that.
    http: Result<reqwest::Client, String>,
    credentials: Option<SharedCredentialsProvider>,
    region: Option<String>,
    /// The endpoint override (path-style addressing), if any.
    endpoint: Option<Url>,
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Client")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// A client with `sdk`'s region, credentials and S3 endpoint (`AWS_ENDPOINT_URL_S3`, else
    /// `AWS_ENDPOINT_URL`). What is missing fails each call with its name, not this.
    #[allow(clippy::expect_used, reason = "the key's builder fails only on a part not set")]
    pub fn new(sdk: &SdkConfig) -> S3Client {
        crate::arcgis::client::install_ring_provider();
        let key = ServiceConfigKey::builder()
            .service_id("S3")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .expect("all three parts are set");
        let endpoint = sdk
            .service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
            .and_then(|u| Url::parse(&u).ok());
        let http = reqwest::Client::builder()
            // S3 answers a wrong region with 301 and the right endpoint: an error to report,
            // not a redirect to follow with the signature of another host.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("credit-steward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the HTTP client for S3 could not start ({})", e.without_url()));
        S3Client {
            http,
            credentials: sdk.credentials_provider(),
            region: sdk.region().map(|r| r.as_ref().to_owned()),
            endpoint,
        }
    }

    /// Writes (or overwrites) `bucket`/`key`.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), S3Error> {
        let url = self.object_url(bucket, key)?;
        self.send(Method::PUT, url, &[("content-type", content_type)], body)
            .await?;
        Ok(())
    }

    /// Reads `bucket`/`key`; `Ok(None)` when S3 says it does not exist.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, S3Error> {
        let url = self.object_url(bucket, key)?;
        match self.send(Method::GET, url, &[], Vec::new()).await {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `bucket` exists and these credentials may use it (`HeadBucket`: 403 and 404
    /// come back as errors).
    pub async fn head_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        let url = self.bucket_url(bucket)?;
        self.send(Method::HEAD, url, &[], Vec::new()).await.map(drop)
    }

    /// A link that opens `bucket`/`key` without credentials for `lifetime` (at most
    /// [`MAX_LINK_LIFETIME`]). Made here: nothing is sent.
    pub async fn presigned_get(&self, bucket: &str, key: &str, lifetime: Duration) -> Result<String, S3Error> {
        if lifetime.is_zero() || lifetime > MAX_LINK_LIFETIME {
            return Err(S3Error::Setup(format!(
                "a pre-signed link lives between 1 second and 7 days, not {} s",
                lifetime.as_secs()
            )));
        }
        let url = self.object_url(bucket, key)?;
        let credentials = self.credentials().await?;
        presign(url, &credentials, self.region()?, SystemTime::now(), lifetime)
    }

    fn region(&self) -> Result<&str, S3Error> {
        self.region
            .as_deref()
            .ok_or_else(|| S3Error::Setup("no AWS region is set (AWS_REGION)".into()))
    }

    async fn credentials(&self) -> Result<Credentials, S3Error> {
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| S3Error::Setup("no AWS credentials provider is configured".into()))?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| S3Error::Setup(format!("no AWS credentials: {e}")))
    }

    /// The object's URL, its key encoded once.
    fn object_url(&self, bucket: &str, key: &str) -> Result<Url, S3Error> {
        let mut url = self.bucket_url(bucket)?;
        let encoded: Vec<String> = key
            .split('/')
            .map(|s| utf8_percent_encode(s, KEY_SEGMENT).to_string())
            .collect();
        let path = format!("{}/{}", url.path().trim_end_matches('/'), encoded.join("/"));
        url.set_path(&path);
        Ok(url)
    }

    /// The bucket's URL: under the endpoint override by path, else virtual-hosted.
    fn bucket_url(&self, bucket: &str) -> Result<Url, S3Error> {
        let valid = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(S3Error::Setup(format!("'{bucket}' is not an S3 bucket name")));
        }
        let text = match &self.endpoint {
            Some(base) => format!("{}/{bucket}", base.as_str().trim_end_matches('/')),
            None => {
                let region = self.region()?;
                let suffix = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                if bucket.contains('.') {
                    format!("https://s3.{region}.{suffix}/{bucket}")
                } else {
                    format!("https://{bucket}.s3.{region}.{suffix}/")
                }
            }
        };
        Url::parse(&text).map_err(|e| S3Error::Setup(format!("bad S3 URL for bucket '{bucket}': {e}")))
    }

    /// Signs and sends, retrying what S3 asks to retry; the answer's body on success.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Vec<u8>, S3Error> {
        let region = self.region()?.to_owned();
        let http = self.http.as_ref().map_err(|e| S3Error::Setup(e.clone()))?;
        // Shared, not copied, by each attempt: a complete member list is megabytes.
        let body = bytes::Bytes::from(body);
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let credentials = self.credentials().await?;
            let signed = sign_headers(&method, &url, headers, &body, &credentials, &region, SystemTime::now())?;
            let mut request = http.request(method.clone(), url.clone()).body(body.clone());
            for (name, value) in headers
                .iter()
                .copied()
                .chain(signed.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            {
                request = request.header(name, value);
            }
            let outcome = match request.send().await {
                Ok(response) => answer(response).await,
                Err(e) => Err(S3Error::Transport(e.without_url().to_string())),
            };
            match outcome {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "S3 call retried");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// The body of a 2xx answer, else S3's error.
async fn answer(response: reqwest::Response) -> Result<Vec<u8>, S3Error> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| S3Error::Transport(e.without_url().to_string()))?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let text = String::from_utf8_lossy(&body);
    Err(S3Error::Status {
        status: status.as_u16(),
        code: xml_element(&text, "Code"),
        message: xml_element(&text, "Message"),
    })
}

/// What S3 says to retry: no answer, throttling and its server errors.
fn retryable(e: &S3Error) -> bool {
    match e {
        S3Error::Transport(_) => true,
        S3Error::Status { status, .. } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
        }
        S3Error::Setup(_) => false,
    }
}

/// The text of the first `<name>` element of S3's small error documents.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].to_owned())
}

/// The settings S3 signs with: the path as sent (encoded once, never normalized) and the
/// body's SHA-256 in `x-amz-content-sha256`.
fn s3_settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings
}

/// What one signing is made of: the request as signed, and where the signature goes.
struct Signing<'a> {
    method: &'a str,
    url: &'a Url,
    headers: &'a [(&'a str, &'a str)],
    body: SignableBody<'a>,
    settings: SigningSettings,
}

/// Signs `request` as `credentials` in `region` at `time`: the headers or query parameters to
/// add, as its settings say.
fn signing_instructions(
    request: Signing<'_>,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<aws_sigv4::http_request::SigningInstructions, S3Error> {
    let failed = |e: &dyn std::fmt::Display| S3Error::Setup(format!("could not sign the S3 request: {e}"));
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(time)
        .settings(request.settings)
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url.as_str(),
        request.headers.iter().copied(),
        request.body,
    )
    .map_err(|e| failed(&e))?;
    Ok(sign(signable, &params).map_err(|e| failed(&e))?.into_parts().0)
}

/// The headers that sign a request (`authorization`, `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token`) sent at `time` with `headers` and `body`.
fn sign_headers(
    method: &Method,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, S3Error> {
    let request = Signing {
        method: method.as_str(),
        url,
        headers,
        body: SignableBody::Bytes(body),
        settings: s3_settings(),
    };
    Ok(signing_instructions(request, credentials, region, time)?
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// `url` with the query that lets anyone GET it until `time + lifetime`.
fn presign(
    mut url: Url,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
    lifetime: Duration,
) -> Result<String, S3Error> {
    let mut settings = s3_settings();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(lifetime);
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    let request = Signing {
        method: "GET",
        url: &url,
        headers: &[],
        body: SignableBody::UnsignedPayload,
        settings,
    };
    let instructions = signing_instructions(request, credentials, region, time)?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
    }
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_config::{BehaviorVersion, Region};

    /// The example credentials of Amazon S3's Signature Version 4 documentation.
    fn example_credentials() -> Credentials {
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "docs",
        )
    }

    /// 2013-05-24T00:00:00Z, the documentation's request time.
    fn example_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    fn client(endpoint: Option<&str>, region: &str) -> S3Client {
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(example_credentials()));
        builder.set_endpoint_url(endpoint.map(str::to_owned));
        S3Client::new(&builder.build())
    }

    fn header<'a>(signed: &'a [(String, String)], name: &str) -> &'a str {
        signed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {signed:?}"))
    }

    /// The headers signing a request with the documentation's credentials, region and time.
    fn signed_example(method: Method, url: &Url, headers: &[(&str, &str)], body: &[u8]) -> Vec<(String, String)> {
        sign_headers(
            &method,
            url,
            headers,
            body,
            &example_credentials(),
            "us-east-1",
            example_time(),
        )
        .unwrap()
    }

    #[test]
    fn a_get_is_signed_as_the_s3_documentation_signs_it() {
        // "Example: GET Object" (Authenticating Requests: Using the Authorization Header).
        let url = Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let signed = signed_example(Method::GET, &url, &[("range", "bytes=0-9")], b"");
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(
            header(&signed, "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_put_signs_its_body_and_a_key_encoded_once() {
        // "Example: PUT Object": the key `test$file.text`, its body's SHA-256 signed.
        let s3 = client(Some("https://examplebucket.s3.amazonaws.com"), "us-east-1");
        let mut url = s3.object_url("examplebucket", "test$file.text").unwrap();
        assert_eq!(url.path(), "/examplebucket/test%24file.text");
        url.set_path("/test%24file.text");
        let headers = [
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ];
        let signed = signed_example(Method::PUT, &url, &headers, b"Welcome to Amazon S3.");
        assert_eq!(
            header(&signed, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, \
             Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn a_link_is_presigned_as_the_s3_documentation_presigns_it() {
        // "An example" of Authenticating Requests: Using Query Parameters.
        let url = Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let link = presign(
            url,
            &example_credentials(),
            "us-east-1",
            example_time(),
            Duration::from_secs(86_400),
        )
        .unwrap();
        let link = Url::parse(&link).unwrap();
        let query: std::collections::HashMap<_, _> = link.query_pairs().into_owned().collect();
        assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(
            query["X-Amz-Credential"],
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
        );
        assert_eq!(query["X-Amz-Date"], "20130524T000000Z");
        assert_eq!(query["X-Amz-Expires"], "86400");
        assert_eq!(query["X-Amz-SignedHeaders"], "host");
        assert_eq!(
            query["X-Amz-Signature"],
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn buckets_are_addressed_as_s3_expects() {
        let aws = client(None, "eu-west-3");
        assert_eq!(
            aws.object_url("reports-1", "scans/2026-11-26T06:00:00Z/members 1.csv")
                .unwrap()
                .as_str(),
            "https://reports-1.s3.eu-west-3.amazonaws.com/scans/2026-11-26T06%3A00%3A00Z/members%201.csv"
        );
        assert_eq!(
            aws.object_url("my.reports", "a/b.json").unwrap().as_str(),
            "https://s3.eu-west-3.amazonaws.com/my.reports/a/b.json",
            "a dotted name cannot be matched by S3's wildcard certificate"
        );
        assert_eq!(
            client(None, "cn-north-1").bucket_url("r").unwrap().as_str(),
            "https://r.s3.cn-north-1.amazonaws.com.cn/"
        );
        let moto = client(Some("http://127.0.0.1:5000/"), "us-east-1");
        assert_eq!(
            moto.object_url("reports", "reports/2026-10/credits.csv")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/reports/reports/2026-10/credits.csv"
        );
        assert!(matches!(aws.bucket_url("Reports"), Err(S3Error::Setup(_))));
        assert!(matches!(aws.bucket_url("a/b"), Err(S3Error::Setup(_))));
    }

    #[tokio::test]
    async fn what_is_missing_is_named_before_anything_is_sent() {
        let s3 = S3Client::new(&SdkConfig::builder().behavior_version(BehaviorVersion::latest()).build());
        let e = s3.put("reports", "k", Vec::new(), "text/csv").await.unwrap_err();
        assert_eq!(e.to_string(), "no AWS region is set (AWS_REGION)");
        let e = client(None, "eu-west-3")
            .presigned_get("reports", "k", Duration::from_secs(8 * 24 * 3_600))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("between 1 second and 7 days"), "{e}");
    }

    #[test]
    fn s3_errors_keep_its_code_and_message_and_retry_only_what_s3_says() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not \
                   exist</Message><BucketName>r</BucketName></Error>";
        let e = S3Error::Status {
            status: 404,
            code: xml_element(xml, "Code"),
            message: xml_element(xml, "Message"),
        };
        assert_eq!(
            e.to_string(),
            "S3 answered HTTP 404 NoSuchBucket: The specified bucket does not exist"
        );
        assert!(!e.is_not_found(), "a missing bucket is not a missing object");
        assert!(!retryable(&e));
        let missing = S3Error::Status {
            status: 404,
            code: Some("NoSuchKey".into()),
            message: None,
        };
        assert!(missing.is_not_found());
        let slow = S3Error::Status {
            status: 503,
            code: Some("SlowDown".into()),
            message: None,
        };
        assert!(retryable(&slow));
        assert!(retryable(&S3Error::Transport("connection refused".into())));
        assert!(!retryable(&S3Error::Status {
            status: 403,
            code: Some("AccessDenied".into()),
            message: None
        }));
    }
}
