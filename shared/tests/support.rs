//! Shared helpers: a simulator per test and a client configured for it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use credit_core::arcgis::{Client, ClientConfig, Credentials, RetryPolicy, Secret};
use portal_sim::generate::{ADMIN_PASSWORD, ADMIN_USERNAME};
use portal_sim::{GenParams, SimHandle, generate, start};

/// The Referer every test client binds its tokens to.
pub const REFERER: &str = "credit-steward-tests";

/// The day every test org is generated for.
pub fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a valid date")
}

/// A simulator for a generated org of `members` members.
pub async fn sim(members: usize) -> SimHandle {
    start(generate(&GenParams::new(members, 42, as_of())))
        .await
        .expect("portal-sim starts")
}

/// Fast retries so fault tests stay quick, bounded so a bug cannot hang a test.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(400),
        deadline: Duration::from_secs(20),
    }
}

/// Client settings for `sim` with the given credentials.
pub fn config_with(sim: &SimHandle, credentials: Credentials) -> ClientConfig {
    ClientConfig {
        referer: REFERER.to_owned(),
        http_timeout: Duration::from_secs(10),
        retry: fast_retry(),
        report_poll_interval: Duration::from_millis(50),
        ..ClientConfig::new(sim.rest_url(), credentials)
    }
}

/// The simulator's administrator.
pub fn admin() -> Credentials {
    Credentials::UserPassword {
        username: ADMIN_USERNAME.to_owned(),
        password: Secret::new(ADMIN_PASSWORD),
    }
}

/// A client signed in (lazily) as the simulator's administrator.
pub fn admin_client(sim: &SimHandle) -> Client {
    Client::new(config_with(sim, admin())).expect("client builds")
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
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    (logs.clone(), tracing::subscriber::set_default(subscriber))
}
