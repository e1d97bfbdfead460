//! `credit-steward`: the administrators' command line over the same core as the functions.
//!
//! Exit codes: 0 done (for `check`: nothing blocks), 1 a blocker or a failure (the message
//! says what and what to do), 2 a usage error.

mod allocate;
mod args;
mod audit;
mod check;
mod context;
mod progress;
mod report;
mod scan;
mod table;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use check::Status;
use context::Context;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Library warnings (a retried request, a link not made) on standard error; RUST_LOG for more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let ctx = Context::new(cli.source.clone(), cli.language());
    let result = match &cli.command {
        Command::Check => return check(&ctx, cli.json).await,
        Command::Members(a) => scan::members(&ctx, a, cli.json).await,
        Command::Scan(a) => scan::scan(&ctx, a, cli.json).await,
        Command::Report(a) => report::report(&ctx, a, cli.json).await,
        Command::Allocate(a) => allocate::allocate(&ctx, a, cli.json).await,
        Command::Audit(a) => audit::audit(&ctx, a, cli.json).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", explain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: library errors often repeat their source's
/// text in their own message.
fn explain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

async fn check(ctx: &Context, json: bool) -> ExitCode {
    let lang = ctx.lang();
    let findings = check::run(ctx, lang).await;
    if json {
        match serde_json::to_string_pretty(&findings) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        let width = [Status::Ok, Status::Blocker, Status::Warning, Status::Skipped]
            .iter()
            .map(|s| s.label(lang).chars().count())
            .max()
            .unwrap_or(0);
        for f in &findings {
            let fix = f
                .fix
                .as_deref()
                .map(|x| format!(" → {}: {x}", lang.t("cli.check.fix")))
                .unwrap_or_default();
            println!("{:width$}  {}: {}{fix}", f.status.label(lang), f.title, f.detail);
        }
        let blockers = findings.iter().filter(|f| f.status == Status::Blocker).count();
        if blockers == 0 {
            println!("{}", lang.t("cli.check.none_block"));
        } else {
            println!(
                "{}",
                lang.p("cli.check.blockers", blockers, &[("n", &blockers.to_string())])
            );
        }
    }
    if check::has_blocker(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
