//! A `moto_server` for this process: started once on a free loopback port, ready when it
//! answers HTTP, killed when the process exits (a shell watchdog holds it and kills it when
//! our end of its stdin pipe closes, since statics are never dropped).
//!
//! Missing `moto_server` is a failure, never a skip: `make test` installs it
//! (`scripts/install-tools.sh`), and a silently skipped AWS test proves nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::net::{free_port, on_path};

/// The running emulator.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _watchdog: Mutex<Child>,
}

/// The emulator, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(start)
}

fn start() -> Moto {
    let exe = on_path("moto_server").unwrap_or_else(|| {
        panic!("moto_server is neither in .tools/test/bin nor on PATH: these tests need it and do not skip; run `scripts/install-tools.sh`")
    });
    let port = free_port();
    let log = std::env::temp_dir().join(format!("testkit-moto-{}-{port}.log", std::process::id()));
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" -H 127.0.0.1 -p "$1" >"$2" 2>&1 & pid=$!; read _eof; kill "$pid" 2>/dev/null"#)
        .arg(&exe)
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sh runs");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers_http(addr) {
        let output = || std::fs::read_to_string(&log).unwrap_or_default();
        if Instant::now() > deadline {
            panic!(
                "moto_server did not answer on {addr} within 60 s; its output:\n{}",
                output()
            );
        }
        if let Ok(Some(status)) = watchdog.try_wait() {
            panic!(
                "moto_server exited ({status}) before answering; its output:\n{}",
                output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&log);
    Moto {
        endpoint: format!("http://{addr}"),
        _watchdog: Mutex::new(watchdog),
    }
}

fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}
