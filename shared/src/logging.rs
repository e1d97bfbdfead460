//! The functions' log lines, as Lambda's advanced logging controls ask for them.
//!
//! Lambda sets `AWS_LAMBDA_LOG_LEVEL` and `AWS_LAMBDA_LOG_FORMAT` from the function's logging
//! configuration; the template asks for JSON lines, which Lambda can then filter by level.
//! This is what the runtime crate's default subscriber does, minus its per-target filter
//! directives: Lambda passes one level, and the directive parser's regular expressions cost
//! every binary about a megabyte.

use tracing_subscriber::fmt;

use crate::config::LogLevel;

/// Installs the log subscriber for this process: lines on standard output (Lambda ships
/// them to CloudWatch Logs), at the level of `AWS_LAMBDA_LOG_LEVEL` (else `RUST_LOG`, else
/// INFO), as JSON when `AWS_LAMBDA_LOG_FORMAT` is `JSON`. An unknown level logs at INFO here
/// and is refused by [`crate::config::Config`] right after, with the reason.
pub fn init_logging() {
    let env = |name: &str| std::env::var(name).ok();
    let level = level(env("AWS_LAMBDA_LOG_LEVEL").as_deref(), env("RUST_LOG").as_deref());
    let json = env("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = fmt()
        .with_max_level(level.tracing_level())
        .with_target(false)
        .without_time()
        .with_writer(std::io::stdout);
    // Err only when a subscriber is already installed (a test harness's): that one stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The level to log at: Lambda's setting first, then `RUST_LOG` (a plain level: `debug`),
/// then INFO.
fn level(lambda: Option<&str>, rust_log: Option<&str>) -> LogLevel {
    lambda
        .filter(|v| !v.trim().is_empty())
        .or(rust_log.filter(|v| !v.trim().is_empty()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_level_wins_then_rust_log_then_info() {
        assert_eq!(level(Some("DEBUG"), Some("trace")), LogLevel::Debug);
        assert_eq!(level(None, Some("trace")), LogLevel::Trace);
        assert_eq!(level(Some(""), Some("warn")), LogLevel::Warn);
        assert_eq!(level(None, None), LogLevel::Info);
        // Refused by Config at start-up; until then, INFO.
        assert_eq!(level(Some("FATAL"), None), LogLevel::Info);
        assert_eq!(level(None, Some("shared=debug")), LogLevel::Info);
    }
}
