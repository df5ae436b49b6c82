//! `corsgate serve`: reads the configuration, starts the gateway, runs until SIGTERM/ctrl-c.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, DEFAULT_CONFIG_PATH, OriginUrl};
use crate::gateway;
use crate::rules::RulesSource;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The TOML configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "origin")]
    pub config: Option<PathBuf>,
    /// Listen on this address instead of the configuration's `server.listen` (repeatable).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Serve one route, for any Host, forwarding to this origin (no configuration file read).
    #[arg(long, value_name = "URL")]
    pub origin: Option<String>,
    /// The CORS rules of the `--origin` route (S3 XML or AWS CLI JSON); without it the route
    /// has no CORS configuration.
    #[arg(long, value_name = "FILE", requires = "origin")]
    pub rules: Option<PathBuf>,
}

pub fn run(args: &ServeArgs) -> ExitCode {
    // The per-request access log (target `corsgate::access`) costs more than a preflight answer:
    // off unless RUST_LOG asks for it (e.g. RUST_LOG=info, or RUST_LOG=corsgate::access=info).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,corsgate::access=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match config(args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// One worker per core this process may run on (its CPU affinity, so `taskset` and cgroup
/// limits count). On a single core, the current-thread scheduler: the multi-thread one would
/// pay for work stealing and cross-thread wake-ups with nothing to steal from (measured: its
/// task spawn, done per h2 stream, costs three times as much).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
    }
}

fn config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = match &args.origin {
        Some(origin) => {
            let origin = OriginUrl::parse(origin).map_err(|m| format!("--origin: {m}"))?;
            let rules = args
                .rules
                .clone()
                .map_or(RulesSource::None, RulesSource::File);
            Config::single_route(origin, rules)
        }
        None => {
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            Config::load(&path).map_err(|e| e.to_string())?
        }
    };
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    Ok(config)
}
