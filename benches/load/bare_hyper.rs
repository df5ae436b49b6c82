//! The ceiling for a hyper-based CORS server: a bare hyper 1.x server that answers every request
//! with one constant preflight response, the exact status and headers corsgate sends for one
//! preflight under one rules file (computed at start by corsgate's core, so the two can never
//! drift apart). Whatever corsgate does beyond this (routing, evaluation, caching) is its
//! overhead; the load benchmark reports corsgate's req/s as a ratio to this server's.
//!
//! Build and run (a program of the benchmark package, benches/Cargo.toml, built with the same
//! release profile as corsgate, and never part of the gateway's build):
//!
//! ```text
//! cargo build --release --manifest-path benches/Cargo.toml --target-dir target --bin bare_hyper
//! target/release/bare_hyper --listen 127.0.0.1:8081            # auto builder (h1 + h2c)
//! target/release/bare_hyper --listen 127.0.0.1:8081 --http1-only
//! ```
//!
//! The knobs the comparison should try before calling a figure the ceiling: `--http1-only`
//! against the auto builder, `--writev`, `--max-buf-size`, `--pipeline-flush`, and `--threads`
//! (1 = a current-thread runtime, the fastest on one pinned core).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use corsgate::cors::{BucketCors, CorsRequest, Decision, Policy, Resource};
use http::{HeaderMap, HeaderValue, Method, Response, header};
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(about = "A bare hyper server answering one constant CORS preflight response")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Use hyper's HTTP/1-only connection builder instead of hyper-util's auto (h1 + h2c) one.
    #[arg(long)]
    http1_only: bool,
    /// Runtime threads; 1 runs a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// HTTP/1 vectored writes: on, off, or hyper's default (auto).
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    writev: String,
    /// HTTP/1 maximum read buffer size in bytes (hyper's default when not given).
    #[arg(long)]
    max_buf_size: Option<usize>,
    /// HTTP/1: aggregate pipelined responses into one flush.
    #[arg(long)]
    pipeline_flush: bool,
    /// The rules whose answer is served.
    #[arg(long, default_value = "benches/fixtures/cors.xml")]
    rules: PathBuf,
    /// The preflight whose answer is served: its Origin ...
    #[arg(long, default_value = "https://app.example.com")]
    origin: String,
    /// ... its Access-Control-Request-Method ...
    #[arg(long, default_value = "PUT")]
    method: String,
    /// ... and its Access-Control-Request-Headers (empty for none).
    #[arg(long, default_value = "content-type")]
    request_headers: String,
}

/// The status-200 headers corsgate answers the configured preflight with.
fn constant_headers(args: &Args) -> Result<HeaderMap, String> {
    let bytes = std::fs::read(&args.rules)
        .map_err(|e| format!("{}: cannot read: {e}", args.rules.display()))?;
    let policy = Policy::parse(&bytes).map_err(|e| format!("{}: {e:?}", args.rules.display()))?;
    let mut request = HeaderMap::new();
    let value =
        |v: &str| HeaderValue::from_str(v).map_err(|_| format!("{v:?}: not a header value"));
    request.insert(header::ORIGIN, value(&args.origin)?);
    request.insert(header::ACCESS_CONTROL_REQUEST_METHOD, value(&args.method)?);
    if !args.request_headers.is_empty() {
        request.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            value(&args.request_headers)?,
        );
    }
    let cors = BucketCors::Enabled(policy);
    let req = CorsRequest::new(&Method::OPTIONS, &request, Resource::Object);
    match cors.evaluate(&req) {
        Decision::Preflight(Ok(grant)) => Ok(grant.headers().collect()),
        Decision::Preflight(Err(denial)) => Err(format!(
            "the rules refuse this preflight ({} {}): serve an allowed one",
            denial.status,
            denial.code()
        )),
        Decision::Actual(_) => unreachable!("an OPTIONS request is always a preflight"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let headers = match constant_headers(&args) {
        Ok(h) => h,
        Err(message) => {
            eprintln!("bare_hyper: {message}");
            return ExitCode::from(2);
        }
    };
    for (name, value) in &headers {
        eprintln!("{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare_hyper: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args, headers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_hyper: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: Args, headers: HeaderMap) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "bare_hyper listening on {} ({})",
        listener.local_addr()?,
        if args.http1_only {
            "http1 only"
        } else {
            "auto: http1 + h2c"
        }
    );
    let headers: &'static HeaderMap = Box::leak(Box::new(headers));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let service = service_fn(move |_req| async move {
            let mut response = Response::new(Empty::<Bytes>::new());
            *response.headers_mut() = headers.clone();
            Ok::<_, Infallible>(response)
        });
        if args.http1_only {
            let mut builder = hyper::server::conn::http1::Builder::new();
            match args.writev.as_str() {
                "on" => builder.writev(true),
                "off" => builder.writev(false),
                _ => &mut builder,
            };
            if let Some(size) = args.max_buf_size {
                builder.max_buf_size(size);
            }
            builder.pipeline_flush(args.pipeline_flush);
            tokio::spawn(async move {
                let _ = builder.serve_connection(io, service).await;
            });
        } else {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            {
                let mut h1 = builder.http1();
                match args.writev.as_str() {
                    "on" => h1.writev(true),
                    "off" => h1.writev(false),
                    _ => &mut h1,
                };
                if let Some(size) = args.max_buf_size {
                    h1.max_buf_size(size);
                }
                h1.pipeline_flush(args.pipeline_flush);
            }
            tokio::spawn(async move {
                let _ = builder.serve_connection(io, service).await;
            });
        }
    }
}
