//! Loopback ports and readiness checks.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released: the caller binds it next, on loopback only).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `addr`, or `limit` passes.
pub fn wait_for_listener(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The checkout's tool virtualenv (`scripts/install-tools.sh` installs moto_server and
/// cargo-lambda there, not in the system Python), searched before `PATH`.
pub fn tools_bin() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/test/bin")
}

/// `PATH` with [`tools_bin`] first, for child processes that look tools up themselves
/// (`cargo lambda` finds `cargo-lambda` on `PATH`).
pub fn path_with_tools() -> std::ffi::OsString {
    let mut dirs = vec![tools_bin()];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Finds an executable in [`tools_bin`] or on `PATH`.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&path_with_tools())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
