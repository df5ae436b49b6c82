//! The gateway's TOML configuration (`config/corsgate.toml`): its shape, its defaults and its
//! validation.
//!
//! Reading is two steps: serde reads the file into loose `Raw*` structs (unknown keys refused,
//! so a typo is an error, not a silently ignored setting), then [`Config::from_raw`] checks every
//! value and reports *every* problem at once, each naming its key (`route[2].origin: ...`).
//! Both steps report every problem of the file together, each with its line: serde's errors are
//! collected one by one (see `document`), not just the first.
//! No rules files are read here: that is the rules layer's job, at start-up, and `check`'s.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use serde::Deserialize;

use crate::s3::{Addressing, is_bucket_name};

mod document;
mod listeners;
mod route_options;
mod sources;

pub use listeners::{Http2Config, OriginTlsConfig, RedirectConfig, TlsListenerConfig};
pub use route_options::{Enforce, OriginSigning, ResourcePolicy};
pub use sources::{BucketSource, EndpointSource, RulesSource, ShadowSource, SigningConfig};
pub(crate) use sources::{DEFAULT_MAX_BUCKETS, DEFAULT_POLL, DEFAULT_REGION};

/// Where `corsgate serve` looks when no `--config` is given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "config/corsgate.toml";

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub routes: Vec<RouteConfig>,
    pub demo_origin: Option<DemoOriginConfig>,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

/// `[log]`: the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// One line per gateway request (`access = false` turns it off).
    pub access: bool,
    pub format: LogFormat,
    /// Where access lines go; `None`: stderr. Reopened on `SIGUSR1`.
    pub access_file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: true,
            format: LogFormat::Text,
            access_file: None,
        }
    }
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs (logfmt).
    Text,
    /// One JSON object per line.
    Json,
}

/// `[admin]`: the operator's listener (`/healthz`, `/readyz`, `POST /-/reload`, `GET /-/rules`),
/// on its own address so it is never exposed with the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// `None`: no admin listener (`listen = "off"`).
    pub listen: Option<SocketAddr>,
    /// The environment variable holding the bearer token every admin request must carry
    /// (`Authorization: Bearer <token>`); `None`: no token, which only a loopback address allows.
    pub token_env: Option<String>,
    /// `GET /metrics`, and the counting on the request path behind it (`metrics = false` turns
    /// both off; so does having no admin listener, since nothing could read the counts).
    pub metrics: bool,
}

/// Where the admin listener is when the configuration does not say.
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
            token_env: None,
            metrics: true,
        }
    }
}

impl AdminConfig {
    /// Whether requests are counted for `/metrics`.
    pub fn counts(&self) -> bool {
        self.listen.is_some() && self.metrics
    }

    /// `IP:PORT`, or `off`.
    pub(crate) fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
        if text == "off" {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            format!(
                "{text:?} is not an IP:PORT address (e.g. \"{DEFAULT_ADMIN_LISTEN}\") or \"off\""
            )
        })
    }

    /// A listener any other machine can reach must not answer without a token: the admin API
    /// reloads rules and shows them. Checked for the configuration file and `--admin` alike.
    pub fn check_exposure(&self) -> Result<(), KeyProblem> {
        match self.listen {
            Some(addr) if !addr.ip().is_loopback() && self.token_env.is_none() => {
                Err(KeyProblem::new(
                    "admin.listen".into(),
                    format!(
                        "{addr} is reachable from other machines: set admin.token_env to the name \
                         of an environment variable holding a bearer token, or listen on a \
                         loopback address (e.g. \"{DEFAULT_ADMIN_LISTEN}\")"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Plain-HTTP listeners (HTTP/1.1 and cleartext HTTP/2 on each).
    pub listen: Vec<SocketAddr>,
    /// TLS listeners (HTTP/2 or HTTP/1.1 by ALPN).
    pub tls: Vec<TlsListenerConfig>,
    /// The plain-HTTP listener that sends clients to HTTPS.
    pub redirect: Option<RedirectConfig>,
    pub http2: Http2Config,
    pub origin_tls: OriginTlsConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub preflight_cache: PreflightCacheConfig,
    /// Peers whose `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are kept (and appended to);
    /// from anyone else those headers are replaced by what corsgate itself sees.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Bind every listener with `SO_REUSEPORT`, so that a new corsgate can start on the same
    /// addresses beside a running one, which is then stopped (SIGTERM) without refusing a
    /// connection. Where the system has no such option it is ignored.
    pub reuse_port: bool,
}

impl Default for ServerConfig {
    /// One plain listener on [`DEFAULT_LISTEN`], every other setting at its default.
    fn default() -> Self {
        ServerConfig {
            listen: vec![default_listen()],
            tls: Vec::new(),
            redirect: None,
            http2: Http2Config::default(),
            origin_tls: OriginTlsConfig::default(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            preflight_cache: PreflightCacheConfig::default(),
            trusted_proxies: Vec::new(),
            reuse_port: true,
        }
    }
}

/// Every timeout the gateway applies. Defaults are those of [`Timeouts::default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to the origin; past it the client gets 504.
    pub connect: Duration,
    /// Time a client has to send a complete request head once its first byte arrived (and a new
    /// connection its first head); past it the connection is dropped (slowloris guard). Checked
    /// a few times per period, so it fires within 1.25 times this.
    pub header_read: Duration,
    /// Longest silence while reading a request body from the client; past it the origin request
    /// is aborted and the client gets 408 (or the connection is closed if the answer had begun).
    pub body_read: Duration,
    /// Longest origin silence from the moment the request is sent: while it does not read the
    /// upload, before its answer, and between body chunks; past it the client gets 504 (or the
    /// connection is closed if the answer had begun).
    pub origin_response: Duration,
    /// Longest time a client may read nothing of an answer that is waiting to be sent; past it
    /// the connection is closed and the origin connection released.
    pub send: Duration,
    /// A client connection with no request in flight and no head arriving for this long is
    /// closed (within 1.25 times this); also how long an unused pooled origin connection is kept.
    pub idle: Duration,
    /// On SIGTERM/ctrl-c, how long in-flight requests get to finish before connections are cut.
    pub shutdown_grace: Duration,
    /// On SIGTERM, how long the listeners keep accepting (with `/readyz` answering 503) before
    /// they stop, so that load balancers stop sending first; 0 stops at once.
    pub drain_delay: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            origin_response: Duration::from_secs(60),
            send: Duration::from_secs(60),
            idle: Duration::from_secs(75),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::from_secs(5),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// `[server.limits]`: caps that keep a few clients from taking every descriptor or origin socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once, over every listener. Past it accepting pauses (new
    /// connections wait in the kernel's backlog) until one closes. At start it is lowered to
    /// half the descriptor limit if that is smaller.
    pub max_connections: usize,
    /// Connections to one route's origin at once; a request that finds none free waits up to
    /// `timeouts.connect`, then gets 503 `SlowDown`.
    pub origin_connections: usize,
    /// Streams one HTTP/2 client connection may have open at once.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            origin_connections: 256,
            max_concurrent_streams: 100,
        }
    }
}

/// Bounds of the preflight answer cache: both hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreflightCacheConfig {
    /// At most this many cached answers; 0 turns the cache off.
    pub(crate) max_entries: u64,
    /// At most this many bytes of keys and answers together.
    pub(crate) max_bytes: u64,
}

impl Default for PreflightCacheConfig {
    fn default() -> Self {
        PreflightCacheConfig {
            max_entries: 10_000,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// One `[[route]]`: the hosts it serves, where it forwards, and its CORS rules.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    pub hosts: Vec<HostPattern>,
    pub origin: OriginUrl,
    pub rules: RulesSource,
    /// Forward the client's `Host` (true) or the origin's authority (false). Defaults to true on
    /// S3 endpoint routes (a virtual-hosted bucket is named by the Host, and a client's SigV4
    /// signature covers it), false elsewhere (the origin finds its bucket by its own name).
    pub preserve_host: bool,
    /// docs/cors-semantics.md#deviation-vary: `Vary: Origin` on every forwarded response of a route with rules.
    pub vary_origin_always: bool,
    /// Sign what is forwarded, for a private bucket; `None`: forward the client's request as is.
    pub sign: Option<OriginSigning>,
    pub enforce: Enforce,
    /// `Timing-Allow-Origin: <origin>` on the answers whose origin the rules grant.
    pub timing_allow_origin: bool,
    /// `Cross-Origin-Resource-Policy` on every answer, replacing the origin's.
    pub cross_origin_resource_policy: Option<ResourcePolicy>,
    /// Appended to `GET`/`HEAD` paths that end in `/`.
    pub index: Option<String>,
    /// `rules.deny_warnings`: a document with lint warnings is refused like an invalid one.
    pub deny_warnings: bool,
    /// `shadow_rules`: a candidate document every request is also judged by, without effect.
    pub shadow_rules: Option<ShadowSource>,
}

/// Which `Host` values a route serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `"*"`: any host, and requests without one.
    Any,
    /// A host name or address, lower-cased; without a port it matches that host on any port,
    /// with a port only on that port.
    Exact { host: String, port: Option<u16> },
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if text == "*" {
            return Ok(HostPattern::Any);
        }
        let authority: Authority = text
            .parse()
            .map_err(|_| format!("{text:?} is not a host name, an address or \"*\""))?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(format!("{text:?} is not a host name, an address or \"*\""));
        }
        Ok(HostPattern::Exact {
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16(),
        })
    }
}

/// The origin a route forwards to: `http[s]://host[:port][/path-prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to every request path; empty or starting with `/`, never ending with `/`.
    pub(crate) path_prefix: String,
}

impl OriginUrl {
    pub fn parse(text: &str) -> Result<OriginUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let scheme = uri.scheme().cloned();
        match scheme.as_ref().map(Scheme::as_str) {
            Some("http" | "https") => {}
            _ => return Err(format!("{text:?} must start with http:// or https://")),
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!("{text:?} names no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!("{text:?}: credentials in the URL are not allowed"));
        }
        if uri.query().is_some() {
            return Err(format!("{text:?}: an origin URL cannot have a query"));
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(OriginUrl {
            scheme: scheme.unwrap_or(Scheme::HTTP),
            authority,
            path_prefix,
        })
    }
}

impl fmt::Display for OriginUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme, self.authority, self.path_prefix
        )
    }
}

/// `[demo_origin]`: a static-file origin corsgate starts itself, so the default configuration
/// works offline.
#[derive(Clone, Debug)]
pub struct DemoOriginConfig {
    pub listen: SocketAddr,
    pub root: PathBuf,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML: every syntax error, each on its line.
    #[error("{}", render_problems(path, problems))]
    Syntax {
        path: PathBuf,
        problems: Vec<KeyProblem>,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<KeyProblem>,
    },
}

impl ConfigFileError {
    /// The file's problems, each with its line (one for an unreadable file, with none).
    pub fn problems(&self) -> Vec<KeyProblem> {
        match self {
            ConfigFileError::Read { source, .. } => vec![KeyProblem::new(
                String::new(),
                format!("cannot read: {source}"),
            )],
            ConfigFileError::Syntax { problems, .. }
            | ConfigFileError::Invalid { problems, .. } => problems.clone(),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ConfigFileError::Read { path, .. }
            | ConfigFileError::Syntax { path, .. }
            | ConfigFileError::Invalid { path, .. } => path,
        }
    }
}

/// One problem of a configuration, named by its key (empty for a TOML syntax error) and, when
/// read from text, with the line where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProblem {
    pub key: String,
    pub message: String,
    /// 1-based.
    pub line: Option<usize>,
}

impl KeyProblem {
    pub fn new(key: String, message: String) -> KeyProblem {
        KeyProblem {
            key,
            message,
            line: None,
        }
    }

    /// `FILE:LINE: key: message`, the form editors and CI logs link to the file.
    pub(crate) fn render(&self, file: &Path) -> String {
        match self.line {
            Some(line) => format!("{}:{line}: {self}", file.display()),
            None => format!("{}: {self}", file.display()),
        }
    }
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

fn render_problems(path: &Path, problems: &[KeyProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.render(path)).collect();
    lines.join("\n")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    route: Vec<RawRoute>,
    demo_origin: Option<RawDemoOrigin>,
    admin: Option<RawAdmin>,
    log: Option<RawLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    access: Option<bool>,
    format: Option<String>,
    access_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token_env: Option<String>,
    metrics: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<String>>,
    tls: Option<listeners::OneOrMany<listeners::RawTls>>,
    redirect: Option<listeners::RawRedirect>,
    #[serde(default)]
    http2: listeners::RawHttp2,
    #[serde(default)]
    origin_tls: listeners::RawOriginTls,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    preflight_cache: RawCache,
    trusted_proxies: Option<Vec<String>>,
    reuse_port: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    origin_connections: Option<usize>,
    max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<String>,
    header_read: Option<String>,
    body_read: Option<String>,
    origin_response: Option<String>,
    send: Option<String>,
    idle: Option<String>,
    shutdown_grace: Option<String>,
    drain_delay: Option<String>,
    tls_handshake: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    hosts: Option<Vec<String>>,
    origin: Option<String>,
    rules: Option<RawRules>,
    s3: Option<RawS3>,
    preserve_host: Option<bool>,
    vary_origin_always: Option<bool>,
    sign: Option<route_options::RawSign>,
    enforce: Option<String>,
    timing_allow_origin: Option<bool>,
    cross_origin_resource_policy: Option<String>,
    index: Option<String>,
    shadow_rules: Option<RawRules>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    file: Option<PathBuf>,
    bucket: Option<String>,
    poll: Option<String>,
    region: Option<String>,
    access_key_env: Option<String>,
    secret_key_env: Option<String>,
    session_token_env: Option<String>,
    deny_warnings: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    addressing: Option<String>,
    poll: Option<String>,
    max_buckets: Option<u64>,
    negative_ttl: Option<String>,
    max_fetches_per_second: Option<u32>,
    bucket_idle: Option<String>,
    region: Option<String>,
    access_key_env: Option<String>,
    secret_key_env: Option<String>,
    session_token_env: Option<String>,
}

/// Keys shared by `rules = { bucket = ... }` and `s3 = { ... }`.
#[derive(Debug, Default)]
struct RawSigning {
    region: Option<String>,
    access_key_env: Option<String>,
    secret_key_env: Option<String>,
    session_token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemoOrigin {
    listen: Option<String>,
    root: Option<PathBuf>,
}

impl Config {
    /// Reads and validates a TOML file. Relative paths in it (rules files, certificates and
    /// keys, CA files, the demo root) are resolved from the file's own directory, as nginx and
    /// Caddy do, so that the gateway can be started from any working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // In the file's order, as an editor shows it.
        let by_line = |mut problems: Vec<KeyProblem>| {
            problems.sort_by_key(|p| p.line);
            problems
        };
        let mut config = Config::parse(&text).map_err(|e| match e {
            ParseError::Syntax(problems) => ConfigFileError::Syntax {
                path: path.to_path_buf(),
                problems: by_line(problems),
            },
            ParseError::Invalid(problems) => ConfigFileError::Invalid {
                path: path.to_path_buf(),
                problems: by_line(problems),
            },
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Makes every relative path of the configuration relative to `dir` instead. `dir` may be
    /// relative itself (`config`, from `--config config/corsgate.toml`): the result then stays
    /// relative to the working directory, which is where `dir` was found, and reads as the user
    /// would write it in logs and `GET /-/rules`.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        for route in &mut self.routes {
            if let RulesSource::File(file) = &mut route.rules {
                resolve(file);
            }
            if let Some(RulesSource::File(file)) = route.shadow_rules.as_mut().map(|s| &mut s.rules)
            {
                resolve(file);
            }
        }
        if let Some(file) = &mut self.log.access_file {
            resolve(file);
        }
        for tls in &mut self.server.tls {
            for files in &mut tls.certs {
                resolve(&mut files.cert);
                resolve(&mut files.key);
            }
        }
        if let Some(ca_file) = &mut self.server.origin_tls.ca_file {
            resolve(ca_file);
        }
        if let Some(demo) = &mut self.demo_origin {
            resolve(&mut demo.root);
        }
    }

    /// Parses and validates TOML text: every problem at once, each with its line (unknown keys
    /// and wrong types first, then invalid values in the order they are checked).
    pub fn parse(text: &str) -> Result<Config, ParseError> {
        let document = document::Document::parse(text).map_err(ParseError::Syntax)?;
        let mut problems = Vec::new();
        let checked = document
            .read::<RawConfig>(&mut problems)
            .map(Config::from_raw);
        let config = match checked {
            Some(Ok(config)) => Some(config),
            Some(Err(invalid)) => {
                // A value taken out for its type shows up again as missing: once is enough.
                let taken_out: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
                let repeated = |key: &str| {
                    taken_out.iter().any(|out| {
                        key.strip_prefix(out.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                    })
                };
                problems.extend(
                    invalid
                        .into_iter()
                        .filter(|problem| !repeated(&problem.key))
                        .map(|mut problem| {
                            problem.line = Some(document.line_of(&problem.key));
                            problem
                        }),
                );
                None
            }
            None => None,
        };
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ParseError::Invalid(problems)),
        }
    }

    /// Reads and checks a configuration file and every rules file it names, as `corsgate check
    /// --config` does: the configuration (when valid, its relative paths resolved) and every
    /// problem of the file, each with its line, plus the rules files its routes name (`key`,
    /// line, path resolved), found even when other keys are wrong.
    pub(crate) fn inspect(path: &Path) -> Result<Inspected, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let rules_files = match document::Document::parse(&text) {
            Ok(document) => document
                .rules_files()
                .into_iter()
                .map(|(key, line, file)| {
                    let file = PathBuf::from(file);
                    let file = if file.is_relative() {
                        dir.join(file)
                    } else {
                        file
                    };
                    (key, line, file)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let (config, problems) = match Config::parse(&text) {
            Ok(mut config) => {
                config.resolve_paths(dir);
                (Some(config), Vec::new())
            }
            Err(ParseError::Syntax(mut problems) | ParseError::Invalid(mut problems)) => {
                problems.sort_by_key(|p| p.line);
                (None, problems)
            }
        };
        Ok(Inspected {
            config,
            problems,
            rules_files,
            text,
        })
    }

    /// One route, forwarding any host to `origin`: `corsgate serve --origin URL [--rules FILE]`.
    pub(crate) fn single_route(origin: OriginUrl, rules: RulesSource) -> Config {
        Config {
            server: ServerConfig::default(),
            routes: vec![RouteConfig::new(vec![HostPattern::Any], origin, rules)],
            demo_origin: None,
            admin: AdminConfig::default(),
            log: LogConfig::default(),
        }
    }

    fn from_raw(raw: RawConfig) -> Result<Config, Vec<KeyProblem>> {
        let mut problems = Vec::new();
        let mut report =
            |key: String, message: String| problems.push(KeyProblem::new(key, message));

        let listen_empty = raw.server.listen.as_ref().is_some_and(Vec::is_empty);
        let listen = raw.server.listen.map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    parse_addr(a)
                        .map_err(|m| report(format!("server.listen[{i}]"), m))
                        .ok()
                })
                .collect()
        });
        let listeners = listeners::listeners(
            listen,
            raw.server.tls,
            raw.server.redirect,
            default_listen(),
            &mut report,
        );
        if listen_empty && listeners.tls.is_empty() && listeners.redirect.is_none() {
            report("server.listen".into(), "names no address".into());
        }
        let (http2, http2_streams) = listeners::http2(raw.server.http2, &mut report);
        let origin_tls = listeners::origin_tls(raw.server.origin_tls, &mut report);

        let defaults = Timeouts::default();
        let mut timeout = |name: &str, value: Option<String>, default: Duration| match value {
            None => default,
            Some(text) => parse_duration(&text).unwrap_or_else(|m| {
                report(format!("server.timeouts.{name}"), m);
                default
            }),
        };
        let t = raw.server.timeouts;
        let timeouts = Timeouts {
            connect: timeout("connect", t.connect, defaults.connect),
            header_read: timeout("header_read", t.header_read, defaults.header_read),
            body_read: timeout("body_read", t.body_read, defaults.body_read),
            origin_response: timeout(
                "origin_response",
                t.origin_response,
                defaults.origin_response,
            ),
            send: timeout("send", t.send, defaults.send),
            idle: timeout("idle", t.idle, defaults.idle),
            shutdown_grace: timeout("shutdown_grace", t.shutdown_grace, defaults.shutdown_grace),
            // 0 is allowed: stop accepting at once, as before draining existed.
            drain_delay: timeout("drain_delay", t.drain_delay, defaults.drain_delay),
            tls_handshake: timeout("tls_handshake", t.tls_handshake, defaults.tls_handshake),
        };
        for (name, value) in [
            ("connect", timeouts.connect),
            ("header_read", timeouts.header_read),
            ("body_read", timeouts.body_read),
            ("origin_response", timeouts.origin_response),
            ("send", timeouts.send),
            ("idle", timeouts.idle),
            ("tls_handshake", timeouts.tls_handshake),
        ] {
            if value.is_zero() {
                report(format!("server.timeouts.{name}"), "must be above 0".into());
            }
        }

        let limits = limits(raw.server.limits, http2_streams, &mut report);
        let trusted_proxies = raw
            .server
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                parse_cidr(text)
                    .map_err(|m| report(format!("server.trusted_proxies[{i}]"), m))
                    .ok()
            })
            .collect();

        let cache_defaults = PreflightCacheConfig::default();
        let preflight_cache = PreflightCacheConfig {
            max_entries: raw
                .server
                .preflight_cache
                .max_entries
                .unwrap_or(cache_defaults.max_entries),
            max_bytes: raw
                .server
                .preflight_cache
                .max_bytes
                .unwrap_or(cache_defaults.max_bytes),
        };
        if preflight_cache.max_entries > 0 && preflight_cache.max_bytes < 4096 {
            report(
                "server.preflight_cache.max_bytes".into(),
                format!(
                    "{} is too small to hold one answer (at least 4096, or max_entries = 0 to turn the cache off)",
                    preflight_cache.max_bytes
                ),
            );
        }

        if raw.route.is_empty() {
            report("route".into(), "at least one [[route]] is needed".into());
        }
        let mut routes = Vec::new();
        // The valid routes' hosts as written, for messages: `"*"`, not `Any`.
        let mut written_hosts = Vec::new();
        for (i, r) in raw.route.into_iter().enumerate() {
            let key = |field: &str| format!("route[{}].{field}", i + 1);
            let hosts: Vec<(HostPattern, String)> = match r.hosts {
                None => {
                    report(key("hosts"), "missing (use [\"*\"] for any host)".into());
                    Vec::new()
                }
                Some(list) if list.is_empty() => {
                    report(
                        key("hosts"),
                        "names no host (use [\"*\"] for any host)".into(),
                    );
                    Vec::new()
                }
                Some(list) => list
                    .into_iter()
                    .filter_map(|h| match HostPattern::parse(&h) {
                        Ok(pattern) => Some((pattern, h)),
                        Err(m) => {
                            report(key("hosts"), m);
                            None
                        }
                    })
                    .collect(),
            };
            let patterns = hosts.iter().map(|(p, _)| p.clone()).collect();
            let origin = match r.origin {
                None => {
                    report(key("origin"), "missing".into());
                    None
                }
                Some(text) => OriginUrl::parse(&text)
                    .map_err(|m| report(key("origin"), m))
                    .ok(),
            };
            let checks = RouteChecks::read(r.rules.as_ref(), r.shadow_rules, &key, &mut report);
            let rules = match (r.rules, r.s3) {
                (None, None) => RulesSource::None,
                (Some(_), Some(_)) => {
                    report(
                        key("rules"),
                        "an S3 endpoint route (s3 = { ... }) reads each bucket's rules itself: remove `rules`".into(),
                    );
                    RulesSource::None
                }
                (Some(rules), None) => rules_source(rules, &key, &mut report),
                (None, Some(s3)) => endpoint_source(s3, &key, &mut report),
            };
            let endpoint = matches!(rules, RulesSource::Endpoint(_));
            let sign = r
                .sign
                .map(|raw| route_options::sign(raw, &key, &mut report));
            let enforce = r.enforce.map_or(Enforce::S3, |text| {
                route_options::enforce(&text, &key("enforce"), &mut report)
            });
            let cross_origin_resource_policy = r.cross_origin_resource_policy.and_then(|text| {
                route_options::resource_policy(
                    &text,
                    &key("cross_origin_resource_policy"),
                    &mut report,
                )
            });
            let index = r
                .index
                .map(|text| route_options::index(text, &key("index"), &mut report));
            let mut route = match origin {
                Some(origin) => RouteConfig::new(patterns, origin, rules),
                None => continue,
            };
            route.preserve_host = endpoint;
            if let Some(v) = r.preserve_host {
                route.preserve_host = v;
            }
            if let Some(v) = r.vary_origin_always {
                route.vary_origin_always = v;
            }
            route.sign = sign;
            route.enforce = enforce;
            route.timing_allow_origin = r.timing_allow_origin.unwrap_or(false);
            route.cross_origin_resource_policy = cross_origin_resource_policy;
            route.index = index;
            checks.apply(&mut route);
            routes.push(route);
            written_hosts.push((i, hosts));
        }
        check_host_overlap(&written_hosts, &mut report);

        let demo_origin = raw.demo_origin.and_then(|d| {
            let listen = match d.listen {
                None => {
                    report("demo_origin.listen".into(), "missing".into());
                    None
                }
                Some(a) => parse_addr(&a)
                    .map_err(|m| report("demo_origin.listen".into(), m))
                    .ok(),
            };
            if d.root.is_none() {
                report("demo_origin.root".into(), "missing".into());
            }
            Some(DemoOriginConfig {
                listen: listen?,
                root: d.root?,
            })
        });

        let mut admin = AdminConfig::default();
        if let Some(raw_admin) = raw.admin {
            if let Some(text) = raw_admin.listen {
                admin.listen = AdminConfig::parse_listen(&text).unwrap_or_else(|m| {
                    report("admin.listen".into(), m);
                    None
                });
            }
            if let Some(var) = raw_admin.token_env {
                if is_env_name(&var) {
                    admin.token_env = Some(var);
                } else {
                    report(
                        "admin.token_env".into(),
                        format!("{var:?} is not an environment variable name"),
                    );
                }
            }
            if let Some(metrics) = raw_admin.metrics {
                admin.metrics = metrics;
            }
        }
        if let Err(problem) = admin.check_exposure() {
            report(problem.key, problem.message);
        }
        let log = log_config(raw.log, &mut report);

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            server: ServerConfig {
                listen: listeners.plain,
                tls: listeners.tls,
                redirect: listeners.redirect,
                http2,
                origin_tls,
                timeouts,
                limits,
                preflight_cache,
                trusted_proxies,
                reuse_port: raw.server.reuse_port.unwrap_or(true),
            },
            routes,
            demo_origin,
            admin,
            log,
        })
    }
}

/// `[log]`.
fn log_config(raw: Option<RawLog>, report: &mut impl FnMut(String, String)) -> LogConfig {
    let mut log = LogConfig::default();
    let Some(raw) = raw else {
        return log;
    };
    if let Some(access) = raw.access {
        log.access = access;
    }
    match raw.format.as_deref() {
        None | Some("text") => {}
        Some("json") => log.format = LogFormat::Json,
        Some(other) => report(
            "log.format".into(),
            format!(
                "{other:?} is neither \"text\" (key=value pairs) nor \"json\" (one object per line)"
            ),
        ),
    }
    match raw.access_file {
        Some(path) if path.as_os_str().is_empty() => report(
            "log.access_file".into(),
            "is empty (leave it out to log to stderr)".into(),
        ),
        path => log.access_file = path,
    }
    log
}

/// A route's keys about how its documents are checked and tried out: `rules.deny_warnings` and
/// `shadow_rules`.
struct RouteChecks {
    deny_warnings: bool,
    shadow_rules: Option<ShadowSource>,
}

impl RouteChecks {
    fn read(
        rules: Option<&RawRules>,
        shadow: Option<RawRules>,
        key: &dyn Fn(&str) -> String,
        report: &mut impl FnMut(String, String),
    ) -> RouteChecks {
        let shadow_rules = shadow.map(|raw| {
            let deny_warnings = raw.deny_warnings.unwrap_or(false);
            // `rules_source` names its keys `rules.*`; these are `shadow_rules.*`.
            let shadow_key = |field: &str| key(&field.replacen("rules", "shadow_rules", 1));
            ShadowSource {
                rules: rules_source(raw, &shadow_key, report),
                deny_warnings,
            }
        });
        RouteChecks {
            deny_warnings: rules.and_then(|r| r.deny_warnings).unwrap_or(false),
            shadow_rules,
        }
    }

    fn apply(self, route: &mut RouteConfig) {
        route.deny_warnings = self.deny_warnings;
        route.shadow_rules = self.shadow_rules;
    }
}

/// `rules = { file = ... }` or `rules = { bucket = ..., poll = ..., region = ..., *_env = ... }`.
fn rules_source(
    raw: RawRules,
    key: &dyn Fn(&str) -> String,
    report: &mut impl FnMut(String, String),
) -> RulesSource {
    let signing = RawSigning {
        region: raw.region,
        access_key_env: raw.access_key_env,
        secret_key_env: raw.secret_key_env,
        session_token_env: raw.session_token_env,
    };
    let bucket_only = raw.poll.is_some()
        || signing.region.is_some()
        || signing.access_key_env.is_some()
        || signing.secret_key_env.is_some()
        || signing.session_token_env.is_some();
    match (raw.file, raw.bucket) {
        (Some(file), None) if !bucket_only => RulesSource::File(file),
        (None, Some(bucket)) => {
            let poll = raw.poll;
            if let Err(m) = parse_bucket_name(&bucket) {
                report(key("rules.bucket"), m);
            }
            RulesSource::Bucket(BucketSource {
                bucket,
                poll: poll_interval(poll, &key("rules.poll"), report),
                signing: signing_config(signing, &key("rules"), report),
            })
        }
        (Some(_), Some(_)) => {
            report(key("rules"), "name a file or a bucket, not both".into());
            RulesSource::None
        }
        (Some(_), None) => {
            report(
                key("rules"),
                "poll, region and *_env apply to bucket rules, not to a file".into(),
            );
            RulesSource::None
        }
        (None, None) => {
            report(
                key("rules"),
                "expected { file = \"PATH\" } or { bucket = \"NAME\" }".into(),
            );
            RulesSource::None
        }
    }
}

/// The names of the addressing styles, as `s3.addressing` and `--s3-endpoint` spell them.
pub(crate) const ADDRESSING_NAMES: [(&str, Addressing); 2] =
    [("path", Addressing::Path), ("virtual", Addressing::Virtual)];

/// `s3.addressing`, `--s3-endpoint`: `path` or `virtual`.
pub(crate) fn parse_addressing(name: &str) -> Result<Addressing, String> {
    ADDRESSING_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, addressing)| addressing)
        .ok_or_else(|| format!("{name:?} is neither \"path\" nor \"virtual\""))
}

/// `rules.bucket`, `--rules-bucket`: a name that is safe in a URL and a Host.
pub(crate) fn parse_bucket_name(name: &str) -> Result<String, String> {
    if is_bucket_name(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not a bucket name (letters, digits, '.', '-', '_')"
        ))
    }
}

/// `s3 = { addressing = "path" | "virtual", poll = ..., max_buckets = ..., region = ..., *_env = ... }`.
fn endpoint_source(
    raw: RawS3,
    key: &dyn Fn(&str) -> String,
    report: &mut impl FnMut(String, String),
) -> RulesSource {
    let addressing = match raw.addressing.as_deref().map(parse_addressing) {
        Some(Ok(addressing)) => addressing,
        Some(Err(m)) => {
            report(key("s3.addressing"), m);
            Addressing::Path
        }
        None => {
            report(
                key("s3.addressing"),
                "missing (\"path\": endpoint/bucket/key, \"virtual\": bucket.endpoint/key)".into(),
            );
            Addressing::Path
        }
    };
    let max_buckets = raw.max_buckets.unwrap_or(DEFAULT_MAX_BUCKETS);
    if max_buckets == 0 {
        report(key("s3.max_buckets"), "must be above 0".into());
    }
    let endpoint_defaults = EndpointSource::defaults(addressing);
    let mut duration = |name: &str, text: Option<String>, default: Duration| match text {
        None => default,
        Some(text) => match parse_duration(&text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                report(key(&format!("s3.{name}")), "must be above 0".into());
                default
            }
            Err(m) => {
                report(key(&format!("s3.{name}")), m);
                default
            }
        },
    };
    let negative_ttl = duration(
        "negative_ttl",
        raw.negative_ttl,
        endpoint_defaults.negative_ttl,
    );
    let bucket_idle = duration(
        "bucket_idle",
        raw.bucket_idle,
        endpoint_defaults.bucket_idle,
    );
    let max_fetches_per_second = raw
        .max_fetches_per_second
        .unwrap_or(endpoint_defaults.max_fetches_per_second);
    if max_fetches_per_second == 0 {
        report(key("s3.max_fetches_per_second"), "must be above 0".into());
    }
    RulesSource::Endpoint(EndpointSource {
        addressing,
        poll: poll_interval(raw.poll, &key("s3.poll"), report),
        max_buckets,
        negative_ttl,
        max_fetches_per_second,
        bucket_idle,
        signing: signing_config(
            RawSigning {
                region: raw.region,
                access_key_env: raw.access_key_env,
                secret_key_env: raw.secret_key_env,
                session_token_env: raw.session_token_env,
            },
            &key("s3"),
            report,
        ),
    })
}

fn poll_interval(
    text: Option<String>,
    key: &str,
    report: &mut impl FnMut(String, String),
) -> Duration {
    match text.map(|t| parse_duration(&t)) {
        None => DEFAULT_POLL,
        Some(Ok(d)) if d >= Duration::from_secs(1) => d,
        Some(Ok(_)) => {
            report(key.into(), "must be at least 1s".into());
            DEFAULT_POLL
        }
        Some(Err(m)) => {
            report(key.into(), m);
            DEFAULT_POLL
        }
    }
}

/// Region and the names of the environment variables holding the keys. Naming any variable
/// makes all of them required.
fn signing_config(
    raw: RawSigning,
    key: &str,
    report: &mut impl FnMut(String, String),
) -> SigningConfig {
    let defaults = SigningConfig::default();
    let explicit = raw.access_key_env.is_some()
        || raw.secret_key_env.is_some()
        || raw.session_token_env.is_some();
    let mut var = |name: &str, value: Option<String>, default: String| match value {
        Some(v) if !is_env_name(&v) => {
            report(
                format!("{key}.{name}"),
                format!("{v:?} is not an environment variable name"),
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let access_key_env = var(
        "access_key_env",
        raw.access_key_env,
        defaults.access_key_env,
    );
    let secret_key_env = var(
        "secret_key_env",
        raw.secret_key_env,
        defaults.secret_key_env,
    );
    let session_token_env = var(
        "session_token_env",
        raw.session_token_env,
        defaults.session_token_env,
    );
    let region = raw.region.unwrap_or(defaults.region);
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        report(
            format!("{key}.region"),
            format!("{region:?} is not a region name"),
        );
    }
    SigningConfig {
        region,
        access_key_env,
        secret_key_env,
        session_token_env,
        explicit,
    }
}

impl RouteConfig {
    pub fn new(hosts: Vec<HostPattern>, origin: OriginUrl, rules: RulesSource) -> RouteConfig {
        RouteConfig {
            hosts,
            origin,
            rules,
            // S3/Spaces origins find the bucket by Host: rewriting is what works out of the box.
            preserve_host: false,
            vary_origin_always: true,
            sign: None,
            enforce: Enforce::S3,
            timing_allow_origin: false,
            cross_origin_resource_policy: None,
            index: None,
            deny_warnings: false,
            shadow_rules: None,
        }
    }
}

/// Two routes claiming the same host would make routing depend on file order: refuse. `routes`
/// holds the valid routes' hosts, parsed and as written, each with its route's index in the
/// file (routes with other problems are left out, so the indices can skip).
fn check_host_overlap(
    routes: &[(usize, Vec<(HostPattern, String)>)],
    report: &mut impl FnMut(String, String),
) {
    let mut seen: Vec<(&HostPattern, usize)> = Vec::new();
    for (i, hosts) in routes {
        let i = *i;
        for (host, written) in hosts {
            if let Some((_, first)) = seen.iter().find(|(h, _)| *h == host) {
                report(
                    format!("route[{}].hosts", i + 1),
                    format!("{written:?} is already served by route[{}]", first + 1),
                );
            } else {
                seen.push((host, i));
            }
        }
    }
}

/// Why TOML text is not a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not TOML: every syntax error, each with its line.
    #[error("{}", render_lines(.0))]
    Syntax(Vec<KeyProblem>),
    /// TOML, but unknown keys, values of the wrong type or invalid values: each names its key.
    #[error("{}", render_lines(.0))]
    Invalid(Vec<KeyProblem>),
}

fn render_lines(problems: &[KeyProblem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("line {line}: {p}"),
            None => p.to_string(),
        })
        .collect();
    lines.join("\n")
}

/// A configuration file as `corsgate check --config` sees it (see [`Config::inspect`]).
#[derive(Debug)]
pub(crate) struct Inspected {
    /// The configuration, when the file has no problem.
    pub config: Option<Config>,
    /// Every problem of the file, each with its line, sorted by line.
    pub problems: Vec<KeyProblem>,
    /// `(key, line, path)` of every rules file the routes name.
    pub(crate) rules_files: Vec<(String, usize, PathBuf)>,
    text: String,
}

impl Inspected {
    /// The line where `key` is written (or the nearest table around it), as problems of the
    /// configuration name keys.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        document::Document::parse(&self.text)
            .ok()
            .map(|document| document.line_of(key))
    }
}

/// `server.limits`; `server.http2.max_concurrent_streams` is the older spelling of
/// `limits.max_concurrent_streams`, still read when the new key is absent.
fn limits(
    raw: RawLimits,
    http2_streams: Option<u32>,
    report: &mut impl FnMut(String, String),
) -> Limits {
    let d = Limits::default();
    if raw.max_concurrent_streams.is_some() && http2_streams.is_some() {
        report(
            "server.http2.max_concurrent_streams".into(),
            "is the older name of server.limits.max_concurrent_streams: set only that one".into(),
        );
    }
    let limits = Limits {
        max_connections: raw.max_connections.unwrap_or(d.max_connections),
        origin_connections: raw.origin_connections.unwrap_or(d.origin_connections),
        max_concurrent_streams: raw
            .max_concurrent_streams
            .or(http2_streams)
            .unwrap_or(d.max_concurrent_streams),
    };
    for (name, value) in [
        ("max_connections", Some(limits.max_connections)),
        ("origin_connections", Some(limits.origin_connections)),
        (
            "max_concurrent_streams",
            raw.max_concurrent_streams.map(|n| n as usize),
        ),
    ] {
        if value == Some(0) {
            report(format!("server.limits.{name}"), "must be above 0".into());
        }
    }
    limits
}

/// `"10.0.0.0/8"`, `"2001:db8::/32"`, or a single address (`"10.0.0.7"`).
fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!("{text:?} is not an address or a CIDR range (e.g. \"10.0.0.0/8\", \"::1/128\")")
        })
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP:PORT address (e.g. \"127.0.0.1:8080\")"))
}

/// `"250ms"`, `"30s"`, `"1.5s"`, `"1m 30s"`: numbers each with a unit, in humantime's syntax.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration (e.g. \"500ms\", \"30s\", \"5m\", \"1h\"): {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_numbers_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "s", "30", "-1s", "3 parsecs", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn minimal_route_gets_the_documented_defaults() {
        let c = Config::parse("[[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9000\"\n")
            .expect("valid");
        assert_eq!(c.server.listen, vec![default_listen()]);
        assert_eq!(c.server.timeouts, Timeouts::default());
        let r = &c.routes[0];
        assert_eq!(r.hosts, vec![HostPattern::Any]);
        assert!(!r.preserve_host);
        assert!(r.vary_origin_always);
        assert_eq!(r.rules, RulesSource::None);
    }

    #[test]
    fn hostile_load_keys_have_their_defaults_and_are_read() {
        let route = "[[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9000\"\n";
        let c = Config::parse(route).expect("valid");
        assert_eq!(c.server.timeouts.body_read, Duration::from_secs(30));
        assert_eq!(c.server.timeouts.send, Duration::from_secs(60));
        assert_eq!(c.server.limits, Limits::default());
        assert_eq!(c.server.limits.max_concurrent_streams, 100);
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.admin.token_env, None);

        let c = Config::parse(&format!(
            "[server]\ntrusted_proxies = [\"10.1.2.3/8\", \"::1\"]\n\
             [server.timeouts]\nbody_read = \"2s\"\nsend = \"3s\"\n\
             [server.limits]\nmax_connections = 5\norigin_connections = 2\nmax_concurrent_streams = 9\n\
             [admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"ADMIN_TOKEN\"\n{route}"
        ))
        .expect("valid");
        assert_eq!(c.server.timeouts.body_read, Duration::from_secs(2));
        assert_eq!(c.server.timeouts.send, Duration::from_secs(3));
        assert_eq!(
            c.server.limits,
            Limits {
                max_connections: 5,
                origin_connections: 2,
                max_concurrent_streams: 9
            }
        );
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(c.admin.token_env.as_deref(), Some("ADMIN_TOKEN"));
    }

    #[test]
    fn hostile_load_keys_are_checked() {
        let err = Config::parse(
            r#"
            [server]
            trusted_proxies = ["10.0.0.0/33", "nowhere"]
            [server.limits]
            max_connections = 0
            max_concurrent_streams = 0
            [server.http2]
            max_concurrent_streams = 8
            [admin]
            listen = "0.0.0.0:9901"
            [[route]]
            hosts = ["*"]
            origin = "http://127.0.0.1:9000"
            s3 = { addressing = "path", negative_ttl = "0s", max_fetches_per_second = 0, bucket_idle = "soon" }
            "#,
        )
        .expect_err("invalid");
        let ParseError::Invalid(problems) = err else {
            panic!("not a validation error: {err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.http2.max_concurrent_streams",
                "server.limits.max_connections",
                "server.limits.max_concurrent_streams",
                "server.trusted_proxies[0]",
                "server.trusted_proxies[1]",
                "route[1].s3.negative_ttl",
                "route[1].s3.bucket_idle",
                "route[1].s3.max_fetches_per_second",
                "admin.listen",
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = Config::parse(
            r#"
            [server]
            listen = ["nowhere"]
            timeouts = { connect = "5 parsecs" }
            [[route]]
            hosts = ["a.example.com"]
            origin = "ftp://x"
            [[route]]
            hosts = ["A.example.com"]
            origin = "http://127.0.0.1:1"
            rules = { bucket = "b", poll = "1 fortnight" }
            "#,
        )
        .expect_err("invalid");
        let ParseError::Invalid(problems) = err else {
            panic!("not a validation error: {err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.listen[0]",
                "server.timeouts.connect",
                "route[1].origin",
                "route[2].rules.poll",
            ]
        );
    }

    #[test]
    fn bucket_rules_s3_endpoints_and_the_admin_listener_are_read_with_their_defaults() {
        let c = Config::parse(
            r#"
            [admin]
            listen = "off"
            [[route]]
            hosts = ["a.example.com"]
            origin = "http://127.0.0.1:9000"
            rules = { bucket = "photos", poll = "5s", region = "eu-west-3", access_key_env = "KEY" }
            [[route]]
            hosts = ["*"]
            origin = "http://127.0.0.1:9000"
            s3 = { addressing = "virtual" }
            "#,
        )
        .expect("valid");
        assert_eq!(c.admin.listen, None);
        assert!(c.admin.metrics, "metrics default on");
        assert!(!c.admin.counts(), "nothing to read the counts from");
        let RulesSource::Bucket(bucket) = &c.routes[0].rules else {
            panic!("not bucket rules: {:?}", c.routes[0].rules)
        };
        assert_eq!(bucket.bucket, "photos");
        assert_eq!(bucket.poll, Duration::from_secs(5));
        assert_eq!(bucket.signing.region, "eu-west-3");
        assert_eq!(bucket.signing.access_key_env, "KEY");
        assert_eq!(bucket.signing.secret_key_env, "AWS_SECRET_ACCESS_KEY");
        assert!(bucket.signing.explicit);
        assert!(!c.routes[0].preserve_host);
        let RulesSource::Endpoint(endpoint) = &c.routes[1].rules else {
            panic!("not an endpoint: {:?}", c.routes[1].rules)
        };
        assert_eq!(endpoint.addressing, Addressing::Virtual);
        assert_eq!(endpoint.poll, DEFAULT_POLL);
        assert_eq!(endpoint.max_buckets, DEFAULT_MAX_BUCKETS);
        assert_eq!(endpoint.signing.region, "us-east-1");
        assert!(!endpoint.signing.explicit);
        assert!(
            c.routes[1].preserve_host,
            "S3 endpoints keep the client's Host"
        );
        assert_eq!(
            Config::parse("[[route]]\nhosts=[\"*\"]\norigin=\"http://o\"\n")
                .expect("valid")
                .admin
                .listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9901)))
        );
    }

    #[test]
    fn admin_metrics_turns_counting_off() {
        let c = Config::parse(
            "[admin]\nmetrics = false\n[[route]]\nhosts=[\"*\"]\norigin=\"http://o\"\n",
        )
        .expect("valid");
        assert!(c.admin.listen.is_some());
        assert!(!c.admin.metrics);
        assert!(!c.admin.counts());
        let on = Config::parse("[[route]]\nhosts=[\"*\"]\norigin=\"http://o\"\n").expect("valid");
        assert!(on.admin.counts());
    }

    #[test]
    fn rules_source_mistakes_name_their_key() {
        let cases = [
            (
                "rules = { file = \"a.xml\", bucket = \"b\" }",
                "route[1].rules",
            ),
            (
                "rules = { file = \"a.xml\", poll = \"5s\" }",
                "route[1].rules",
            ),
            ("rules = { bucket = \"a/b\" }", "route[1].rules.bucket"),
            (
                "rules = { bucket = \"b\", poll = \"0s\" }",
                "route[1].rules.poll",
            ),
            (
                "rules = { bucket = \"b\", region = \"us east\" }",
                "route[1].rules.region",
            ),
            ("s3 = { addressing = \"dns\" }", "route[1].s3.addressing"),
            ("s3 = { }", "route[1].s3.addressing"),
            (
                "s3 = { addressing = \"path\", max_buckets = 0 }",
                "route[1].s3.max_buckets",
            ),
            (
                "s3 = { addressing = \"path\" }\nrules = { file = \"a.xml\" }",
                "route[1].rules",
            ),
        ];
        for (line, key) in cases {
            let text = format!("[[route]]\nhosts = [\"*\"]\norigin = \"http://o\"\n{line}\n");
            let err = Config::parse(&text).expect_err(line);
            let ParseError::Invalid(problems) = err else {
                panic!("{line}: not a validation error: {err}")
            };
            assert_eq!(problems[0].key, key, "{line}: {problems:?}");
        }
        let err = Config::parse(
            "[admin]\nlisten = \"nowhere\"\n[[route]]\nhosts=[\"*\"]\norigin=\"http://o\"\n",
        )
        .expect_err("bad admin address");
        assert!(err.to_string().contains("admin.listen"), "{err}");
    }

    #[test]
    fn the_log_section_and_the_rules_checks_are_read_with_their_defaults() {
        let route = "[[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9000\"\n";
        let c = Config::parse(route).expect("valid");
        assert_eq!(c.log, LogConfig::default());
        assert!(c.log.access);
        assert!(!c.routes[0].deny_warnings);
        assert_eq!(c.routes[0].shadow_rules, None);

        let c = Config::parse(&format!(
            "[log]\naccess = false\nformat = \"json\"\naccess_file = \"/var/log/corsgate/access.log\"\n\
             {route}rules = {{ file = \"live.xml\", deny_warnings = true }}\n\
             shadow_rules = {{ bucket = \"candidate\", poll = \"5s\", deny_warnings = true }}\n"
        ))
        .expect("valid");
        assert_eq!(
            c.log,
            LogConfig {
                access: false,
                format: LogFormat::Json,
                access_file: Some("/var/log/corsgate/access.log".into()),
            }
        );
        let r = &c.routes[0];
        assert!(r.deny_warnings);
        let shadow = r.shadow_rules.as_ref().expect("shadow rules");
        assert!(shadow.deny_warnings);
        let RulesSource::Bucket(bucket) = &shadow.rules else {
            panic!("not bucket rules: {:?}", shadow.rules)
        };
        assert_eq!(
            (bucket.bucket.as_str(), bucket.poll),
            ("candidate", Duration::from_secs(5))
        );
    }

    #[test]
    fn log_and_shadow_mistakes_name_their_key() {
        let err = Config::parse(
            "[log]\nformat = \"xml\"\naccess_file = \"\"\n\
             [[route]]\nhosts = [\"*\"]\norigin = \"http://o\"\n\
             shadow_rules = { bucket = \"a/b\", region = \"us east\" }\n",
        )
        .expect_err("invalid");
        let ParseError::Invalid(problems) = err else {
            panic!("not a validation error: {err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "route[1].shadow_rules.bucket",
                "route[1].shadow_rules.region",
                "log.format",
                "log.access_file",
            ]
        );
    }

    #[test]
    fn shadow_and_log_files_are_resolved_from_the_configuration_directory() {
        let dir = std::env::temp_dir().join(format!("corsgate-config-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("gateway.toml");
        std::fs::write(
            &file,
            "[log]\naccess_file = \"logs/access.log\"\n\
             [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9000\"\n\
             shadow_rules = { file = \"next.xml\" }\n",
        )
        .expect("write the configuration");
        let c = Config::load(&file).expect("valid");
        assert_eq!(c.log.access_file, Some(dir.join("logs/access.log")));
        assert_eq!(
            c.routes[0].shadow_rules.as_ref().map(|s| &s.rules),
            Some(&RulesSource::File(dir.join("next.xml")))
        );
    }

    #[test]
    fn two_routes_for_one_host_are_refused() {
        let err = Config::parse(
            "[[route]]\nhosts = [\"a.com\"]\norigin = \"http://o\"\n[[route]]\nhosts = [\"A.com\"]\norigin = \"http://o\"\n",
        )
        .expect_err("overlap");
        assert!(err.to_string().contains("route[2].hosts"), "{err}");
    }

    #[test]
    fn drain_delay_and_reuse_port_have_their_defaults_and_are_read() {
        let route = "[[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9000\"\n";
        let c = Config::parse(route).expect("valid");
        assert_eq!(c.server.timeouts.drain_delay, Duration::from_secs(5));
        assert!(c.server.reuse_port);
        let c = Config::parse(&format!(
            "[server]\nreuse_port = false\n[server.timeouts]\ndrain_delay = \"0s\"\n{route}"
        ))
        .expect("0s stops accepting at once");
        assert_eq!(c.server.timeouts.drain_delay, Duration::ZERO);
        assert!(!c.server.reuse_port);
        let Err(ParseError::Invalid(problems)) = Config::parse(&format!(
            "[server]\nreuse_port = \"yes\"\n[server.timeouts]\ndrain_delay = \"soon\"\n{route}"
        )) else {
            panic!("bad values accepted")
        };
        let found: Vec<(&str, Option<usize>)> =
            problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            found,
            [
                ("server.reuse_port", Some(2)),
                ("server.timeouts.drain_delay", Some(4))
            ]
        );
    }

    #[test]
    fn every_misspelt_key_is_reported_at_once_with_its_line_and_the_key_meant() {
        let text = "[server]\nlsiten = [\"127.0.0.1:8080\"]\n\
                    [server.timeouts]\nconect = \"5s\"\nidle = 75\n\
                    [[route]]\nhosts = [\"*\"]\norigin = \"ftp://x\"\npreserve_hots = true\n";
        let Err(ParseError::Invalid(problems)) = Config::parse(text) else {
            panic!("typos accepted")
        };
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}:{p}", p.line.unwrap_or(0)))
            .collect();
        for expected in [
            "2:server.lsiten: unknown key, did you mean `listen`?",
            "4:server.timeouts.conect: unknown key, did you mean `connect`?",
            "5:server.timeouts.idle: invalid type: integer `75`, expected a string",
            "9:route[1].preserve_hots: unknown key, did you mean `preserve_host`?",
            "8:route[1].origin: \"ftp://x\" must start with http:// or https://",
        ] {
            assert!(
                lines.contains(&expected.to_string()),
                "{expected}\n{lines:#?}"
            );
        }
        assert_eq!(lines.len(), 5, "{lines:#?}");
    }

    #[test]
    fn a_file_lists_its_problems_in_line_order_as_file_line_key_message() {
        let dir =
            std::env::temp_dir().join(format!("corsgate-config-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("typos.toml");
        std::fs::write(
            &file,
            "[[route]]\nhosts = [\"*\"]\norigin = \"ftp://x\"\n[server]\nlsiten = []\n",
        )
        .expect("write");
        let err = Config::load(&file).expect_err("invalid");
        let name = file.display();
        assert_eq!(
            err.to_string(),
            format!(
                "{name}:3: route[1].origin: \"ftp://x\" must start with http:// or https://\n\
                 {name}:5: server.lsiten: unknown key, did you mean `listen`?"
            )
        );
    }

    #[test]
    fn unknown_keys_are_errors_not_silently_ignored() {
        let err = Config::parse("[server]\nlisten_on = []\n").expect_err("typo");
        assert!(err.to_string().contains("listen_on"), "{err}");
    }

    #[test]
    fn origin_keeps_its_path_prefix_without_trailing_slash() {
        let o = OriginUrl::parse("http://127.0.0.1:9000/bucket/").expect("valid");
        assert_eq!(o.path_prefix, "/bucket");
        assert_eq!(o.to_string(), "http://127.0.0.1:9000/bucket");
        assert_eq!(OriginUrl::parse("http://h").expect("valid").path_prefix, "");
        assert_eq!(
            OriginUrl::parse("https://h.example/b")
                .expect("valid")
                .scheme,
            Scheme::HTTPS
        );
        assert!(OriginUrl::parse("ftp://h").is_err());
        assert!(OriginUrl::parse("http://u:p@h").is_err());
    }

    #[test]
    fn host_patterns_are_lower_cased_and_keep_an_optional_port() {
        assert_eq!(
            HostPattern::parse("Assets.Example.com:8443"),
            Ok(HostPattern::Exact {
                host: "assets.example.com".into(),
                port: Some(8443)
            })
        );
        assert_eq!(HostPattern::parse("*"), Ok(HostPattern::Any));
        assert!(HostPattern::parse("a b").is_err());
    }

    #[test]
    fn a_host_served_twice_is_named_as_written() {
        let text = "[[route]]\nhosts = [\"*\", \"a.example\"]\norigin = \"http://127.0.0.1:9000\"\n\
                    [[route]]\nhosts = [\"b.example\"]\norigin = \"ftp://nowhere\"\n\
                    [[route]]\nhosts = [\"*\", \"A.Example\"]\norigin = \"http://127.0.0.1:9001\"\n";
        let Err(ParseError::Invalid(problems)) = Config::parse(text) else {
            panic!("two routes claim the same hosts")
        };
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        // Route numbers are the file's, even past a route with another problem.
        assert!(
            lines.contains(&"route[3].hosts: \"*\" is already served by route[1]".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"route[3].hosts: \"A.Example\" is already served by route[1]".to_string()
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn the_shipped_configuration_finds_its_files_from_any_working_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let c = Config::load(&dir.join("corsgate.toml")).expect("the shipped configuration");
        let RulesSource::File(rules) = &c.routes[0].rules else {
            panic!("the default route reads a rules file")
        };
        assert_eq!(rules, &dir.join("cors-app.xml"));
        assert!(rules.is_file(), "{}", rules.display());
        let demo = c.demo_origin.expect("the demo origin");
        assert_eq!(demo.root, dir.join("demo-bucket"));
        assert!(demo.root.join("hello.txt").is_file());
    }

    #[test]
    fn every_relative_path_of_a_file_is_resolved_from_its_directory() {
        let dir = std::env::temp_dir().join(format!("corsgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("gateway.toml");
        let text = "[server]\nlisten = [\"127.0.0.1:8443\"]\n\
                    tls = { certs = [{ cert = \"tls/a.pem\", key = \"/etc/keys/a.key\" }] }\n\
                    [server.origin_tls]\nca_file = \"ca.pem\"\n\
                    [demo_origin]\nlisten = \"127.0.0.1:9000\"\nroot = \"bucket\"\n\
                    [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9000\"\n\
                    rules = { file = \"rules/app.xml\" }\n";
        std::fs::write(&file, text).expect("write the configuration");
        let c = Config::load(&file).expect("valid");
        let certs = &c.server.tls[0].certs[0];
        assert_eq!(certs.cert, dir.join("tls/a.pem"));
        // Absolute paths are kept as they are.
        assert_eq!(certs.key, Path::new("/etc/keys/a.key"));
        assert_eq!(c.server.origin_tls.ca_file, Some(dir.join("ca.pem")));
        assert_eq!(c.demo_origin.map(|d| d.root), Some(dir.join("bucket")));
        assert_eq!(
            c.routes[0].rules,
            RulesSource::File(dir.join("rules/app.xml"))
        );
        // Text without a file has no directory: its paths stay relative to the working one.
        let c = Config::parse(text).expect("valid");
        assert_eq!(c.routes[0].rules, RulesSource::File("rules/app.xml".into()));
    }
}
