//! A route's connections to a plain-HTTP origin, kept for reuse between requests.
//!
//! hyper-util's pooled client finds a connection by hashing the origin's scheme and authority,
//! races a checkout against a new connect, and hands the connection back through a future once
//! the response is done: about 6,000 of the 44,000 instructions of a proxied 1 KiB GET
//! (callgrind). A route forwards to one origin, so its pool needs no key: a stack of idle
//! HTTP/1.1 connections behind a mutex, most recently used on top. HTTPS origins (TLS, and
//! HTTP/2 where the origin's ALPN offers it) stay on hyper-util's client.
//!
//! - A connection goes back to the pool when its response body has been read to the end (the
//!   [`Lease`] the body carries); a body dropped half-way closes its connection, which may still
//!   be carrying the rest of it.
//! - A request that a reused connection refused before sending anything (the origin closed it
//!   while it was idle) is sent again, on another connection: nothing of it reached the origin.
//! - Idle connections are dropped once older than the idle timeout, when the pool is next used,
//!   and as soon as the origin closes them (their task ends). At most [`MAX_IDLE`] are kept.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::proxy::Upload;

/// Idle connections kept per route; past it, the oldest is closed.
pub const MAX_IDLE: usize = 1024;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

/// The idle connections to one origin, and how to make new ones.
#[derive(Debug)]
pub struct OriginPool {
    /// Host (IPv6 without brackets) and port to connect to.
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Oldest first.
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Upload>,
    since: Instant,
}

impl OriginPool {
    pub fn new(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> OriginPool {
        // An IPv6 literal comes bracketed in a URL; the resolver wants it bare.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        OriginPool {
            host: host.to_string(),
            port,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` (its URI in origin form) and returns the response head, with the lease of
    /// the connection its body arrives on.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Upload>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let lease = Lease {
                        sender: Some(sender),
                        pool: Arc::clone(self),
                    };
                    return Ok((response, lease));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: safe to send again whatever the method. Each retry uses up
                    // an idle connection, and a new one is not retried, so this ends.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(PoolError::Http(failed.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection ready for a request, dropping the closed and the
    /// stale on the way.
    fn checkout(&self) -> Option<SendRequest<Upload>> {
        let mut idle = self.lock();
        let now = Instant::now();
        let stale = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= self.idle_timeout)
            .count();
        idle.drain(..stale);
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].sender.is_closed() {
                idle.remove(i);
            } else if idle[i].sender.is_ready() {
                return Some(idle.remove(i).sender);
            }
            // Not ready yet (still finishing an upload the origin answered early): skip it.
        }
        None
    }

    fn put(&self, sender: SendRequest<Upload>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<Upload>, PoolError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(PoolError::ConnectTimeout(self.connect_timeout)),
            Ok(Err(err)) => return Err(PoolError::Connect(err)),
            Ok(Ok(stream)) => stream,
        };
        // Requests and responses are written whole: no point in Nagle's delay.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Http)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("origin connection ended: {err}");
            }
        });
        Ok(sender)
    }

    /// A poisoned lock only means a panic elsewhere mid-push or mid-pop: the list is still a
    /// list of connections.
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The right to a connection while its response body is read: [`Lease::release`] returns it to
/// the pool; dropping it closes the connection.
#[derive(Debug)]
pub struct Lease {
    sender: Option<SendRequest<Upload>>,
    pool: Arc<OriginPool>,
}

impl Lease {
    /// The response is complete: the connection may serve another request.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(sender);
        }
    }
}
