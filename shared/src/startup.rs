//! Cold start: why a function refuses to start, said once, readably, through the same
//! logging path in all three functions.
//!
//! Each function builds its settings from the [`Config`](crate::config::Config) once, before
//! it takes its first event. Anything missing or contradictory stops it there with one line
//! naming every variable to fix, so a bad deploy fails at once instead of on every invocation.

use std::fmt;

use crate::config::ConfigError;

/// Reserved variables AWS Lambda sets in every real execution environment (and local
/// emulators do not): their presence means the function runs in AWS.
const LAMBDA_PLATFORM_VARIABLES: &[&str] = &["AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME"];

/// Where the function runs, as far as settings care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// AWS Lambda itself.
    Aws,
    /// A local emulator or a test.
    Local,
}

impl Platform {
    /// Reads the process environment.
    pub fn from_env() -> Platform {
        Platform::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Platform {
        if LAMBDA_PLATFORM_VARIABLES
            .iter()
            .any(|v| lookup(v).is_some_and(|value| !value.trim().is_empty()))
        {
            Platform::Aws
        } else {
            Platform::Local
        }
    }
}

/// Why a function cannot start.
#[derive(thiserror::Error)]
pub enum StartupError {
    /// Environment variables are invalid (every problem listed).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A variable this function needs is not set.
    #[error("{variable}: required by {function} ({why}); set it in the function's environment")]
    Required {
        /// The variable.
        variable: &'static str,
        /// The function.
        function: &'static str,
        /// What it is needed for.
        why: &'static str,
    },
    /// A setting that must never be used in AWS is set there.
    #[error("{variable}: {why}; remove it from the function's environment")]
    NotInAws {
        /// The variable.
        variable: &'static str,
        /// Why not.
        why: &'static str,
    },
    /// Settings that parse but cannot work together.
    #[error("{0}")]
    Invalid(String),
}

/// `main` returns the error, and Rust prints a returned error with `Debug`: make that the
/// readable message too, not the variant's name.
impl fmt::Debug for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Logs why `function` cannot start, as one readable line, and hands the error back for
/// `main` to return (Lambda then reports the failed init).
pub fn refuse(function: &str, error: StartupError) -> StartupError {
    tracing::error!(function, error = %error, "cannot start");
    error
}

/// Runs a function's `main` on the multi-threaded runtime, as `#[tokio::main]` would, once the
/// memory allocator is bounded ([`bound_allocator`]): that has to happen before any thread
/// exists, so it cannot be done from inside the runtime.
pub fn block_on<F: std::future::Future>(main: F) -> std::io::Result<F::Output> {
    bound_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    Ok(runtime.block_on(main))
}

/// Malloc arenas of the functions' processes (see [`bound_allocator`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 1;

/// Allocations from this size up get their own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Bounds glibc's allocator for a process that must fit a small Lambda. By default glibc gives
/// threads their own arenas (up to 8 per core) and memory freed in one arena is reused only
/// there: the runtime's workers and the blocking threads that decode the large answers would
/// each keep their own high-water mark. One arena serves every thread instead (the work
/// waits on the network, not on the allocator's lock). glibc also raises its mmap threshold each time a
/// large block is freed, after which large buffers come from the heap, where freed memory
/// stays mapped; fixed at [`MMAP_THRESHOLD`], every large buffer (the member list, the lists
/// serialized for S3, the ledger's request bodies) is mapped on its own, grows with `mremap`
/// instead of a copy, and goes back to the system as soon as it is dropped.
fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; it is called before the runtime starts
    // any thread. A refused setting (return value 0) leaves glibc's default, which works.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_is_recognised_by_its_reserved_variables() {
        assert_eq!(Platform::from_lookup(|_| None), Platform::Local);
        assert_eq!(
            Platform::from_lookup(|n| (n == "AWS_LAMBDA_INITIALIZATION_TYPE").then(|| "on-demand".into())),
            Platform::Aws
        );
        assert_eq!(
            Platform::from_lookup(|n| (n == "AWS_LAMBDA_LOG_GROUP_NAME").then(|| "/aws/lambda/x".into())),
            Platform::Aws
        );
    }

    #[test]
    fn the_error_prints_readably_in_debug_too() {
        let e = StartupError::Required {
            variable: "REPORT_BUCKET",
            function: "monthly-report",
            why: "where reports are written",
        };
        assert_eq!(format!("{e:?}"), e.to_string());
        assert!(e.to_string().starts_with("REPORT_BUCKET: required by monthly-report"));
    }
}
