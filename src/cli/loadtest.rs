//! `corsgate loadtest URL --rules FILE ...`: a thin shell over [`crate::loadtest`] — parse the
//! flags, build the pool, run, print, and say by the exit status whether every answer was right.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::config::parse_duration;
use crate::cors::Policy;
use crate::loadtest::progress::{Progress, display};
use crate::loadtest::{
    Checker, ConnectError, GenerateOptions, Mix, Report, RunConfig, Settings, Target, Trust,
    generate, plot, probe, run, secure,
};

/// Exit status of a run with wrong answers or transport errors.
pub const EXIT_FAILED: u8 = 1;

#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 when every request got an answer and every answer matched corsgate's own \
evaluation of the rules; 1 when there were mismatches or errors (or no answer at all); \
2 for usage errors, unreadable or invalid rules, an unusable URL, or a server that cannot be \
reached or (https://) whose certificate is not trusted: one connection is opened before any \
load is sent.

Examples, against `corsgate serve` with the default configuration (the rules of \
config/cors-app.xml in front of the demo bucket):
  corsgate loadtest http://127.0.0.1:8080/ --rules config/cors-app.xml -c 32 -d 10s
  corsgate loadtest http://127.0.0.1:8080/ --rules config/cors-app.xml --http2 -c 4 --streams 16
  corsgate loadtest http://127.0.0.1:8080/ --rules config/cors-app.xml --rate 20000 -d 30s --json

Against a TLS listener (ALPN picks h2 when --http2 offers it), trusting a private CA, and with \
a TLS handshake per request:
  corsgate loadtest https://localhost:8443/ --rules config/cors-app.xml --cacert ca.pem --http2
  corsgate loadtest https://localhost:8443/ --rules config/cors-app.xml -k --new-connections

Against nginx running benches/load/nginx.conf, which does the rules of benches/fixtures/cors.xml by hand:
  corsgate loadtest http://127.0.0.1:8082/ --rules benches/fixtures/cors.xml --lenient-status")]
pub struct LoadtestArgs {
    /// The server to test, http:// or https://. Its path, if any, prefixes every object key
    /// (e.g. http://127.0.0.1:9000/my-bucket for path-style S3).
    pub url: String,
    /// The rules the server is meant to enforce (S3 XML or AWS CLI JSON); requests are drawn from
    /// them and every answer is checked against corsgate's evaluation of them.
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// Connections kept open (HTTP/1.1 keep-alive, or h2).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub connections: usize,
    /// How long to send, e.g. 10s, 500ms, 2m.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open loop: send this many requests per second on a fixed schedule, and measure latency
    /// from when each request was due (no coordinated omission). Without it, every connection
    /// (or h2 stream) sends its next request as soon as the previous answer is in.
    #[arg(long, value_name = "REQ_PER_S", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Use h2 instead of HTTP/1.1: by prior knowledge on http://; on https://, offered by ALPN
    /// before http/1.1 (the server chooses, and the report says which it chose).
    #[arg(long)]
    pub http2: bool,
    /// https://: trust only the CA certificates of this PEM file (instead of the built-in
    /// Mozilla roots).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// https://: accept any certificate for any name (self-signed test servers).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Open a new connection (and, on https://, do a full TLS handshake) for every request, and
    /// count it in the request's latency: handshake-bound load. -c is then the number of
    /// requests in flight.
    #[arg(long)]
    pub new_connections: bool,
    /// Concurrent streams per h2 connection.
    #[arg(long, default_value_t = 10, value_name = "M")]
    pub streams: usize,
    /// Proportions of request kinds: preflight-allowed, preflight-denied, get (real GETs, forwarded
    /// by a gateway to its origin).
    #[arg(
        long,
        default_value = "preflight-allowed=70,preflight-denied=20,get=10"
    )]
    pub mix: Mix,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Draw the latency percentile distribution into this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Accept 204 where S3 answers an allowed preflight with 200 (nginx configurations usually
    /// answer 204; browsers accept either). Every header is still checked exactly.
    #[arg(long)]
    pub lenient_status: bool,
    /// Longest wait for one complete answer; a slower one counts as a timeout error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Stop after this many requests, even before --duration.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Distinct requests (and object keys) to draw; the run cycles through them.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub pool: usize,
    /// Send every `get` to this path instead of generated keys (e.g. a file a static origin has).
    #[arg(long, value_name = "PATH")]
    pub get_path: Option<String>,
    /// Seed of the request generator: the same seed and rules give the same requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Load-generator threads, each with its share of the connections (default: the CPUs this
    /// process may use, so `taskset` limits them).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run_command(args: &LoadtestArgs) -> ExitCode {
    match loadtest(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILED),
        Err(message) => {
            eprintln!("corsgate loadtest: {message}");
            ExitCode::from(super::EXIT_USAGE)
        }
    }
}

/// Runs the test; `Ok(clean)`, or a usage error.
fn loadtest(args: &LoadtestArgs) -> Result<bool, String> {
    if args.pool == 0 || args.connections == 0 || args.streams == 0 {
        return Err("--pool, --connections and --streams must be at least 1".into());
    }
    let target = Target::parse(&args.url).map_err(|e| e.to_string())?;
    let bytes = super::read_file(&args.rules)?;
    let policy = Policy::parse(&bytes).map_err(|e| {
        let name = args.rules.display();
        let lines: Vec<String> = e.problems.iter().map(|p| format!("{name}:{p}")).collect();
        lines.join("\n")
    })?;
    let pool = generate(
        &policy,
        &GenerateOptions {
            mix: args.mix,
            size: args.pool,
            base_path: target.base_path.clone(),
            get_path: args.get_path.clone(),
            seed: args.seed,
        },
    )
    .map_err(|e| e.to_string())?;
    let trust = match (&args.cacert, args.insecure) {
        (Some(path), _) => Trust::CaFile(path.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::Roots,
    };
    let tls = match target.tls {
        Some(_) => Some(secure::client(&trust, args.http2).map_err(|e| e.to_string())?),
        None => None,
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let config = RunConfig {
        connections: args.connections,
        streams: args.streams,
        http2: args.http2,
        duration: args.duration,
        rate: args.rate,
        max_requests: args.requests,
        timeout: args.timeout,
        checker: Checker {
            lenient_status: args.lenient_status,
        },
        threads: threads.max(1),
        new_connections: args.new_connections,
        tls,
    };
    // This thread only waits and draws the progress line; the load has threads of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let protocol = runtime
        .block_on(probe(&target, &config))
        .map_err(|e| unreachable_hint(&e, &target))?;
    let outcome = runtime.block_on(async {
        let progress = Arc::new(Progress::default());
        let _display = display(progress.clone(), args.duration);
        run(&target, pool, &config, progress).await
    });
    let http2 = protocol == "h2";
    let settings = Settings {
        url: args.url.clone(),
        http2,
        connections: args.connections,
        streams: args.streams,
        duration: args.duration,
        rate: args.rate,
        mix: args.mix.to_string(),
        pool: args.pool,
    };
    let report = Report {
        settings: &settings,
        outcome: &outcome,
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} {}, {} connections, {:.0} req/s",
            args.url,
            protocol,
            args.connections,
            report.rps()
        );
        std::fs::write(path, plot::svg(&outcome.latencies, &title))
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    Ok(report.is_clean())
}

/// The probe's failure, with what to do about an untrusted certificate.
fn unreachable_hint(e: &ConnectError, target: &Target) -> String {
    match e {
        ConnectError::Tls { .. } if target.tls.is_some() => format!(
            "{e} (pass --cacert FILE to trust the server's CA, or --insecure to trust any \
             certificate)"
        ),
        _ => e.to_string(),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{text:?}: the rate must be a positive number of requests per second"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_positive() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-5").is_err());
    }
}
