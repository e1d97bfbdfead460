//! A `moto_server` (Secrets Manager emulator) for this test binary: started once on a free
//! loopback port, ready when it answers HTTP, killed when the test process exits.
//!
//! Missing `moto_server` is a test failure, never a skip: CI installs it
//! (`pip install "moto[server]==5.2.*"`), and a silently skipped secrets test proves nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The running emulator.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The watchdog, holding moto. Its stdin stays open as long as this process lives: when
    /// the process exits the pipe closes and the watchdog kills moto (statics are never
    /// dropped, so a `Drop` impl would not run).
    _watchdog: Mutex<Child>,
}

/// The emulator, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(start)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

fn start() -> Moto {
    let exe = on_path("moto_server").unwrap_or_else(|| {
        panic!(
            "moto_server is not on PATH. The Secrets Manager tests need it and do not skip: \
             install it with `pip install \"moto[server]==5.2.*\"`."
        )
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    let log = std::env::temp_dir().join(format!("credit-core-moto-{}-{port}.log", std::process::id()));
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
        if Instant::now() > deadline {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("moto_server did not answer on {addr} within 60 s; its output:\n{output}");
        }
        if let Ok(Some(status)) = watchdog.try_wait() {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("moto_server exited ({status}) before answering; its output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only kept while starting (its output explains a failure); moto keeps the open file.
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
