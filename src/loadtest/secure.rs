//! `https://` targets: the rustls client configuration (ring, as the gateway uses), trust as curl
//! spells it (`--cacert FILE` replaces the built-in roots, `--insecure` verifies nothing but the
//! handshake's own signatures), and ALPN offering h2 only when asked for, so that a run says
//! which protocol it measures.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::tls::{OriginRoots, OriginTlsError, client_config};

/// Whom to trust.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// Mozilla's roots, built in (as the gateway trusts origins).
    #[default]
    Roots,
    /// Only the CA certificates of this PEM file.
    CaFile(PathBuf),
    /// Anyone: for self-signed test servers.
    Insecure,
}

#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("{0}")]
    Config(#[from] OriginTlsError),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client configuration for a run; `http2` offers h2 before http/1.1, otherwise only
/// http/1.1 is offered.
pub fn client(trust: &Trust, http2: bool) -> Result<Arc<rustls::ClientConfig>, SecureError> {
    let mut config = match trust {
        Trust::Roots => client_config(OriginRoots::Webpki, None)?,
        Trust::CaFile(path) => client_config(OriginRoots::None, Some(path))?,
        Trust::Insecure => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate for any name, but the handshake signatures still checked, so
/// the work per handshake is what a verifying client does short of the chain.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
