//! The `idle-connections` client of the load benchmark: opens N keep-alive connections to one
//! server, sends one preflight on each and reads its answer, then holds every connection open and
//! idle, so that what the server keeps per idle connection can be read from its RSS.
//!
//! It prints `ready N` on its own line once every connection has had its answer, then holds them
//! until `--hold` passes or it is killed. A connection that fails (refused, reset, an answer that
//! is not 2xx) makes it print what went wrong and exit with status 1 before holding anything: a
//! figure per connection is only worth reading when every connection is there.
//!
//! ```text
//! cargo build --release --manifest-path benches/Cargo.toml --target-dir target --bin idle
//! target/release/idle --target 127.0.0.1:8080 --connections 10000
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
#[command(about = "Holds N idle keep-alive connections to a server (loopback only)")]
struct Args {
    /// The server, on this machine.
    #[arg(long)]
    target: SocketAddr,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections being opened (handshake, request, answer) at once: enough to open thousands a
    /// second, few enough not to overflow the server's listen backlog.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// How long to hold the connections once all are open, unless killed first.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Give up on one connection's handshake and answer after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The preflight's path, Origin and Access-Control-Request-Method.
    #[arg(long, default_value = "/uploads/photo.jpg")]
    path: String,
    #[arg(long, default_value = "https://app.example.com")]
    origin: String,
    #[arg(long, default_value = "PUT")]
    method: String,
}

/// Why one connection could not be opened and answered.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("send or receive: {0}")]
    Io(std::io::Error),
    #[error("the server closed the connection before its answer was complete")]
    Closed,
    #[error("the answer's head is longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("not a 2xx answer: {0:?}")]
    Status(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Longer than any preflight answer's head.
const MAX_HEAD: usize = 16 * 1024;

/// Opens one connection, sends the preflight, and reads the answer's head (a preflight answer
/// has no body, so the connection is idle once its head is read).
async fn open(target: SocketAddr, request: Arc<[u8]>) -> Result<TcpStream, ConnError> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(ConnError::Connect)?;
    stream.write_all(&request).await.map_err(ConnError::Io)?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(ConnError::Io)?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(ConnError::HeadTooLong);
        }
    }
    let status_line = head
        .split(|&b| b == b'\r')
        .next()
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 2") {
        return Err(ConnError::Status(status_line));
    }
    Ok(stream)
}

/// Raises the open-file soft limit to the hard limit: one descriptor per held connection.
fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let limit = raise_nofile_limit();
    // A few descriptors go to stdio and the runtime.
    if limit < args.connections as u64 + 64 {
        eprintln!(
            "idle: the open-file limit is {limit}, too low for {} connections: raise it \
             (ulimit -n) to at least {}",
            args.connections,
            args.connections + 64
        );
        return ExitCode::from(2);
    }
    let request: Arc<[u8]> = format!(
        "OPTIONS {} HTTP/1.1\r\nHost: {}\r\nOrigin: {}\r\nAccess-Control-Request-Method: {}\r\n\
         Access-Control-Request-Headers: content-type\r\n\r\n",
        args.path, args.target, args.origin, args.method
    )
    .into_bytes()
    .into();
    let opening = Arc::new(Semaphore::new(args.in_flight.max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..args.connections {
        let opening = Arc::clone(&opening);
        let request = Arc::clone(&request);
        let (target, timeout) = (args.target, args.timeout);
        tasks.spawn(async move {
            let _permit = opening.acquire_owned().await;
            match tokio::time::timeout(timeout, open(target, request)).await {
                Ok(result) => result,
                Err(_) => Err(ConnError::Timeout(timeout)),
            }
        });
    }
    let mut held = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(err)) => {
                failed += 1;
                first_error.get_or_insert_with(|| err.to_string());
            }
            Err(err) => {
                failed += 1;
                first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "idle: {failed} of {} connections to {} failed; the first: {}",
            args.connections,
            args.target,
            first_error.unwrap_or_default()
        );
        return ExitCode::from(1);
    }
    println!("ready {}", held.len());
    tokio::time::sleep(args.hold).await;
    drop(held);
    ExitCode::SUCCESS
}
