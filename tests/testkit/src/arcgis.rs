//! A generated org in portal-sim and an ArcGIS client signed in to it as its administrator:
//! what most tests, benches and examples start from, built one way everywhere.

use std::time::Duration;

use chrono::NaiveDate;
use portal_sim::generate::{ADMIN_PASSWORD, ADMIN_USERNAME};
use portal_sim::{GenParams, SimHandle, generate};
use shared::arcgis::{Client, ClientConfig, Credentials, RetryPolicy, Secret};

/// The Referer every test client binds its tokens to.
pub const REFERER: &str = "credit-steward-tests";

/// The day every test org is generated for, so generated usage and forecasts are stable.
pub fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a valid date")
}

/// A simulator serving an org of `members` members generated from `seed`.
pub async fn sim_with(members: usize, seed: u64) -> SimHandle {
    portal_sim::start(generate(&GenParams::new(members, seed, as_of())))
        .await
        .expect("portal-sim starts")
}

/// The simulator's administrator (a user/password account with every privilege).
pub fn admin() -> Credentials {
    user_password(ADMIN_USERNAME, ADMIN_PASSWORD)
}

/// A member's username and password, as a secret holds them.
pub fn user_password(username: &str, password: &str) -> Credentials {
    Credentials::UserPassword {
        username: username.to_owned(),
        password: Secret::new(password),
    }
}

/// A client for `sim` signed in as `username` (the accounts of `portal_sim::generate`).
pub fn client_as(sim: &SimHandle, username: &str, password: &str) -> Client {
    Client::new(config_with(sim, user_password(username, password))).expect("the client builds")
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

/// Client settings for `sim` with `credentials`: the test Referer, fast retries and polls.
pub fn config_with(sim: &SimHandle, credentials: Credentials) -> ClientConfig {
    ClientConfig {
        referer: REFERER.to_owned(),
        http_timeout: Duration::from_secs(10),
        retry: fast_retry(),
        report_poll_interval: Duration::from_millis(50),
        ..ClientConfig::new(sim.rest_url(), credentials)
    }
}

/// A client for `sim`, signed in (lazily) as its administrator.
pub fn admin_client(sim: &SimHandle) -> Client {
    Client::new(config_with(sim, admin())).expect("the client builds")
}
