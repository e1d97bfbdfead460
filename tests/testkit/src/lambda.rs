//! The Lambda side: the Runtime API emulator and the real function binaries under it.
//!
//! `cargo lambda watch --only-lambda-apis` (cargo-lambda from PyPI) emulates the Lambda
//! control plane without building or starting anything itself; each function is the real
//! binary (what SAM ships as `bootstrap`), started by us with its own environment and pointed
//! at `http://127.0.0.1:<port>/.rt/<name>`. Invocations go through the Invoke API
//! (`POST /2015-03-31/functions/<name>/invocations`), exactly as AWS's async and sync
//! invokes deliver them. One emulator per test keeps tests isolated.
//!
//! Several processes of one function under one emulator act as concurrent containers: each
//! `GET .../invocation/next` takes a different invocation from the function's queue. A process
//! started with [`FunctionProcess::spawn_with_timeout`] polls through a
//! [`crate::proxy::RuntimeProxy`], so its invocations carry a real deadline; one killed with
//! [`FunctionProcess::kill`] stops mid-invocation, as a crashed or timed-out container does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::net::{free_port, on_path, path_with_tools, wait_for_listener};
use crate::proxy::{Delivered, RuntimeProxy};

/// The workspace root (this crate lives in `tests/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Which cargo profile the function binaries come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `target/debug`: tests.
    Debug,
    /// `target/release`: benchmarks.
    Release,
}

/// Builds the debug function binaries once per process and returns their directory.
pub fn function_binaries() -> &'static Path {
    binaries(Profile::Debug)
}

/// Builds the function binaries of `profile` once per process (the workspace's target
/// directory) and returns the directory holding them. Running cargo from a test is safe: the
/// outer `cargo test` holds no build lock while tests run.
pub fn binaries(profile: Profile) -> &'static Path {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let cell = if profile == Profile::Debug { &DEBUG } else { &RELEASE };
    cell.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(&root).args(["build", "--quiet"]);
        match profile {
            // `--workspace --bins` as scripts/test.sh builds them, so CI finds them fresh and
            // the feature resolution matches (no rebuild of shared dependencies).
            Profile::Debug => {
                cmd.args(["--workspace", "--bins"]);
            }
            // Benchmarks: the four functions only, so their features are not unified with the
            // CLI's and the test tools' (closer to `sam build`, which builds each alone), and
            // the release profile links four binaries, not every tool of the workspace.
            Profile::Release => {
                cmd.arg("--release");
                for function in FUNCTIONS {
                    cmd.args(["-p", function]);
                }
            }
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the function binaries failed ({status})");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join(if profile == Profile::Debug { "debug" } else { "release" })
    })
}

/// The function packages (and binary names) of the workspace.
pub const FUNCTIONS: &[&str] = &["scan-credits", "allocate", "allocation-jobs", "monthly-report"];

/// A running Runtime API emulator. Stops when dropped.
pub struct RuntimeEmulator {
    port: u16,
    _child: Child,
    http: reqwest::Client,
}

/// What an invocation returned.
#[derive(Debug)]
pub struct Invocation {
    /// HTTP status of the Invoke API call.
    pub status: u16,
    /// `X-Amz-Function-Error` when the function failed.
    pub function_error: Option<String>,
    /// The payload (the function's result, or its error document).
    pub payload: Value,
}

impl RuntimeEmulator {
    /// Starts `cargo lambda watch --only-lambda-apis` on a free loopback port.
    pub async fn start() -> RuntimeEmulator {
        assert!(
            on_path("cargo-lambda").is_some(),
            "cargo-lambda is neither in .tools/test/bin nor on PATH: run `scripts/install-tools.sh`"
        );
        let port = free_port();
        let child = Command::new("cargo")
            .current_dir(workspace_root())
            .env("PATH", path_with_tools())
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--quiet",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cargo lambda watch starts");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let ready = tokio::task::spawn_blocking(move || wait_for_listener(addr, Duration::from_secs(60)))
            .await
            .unwrap_or(false);
        assert!(
            ready,
            "the Lambda Runtime API emulator did not listen on {addr} within 60 s"
        );
        let _ = rustls::crypto::ring::default_provider().install_default();
        RuntimeEmulator {
            port,
            _child: child,
            http: reqwest::Client::new(),
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for a function.
    pub fn runtime_api(&self, function: &str) -> String {
        format!("http://127.0.0.1:{}/.rt/{function}", self.port)
    }

    /// The emulator's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Invokes `function` synchronously with `payload`.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Invocation {
        invoke(&self.http, &self.url(), function, payload).await
    }

    /// An owned handle that invokes functions of this emulator: it can be moved into tasks
    /// (concurrent invocations) and outlives borrows of the emulator.
    pub fn invoker(&self) -> Invoker {
        Invoker {
            url: self.url(),
            http: self.http.clone(),
        }
    }
}

/// Invokes functions of one emulator; cheap to clone.
#[derive(Debug, Clone)]
pub struct Invoker {
    url: String,
    http: reqwest::Client,
}

impl Invoker {
    /// Invokes `function` synchronously with `payload`.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Invocation {
        invoke(&self.http, &self.url, function, payload).await
    }
}

async fn invoke(http: &reqwest::Client, url: &str, function: &str, payload: &Value) -> Invocation {
    let r = http
        .post(format!("{url}/2015-03-31/functions/{function}/invocations"))
        .json(payload)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap_or_else(|e| panic!("invoking {function}: {e}"));
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("x-amz-function-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await.unwrap_or_default();
    let payload: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    // The emulator does not always set the header; the Runtime API error document
    // (`errorType` + `errorMessage`) is what the function reported either way.
    let function_error = header.or_else(|| {
        payload
            .get("errorMessage")
            .and(payload.get("errorType"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    Invocation {
        status,
        function_error,
        payload,
    }
}

/// A function process: the real binary, started with its own environment. Stops when dropped.
pub struct FunctionProcess {
    child: Child,
    log: PathBuf,
    proxy: Option<RuntimeProxy>,
}

impl FunctionProcess {
    /// Starts the debug binary of function `name` under `emulator` with `env` (plus the Lambda
    /// variables).
    pub fn spawn(emulator: &RuntimeEmulator, name: &str, env: &[(String, String)]) -> FunctionProcess {
        Self::spawn_from(binaries(Profile::Debug), emulator, name, env)
    }

    /// The same with the binary taken from `dir`.
    pub fn spawn_from(dir: &Path, emulator: &RuntimeEmulator, name: &str, env: &[(String, String)]) -> FunctionProcess {
        Self::launch(dir, emulator.runtime_api(name), name, env, None)
    }

    /// Starts the debug binary of function `name` behind a [`RuntimeProxy`] that gives each of
    /// its invocations `timeout`, as a Lambda function configured with that timeout gets: the
    /// context deadline is `now + timeout` when the invocation is handed out, not the
    /// emulator's placeholder. Must be called inside a Tokio runtime.
    pub fn spawn_with_timeout(
        emulator: &RuntimeEmulator,
        name: &str,
        env: &[(String, String)],
        timeout: Duration,
    ) -> FunctionProcess {
        let proxy = RuntimeProxy::start(&emulator.url(), timeout);
        Self::launch(
            binaries(Profile::Debug),
            proxy.runtime_api(name),
            name,
            env,
            Some(proxy),
        )
    }

    fn launch(
        dir: &Path,
        runtime_api: String,
        name: &str,
        env: &[(String, String)],
        proxy: Option<RuntimeProxy>,
    ) -> FunctionProcess {
        let bin = dir.join(name);
        let log = std::env::temp_dir().join(format!("testkit-{name}-{}-{}.log", std::process::id(), free_port()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(&bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        FunctionProcess { child, log, proxy }
    }

    /// The CPU time the process (all its threads) has used so far, user plus system (Linux
    /// `/proc/<pid>/stat`, in clock ticks of 10 ms: `USER_HZ` is 100 on Linux). What a run
    /// costs on a Lambda whose memory size buys a fraction of a vCPU, whatever this machine's
    /// load did to the wall time.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces: count fields after its closing ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    /// The process's peak resident memory so far, in bytes (Linux `VmHWM`), while it runs.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Everything the function printed so far (logs, EMF lines). Still readable after
    /// [`FunctionProcess::kill`], until the handle is dropped.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then waits until the process is gone: whatever it was doing stops at once,
    /// as when Lambda stops a timed-out or crashed container. Its connections close; the
    /// invocation it was working on is never answered.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The invocations handed to this process, in order (only for processes started with
    /// [`FunctionProcess::spawn_with_timeout`]; empty otherwise).
    pub fn delivered(&self) -> Vec<Delivered> {
        self.proxy.as_ref().map(RuntimeProxy::delivered).unwrap_or_default()
    }

    /// Whether the process is idle, waiting for an invocation (only known for processes
    /// started with [`FunctionProcess::spawn_with_timeout`]; false otherwise).
    pub fn polling(&self) -> bool {
        self.proxy.as_ref().is_some_and(RuntimeProxy::polling)
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}
