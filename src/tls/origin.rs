//! The client side: the rustls configuration for `https://` origins, trusting the roots the
//! configuration chose plus an optional private CA.
//!
//! The default roots are Mozilla's, compiled in (`webpki-roots`): the gateway verifies S3,
//! Spaces or any public origin the same way on every machine, including minimal container
//! images that ship no CA bundle. `system` reads the operating system's store instead, for
//! sites whose policy is to manage trust there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

/// Which certificate authorities vouch for origins (before the optional extra CA file).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OriginRoots {
    /// Mozilla's root program, built into the binary.
    #[default]
    Webpki,
    /// The operating system's certificate store, read at start.
    System,
    /// Only the CA file: for a gateway that talks to private origins alone.
    None,
}

/// Why the origin TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OriginTlsError {
    #[error("{path}: cannot read CA certificates: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("{path}: holds no usable CA certificate")]
    NoCa { path: PathBuf },
    #[error("the system certificate store holds no usable certificate: {0}")]
    System(String),
    #[error("origin TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The connector every origin connection goes through (the proxy's and the bucket rules
/// fetcher's): plain TCP for `http://`, rustls for `https://`, ALPN offering h2 then http/1.1,
/// so an HTTP/2 origin carries all requests on one multiplexed connection.
pub(crate) fn origin_connector(
    connect_timeout: Duration,
    tls: rustls::ClientConfig,
) -> HttpsConnector<HttpConnector> {
    https_connector(tcp_connector(connect_timeout), tls)
}

/// TCP to origins, bounded by `connect_timeout`, without Nagle's delay (requests and
/// responses are written whole).
pub(crate) fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_nodelay(true);
    // The TLS layer above sees the scheme; the TCP connector below must accept https URIs.
    tcp.enforce_http(false);
    tcp
}

/// rustls (and the ALPN of [`origin_connector`]) over `tcp`, any connector that makes the TCP
/// connections: [`tcp_connector`]'s, or one that wraps it.
pub(crate) fn https_connector<T>(tcp: T, tls: rustls::ClientConfig) -> HttpsConnector<T> {
    HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp)
}

/// A rustls client configuration for origins: TLS 1.2 and 1.3 with *ring*, the chosen roots.
/// ALPN is left to the connector, which offers what the HTTP client can speak.
pub fn client_config(
    roots: OriginRoots,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, OriginTlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        OriginRoots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        OriginRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(OriginTlsError::System(errors.join("; ")));
            }
        }
        OriginRoots::None => {}
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| OriginTlsError::CaFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(OriginTlsError::NoCa {
                path: path.to_path_buf(),
            });
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_path() {
        let path =
            std::env::temp_dir().join(format!("corsgate-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "no PEM here").expect("write");
        let err = client_config(OriginRoots::None, Some(&path)).expect_err("empty CA file");
        assert!(err.to_string().contains("corsgate-empty-ca"), "{err}");
        let missing = path.with_extension("missing");
        let err = client_config(OriginRoots::Webpki, Some(&missing)).expect_err("no file");
        assert!(matches!(err, OriginTlsError::CaFile { .. }), "{err}");
    }

    #[test]
    fn the_built_in_roots_load_without_touching_the_system() {
        client_config(OriginRoots::Webpki, None).expect("webpki roots");
    }
}
