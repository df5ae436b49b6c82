//! The `[server]` keys that say how clients reach the gateway and how it reaches HTTPS origins:
//! TLS listeners (`server.tls`), the plain-HTTP redirect listener (`server.redirect`), HTTP/2
//! settings (`server.http2`) and origin TLS trust (`server.origin_tls`).
//!
//! Like the rest of the configuration, nothing is read from disk here: certificate and CA files
//! are loaded when the gateway starts, where an unreadable one stops the start.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer, StrDeserializer};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de};

use super::parse_addr;
use crate::tls::{CertFiles, OriginRoots, UnknownName};

/// One TLS listener group: its addresses, its certificates (chosen by SNI) and what to do with
/// a name none of them covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsListenerConfig {
    pub listen: Vec<SocketAddr>,
    pub certs: Vec<CertFiles>,
    pub unknown_name: UnknownName,
}

/// `[server.redirect]`: a plain-HTTP listener that answers every request with a 308 to the same
/// host and target over HTTPS, except the health checks `/healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectConfig {
    pub listen: Vec<SocketAddr>,
    /// The port in the `Location`; `None`: the first TLS listener's bound port. 443 is left out
    /// of the URL.
    pub https_port: Option<u16>,
}

/// `[server.http2]`: what the gateway announces in its HTTP/2 SETTINGS, per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Config {
    /// Bytes a client may send on one stream before the gateway reads them.
    pub initial_stream_window_size: u32,
    /// Bytes a client may send on all streams of a connection together before the gateway reads
    /// them: what one connection can make the gateway buffer.
    pub initial_connection_window_size: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            initial_stream_window_size: 1024 * 1024,
            // Twice the stream window, so one slow upload cannot stall the connection's others.
            initial_connection_window_size: 2 * 1024 * 1024,
        }
    }
}

/// `[server.origin_tls]`: which certificate authorities the gateway trusts for `https://`
/// origins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginTlsConfig {
    pub roots: OriginRoots,
    /// A PEM file of extra CA certificates, for origins with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// Where clients connect, as validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Listeners {
    pub plain: Vec<SocketAddr>,
    pub tls: Vec<TlsListenerConfig>,
    pub redirect: Option<RedirectConfig>,
}

/// A TOML value that is either one `T` or a list of them (`tls = { ... }` or `[[server.tls]]`,
/// `listen = "addr"` or `listen = ["addr", ...]`). Keeps `T`'s own error messages, which serde's
/// untagged enums would replace by "did not match any variant".
#[derive(Debug)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn is_one(&self) -> bool {
        matches!(self, OneOrMany::One(_))
    }

    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one value or a list")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::deserialize(StrDeserializer::new(s)).map(OneOrMany::One)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// One `server.tls` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    listen: Option<OneOrMany<String>>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    certs: Option<Vec<CertFiles>>,
    unknown_name: Option<UnknownName>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    listen: Option<OneOrMany<String>>,
    https_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp2 {
    max_concurrent_streams: Option<u32>,
    initial_stream_window_size: Option<u32>,
    initial_connection_window_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOriginTls {
    roots: Option<OriginRoots>,
    ca_file: Option<PathBuf>,
}

/// Resolves `server.listen`, `server.tls` and `server.redirect` together.
///
/// A `server.tls` table without `listen` of its own makes the `server.listen` addresses TLS (the
/// simple form: `listen = [":443"]` and `tls = { cert, key }`); with `listen`, it adds TLS
/// listeners and `server.listen` stays plain HTTP. Only when no listener at all is configured
/// does the gateway fall back to `default`.
pub(super) fn listeners(
    listen: Option<Vec<SocketAddr>>,
    tls: Option<OneOrMany<RawTls>>,
    redirect: Option<RawRedirect>,
    default: SocketAddr,
    report: &mut impl FnMut(String, String),
) -> Listeners {
    let single = tls.as_ref().is_some_and(OneOrMany::is_one);
    let raw_tls = tls.map(OneOrMany::into_vec).unwrap_or_default();
    let mut plain = listen;
    let mut out = Listeners::default();
    let mut inherited = false;
    for (i, t) in raw_tls.into_iter().enumerate() {
        let key = |field: &str| match single {
            true => format!("server.tls.{field}"),
            false => format!("server.tls[{}].{field}", i + 1),
        };
        let listen = match t.listen {
            Some(list) => addresses(list, &key("listen"), report),
            None if inherited => {
                report(
                    key("listen"),
                    "missing: only one TLS table may take over server.listen".into(),
                );
                Vec::new()
            }
            None => {
                inherited = true;
                let listen = plain.take().unwrap_or_else(|| vec![default]);
                if listen.is_empty() {
                    report("server.listen".into(), "names no address for TLS".into());
                }
                listen
            }
        };
        let certs = match (t.cert, t.key, t.certs) {
            (Some(cert), Some(key), None) => vec![CertFiles { cert, key }],
            (None, None, Some(certs)) if certs.is_empty() => {
                report(key("certs"), "names no certificate".into());
                Vec::new()
            }
            (None, None, Some(certs)) => certs,
            (Some(_), None, None) => {
                report(key("key"), "missing (cert needs its key)".into());
                Vec::new()
            }
            (None, Some(_), None) => {
                report(key("cert"), "missing (key needs its cert)".into());
                Vec::new()
            }
            (None, None, None) => {
                report(
                    key("cert"),
                    "missing (cert = \"...\", key = \"...\", or certs = [{ cert, key }, ...])"
                        .into(),
                );
                Vec::new()
            }
            (_, _, Some(_)) => {
                report(
                    key("certs"),
                    "give either cert and key, or certs, not both".into(),
                );
                Vec::new()
            }
        };
        out.tls.push(TlsListenerConfig {
            listen,
            certs,
            unknown_name: t.unknown_name.unwrap_or_default(),
        });
    }

    out.redirect = redirect.map(|r| {
        let listen = match r.listen {
            Some(list) => addresses(list, "server.redirect.listen", report),
            None => {
                report("server.redirect.listen".into(), "missing".into());
                Vec::new()
            }
        };
        if r.https_port.is_none() && out.tls.is_empty() {
            report(
                "server.redirect.https_port".into(),
                "missing: without a TLS listener, say where HTTPS is served".into(),
            );
        }
        if r.https_port == Some(0) {
            report(
                "server.redirect.https_port".into(),
                "must be above 0".into(),
            );
        }
        RedirectConfig {
            listen,
            https_port: r.https_port,
        }
    });

    out.plain = match plain {
        Some(list) => list,
        None if out.tls.is_empty() && out.redirect.is_none() => vec![default],
        None => Vec::new(),
    };
    check_distinct(&out, report);
    out
}

fn addresses(
    list: OneOrMany<String>,
    key: &str,
    report: &mut impl FnMut(String, String),
) -> Vec<SocketAddr> {
    let single = list.is_one();
    let list = list.into_vec();
    if list.is_empty() {
        report(key.into(), "names no address".into());
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let key = match single {
                true => key.to_string(),
                false => format!("{key}[{i}]"),
            };
            parse_addr(a).map_err(|m| report(key, m)).ok()
        })
        .collect()
}

/// Two listeners on one address would fail at bind time with a less helpful message.
fn check_distinct(listeners: &Listeners, report: &mut impl FnMut(String, String)) {
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    let mut note = |addr: SocketAddr, key: String| {
        // Port 0 asks the system for a fresh port each time: never a clash.
        if addr.port() == 0 {
            return;
        }
        match seen.iter().find(|(a, _)| *a == addr) {
            Some((_, first)) => report(key, format!("{addr} is already used by {first}")),
            None => seen.push((addr, key)),
        }
    };
    for &a in &listeners.plain {
        note(a, "server.listen".into());
    }
    for (i, t) in listeners.tls.iter().enumerate() {
        for &a in &t.listen {
            note(a, format!("server.tls[{}].listen", i + 1));
        }
    }
    if let Some(r) = &listeners.redirect {
        for &a in &r.listen {
            note(a, "server.redirect.listen".into());
        }
    }
}

/// `[server.http2]`, and the value of its `max_concurrent_streams` (the older name of
/// `server.limits.max_concurrent_streams`) when it is set.
pub(super) fn http2(
    raw: RawHttp2,
    report: &mut impl FnMut(String, String),
) -> (Http2Config, Option<u32>) {
    let d = Http2Config::default();
    let c = Http2Config {
        initial_stream_window_size: raw
            .initial_stream_window_size
            .unwrap_or(d.initial_stream_window_size),
        initial_connection_window_size: raw
            .initial_connection_window_size
            .unwrap_or(d.initial_connection_window_size),
    };
    if raw.max_concurrent_streams == Some(0) {
        report(
            "server.http2.max_concurrent_streams".into(),
            "must be above 0".into(),
        );
    }
    // RFC 9113 §6.5.2 and §6.9.1: windows range from the initial 65,535 to 2^31-1.
    const WINDOW: std::ops::RangeInclusive<u32> = 65_535..=0x7fff_ffff;
    for (name, value) in [
        ("initial_stream_window_size", c.initial_stream_window_size),
        (
            "initial_connection_window_size",
            c.initial_connection_window_size,
        ),
    ] {
        if !WINDOW.contains(&value) {
            report(
                format!("server.http2.{name}"),
                format!("{value} is outside 65535..=2147483647 (RFC 9113 §6.9.1)"),
            );
        }
    }
    (c, raw.max_concurrent_streams)
}

pub(super) fn origin_tls(
    raw: RawOriginTls,
    report: &mut impl FnMut(String, String),
) -> OriginTlsConfig {
    let c = OriginTlsConfig {
        roots: raw.roots.unwrap_or_default(),
        ca_file: raw.ca_file,
    };
    if c.roots == OriginRoots::None && c.ca_file.is_none() {
        report(
            "server.origin_tls.roots".into(),
            "\"none\" needs ca_file: no https origin could be trusted".into(),
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ParseError};
    use super::*;

    const ROUTE: &str = "[[route]]\nhosts = [\"*\"]\norigin = \"https://bucket.example.com\"\n";

    fn parse(server: &str) -> Result<Config, ParseError> {
        Config::parse(&format!("{server}\n{ROUTE}"))
    }

    fn problem_keys(server: &str) -> Vec<String> {
        match parse(server) {
            Err(ParseError::Invalid(problems)) => problems.into_iter().map(|p| p.key).collect(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn the_simple_form_makes_server_listen_tls() {
        let c = parse(
            "[server]\nlisten = [\"127.0.0.1:8443\"]\ntls = { cert = \"c.pem\", key = \"k.pem\" }",
        )
        .expect("valid");
        assert!(c.server.listen.is_empty());
        assert_eq!(
            c.server.tls,
            vec![TlsListenerConfig {
                listen: vec![addr("127.0.0.1:8443")],
                certs: vec![CertFiles {
                    cert: "c.pem".into(),
                    key: "k.pem".into()
                }],
                unknown_name: UnknownName::DefaultCert,
            }]
        );
    }

    #[test]
    fn tls_tables_with_their_own_listen_leave_server_listen_plain() {
        let c = parse(
            r#"
            [server]
            listen = ["127.0.0.1:8080"]
            [[server.tls]]
            listen = "127.0.0.1:8443"
            certs = [{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }]
            unknown_name = "reject"
            [[server.tls]]
            listen = ["127.0.0.1:9443", "[::1]:9443"]
            cert = "c.pem"
            key = "c.key"
            [server.redirect]
            listen = "127.0.0.1:8081"
            [server.http2]
            max_concurrent_streams = 64
            "#,
        )
        .expect("valid");
        assert_eq!(c.server.listen, vec![addr("127.0.0.1:8080")]);
        assert_eq!(c.server.tls.len(), 2);
        assert_eq!(c.server.tls[0].certs.len(), 2);
        assert_eq!(c.server.tls[0].unknown_name, UnknownName::Reject);
        assert_eq!(c.server.tls[1].listen.len(), 2);
        let redirect = c.server.redirect.expect("redirect");
        assert_eq!(redirect.listen, vec![addr("127.0.0.1:8081")]);
        assert_eq!(redirect.https_port, None);
        assert_eq!(c.server.limits.max_concurrent_streams, 64);
        assert_eq!(
            c.server.http2.initial_stream_window_size,
            Http2Config::default().initial_stream_window_size
        );
    }

    #[test]
    fn tls_listeners_alone_start_no_plain_listener() {
        let c = parse("[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"c\"\nkey = \"k\"")
            .expect("valid");
        assert!(c.server.listen.is_empty());
    }

    #[test]
    fn bad_tls_redirect_and_http2_settings_are_each_reported() {
        let keys = problem_keys(
            r#"
            [server]
            listen = ["127.0.0.1:8080"]
            [[server.tls]]
            listen = "127.0.0.1:8080"
            cert = "c.pem"
            [[server.tls]]
            listen = "127.0.0.1:8444"
            cert = "c.pem"
            key = "k.pem"
            certs = [{ cert = "c.pem", key = "k.pem" }]
            [[server.tls]]
            listen = []
            certs = []
            [server.http2]
            max_concurrent_streams = 0
            initial_stream_window_size = 1000
            [server.origin_tls]
            roots = "none"
            "#,
        );
        assert_eq!(
            keys,
            [
                "server.tls[1].key",
                "server.tls[2].certs",
                "server.tls[3].listen",
                "server.tls[3].certs",
                "server.tls[1].listen",
                "server.http2.max_concurrent_streams",
                "server.http2.initial_stream_window_size",
                "server.origin_tls.roots",
            ]
        );
    }

    #[test]
    fn a_redirect_without_tls_must_say_where_https_is() {
        let keys = problem_keys("[server.redirect]\nlisten = \"127.0.0.1:8081\"");
        assert_eq!(keys, ["server.redirect.https_port"]);
        let c = parse("[server.redirect]\nlisten = \"127.0.0.1:8081\"\nhttps_port = 443")
            .expect("valid behind a TLS-terminating load balancer");
        assert!(c.server.listen.is_empty());
    }

    #[test]
    fn unknown_tls_keys_and_values_are_reported_with_their_key_and_line() {
        for (text, key, line, needle) in [
            (
                "[server.tls]\ncert = \"c\"\nkey = \"k\"\nciphers = \"all\"",
                "server.tls.ciphers",
                4,
                "unknown key",
            ),
            (
                "[server.tls]\ncert = \"c\"\nkey = \"k\"\nunknown_name = \"ignore\"",
                "server.tls.unknown_name",
                4,
                "ignore",
            ),
            (
                "[server.origin_tls]\nroots = \"os\"",
                "server.origin_tls.roots",
                2,
                "os",
            ),
        ] {
            let Err(ParseError::Invalid(problems)) = parse(text) else {
                panic!("{text}: not refused for its keys")
            };
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key, key);
            assert_eq!(problems[0].line, Some(line), "{text}");
            assert!(problems[0].message.contains(needle), "{}", problems[0]);
        }
    }

    #[test]
    fn the_commented_examples_of_the_default_configuration_are_valid() {
        let text = include_str!("../../config/corsgate.toml");
        let start = text.find("# [[server.tls]]").expect("the TLS example");
        let end = start + text[start..].find("\n\n").expect("the example's end");
        let example: String = text[start..end]
            .lines()
            // `## ` lines are prose, `# ` lines commented-out settings.
            .filter(|l| !l.starts_with("##"))
            .filter_map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
        assert_eq!(c.server.tls[0].certs.len(), 2);
        assert!(c.server.redirect.is_some());
        assert_eq!(c.server.http2, Http2Config::default());
        assert_eq!(c.server.origin_tls.roots, OriginRoots::Webpki);
    }
}
