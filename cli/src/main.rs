//! `calyx`: the calicoctl-like client for Calico-v3 resources in etcd (and, as the project grows,
//! the node daemon `calyx node run`).
//!
//! Errors end the process with one line on standard error and exit code 1; nothing is written
//! to the datastore unless every check passed.

mod args;
mod commands;
mod connect;
mod node;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (level, json) = match &cli.command {
        args::Command::Node(args::NodeCommand::Run(run)) => (
            cli.log_level.clone().unwrap_or_else(|| "info".into()),
            run.log_format.eq_ignore_ascii_case("json"),
        ),
        _ => (
            cli.log_level.clone().unwrap_or_else(|| "warn".into()),
            false,
        ),
    };
    init_logging(&level, json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole context chain, outermost first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
