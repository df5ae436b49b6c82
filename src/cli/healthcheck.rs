//! `corsgate healthcheck`: one `GET /readyz` (or `/healthz` with `--live`) to a running
//! corsgate's admin listener, for health checks run inside images that have no shell or curl
//! (Docker's `HEALTHCHECK`, a Kubernetes exec probe).
//!
//! Exit 0 when the answer is 200, 1 otherwise, with one line saying why. Never 2 for a problem of
//! its own: Docker reserves that status, so an unreadable configuration is "unhealthy" too.
//!
//! Of the configuration it reads only `[admin]`: whether the server is healthy must not depend on
//! this process re-validating routes, certificates or credentials it does not use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::header::{AUTHORIZATION, CONNECTION, HOST, HeaderValue, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::{AdminConfig, DEFAULT_ADMIN_LISTEN, parse_duration};

/// The most of a failed answer's body that is read for the reason it gives.
const REASON_LIMIT: usize = 1024;

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The admin listener to ask; overrides the configuration's `admin.listen` (default
    /// 127.0.0.1:9901). An unspecified address (0.0.0.0, [::]) is asked on loopback.
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,
    /// Read `admin.listen` and `admin.token_env` from this configuration file (the one the server
    /// runs with); with a token variable set, the check sends `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ask `/healthz` (the process answers) instead of `/readyz` (every route has rules): for
    /// liveness probes, which must not restart a process only waiting for its bucket.
    #[arg(long)]
    pub live: bool,
    /// How long the whole check may take, connecting included.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Why the check did not pass; each message is the one line the command prints.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthcheckError {
    #[error("{}: cannot read: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(
        "{}: admin.listen is \"off\", so there is no admin listener to ask: enable it, or pass --admin",
        path.display()
    )]
    AdminOff { path: PathBuf },
    #[error(
        "admin.token_env names {var}, which is not set here: the admin listener would refuse the check"
    )]
    TokenUnset { var: String },
    #[error("the token in {var} cannot be sent in an HTTP header: it has control characters")]
    TokenInvalid { var: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("no answer from {addr} within {}", humantime::format_duration(*timeout))]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("bad answer from {addr}: {source}")]
    Protocol {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("not {}: {status}{}", check.word(), reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Unhealthy {
        check: Check,
        status: StatusCode,
        /// What the answer's body says, on one line.
        reason: Option<String>,
    },
}

/// Which endpoint is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Ready,
    Live,
}

impl Check {
    fn path(self) -> &'static str {
        match self {
            Check::Ready => "/readyz",
            Check::Live => "/healthz",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Check::Ready => "ready",
            Check::Live => "live",
        }
    }
}

/// Where to send the check and what to send.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The address connected to, also the `Host` sent (which the admin listener checks).
    addr: SocketAddr,
    check: Check,
    token: Option<HeaderValue>,
}

pub fn run(args: &HealthcheckArgs) -> ExitCode {
    match check(args) {
        Ok(word) => {
            println!("{word}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &HealthcheckArgs) -> Result<&'static str, HealthcheckError> {
    let check = if args.live { Check::Live } else { Check::Ready };
    let target = target(args, check, |var| std::env::var(var).ok())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HealthcheckError::Runtime)?;
    runtime.block_on(probe(&target, args.timeout))?;
    Ok(check.word())
}

/// The target the arguments and the configuration file name; `env` reads the token variable.
fn target(
    args: &HealthcheckArgs,
    check: Check,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Target, HealthcheckError> {
    let admin = match &args.config {
        Some(path) => admin_of(path)?,
        None => AdminConfig::default(),
    };
    // Only a configuration file can turn the listener off: the default has one.
    let Some(listen) = args.admin.or(admin.listen) else {
        let path = args.config.clone().unwrap_or_default();
        return Err(HealthcheckError::AdminOff { path });
    };
    let token = match admin.token_env {
        None => None,
        Some(var) => {
            let token = env(&var)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| HealthcheckError::TokenUnset { var: var.clone() })?;
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| HealthcheckError::TokenInvalid { var })?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    Ok(Target {
        addr: reachable(listen),
        check,
        token,
    })
}

/// The `[admin]` table of a configuration file, read as the server reads it.
fn admin_of(path: &Path) -> Result<AdminConfig, HealthcheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| HealthcheckError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| HealthcheckError::Config {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
    let mut admin = AdminConfig::default();
    let Some(section) = table.get("admin") else {
        return Ok(admin);
    };
    let section = section
        .as_table()
        .ok_or_else(|| invalid("admin: expected a table".into()))?;
    if let Some(listen) = section.get("listen") {
        let text = listen.as_str().ok_or_else(|| {
            invalid(format!(
                "admin.listen: expected a string such as \"{DEFAULT_ADMIN_LISTEN}\" or \"off\""
            ))
        })?;
        admin.listen =
            AdminConfig::parse_listen(text).map_err(|m| invalid(format!("admin.listen: {m}")))?;
    }
    if let Some(var) = section.get("token_env") {
        let var = var.as_str().ok_or_else(|| {
            invalid("admin.token_env: expected the name of an environment variable".into())
        })?;
        admin.token_env = Some(var.to_string());
    }
    Ok(admin)
}

/// A listener on every interface is asked on loopback, the one interface sure to be among them.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    }
}

async fn probe(target: &Target, timeout: Duration) -> Result<(), HealthcheckError> {
    let addr = target.addr;
    let deadline = Instant::now() + timeout;
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            return Err(HealthcheckError::Connect {
                addr,
                reason: os_reason(&err),
            });
        }
        Err(_) => {
            return Err(HealthcheckError::Connect {
                addr,
                reason: format!("no answer within {}", humantime::format_duration(timeout)),
            });
        }
    };
    let timed_out = || HealthcheckError::Timeout { addr, timeout };
    let protocol = |source| HealthcheckError::Protocol { addr, source };

    let (mut sender, connection) = timeout_at(
        deadline,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(protocol)?;
    tokio::spawn(connection);

    let mut request = Request::get(target.check.path())
        .header(HOST, addr.to_string())
        .header(
            USER_AGENT,
            concat!("corsgate-healthcheck/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .expect("a GET of a fixed path with valid headers is a valid request");
    if let Some(token) = &target.token {
        request.headers_mut().insert(AUTHORIZATION, token.clone());
    }
    let response = timeout_at(deadline, sender.send_request(request))
        .await
        .map_err(|_| timed_out())?
        .map_err(protocol)?;
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(());
    }
    // The reason is a courtesy: a body that is slow, long or broken leaves it out.
    let body = timeout_at(
        deadline,
        Limited::new(response.into_body(), REASON_LIMIT).collect(),
    )
    .await;
    let reason = match body {
        Ok(Ok(collected)) => one_line(&collected.to_bytes()),
        _ => None,
    };
    Err(HealthcheckError::Unhealthy {
        check: target.check,
        status,
        reason,
    })
}

/// The body's lines joined with "; ", printable characters only; `None` when it says nothing.
fn one_line(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let lines: Vec<String> = text
        .lines()
        .map(|line| line.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// An I/O error as the operating system words it, without the "(os error N)" suffix.
fn os_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(admin: Option<&str>, config: Option<PathBuf>) -> HealthcheckArgs {
        HealthcheckArgs {
            admin: admin.map(|a| a.parse().expect("test address")),
            config,
            live: false,
            timeout: Duration::from_secs(2),
        }
    }

    fn config_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corsgate-healthcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("temp config");
        path
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn without_arguments_it_asks_the_default_admin_address_with_no_token() {
        let t = target(&args(None, None), Check::Ready, no_env).expect("target");
        assert_eq!(t.addr.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(t.token, None);
    }

    #[test]
    fn the_configuration_names_the_address_and_the_token_variable() {
        let path = config_file(
            "token.toml",
            "[server]\nlisten = [\"0.0.0.0:8080\"]\n[admin]\nlisten = \"0.0.0.0:9911\"\ntoken_env = \"ADMIN_TOKEN\"\n",
        );
        let env = |var: &str| (var == "ADMIN_TOKEN").then(|| "s3cret".to_string());
        let t = target(&args(None, Some(path.clone())), Check::Ready, env).expect("target");
        assert_eq!(
            t.addr.to_string(),
            "127.0.0.1:9911",
            "0.0.0.0 is asked on loopback"
        );
        assert_eq!(t.token, Some(HeaderValue::from_static("Bearer s3cret")));

        let err = target(&args(None, Some(path)), Check::Ready, no_env).expect_err("unset token");
        assert_eq!(
            err.to_string(),
            "admin.token_env names ADMIN_TOKEN, which is not set here: the admin listener would refuse the check"
        );
    }

    #[test]
    fn the_admin_flag_overrides_the_configured_address() {
        let path = config_file("listen.toml", "[admin]\nlisten = \"[::]:9912\"\n");
        let t = target(&args(None, Some(path.clone())), Check::Ready, no_env).expect("target");
        assert_eq!(t.addr.to_string(), "[::1]:9912");
        let t = target(
            &args(Some("127.0.0.2:7000"), Some(path)),
            Check::Ready,
            no_env,
        )
        .expect("target");
        assert_eq!(t.addr.to_string(), "127.0.0.2:7000");
    }

    #[test]
    fn an_absent_admin_listener_or_a_bad_file_is_reported_not_guessed() {
        let off = config_file("off.toml", "[admin]\nlisten = \"off\"\n");
        let err = target(&args(None, Some(off)), Check::Ready, no_env).expect_err("off");
        assert!(err.to_string().contains("admin.listen is \"off\""), "{err}");

        let bad = config_file("bad.toml", "[admin]\nlisten = \"nowhere\"\n");
        let err = target(&args(None, Some(bad)), Check::Ready, no_env).expect_err("bad");
        assert!(
            err.to_string()
                .contains("admin.listen: \"nowhere\" is not an IP:PORT"),
            "{err}"
        );

        let missing = PathBuf::from("no/such/corsgate.toml");
        let err = target(&args(None, Some(missing)), Check::Ready, no_env).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("no/such/corsgate.toml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn an_unhealthy_answer_reads_as_one_line() {
        let err = HealthcheckError::Unhealthy {
            check: Check::Ready,
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: one_line(b"route[0]: rules not loaded\nroute[2]: rules not loaded\n"),
        };
        assert_eq!(
            err.to_string(),
            "not ready: 503 Service Unavailable: route[0]: rules not loaded; route[2]: rules not loaded"
        );
        let err = HealthcheckError::Unhealthy {
            check: Check::Live,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: one_line(b"\x07\n \t\r\n"),
        };
        assert_eq!(err.to_string(), "not live: 500 Internal Server Error");
        assert_eq!(one_line(b"a\x1b[0mb\x00").as_deref(), Some("a[0mb"));
    }

    #[test]
    fn os_errors_lose_their_number() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!os_reason(&refused).contains("os error"));
        let raw = std::io::Error::from_raw_os_error(111);
        assert!(!os_reason(&raw).contains("os error"), "{}", os_reason(&raw));
    }
}
