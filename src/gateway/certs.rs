//! The TLS listeners' certificates at run time: reload them all (on `SIGHUP`, or when a file
//! watcher says so) and say, per listener, whether the new ones are in use.
//!
//! A reload never touches open connections (they keep the keys they negotiated with) and never
//! replaces good certificates with bad ones: a listener whose new files fail to load keeps
//! serving the previous set, and the error is reported.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::tls::{CertResolver, TlsError};
use crate::watch::{DEFAULT_DEBOUNCE, FileWatch, Scope};

/// One `server.tls` entry at run time.
#[derive(Debug)]
struct TlsGroup {
    /// 1-based position in `server.tls`.
    index: usize,
    addrs: Vec<SocketAddr>,
    resolver: Arc<CertResolver>,
}

/// Every TLS listener's certificates; cheap to clone into a signal or file-watching task.
#[derive(Clone, Debug, Default)]
pub struct Certificates {
    groups: Arc<Vec<TlsGroup>>,
}

/// What one listener's reload did.
#[derive(Debug)]
pub struct CertReload {
    /// 1-based position in `server.tls`.
    pub listener: usize,
    pub(crate) addrs: Vec<SocketAddr>,
    /// `Err`: the previous certificates are still in use.
    pub result: Result<(), TlsError>,
}

impl fmt::Display for CertReload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        let addrs = addrs.join(", ");
        match &self.result {
            Ok(()) => write!(
                f,
                "server.tls[{}] ({addrs}): certificates reloaded",
                self.listener
            ),
            Err(err) => write!(
                f,
                "server.tls[{}] ({addrs}): {err}; the previous certificates stay in use",
                self.listener
            ),
        }
    }
}

impl Certificates {
    /// `listeners`: each `server.tls` entry's 1-based index, bound addresses and resolver.
    pub(super) fn new(listeners: Vec<(usize, Vec<SocketAddr>, Arc<CertResolver>)>) -> Certificates {
        let groups = listeners
            .into_iter()
            .map(|(index, addrs, resolver)| TlsGroup {
                index,
                addrs,
                resolver,
            })
            .collect();
        let certificates = Certificates {
            groups: Arc::new(groups),
        };
        // A gateway without TLS listeners leaves the series of any other in the process alone.
        if !certificates.is_empty() {
            certificates.show_expiry();
        }
        certificates
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Re-reads every listener's certificate and key files (blocking file reads: a few small
    /// files), one result per listener.
    pub fn reload(&self) -> Vec<CertReload> {
        let results = self
            .groups
            .iter()
            .map(|g| CertReload {
                listener: g.index,
                addrs: g.addrs.clone(),
                result: g.resolver.reload(),
            })
            .collect();
        self.show_expiry();
        results
    }

    /// Shows the certificates in use in `corsgate_tls_certificate_expiry_timestamp_seconds`.
    fn show_expiry(&self) {
        super::metrics::certificates_in_use(
            self.groups.iter().map(|g| (g.index, g.resolver.leaves())),
        );
    }

    /// Every certificate and key file in use, for a file watcher.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.groups
            .iter()
            .flat_map(|g| g.resolver.paths().map(PathBuf::from))
            .collect()
    }

    /// Reloads and logs each listener's result.
    pub(crate) fn reload_and_log(&self) -> Vec<CertReload> {
        let results = self.reload();
        for r in &results {
            match r.result {
                Ok(()) => tracing::info!("{r}"),
                Err(_) => tracing::error!("{r}"),
            }
        }
        results
    }
}
/// Certificates reload when their files change (renewal tools write a new file and rename it
/// into place, which the watch sees) and on SIGHUP. A bad renewal keeps the old certificates
/// serving; either way the outcome is logged. The watch starts before `spawn` returns, so no
/// change made after start-up is missed.
pub(super) fn watch_certificates(
    certificates: &Certificates,
    scope: &Scope,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    if certificates.is_empty() {
        return None;
    }
    let mut stop = scope.stop_signal();
    let mut files = FileWatch::spawn(&certificates.paths(), DEFAULT_DEBOUNCE, scope)
        .map_err(|err| {
            tracing::warn!("certificate files are not watched, SIGHUP still reloads them: {err}")
        })
        .ok();
    let mut hangup = scope.hangup();
    let certificates = certificates.clone();
    Some(async move {
        loop {
            tokio::select! {
                () = async {
                    match files.as_mut() {
                        Some(files) => files.changed().await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = hangup.recv() => {}
                _ = stop.changed() => return,
            }
            let certificates = certificates.clone();
            // File reads: off the async workers.
            let _ = tokio::task::spawn_blocking(move || certificates.reload_and_log()).await;
        }
    })
}
