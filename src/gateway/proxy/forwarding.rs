//! What the origin is told about who asked (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host`), and the hop-by-hop headers it is never sent.
//!
//! A client can write anything in those headers: they are believed only from a peer in
//! `server.trusted_proxies` (a load balancer in front), as nginx's `set_real_ip_from` with
//! `real_ip_recursive` and Envoy's `xff_num_trusted_hops` do. Such a peer's headers are kept and
//! corsgate adds its own hop; from any other peer they are replaced by what corsgate saw.
//!
//! Hop-by-hop removal runs before these headers are written and never removes them: RFC 9110
//! §7.6.1 lets a sender name any header in `Connection`, and a client naming `X-Forwarded-For`
//! must not erase what a proxy in front wrote, nor what corsgate writes.
//!
//! What to write is decided once per request ([`Forwarding`]) and written one of two ways: into
//! the request's header map for hyper's client, or straight into the head corsgate's own client
//! renders, which would otherwise serialise map entries inserted only to be read back. Both ways
//! take every value from [`Forwarding::value`], so the origin sees the same bytes.

use std::net::{IpAddr, SocketAddr};

use arrayvec::ArrayVec;
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use ipnet::IpNet;

use super::Peer;
use crate::cors::header::TCHAR;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the obsolete `Keep-Alive` and
/// `Proxy-Connection`).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is one of [`HOP_BY_HOP`]: matched as text, which for most names is a length
/// that none of them has, where comparing names is nine comparisons of their representations.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// `server.trusted_proxies`: the peers whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> TrustedProxies {
        TrustedProxies(nets.to_vec())
    }

    fn contain(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// The scheme a client reached the gateway with: the first `X-Forwarded-Proto` of a trusted
/// proxy (one terminating TLS in front of a plain listener), else the listener's own.
pub(crate) fn client_scheme(
    headers: &HeaderMap,
    from: Peer,
    trusted: &TrustedProxies,
) -> &'static str {
    if !trusted.contain(from.addr.ip().to_canonical()) {
        return from.scheme;
    }
    let claimed = headers
        .get(X_FORWARDED_PROTO)
        .and_then(|v| v.as_bytes().split(|&b| b == b',').next())
        .map(<[u8]>::trim_ascii);
    match claimed {
        Some(p) if p.eq_ignore_ascii_case(b"https") => "https",
        Some(p) if p.eq_ignore_ascii_case(b"http") => "http",
        _ => from.scheme,
    }
}

/// The hop-by-hop headers of a response, and those its `Connection` header names: they concern
/// one connection, not the message.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, |_| false);
}

/// The same for a request, except the forwarding headers: [`Forwarding`] decides those.
pub(crate) fn strip_request_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, |name| Field::of(name).is_some());
}

fn strip(headers: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    // Most messages carry none: one pass over the names they have is cheaper than looking up
    // (hashing) each of the nine names they might have.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .filter(|name| !keep(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// One of the headers corsgate writes on every forwarded request, in the order it writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    XForwardedFor,
    Forwarded,
    XRealIp,
    XForwardedProto,
    XForwardedHost,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::XForwardedFor,
        Field::Forwarded,
        Field::XRealIp,
        Field::XForwardedProto,
        Field::XForwardedHost,
    ];

    fn name(self) -> HeaderName {
        match self {
            Field::XForwardedFor => X_FORWARDED_FOR,
            Field::Forwarded => header::FORWARDED,
            Field::XRealIp => X_REAL_IP,
            Field::XForwardedProto => X_FORWARDED_PROTO,
            Field::XForwardedHost => X_FORWARDED_HOST,
        }
    }

    /// The field `name` is, if any: matched as text, as [`is_hop_by_hop`] does.
    fn of(name: &HeaderName) -> Option<Field> {
        match name.as_str() {
            "x-forwarded-for" => Some(Field::XForwardedFor),
            "forwarded" => Some(Field::Forwarded),
            "x-real-ip" => Some(Field::XRealIp),
            "x-forwarded-proto" => Some(Field::XForwardedProto),
            "x-forwarded-host" => Some(Field::XForwardedHost),
            _ => None,
        }
    }

    /// `name: `, as a head spells it.
    fn line_start(self) -> &'static [u8] {
        match self {
            Field::XForwardedFor => b"x-forwarded-for: ",
            Field::Forwarded => b"forwarded: ",
            Field::XRealIp => b"x-real-ip: ",
            Field::XForwardedProto => b"x-forwarded-proto: ",
            Field::XForwardedHost => b"x-forwarded-host: ",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// An address as the forwarding headers write it; the longest (IPv6 with an embedded IPv4
/// address) has 45 characters.
type AddressText = ArrayVec<u8, 48>;

/// The forwarding headers of one request `from` a peer, for the `authority` it named.
///
/// From a trusted peer: `X-Forwarded-For` gets `, <peer>` appended and `Forwarded` gets
/// `, for=<peer>`; its `X-Real-IP`, `X-Forwarded-Proto` and `-Host` are kept. What it did not
/// send is written as for any other peer, except `X-Real-IP`, which names the client the way
/// nginx's `real_ip_recursive` finds it: the last `X-Forwarded-For` address that is not a
/// trusted proxy.
///
/// From any other peer, whatever it sent is replaced: `X-Forwarded-For: <peer>`,
/// `X-Real-IP: <peer>`, `Forwarded: for=<peer>;proto=<scheme>;host=<authority>`,
/// `X-Forwarded-Proto: <scheme>`, `X-Forwarded-Host: <authority>` (removed if it named none).
///
/// Applied in two steps: [`Forwarding::clear_claims`] removes the request's own headers that
/// are replaced, then [`Forwarding::insert_into`] or [`Forwarding::write_lines`] writes the
/// new ones, after the request's other fields.
#[derive(Debug)]
pub(crate) struct Forwarding {
    /// The peer; a dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`, taken as IPv4.
    ip: IpAddr,
    /// `ip` as text, written once for every header that names it.
    peer: AddressText,
    scheme: &'static str,
    authority: Option<HeaderValue>,
    trusted: bool,
    /// The [`Field`]s the request carries, one bit each.
    claims: u8,
    /// A trusted peer's `X-Forwarded-For` lines joined, the peer appended; empty without any.
    x_forwarded_for: Vec<u8>,
    /// A trusted peer's `Forwarded` lines joined, the peer's element appended; empty without
    /// any.
    forwarded: Vec<u8>,
    /// The client a trusted peer forwards for, when not the peer itself.
    real_ip: Option<AddressText>,
}

impl Forwarding {
    /// Decides for a request with `headers`, its hop-by-hop ones already removed.
    pub(crate) fn new(
        headers: &HeaderMap,
        from: Peer,
        trusted: &TrustedProxies,
        authority: Option<HeaderValue>,
    ) -> Forwarding {
        let ip = from.addr.ip().to_canonical();
        let peer = address_text(ip);
        let mut forwarding = Forwarding {
            ip,
            peer,
            scheme: from.scheme,
            authority,
            trusted: trusted.contain(ip),
            claims: claims_of(headers),
            x_forwarded_for: Vec::new(),
            forwarded: Vec::new(),
            real_ip: None,
        };
        if !forwarding.trusted || forwarding.claims == 0 {
            return forwarding;
        }
        if forwarding.claims(Field::XForwardedFor) {
            let mut joined = joined_lines(headers, &X_FORWARDED_FOR);
            joined.extend_from_slice(&forwarding.peer);
            forwarding.x_forwarded_for = joined;
        }
        if forwarding.claims(Field::Forwarded) {
            let mut joined = joined_lines(headers, &header::FORWARDED);
            joined.extend_from_slice(b"for=");
            push_node(&mut joined, ip, &forwarding.peer);
            forwarding.forwarded = joined;
        }
        // Without an `X-Forwarded-For`, the only hop is the peer: the client is the peer.
        if !forwarding.claims(Field::XRealIp) && !forwarding.x_forwarded_for.is_empty() {
            let client = real_client(&forwarding.x_forwarded_for, trusted).unwrap_or(ip);
            if client != ip {
                forwarding.real_ip = Some(address_text(client));
            }
        }
        forwarding
    }

    fn claims(&self, field: Field) -> bool {
        self.claims & field.bit() != 0
    }

    /// Whether corsgate writes `field`: all from an untrusted peer (`X-Forwarded-Host` when
    /// there is an authority); from a trusted one, its own lists appended to and what it did
    /// not send.
    fn writes(&self, field: Field) -> bool {
        match field {
            Field::XForwardedFor | Field::Forwarded => true,
            Field::XRealIp | Field::XForwardedProto => !(self.trusted && self.claims(field)),
            Field::XForwardedHost => {
                self.authority.is_some() && !(self.trusted && self.claims(field))
            }
        }
    }

    /// Removes the forwarding headers of the request that corsgate replaces (all an untrusted
    /// peer sent; a trusted peer's lists, rewritten with its hop appended). Costs nothing for a
    /// request without any.
    pub(crate) fn clear_claims(&self, headers: &mut HeaderMap) {
        if self.claims == 0 {
            return;
        }
        for field in Field::ALL {
            let replaced = match field {
                Field::XForwardedFor | Field::Forwarded => true,
                _ => !self.trusted,
            };
            if replaced && self.claims(field) {
                headers.remove(field.name());
            }
        }
    }

    /// Inserts the forwarding headers into `headers`, cleared of the request's own first
    /// ([`Forwarding::clear_claims`]).
    pub(crate) fn insert_into(&self, headers: &mut HeaderMap) {
        let mut value = Vec::with_capacity(64);
        for field in Field::ALL {
            if !self.writes(field) {
                continue;
            }
            let shared = match field {
                Field::XForwardedProto => Some(HeaderValue::from_static(self.scheme)),
                Field::XForwardedHost => self.authority.clone(),
                _ => None,
            };
            let shared = shared.or_else(|| {
                value.clear();
                self.value(field, &mut value);
                // Every piece is a header value or text built here: this always succeeds, and
                // an impossible failure leaves the header out rather than panic.
                HeaderValue::from_bytes(&value).ok()
            });
            if let Some(line) = shared {
                headers.insert(field.name(), line);
            }
        }
    }

    /// Writes the forwarding headers as `name: value` lines of a request head, after the
    /// request's fields, cleared of its own first ([`Forwarding::clear_claims`]).
    pub(crate) fn write_lines(&self, out: &mut Vec<u8>) {
        for field in Field::ALL {
            if self.writes(field) {
                out.extend_from_slice(field.line_start());
                self.value(field, out);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The value of `field`, appended to `out`: the one place it is spelled.
    fn value(&self, field: Field, out: &mut Vec<u8>) {
        match field {
            Field::XForwardedFor if !self.x_forwarded_for.is_empty() => {
                out.extend_from_slice(&self.x_forwarded_for);
            }
            Field::Forwarded if !self.forwarded.is_empty() => {
                out.extend_from_slice(&self.forwarded);
            }
            Field::Forwarded => {
                forwarded_element(
                    out,
                    self.ip,
                    &self.peer,
                    self.scheme,
                    self.authority.as_ref(),
                );
            }
            Field::XForwardedFor => out.extend_from_slice(&self.peer),
            Field::XRealIp => out.extend_from_slice(self.real_ip.as_ref().unwrap_or(&self.peer)),
            Field::XForwardedProto => out.extend_from_slice(self.scheme.as_bytes()),
            Field::XForwardedHost => {
                if let Some(host) = &self.authority {
                    out.extend_from_slice(host.as_bytes());
                }
            }
        }
    }
}

/// Which forwarding headers `headers` has, one bit per [`Field`]: one pass over the names it
/// has, as [`strip`] makes, not a lookup (hashing) of each of the five.
fn claims_of(headers: &HeaderMap) -> u8 {
    headers
        .keys()
        .filter_map(Field::of)
        .fold(0, |claims, field| claims | field.bit())
}

/// Every line of `name`, each followed by `, `, ready for one more entry.
fn joined_lines(headers: &HeaderMap, name: &HeaderName) -> Vec<u8> {
    let mut joined = Vec::with_capacity(64);
    for line in headers.get_all(name) {
        joined.extend_from_slice(line.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined
}

/// An RFC 7239 `Forwarded` element, `for=<ip>;proto=<scheme>[;host=<authority>]`, appended to
/// `out`; `text` is `ip` as [`address_text`] wrote it.
fn forwarded_element(
    out: &mut Vec<u8>,
    ip: IpAddr,
    text: &[u8],
    scheme: &str,
    authority: Option<&HeaderValue>,
) {
    out.extend_from_slice(b"for=");
    push_node(out, ip, text);
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(scheme.as_bytes());
    if let Some(host) = authority {
        out.extend_from_slice(b";host=");
        push_token_or_quoted(out, host.as_bytes());
    }
}

/// RFC 7239 §6: an IPv6 node is bracketed, and so (':' and '[' not being token characters)
/// quoted: `for="[2001:db8::1]"`. `text` is `ip` written once for every header that names it.
fn push_node(out: &mut Vec<u8>, ip: IpAddr, text: &[u8]) {
    if ip.is_ipv4() {
        out.extend_from_slice(text);
    } else {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(text);
        out.extend_from_slice(b"]\"");
    }
}

/// `value` as an RFC 9110 token if it is one, else as a quoted string (a `host:port` is not).
fn push_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    // One pass without branches for both questions.
    let (mut token, mut escapes) = (!value.is_empty(), false);
    for &b in value {
        token &= TCHAR[usize::from(b)];
        escapes |= b == b'"' || b == b'\\';
    }
    if token {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    // An authority has neither character: the escaping loop is for what cannot happen.
    if !escapes {
        out.extend_from_slice(value);
    } else {
        for &b in value {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
    }
    out.push(b'"');
}

/// The client behind a chain of trusted proxies: walking `X-Forwarded-For` from the right (the
/// nearest hop), the first address that is not a trusted proxy; if all are, the leftmost. An
/// entry that is not an address ends the walk: nothing left of it can be believed.
fn real_client(xff: &[u8], trusted: &TrustedProxies) -> Option<IpAddr> {
    let mut client = None;
    for entry in xff.rsplit(|&b| b == b',') {
        let Some(ip) = std::str::from_utf8(entry).ok().and_then(parse_entry) else {
            break;
        };
        client = Some(ip);
        if !trusted.contain(ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`) or
/// brackets (`[::1]`), as proxies variously write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let bare = entry.strip_prefix('[')?.strip_suffix(']')?;
            bare.parse::<IpAddr>().ok()
        })?;
    Some(ip.to_canonical())
}

/// `ip` as text. IPv4 is written by hand: this runs on every forwarded request, and the
/// formatting machinery costs more than the rest of the forwarding work together.
fn address_text(ip: IpAddr) -> AddressText {
    let mut text = AddressText::new();
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push(b'.');
                }
                if octet >= 100 {
                    text.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    text.push(b'0' + octet / 10 % 10);
                }
                text.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            // At most 45 characters: the text always fits.
            let _ = std::io::Write::write_fmt(&mut text, format_args!("{v6}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the forwarding headers of a request `from` a peer into its `headers`, as
    /// [`Forwarding`] says.
    fn set_forwarding(
        headers: &mut HeaderMap,
        from: Peer,
        trusted: &TrustedProxies,
        authority: Option<HeaderValue>,
    ) {
        let forwarding = Forwarding::new(headers, from, trusted, authority);
        forwarding.clear_claims(headers);
        forwarding.insert_into(headers);
    }

    /// `ip` as a header value.
    fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&address_text(ip)).ok()
    }

    fn peer(addr: &str, scheme: &'static str) -> Peer {
        Peer {
            addr: addr.parse().expect("test address"),
            scheme,
        }
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().expect("test net")).collect();
        TrustedProxies::new(&nets)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test name"),
                HeaderValue::from_str(value).expect("test value"),
            );
        }
        map
    }

    fn get<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    }

    const CLAIMS: [(&str, &str); 5] = [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "claimed.example"),
    ];

    #[test]
    fn client_addresses_are_written_in_their_standard_text_form() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().expect("test address");
            let value = ip_value(ip).expect("an address is a valid header value");
            assert_eq!(value.as_bytes(), ip.to_string().as_bytes(), "{text}");
        }
    }

    #[test]
    fn an_untrusted_peer_claims_are_replaced_by_what_corsgate_saw() {
        let mut map = headers(&CLAIMS);
        let host = HeaderValue::from_static("assets.example.com:8080");
        set_forwarding(
            &mut map,
            peer("192.0.2.9:5000", "https"),
            &trusted(&["10.0.0.0/8"]),
            Some(host),
        );
        assert_eq!(get(&map, "x-forwarded-for"), ["192.0.2.9"]);
        assert_eq!(get(&map, "x-real-ip"), ["192.0.2.9"]);
        assert_eq!(
            get(&map, "forwarded"),
            ["for=192.0.2.9;proto=https;host=\"assets.example.com:8080\""]
        );
        assert_eq!(get(&map, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&map, "x-forwarded-host"), ["assets.example.com:8080"]);
    }

    #[test]
    fn ipv6_peers_are_bracketed_and_quoted_in_forwarded_and_mapped_ipv4_is_plain() {
        let mut map = HeaderMap::new();
        set_forwarding(
            &mut map,
            peer("[2001:db8::1]:443", "http"),
            &TrustedProxies::default(),
            Some(HeaderValue::from_static("example.com")),
        );
        assert_eq!(
            get(&map, "forwarded"),
            ["for=\"[2001:db8::1]\";proto=http;host=example.com"]
        );
        assert_eq!(get(&map, "x-forwarded-for"), ["2001:db8::1"]);

        let mut map = HeaderMap::new();
        set_forwarding(
            &mut map,
            peer("[::ffff:192.0.2.1]:443", "http"),
            &trusted(&["192.0.2.0/24"]),
            None,
        );
        assert_eq!(get(&map, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(get(&map, "forwarded"), ["for=192.0.2.1;proto=http"]);
        assert!(map.get("x-forwarded-host").is_none());
    }

    #[test]
    fn a_trusted_peer_claims_are_kept_and_appended_to() {
        let mut map = headers(&CLAIMS);
        map.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3"));
        set_forwarding(
            &mut map,
            peer("10.0.0.2:5000", "http"),
            &trusted(&["10.0.0.0/8"]),
            Some(HeaderValue::from_static("internal:8080")),
        );
        assert_eq!(
            get(&map, "x-forwarded-for"),
            ["203.0.113.7, 10.0.0.3, 10.0.0.2"]
        );
        assert_eq!(get(&map, "forwarded"), ["for=203.0.113.7, for=10.0.0.2"]);
        assert_eq!(get(&map, "x-real-ip"), ["203.0.113.7"]);
        assert_eq!(get(&map, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&map, "x-forwarded-host"), ["claimed.example"]);
    }

    #[test]
    fn behind_trusted_proxies_the_real_client_is_the_last_untrusted_address() {
        let nets = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        let cases: [(&str, Option<&str>); 6] = [
            ("198.51.100.1, 203.0.113.7, 10.0.0.3", Some("203.0.113.7")),
            ("10.0.0.4, 10.0.0.3", Some("10.0.0.4")),
            ("203.0.113.7:5123, [2001:db8::2]:80", Some("203.0.113.7")),
            ("[2001:db8::9], 2001:db8::2", Some("2001:db8::9")),
            ("203.0.113.7, garbage, 10.0.0.3", Some("10.0.0.3")),
            ("garbage", None),
        ];
        for (xff, client) in cases {
            let expected: Option<IpAddr> = client.map(|c| c.parse().expect("test address"));
            assert_eq!(real_client(xff.as_bytes(), &nets), expected, "{xff}");
        }

        let mut map = headers(&[("x-forwarded-for", "203.0.113.7")]);
        set_forwarding(&mut map, peer("10.0.0.2:1", "https"), &nets, None);
        assert_eq!(get(&map, "x-real-ip"), ["203.0.113.7"]);
        assert_eq!(get(&map, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&map, "forwarded"), ["for=10.0.0.2;proto=https"]);
    }

    #[test]
    fn connection_cannot_name_away_a_forwarding_header_but_removes_others() {
        let mut map = headers(&[
            ("connection", "X-Forwarded-For, forwarded, x-real-ip, x-foo"),
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
            ("x-real-ip", "203.0.113.7"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_request_hop_by_hop(&mut map);
        assert_eq!(get(&map, "x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(get(&map, "forwarded"), ["for=203.0.113.7"]);
        assert_eq!(get(&map, "x-real-ip"), ["203.0.113.7"]);
        for gone in ["x-foo", "connection", "keep-alive"] {
            assert!(map.get(gone).is_none(), "{gone}");
        }

        let mut response = headers(&[("connection", "x-real-ip"), ("x-real-ip", "1")]);
        strip_hop_by_hop(&mut response);
        assert!(response.is_empty());
    }

    /// The request head `forwarding` leads to: written into the map (hyper's client) when
    /// `into_map`, else as lines after the map's fields (corsgate's own client).
    fn head_with(
        claims: &[(&str, &str)],
        from: Peer,
        nets: &TrustedProxies,
        authority: Option<&'static str>,
        into_map: bool,
    ) -> String {
        let mut map = headers(&[("host", "h.example"), ("user-agent", "t/1")]);
        for (name, value) in claims {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test name"),
                HeaderValue::from_str(value).expect("test value"),
            );
        }
        map.append("accept", HeaderValue::from_static("*/*"));
        let authority = authority.map(HeaderValue::from_static);
        let forwarding = Forwarding::new(&map, from, nets, authority);
        forwarding.clear_claims(&mut map);
        if into_map {
            forwarding.insert_into(&mut map);
        }
        let (mut parts, ()) = http::Request::get("/k?a=b")
            .body(())
            .expect("test request")
            .into_parts();
        parts.headers = map;
        let mut out = Vec::new();
        crate::gateway::pool::render_head(&mut out, &parts, |out: &mut Vec<u8>| {
            if !into_map {
                forwarding.write_lines(out);
            }
        });
        String::from_utf8(out).expect("an ASCII head")
    }

    #[test]
    fn the_forwarding_headers_are_the_same_bytes_in_a_map_or_a_rendered_head() {
        let nets = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        let peers = [
            "192.0.2.9:5000",
            "10.0.0.2:5000",
            "[::ffff:10.0.0.3]:5000",
            "[2001:db8::1]:443",
            "[2001:db9::1]:443",
        ];
        let claim_sets: [&[(&str, &str)]; 5] = [
            &[],
            &CLAIMS,
            &[
                ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
                ("x-forwarded-for", "10.0.0.3"),
            ],
            &[
                ("forwarded", "for=203.0.113.7"),
                ("forwarded", "for=\"[2001:db8::9]\""),
                ("x-real-ip", "198.51.100.1"),
            ],
            &[
                ("x-forwarded-host", "claimed.example"),
                ("x-forwarded-proto", "https"),
            ],
        ];
        for peer_addr in peers {
            for scheme in ["http", "https"] {
                for claims in claim_sets {
                    for authority in [None, Some("example.com"), Some("assets.example.com:8080")] {
                        let from = peer(peer_addr, scheme);
                        let in_map = head_with(claims, from, &nets, authority, true);
                        let rendered = head_with(claims, from, &nets, authority, false);
                        assert_eq!(
                            in_map, rendered,
                            "{peer_addr} {scheme} {claims:?} {authority:?}"
                        );
                        assert!(in_map.contains("\r\nx-forwarded-for: "), "{in_map}");
                        assert!(in_map.contains("\r\nforwarded: "), "{in_map}");
                    }
                }
            }
        }
    }

    #[test]
    fn each_field_names_its_forwarding_header() {
        for (i, field) in Field::ALL.into_iter().enumerate() {
            assert_eq!(Field::of(&field.name()), Some(field));
            assert_eq!(field.bit(), 1 << i);
            let start = format!("{}: ", field.name());
            assert_eq!(field.line_start(), start.as_bytes());
        }
        assert_eq!(Field::of(&header::HOST), None);
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(&name), "{name}");
        }
        assert!(!is_hop_by_hop(&header::HOST));
        assert_eq!(
            Field::of(&HeaderName::from_static("x-forwarded-port")),
            None
        );
    }

    #[test]
    fn the_client_scheme_is_a_trusted_proxy_claim_or_the_listener_scheme() {
        let nets = trusted(&["10.0.0.0/8"]);
        let https = headers(&[("x-forwarded-proto", "HTTPS, http")]);
        assert_eq!(
            client_scheme(&https, peer("10.0.0.2:1", "http"), &nets),
            "https"
        );
        assert_eq!(
            client_scheme(&https, peer("192.0.2.9:1", "http"), &nets),
            "http",
            "an untrusted claim is ignored"
        );
        let junk = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(
            client_scheme(&junk, peer("10.0.0.2:1", "https"), &nets),
            "https"
        );
        let none = HeaderMap::new();
        assert_eq!(
            client_scheme(&none, peer("10.0.0.2:1", "http"), &nets),
            "http"
        );
    }
}
