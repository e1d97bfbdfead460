//! Shared helpers: a simulator per test and a client configured for it (built by testkit,
//! as everywhere else), and log capture.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials as AwsCredentials, Region, SharedCredentialsProvider};
use chrono::Utc;
use portal_sim::{Hold, HoldStatus, SimHandle};
use shared::arcgis::{Client, ClientConfig};
use shared::aws::http::http_client;
use shared::credits::amount::Credits;
use shared::ledger::{AuditEntry, Ledger};

pub use testkit::arcgis::{REFERER, admin, admin_client, as_of, client_as, config_with, fast_retry};

/// A simulator for a generated org of `members` members (one seed for the whole suite).
pub async fn sim(members: usize) -> SimHandle {
    testkit::arcgis::sim_with(members, 42).await
}

/// The AWS settings every client of this binary's moto uses: explicit region, dummy
/// credentials and endpoint, ring TLS; nothing read from the environment, so nothing can
/// reach for IMDS or a real endpoint.
pub fn moto_aws() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(AwsCredentials::new(
            "testing", "testing", None, None, "tests",
        )))
        .endpoint_url(&crate::moto::moto().endpoint)
        .http_client(http_client())
        .build()
}

/// Records `credits` of geocoding by `username` on the day starting at `day_ms` (UTC
/// midnight, epoch ms): the member's balance, the org's credits and the usage move together.
pub fn geocode_usage(sim: &SimHandle, username: &str, day_ms: i64, credits: f64) {
    sim.consume(portal_sim::UsageRecord {
        day: day_ms,
        username: Some(username.to_owned()),
        stype: "geocode".into(),
        etype: "geocodecnt".into(),
        credits,
        num: 1,
    })
    .expect("usage recorded");
}

/// An exact amount from its decimal text.
pub fn c(text: &str) -> Credits {
    Credits::parse_exact(text).expect("exact credits")
}

/// The audit entries of plans made today or yesterday (UTC), oldest first: audit partitions
/// follow the real clock, not the simulated day.
pub async fn audit_recent(ledger: &Ledger) -> Vec<AuditEntry> {
    let today = Utc::now().date_naive();
    let mut entries = ledger.changes_on(today.pred_opt().unwrap()).await.unwrap();
    entries.extend(ledger.changes_on(today).await.unwrap());
    entries
}

/// A client for `sim` with custom settings.
pub fn client(config: ClientConfig) -> Client {
    Client::new(config).expect("client builds")
}

/// A `MakeWriter` into a shared buffer, to read back what was logged.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures every log event at trace level, dependencies' HTTP internals included (the most
/// anyone would turn on), on this thread until the guard drops. `#[tokio::test]` runs the
/// test and the tasks it spawns on this one thread.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    // Callsites first hit on another test thread cached their interest without this
    // subscriber; recompute it so none of this thread's events is skipped.
    tracing::callsite::rebuild_interest_cache();
    (logs.clone(), guard)
}

/// Runs the future `invocation` makes until `hold` is reached, then kills it: it runs on a
/// runtime of its own, shut down at the hold, so its connections close as a killed process's
/// would (the simulator never processes a request held before processing). Returns once the
/// simulator has abandoned the held request. Panics if the invocation finishes first.
///
/// Blocks the calling thread meanwhile: the test must run on a multi-threaded runtime so
/// that the simulator keeps serving.
pub async fn kill_at<F, Fut>(hold: &Hold, invocation: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future,
    Fut::Output: std::fmt::Debug,
{
    std::thread::scope(|threads| {
        threads.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the invocation");
            runtime.block_on(async {
                tokio::select! {
                    out = invocation() => panic!("the invocation finished before the hold: {out:?}"),
                    _ = hold.reached() => {}
                }
            });
        });
    });
    // Released only once the simulator saw the client go: a request held before processing
    // released earlier would still be processed.
    let status = tokio::time::timeout(Duration::from_secs(10), hold.settled())
        .await
        .expect("the simulator sees the killed invocation's connection close");
    assert!(matches!(status, HoldStatus::Abandoned { .. }), "{status:?}");
    hold.release();
}

/// The ARN API Gateway's IAM authorizer reports for Alice.
pub const ALICE_ARN: &str = "arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice";

/// Alice, as API Gateway's IAM authorizer reports her.
pub fn alice() -> shared::ledger::Caller {
    shared::ledger::Caller {
        kind: shared::ledger::CallerKind::Iam,
        principal_id: "AROAEXAMPLEROLEID:alice".into(),
        account: Some("111122223333".into()),
        arn: Some(ALICE_ARN.into()),
        issuer: None,
    }
}

/// Another caller of the same account.
pub fn bob() -> shared::ledger::Caller {
    shared::ledger::Caller {
        principal_id: "AROAEXAMPLEROLEID:bob".into(),
        arn: Some("arn:aws:sts::111122223333:assumed-role/CreditAdmins/bob".into()),
        ..alice()
    }
}

/// allocate's settings from `vars`, over a test secret id and ledger table (and `defaults`
/// for what `vars` does not set).
pub fn allocate_settings(vars: &[(&str, &str)], defaults: &[(&str, &str)]) -> shared::allocate::AllocateSettings {
    let config = shared::config::Config::from_lookup(|name| {
        vars.iter()
            .chain(defaults)
            .chain(&[("ARCGIS_SECRET_ID", "arcgis/test"), ("LEDGER_TABLE", "ledger")])
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .expect("valid test config");
    shared::allocate::AllocateSettings::from_config(&config, shared::startup::Platform::Local).expect("valid settings")
}

/// The listing pages a listing planned by `hint` requests at once: the unfiltered first page,
/// the first page of each role split by user type, and every page each part's size implies.
pub fn planned_pages(hint: &shared::arcgis::ListingHint) -> u64 {
    let split: std::collections::BTreeSet<_> = hint
        .parts
        .iter()
        .filter(|(p, _)| p.user_type.is_some())
        .map(|(p, _)| &p.role)
        .collect();
    1 + split.len() as u64 + hint.parts.iter().map(|(_, n)| n.div_ceil(100).max(1)).sum::<u64>()
}

/// Holds the next roles listing unanswered, and the [`planned_pages`]-th listing page after
/// it: a listing that reaches both sent every planned page without waiting for the roles.
/// Returns (roles hold, pages hold).
pub fn hold_roles_and_last_planned_page(sim: &SimHandle, hint: &shared::arcgis::ListingHint) -> (Hold, Hold) {
    let roles = sim.hold(portal_sim::HoldSpec {
        endpoint: "portals/self/roles".into(),
        nth: 1,
        phase: portal_sim::HoldPhase::BeforeProcessing,
    });
    let pages = sim.hold(portal_sim::HoldSpec {
        endpoint: "portals/self/users".into(),
        nth: planned_pages(hint),
        phase: portal_sim::HoldPhase::BeforeProcessing,
    });
    (roles, pages)
}
