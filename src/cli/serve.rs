//! `corsgate serve`: reads the configuration, starts the gateway, runs until SIGTERM/ctrl-c.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, DEFAULT_CONFIG_PATH, OriginUrl, RedirectConfig, TlsListenerConfig};
use crate::gateway;
use crate::rules::RulesSource;
use crate::tls::{CertFiles, UnknownName};

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
    /// Serve HTTPS: the `--listen` addresses (or the configuration's `server.listen`) become TLS
    /// listeners with this PEM certificate chain, replacing any `server.tls` of the
    /// configuration. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also listen for plain HTTP here and redirect every request to HTTPS (308), health checks
    /// (`/healthz`, `/readyz`) excepted.
    #[arg(long, value_name = "IP:PORT", requires = "tls_cert")]
    pub redirect_http: Option<SocketAddr>,
}

pub fn run(args: &ServeArgs) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let listen = std::mem::take(&mut config.server.listen);
        if listen.is_empty() {
            return Err("--tls-cert: no address to serve TLS on (give --listen)".into());
        }
        config.server.tls = vec![TlsListenerConfig {
            listen,
            certs: vec![CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }],
            unknown_name: UnknownName::DefaultCert,
        }];
    }
    if let Some(addr) = args.redirect_http {
        config.server.redirect = Some(RedirectConfig {
            listen: vec![addr],
            https_port: None,
        });
    }
    Ok(config)
}
