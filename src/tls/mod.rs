//! TLS, both ways: termination (rustls server configuration, certificates chosen by SNI,
//! certificate reload that never interrupts a connection, the bounded handshake) and the client
//! configuration for `https://` origins.
//!
//! The crypto provider is *ring*: it builds with nothing but a C compiler (aws-lc-rs also wants
//! cmake, and its FIPS and post-quantum extras are not needed to front a bucket), and its cipher
//! suites are all AEAD with forward secrecy. TLS 1.2 stays on because some CDNs and load
//! balancers still connect to their origins with it.

mod handshake;
mod origin;

pub use handshake::{Alpn, HandshakeError, handshake};
pub use origin::{OriginRoots, OriginTlsError, client_config};
pub(crate) use origin::{https_connector, origin_connector, tcp_connector};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

/// One certificate chain and its key, as PEM files.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What to do with a client whose server name no certificate covers (or that sends none).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownName {
    /// Answer with the first certificate; the client decides whether to trust it.
    #[default]
    DefaultCert,
    /// Fail the handshake.
    Reject,
}

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificate: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: cannot read private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{key}: this key does not belong to the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("a TLS listener needs at least one certificate")]
    NoCertificates,
}

/// A loaded certificate.
struct Entry {
    /// The leaf, for matching server names against its subjectAltNames.
    leaf: CertificateDer<'static>,
    key: Arc<CertifiedKey>,
}

/// Every certificate of a listener, in configuration order.
struct CertStore {
    entries: Vec<Entry>,
}

impl CertStore {
    fn load(files: &[CertFiles], provider: &CryptoProvider) -> Result<CertStore, TlsError> {
        if files.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let entries = files
            .iter()
            .map(|f| load_entry(f, provider))
            .collect::<Result<_, _>>()?;
        Ok(CertStore { entries })
    }

    /// The first certificate valid for `name` (wildcards as the certificate states them).
    fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = ServerName::try_from(name).ok()?;
        self.entries
            .iter()
            .find(|e| {
                webpki::EndEntityCert::try_from(&e.leaf)
                    .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            })
            .map(|e| &e.key)
    }
}

fn load_entry(files: &CertFiles, provider: &CryptoProvider) -> Result<Entry, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    let leaf = chain
        .first()
        .cloned()
        .ok_or_else(|| TlsError::NoCertificate {
            path: files.cert.clone(),
        })?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Entry {
        leaf,
        key: Arc::new(key),
    })
}

/// Picks a listener's certificate by SNI. Reloading swaps the whole set atomically: handshakes
/// in progress finish with the set they started with, open connections are not touched.
pub struct CertResolver {
    files: Vec<CertFiles>,
    unknown: UnknownName,
    provider: Arc<CryptoProvider>,
    store: ArcSwap<CertStore>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("files", &self.files)
            .field("unknown", &self.unknown)
            .finish()
    }
}

impl CertResolver {
    pub fn load(files: Vec<CertFiles>, unknown: UnknownName) -> Result<CertResolver, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let store = CertStore::load(&files, &provider)?;
        Ok(CertResolver {
            files,
            unknown,
            provider,
            store: ArcSwap::from_pointee(store),
        })
    }

    /// Re-reads every certificate and key. On any error the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let store = CertStore::load(&self.files, &self.provider)?;
        self.store.store(Arc::new(store));
        Ok(())
    }

    /// The leaf certificates in use, in configuration order (for their expiry metric).
    pub fn leaves(&self) -> Vec<CertificateDer<'static>> {
        self.store
            .load()
            .entries
            .iter()
            .map(|e| e.leaf.clone())
            .collect()
    }

    /// The files this resolver reads, to watch them.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .flat_map(|f| [f.cert.as_path(), f.key.as_path()])
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        if let Some(key) = hello.server_name().and_then(|name| store.find(name)) {
            return Some(key.clone());
        }
        match self.unknown {
            UnknownName::DefaultCert => store.entries.first().map(|e| e.key.clone()),
            UnknownName::Reject => None,
        }
    }
}

/// A rustls server configuration: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
pub fn server_config(
    resolver: Arc<CertResolver>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = resolver.provider.clone();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestCert {
        files: CertFiles,
        _dir: PathBuf,
    }

    fn make_cert(dir_name: &str, names: &[&str]) -> TestCert {
        let dir =
            std::env::temp_dir().join(format!("corsgate-tls-{}-{dir_name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).expect("write cert");
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).expect("write key");
        TestCert { files, _dir: dir }
    }

    fn pick(resolver: &CertResolver, name: &str) -> Option<Vec<u8>> {
        let store = resolver.store.load();
        store.find(name).map(|k| k.cert[0].to_vec())
    }

    #[test]
    fn server_name_picks_the_matching_certificate_wildcards_included() {
        let a = make_cert("a", &["a.example.com"]);
        let w = make_cert("w", &["*.cdn.example.com"]);
        let resolver =
            CertResolver::load(vec![a.files.clone(), w.files.clone()], UnknownName::Reject)
                .expect("valid certificates");
        let a_der = pick(&resolver, "a.example.com").expect("a");
        let w_der = pick(&resolver, "img.cdn.example.com").expect("wildcard");
        assert_ne!(a_der, w_der);
        assert_eq!(pick(&resolver, "other.example.com"), None);
        assert_eq!(
            pick(&resolver, "x.y.cdn.example.com"),
            None,
            "a wildcard covers one label"
        );
    }

    #[test]
    fn a_bad_reload_keeps_the_old_certificates() {
        let a = make_cert("reload", &["a.example.com"]);
        let resolver = CertResolver::load(vec![a.files.clone()], UnknownName::DefaultCert)
            .expect("valid certificate");
        let before = pick(&resolver, "a.example.com");
        std::fs::write(&a.files.cert, "not a certificate").expect("overwrite");
        let err = resolver.reload().expect_err("garbage certificate");
        assert!(err.to_string().contains("cert.pem"), "{err}");
        assert_eq!(pick(&resolver, "a.example.com"), before);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = make_cert("mismatch-a", &["a.example.com"]);
        let b = make_cert("mismatch-b", &["b.example.com"]);
        let crossed = CertFiles {
            cert: a.files.cert.clone(),
            key: b.files.key.clone(),
        };
        let err = CertResolver::load(vec![crossed], UnknownName::Reject).expect_err("mismatch");
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }
}
