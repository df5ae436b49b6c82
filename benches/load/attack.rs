//! The load benchmark's attacker: cheap hostile clients held open against one server, for the
//! "under attack" scenario, while wrk measures what well-behaved clients still get.
//!
//! - slowloris: connections that send a request head one byte at a time, reconnecting whenever
//!   the server drops them;
//! - slow uploads: `POST`s that announce a large body and send one byte at a time;
//! - an HTTP/2 fan-out: one cleartext h2 connection opening as many `POST` streams as the server
//!   allows, each sending a few bytes and then stalling; reset streams are opened again.
//!
//! It runs until `--duration` passes or it is killed, then prints what it held and how often the
//! server cut it off.
//!
//! ```text
//! cargo build --release --manifest-path benches/Cargo.toml --target-dir target --bin attack
//! target/release/attack --target 127.0.0.1:8080 --slowloris 1000 --slow-uploads 200 --h2-streams 200
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(about = "Hostile clients for the load benchmark's under-attack scenario (loopback only)")]
struct Args {
    /// The server to attack; must be a loopback address.
    #[arg(long)]
    target: SocketAddr,
    /// Connections dribbling a request head.
    #[arg(long, default_value_t = 1000)]
    slowloris: usize,
    /// Connections dribbling a request body.
    #[arg(long, default_value_t = 200)]
    slow_uploads: usize,
    /// Stalled POST streams on one HTTP/2 connection (0: no fan-out).
    #[arg(long, default_value_t = 200)]
    h2_streams: usize,
    /// Time between two bytes of a slow client.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Host header to send.
    #[arg(long, default_value = "localhost")]
    host: String,
}

#[derive(Default)]
struct Counts {
    /// Connections (or h2 streams) opened.
    opened: AtomicU64,
    /// Connections (or streams) the server ended.
    cut: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        eprintln!("attack: --target must be a loopback address");
        return std::process::ExitCode::from(2);
    }
    let args = Arc::new(args);
    let loris = Arc::new(Counts::default());
    let uploads = Arc::new(Counts::default());
    let streams = Arc::new(Counts::default());
    for i in 0..args.slowloris {
        let head = format!(
            "GET /loris/{i} HTTP/1.1\r\nHost: {}\r\nX-Padding: {}\r\n",
            args.host,
            "a".repeat(4096)
        );
        tokio::spawn(dribble(Arc::clone(&args), head, Arc::clone(&loris)));
    }
    for i in 0..args.slow_uploads {
        let head = format!(
            "POST /upload/{i} HTTP/1.1\r\nHost: {}\r\nOrigin: https://app.example.com\r\nContent-Length: 1000000000\r\n\r\n{}",
            args.host,
            "b".repeat(1_000_000)
        );
        tokio::spawn(dribble(Arc::clone(&args), head, Arc::clone(&uploads)));
    }
    if args.h2_streams > 0 {
        tokio::spawn(fan_out(Arc::clone(&args), Arc::clone(&streams)));
    }
    tokio::select! {
        () = tokio::time::sleep(args.duration) => {}
        _ = tokio::signal::ctrl_c() => {}
        () = terminated() => {}
    }
    for (name, c) in [
        ("slowloris", &loris),
        ("slow-uploads", &uploads),
        ("h2-streams", &streams),
    ] {
        println!(
            "{name}: opened {} cut by the server {}",
            c.opened.load(Ordering::Relaxed),
            c.cut.load(Ordering::Relaxed)
        );
    }
    std::process::ExitCode::SUCCESS
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Sends `text` one byte per interval on a connection, and opens a new one whenever the server
/// ends it.
async fn dribble(args: Arc<Args>, text: String, counts: Arc<Counts>) {
    let bytes = text.as_bytes();
    loop {
        let Ok(mut stream) = TcpStream::connect(args.target).await else {
            tokio::time::sleep(args.interval).await;
            continue;
        };
        counts.opened.fetch_add(1, Ordering::Relaxed);
        for byte in bytes {
            if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
                break;
            }
            tokio::time::sleep(args.interval).await;
        }
        counts.cut.fetch_add(1, Ordering::Relaxed);
        // A server that refuses at once must not make this loop spin.
        tokio::time::sleep(args.interval / 10).await;
    }
}

/// One h2c connection holding `h2_streams` stalled uploads; reconnects when the server closes it.
async fn fan_out(args: Arc<Args>, counts: Arc<Counts>) {
    loop {
        let Ok(tcp) = TcpStream::connect(args.target).await else {
            tokio::time::sleep(args.interval).await;
            continue;
        };
        let Ok((client, connection)) = h2::client::handshake(tcp).await else {
            tokio::time::sleep(args.interval).await;
            continue;
        };
        let driver = tokio::spawn(connection);
        let mut held = tokio::task::JoinSet::new();
        for i in 0..args.h2_streams {
            let client = client.clone();
            let counts = Arc::clone(&counts);
            let args = Arc::clone(&args);
            held.spawn(async move {
                loop {
                    let Ok(mut ready) = client.clone().ready().await else {
                        return;
                    };
                    let request = http::Request::post(format!("http://{}/fan/{i}", args.host))
                        .header("origin", "https://app.example.com")
                        .header("content-length", "1000000000")
                        .body(())
                        .expect("a fixed, valid request");
                    let Ok((response, mut body)) = ready.send_request(request, false) else {
                        return;
                    };
                    counts.opened.fetch_add(1, Ordering::Relaxed);
                    let _ = body.send_data(Bytes::from_static(b"stall"), false);
                    // Held until the server answers or resets the stream.
                    let _ = response.await;
                    counts.cut.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(args.interval / 10).await;
                }
            });
        }
        while held.join_next().await.is_some() {}
        driver.abort();
        tokio::time::sleep(args.interval / 10).await;
    }
}
