//! `calyx`: the calicoctl-like client for Calico-v3 resources in etcd, and the thin
//! `calyx node run` / `calyx node status` wrappers around the node daemon (`calyx-node`).
//!
//! Errors end the process with one line on standard error and exit code 1; nothing is written
//! to the datastore unless every check passed.

mod args;
mod commands;
mod connect;
mod runtime;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

fn main() -> ExitCode {
    forget_empty_settings();
    let cli = Cli::parse();
    let (level, json, daemon) = match &cli.command {
        args::Command::Node(args::NodeCommand::Run(run)) => (
            cli.log_level.clone().unwrap_or_else(|| "info".into()),
            run.log_format.eq_ignore_ascii_case("json"),
            true,
        ),
        _ => (
            cli.log_level.clone().unwrap_or_else(|| "warn".into()),
            false,
            false,
        ),
    };
    // FelixConfiguration's logSeverityScreen may set the daemon's level while it runs, unless
    // the level was given explicitly (CALYX_LOG_LEVEL, --log-level or RUST_LOG), which wins.
    let reloadable = daemon && cli.log_level.is_none() && std::env::var_os("RUST_LOG").is_none();
    init_logging(&level, json, reloadable);
    let workers =
        match runtime::parse_workers(std::env::var(runtime::WORKER_THREADS_ENV).ok().as_deref()) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    let runtime = match runtime::build(workers) {
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

/// Manifests often set a variable to "" to mean "not set" (a ConfigMap key left empty); clap
/// would take that as a flag given without a value. Such variables are dropped before parsing.
fn forget_empty_settings() {
    const PLAIN: [&str; 7] = [
        "NODENAME",
        "IP",
        "IP6",
        "AS",
        "IP_AUTODETECTION_METHOD",
        "IP6_AUTODETECTION_METHOD",
        "NO_DEFAULT_POOLS",
    ];
    let empty: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, v)| {
            v.is_empty()
                && (k.starts_with("ETCD_")
                    || k.starts_with("CALICO_")
                    || k.starts_with("CALYX_")
                    || PLAIN.contains(&k.as_str()))
        })
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        // Single-threaded here: nothing else reads the environment yet.
        std::env::remove_var(key);
    }
}

fn init_logging(level: &str, json: bool, reloadable: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // The same steps for both formats, whose builders differ in type.
    macro_rules! finish {
        ($b:expr) => {{
            let b = $b.with_filter_reloading();
            if reloadable {
                let handle = b.reload_handle();
                calyx_node::set_log_level_hook(move |level| {
                    let filter =
                        tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                    handle.reload(filter).map_err(|e| e.to_string())
                });
            }
            b.init();
        }};
    }
    if json {
        finish!(builder.json());
    } else {
        finish!(builder);
    }
}
