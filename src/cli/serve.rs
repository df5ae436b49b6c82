//! `corsgate serve`: reads the configuration, starts the gateway, runs until SIGTERM/ctrl-c.
//!
//! With a configuration file, a reload (SIGHUP, `POST /-/reload`) reads it again and applies the
//! same command-line flags to it: `--listen ADDR` keeps replacing `server.listen`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::config::{
    ADDRESSING_NAMES, AdminConfig, BucketSource, Config, DEFAULT_CONFIG_PATH, DEFAULT_POLL,
    EndpointSource, OriginSigning, OriginUrl, RedirectConfig, RulesSource, SigningConfig,
    TlsListenerConfig, parse_bucket_name,
};
use crate::gateway::{self, ConfigSource, ReloadError, Stopped};
use crate::s3::Addressing;
use crate::tls::{CertFiles, UnknownName};

#[derive(Clone, Debug, Args)]
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
    /// has no CORS configuration. Watched: changes apply at once.
    #[arg(long, value_name = "FILE", requires = "origin", conflicts_with_all = ["rules_bucket", "s3_endpoint"])]
    pub rules: Option<PathBuf>,
    /// The `--origin` route's rules are those stored in this bucket of the origin
    /// (`GET /<bucket>?cors`, signed with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    /// AWS_SESSION_TOKEN when set), polled every 30 s.
    #[arg(
        long,
        value_name = "NAME",
        requires = "origin",
        conflicts_with = "s3_endpoint",
        value_parser = parse_bucket_name
    )]
    pub(crate) rules_bucket: Option<String>,
    /// The `--origin` route fronts a whole S3-compatible endpoint: the bucket comes from the path
    /// (`path`) or the Host (`virtual`), and each bucket's rules are read from the bucket.
    #[arg(long, value_name = "path|virtual", requires = "origin", value_enum)]
    pub(crate) s3_endpoint: Option<Addressing>,
    /// The region bucket requests are signed for.
    #[arg(long, value_name = "REGION", default_value = crate::config::DEFAULT_REGION)]
    pub region: String,
    /// The `--origin` route fronts a private bucket: every request forwarded is signed for this
    /// region with the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and
    /// AWS_SESSION_TOKEN when set), and only GET and HEAD are forwarded.
    #[arg(long, value_name = "REGION", requires = "origin")]
    pub(crate) sign_region: Option<String>,
    /// The admin listener (`/healthz`, `/readyz`, `POST /-/reload`, `GET /-/rules`), or `off`;
    /// overrides the configuration's `admin.listen` (default 127.0.0.1:9901).
    #[arg(long, value_name = "IP:PORT|off")]
    pub admin: Option<String>,
    /// Serve HTTPS: the `--listen` addresses (or the configuration's `server.listen`) become TLS
    /// listeners with this PEM certificate chain, replacing any `server.tls` of the
    /// configuration. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Also listen for plain HTTP here and redirect every request to HTTPS (308), health checks
    /// (`/healthz`, `/readyz`) excepted.
    #[arg(long, value_name = "IP:PORT", requires = "tls_cert")]
    pub(crate) redirect_http: Option<SocketAddr>,
}

/// `--s3-endpoint path|virtual`: the configuration's names, so both spell them alike and clap
/// lists them in its help and its errors.
impl clap::ValueEnum for Addressing {
    fn value_variants<'a>() -> &'a [Self] {
        &[Addressing::Path, Addressing::Virtual]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        ADDRESSING_NAMES
            .iter()
            .find(|(_, addressing)| addressing == self)
            .map(|(name, _)| clap::builder::PossibleValue::new(*name))
    }
}

pub fn run(args: &ServeArgs) -> ExitCode {
    // The access log does not go through this subscriber (it has its own writer, see
    // `gateway::access_log`), but the `corsgate::access` target still switches it: the load
    // benchmark runs `--origin` gateways, which have no `[log]`, with
    // `RUST_LOG=info,corsgate::access=off`, as nginx.conf has `access_log off`.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    // `--origin` reads no file: a reload then reloads the rules alone.
    let source = args.origin.is_none().then(|| {
        let args = args.clone();
        Arc::new(move || self::config(&args)) as ConfigSource
    });
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::run(config, source)) {
        Ok(Stopped::Drained) => ExitCode::SUCCESS,
        Ok(Stopped::Forced) => {
            // At once: no waiting for blocking tasks (file reads, DNS) to finish.
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// One worker per core this process may run on (its CPU affinity, so `taskset` and cgroup
/// limits count). On a single core, the current-thread scheduler: the multi-thread one would
/// pay for work stealing and cross-thread wake-ups with nothing to steal from, on every task
/// spawn (one per h2 stream).
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

/// The configuration `args` describe: the file (or `--origin`), then the other flags.
fn config(args: &ServeArgs) -> Result<Config, ReloadError> {
    let flag = ReloadError::CommandLine;
    let mut config = match &args.origin {
        Some(origin) => {
            let origin = OriginUrl::parse(origin).map_err(|m| flag(format!("--origin: {m}")))?;
            let signing = SigningConfig {
                region: args.region.clone(),
                ..SigningConfig::default()
            };
            let rules = match (&args.rules, &args.rules_bucket, &args.s3_endpoint) {
                (Some(file), _, _) => RulesSource::File(file.clone()),
                (_, Some(bucket), _) => RulesSource::Bucket(BucketSource {
                    bucket: bucket.clone(),
                    poll: DEFAULT_POLL,
                    signing,
                }),
                (_, _, Some(addressing)) => RulesSource::Endpoint(EndpointSource {
                    signing,
                    ..EndpointSource::defaults(*addressing)
                }),
                (None, None, None) => RulesSource::None,
            };
            let mut config = Config::single_route(origin, rules);
            // An S3 endpoint is addressed by Host (virtual-hosted buckets, signatures).
            config.routes[0].preserve_host = args.s3_endpoint.is_some();
            if let Some(region) = &args.sign_region {
                let sign = OriginSigning::for_region(region)
                    .map_err(|m| flag(format!("--sign-region: {m}")))?;
                config.routes[0].sign = Some(sign);
            }
            config
        }
        None => {
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            Config::load(&path)?
        }
    };
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    if let Some(admin) = &args.admin {
        config.admin.listen =
            AdminConfig::parse_listen(admin).map_err(|m| flag(format!("--admin: {m}")))?;
        config.admin.check_exposure().map_err(|p| {
            let mut message = format!("--admin: {}", p.message);
            if args.origin.is_some() {
                // `--origin` reads no configuration file, the only place admin.token_env is set.
                message.push_str(
                    "; admin.token_env is read from a configuration file only (serve --config)",
                );
            }
            flag(message)
        })?;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let listen = std::mem::take(&mut config.server.listen);
        if listen.is_empty() {
            return Err(flag(
                "--tls-cert: no address to serve TLS on (give --listen)".into(),
            ));
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn config_of(args: &[&str]) -> Result<Config, String> {
        let command =
            Command::try_parse_from([&["serve"], args].concat()).expect("valid arguments");
        config(&command.serve).map_err(|e| e.to_string())
    }

    #[test]
    fn an_exposed_admin_address_without_a_token_is_refused_with_the_way_out() {
        let message = config_of(&["--origin", "http://127.0.0.1:1", "--admin", "0.0.0.0:9901"])
            .expect_err("no token");
        assert!(
            message.starts_with("--admin: 0.0.0.0:9901 is reachable"),
            "{message}"
        );
        assert!(message.contains("admin.token_env"), "{message}");
        assert!(message.contains("--config"), "{message}");
    }

    #[test]
    fn an_exposed_admin_address_with_a_token_variable_is_accepted() {
        let dir = std::env::temp_dir().join(format!("corsgate-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("admin-token.toml");
        std::fs::write(
            &file,
            "[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_env = \"CORSGATE_ADMIN_TOKEN\"\n\n\
             [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:1\"\n",
        )
        .expect("write config");
        let path = file.to_str().expect("utf-8 temp path");
        let config = config_of(&["--config", path, "--admin", "0.0.0.0:9901"]).expect("accepted");
        assert_eq!(
            config.admin.listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 9901)))
        );
        assert_eq!(
            config.admin.token_env.as_deref(),
            Some("CORSGATE_ADMIN_TOKEN")
        );
    }
}
