//! The AWS environment every child process gets: dummy credentials, a fixed region, no
//! instance-metadata probing, and endpoints on loopback — nothing can reach real AWS.

/// Variables that keep AWS SDKs on this machine, with `endpoint` (moto) for every service.
pub fn aws_local(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", endpoint),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Sets the same variables in this process (tests that build AWS clients in-process).
/// Call once, before any thread reads the environment.
///
/// # Safety
/// Mutating the environment is only sound while no other thread reads it; call this at the
/// start of a test binary's first use (the harness does so under a `OnceLock`).
pub unsafe fn set_aws_local(endpoint: &str) {
    for (k, v) in aws_local(endpoint) {
        // SAFETY: forwarded to the caller's contract above.
        unsafe { std::env::set_var(k, v) };
    }
}
