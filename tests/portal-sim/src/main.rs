//! `portal-sim`: serve a simulated ArcGIS Online org on loopback.
//!
//! `portal-sim --members 25000 --seed 7` generates an org; `--fixture org.json` loads one;
//! `--write-fixture out.json` writes the generated org and exits. The control API
//! (`/_sim/state`, `/_sim/faults`, …) answers loopback clients only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use chrono::{NaiveDate, Utc};
use clap::Parser;
use portal_sim::{Behaviour, GenParams, Org, Sim, TlsIdentity, generate, serve};

#[derive(Parser, Debug)]
#[command(version, about = "A stateful ArcGIS Online sharing/rest simulator")]
struct Args {
    /// Members to generate.
    #[arg(long, default_value_t = 200)]
    members: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The day the generated org is "as of" (YYYY-MM-DD, UTC); defaults to today.
    #[arg(long)]
    as_of: Option<NaiveDate>,
    /// Generate with credit budgeting disabled.
    #[arg(long)]
    no_budgeting: bool,
    /// Load this fixture instead of generating.
    #[arg(long, conflicts_with_all = ["members", "seed", "as_of", "no_budgeting"])]
    fixture: Option<PathBuf>,
    /// Write the org as JSON to this file and exit.
    #[arg(long)]
    write_fixture: Option<PathBuf>,
    /// Address to bind; loopback unless you mean otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0 = any free port; the chosen one is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve HTTPS with a fresh self-signed certificate, and require it for generateToken.
    #[arg(long)]
    tls: bool,
    /// With --tls: write the certificate (PEM) here so clients can trust it.
    #[arg(long, requires = "tls")]
    cert_out: Option<PathBuf>,
    /// Write the chosen port to this file once listening (for scripts).
    #[arg(long)]
    port_file: Option<PathBuf>,
}

fn load(args: &Args) -> Result<Org, String> {
    match &args.fixture {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read fixture {}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("fixture {} is not a valid org: {e}", path.display()))
        }
        None => {
            let as_of = args.as_of.unwrap_or_else(|| Utc::now().date_naive());
            Ok(generate(&GenParams {
                members: args.members,
                seed: args.seed,
                as_of,
                budgeting: !args.no_budgeting,
            }))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let started = std::time::Instant::now();
    let org = load(&args)?;
    let loaded_ms = started.elapsed().as_millis();
    if let Some(out) = &args.write_fixture {
        let text = serde_json::to_string_pretty(&org).map_err(|e| e.to_string())?;
        std::fs::write(out, text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        eprintln!(
            "wrote {} ({} members, {} usage records; built in {loaded_ms} ms, written in {} ms)",
            out.display(),
            org.members.len(),
            org.usage.len(),
            started.elapsed().as_millis() - loaded_ms
        );
        return Ok(());
    }
    let listener = std::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .map_err(|e| format!("cannot bind {}:{}: {e}", args.host, args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = if args.tls {
        Some(TlsIdentity::self_signed()?)
    } else {
        None
    };
    if let (Some(id), Some(out)) = (&tls, &args.cert_out) {
        std::fs::write(out, &id.cert_pem).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    let behaviour = Behaviour {
        require_https_for_token: args.tls,
        ..Behaviour::default()
    };
    let scheme = if args.tls { "https" } else { "http" };
    let budgeting = match org.credit_assignments {
        Some(true) => "enabled",
        Some(false) => "disabled",
        None => "absent",
    };
    println!(
        "portal-sim: org {} ({}), {} members, {} usage records, budgeting {budgeting} (built in {loaded_ms} ms)",
        org.name,
        org.id,
        org.members.len(),
        org.usage.len()
    );
    println!("portal-sim: listening on {scheme}://{addr}/sharing/rest (control API at {scheme}://{addr}/_sim/state)");
    if let Some(pf) = &args.port_file {
        std::fs::write(pf, addr.port().to_string()).map_err(|e| format!("cannot write {}: {e}", pf.display()))?;
    }
    let sim = Sim::new(org, behaviour, args.tls);
    tokio::select! {
        r = serve(listener, sim, tls) => r.map_err(|e| format!("server failed: {e}")),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
