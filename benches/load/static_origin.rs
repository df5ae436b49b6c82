//! The load benchmark's origin: a fast static server that answers every request with a body of
//! a fixed size, so that what is measured is the proxy in front of it, never the origin.
//!
//! `GET /size/N` (any suffix after N, e.g. `/size/1073741824/big.bin`) answers N bytes; every
//! other path answers `--size` bytes. Bodies stream from one shared 64 KiB buffer, so a 1 GiB
//! answer costs no memory. With `--cors`, every answer also carries CORS headers of its own, as a
//! bucket with its own CORS configuration would: a proxy in front must drop them (docs/cors-semantics.md#actual).
//!
//! ```text
//! cargo build --release --manifest-path benches/Cargo.toml --target-dir target --bin static_origin
//! target/release/static_origin --listen 127.0.0.1:8090 --size 1024 --cors
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Request, Response, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

#[derive(Debug, Parser)]
#[command(about = "A static origin answering fixed-size bodies, for the load benchmark")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Body size of every path but /size/N.
    #[arg(long, default_value_t = 1024)]
    size: u64,
    /// Add the origin's own CORS headers (which a CORS front must remove).
    #[arg(long)]
    cors: bool,
    /// Runtime threads; 1 runs a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// `len` bytes, streamed from a static buffer.
struct Fixed {
    left: u64,
}

impl Body for Fixed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

fn size_of(path: &str, default: u64) -> u64 {
    path.strip_prefix("/size/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn answer(req: &Request<Incoming>, args: &Args) -> Response<Fixed> {
    let mut response = Response::new(Fixed {
        left: size_of(req.uri().path(), args.size),
    });
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ETAG, HeaderValue::from_static("\"bench\""));
    if args.cors {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://origin-says.example"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
    }
    response
}

fn main() -> std::io::Result<()> {
    let args: &'static Args = Box::leak(Box::new(Args::parse()));
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen).await?;
        eprintln!("static_origin listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let service =
                service_fn(move |req| async move { Ok::<_, Infallible>(answer(&req, args)) });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_comes_from_the_path_or_the_default() {
        assert_eq!(size_of("/size/1073741824/big.bin", 1024), 1 << 30);
        assert_eq!(size_of("/size/10", 1024), 10);
        assert_eq!(size_of("/uploads/a.jpg", 1024), 1024);
        assert_eq!(size_of("/size/x", 7), 7);
    }
}
