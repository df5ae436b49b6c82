//! The server under test: where to connect, the `Host` to send, and the path prefix of every key.

use std::net::{SocketAddr, ToSocketAddrs};

use http::{HeaderValue, Uri};
use rustls::pki_types::ServerName;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0:?} is not a URL")]
    NotAUrl(String),
    #[error("{0:?}: only http:// and https:// are supported")]
    Scheme(String),
    #[error("{0:?}: the URL needs a host")]
    NoHost(String),
    #[error("{0:?}: a query string cannot be a key prefix")]
    Query(String),
    #[error("{0:?}: cannot resolve {1}")]
    Resolve(String, String),
}

#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `https://`: TLS, with this name for SNI and certificate verification.
    pub tls: Option<ServerName<'static>>,
    /// `host[:port]` as written in the URL: the `Host` header and the h2 `:authority`.
    pub authority: String,
    pub host_header: HeaderValue,
    /// The URL's path without its trailing `/`: the prefix of every object key (empty for `/`,
    /// `/bucket` for path-style S3 addressing).
    pub base_path: String,
}

impl Target {
    /// Parses the URL and resolves its host once, before any load is sent.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| TargetError::NotAUrl(url.to_string()))?;
        let (secure, default_port) = match uri.scheme_str() {
            Some("http") => (false, 80),
            Some("https") => (true, 443),
            None => return Err(TargetError::NotAUrl(url.to_string())),
            Some(_) => return Err(TargetError::Scheme(url.to_string())),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| TargetError::NoHost(url.to_string()))?;
        if uri.query().is_some() {
            return Err(TargetError::Query(url.to_string()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(default_port);
        let tls = if secure {
            Some(
                ServerName::try_from(host.to_string())
                    .map_err(|_| TargetError::NoHost(url.to_string()))?,
            )
        } else {
            None
        };
        let addr = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| TargetError::Resolve(url.to_string(), authority.to_string()))?;
        Ok(Target {
            addr,
            tls,
            authority: authority.to_string(),
            host_header: HeaderValue::from_str(authority.as_str())
                .map_err(|_| TargetError::NoHost(url.to_string()))?,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_url_gives_address_host_and_prefix() {
        let t = Target::parse("http://127.0.0.1:8080/my-bucket/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.base_path, "/my-bucket");
        assert_eq!(Target::parse("http://127.0.0.1").unwrap().base_path, "");
        assert_eq!(Target::parse("http://127.0.0.1").unwrap().addr.port(), 80);
    }

    #[test]
    fn https_urls_name_the_server_and_default_to_port_443() {
        let t = Target::parse("https://localhost/b").unwrap();
        assert_eq!(t.addr.port(), 443);
        assert_eq!(
            t.tls.as_ref().map(|n| n.to_str().into_owned()),
            Some("localhost".to_string())
        );
        assert!(Target::parse("http://localhost/").unwrap().tls.is_none());
    }

    #[test]
    fn unsupported_urls_are_refused_with_the_reason() {
        assert!(matches!(
            Target::parse("ftp://127.0.0.1/"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("/path"),
            Err(TargetError::NotAUrl(_))
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1/?a=b"),
            Err(TargetError::Query(_))
        ));
    }
}
