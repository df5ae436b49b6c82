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

use std::net::{IpAddr, SocketAddr};

use arrayvec::ArrayVec;
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use ipnet::IpNet;

use super::Peer;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The headers corsgate writes on every forwarded request.
const FORWARDING: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    header::FORWARDED,
    X_REAL_IP,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
];

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
    strip(headers, &[]);
}

/// The same for a request, except the forwarding headers: [`set_forwarding`] decides those.
pub(crate) fn strip_request_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, &FORWARDING);
}

fn strip(headers: &mut HeaderMap, keep: &[HeaderName]) {
    // Most messages carry none: one pass over the names they have is cheaper than looking up
    // (hashing) each of the nine names they might have.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .filter(|name| !keep.contains(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Writes the forwarding headers of a request `from` a peer, for the `authority` it named.
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
pub(crate) fn set_forwarding(
    headers: &mut HeaderMap,
    from: Peer,
    trusted: &TrustedProxies,
    authority: Option<HeaderValue>,
) {
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`.
    let ip = from.addr.ip().to_canonical();
    let Some(peer) = ip_value(ip) else {
        return;
    };
    if trusted.contain(ip) {
        let xff = append(headers, &X_FORWARDED_FOR, peer.as_bytes());
        if !headers.contains_key(header::FORWARDED) {
            let element = forwarded_element(ip, &peer, from.scheme, authority.as_ref());
            insert_bytes(headers, header::FORWARDED, &element);
        } else {
            let mut element = b"for=".to_vec();
            push_node(&mut element, ip, &peer);
            append(headers, &header::FORWARDED, &element);
        }
        if !headers.contains_key(X_REAL_IP) {
            let client = real_client(&xff, trusted).unwrap_or(ip);
            if let Some(client) = ip_value(client) {
                headers.insert(X_REAL_IP, client);
            }
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(from.scheme));
        }
        if !headers.contains_key(X_FORWARDED_HOST)
            && let Some(host) = authority
        {
            headers.insert(X_FORWARDED_HOST, host);
        }
        return;
    }
    let element = forwarded_element(ip, &peer, from.scheme, authority.as_ref());
    insert_bytes(headers, header::FORWARDED, &element);
    headers.insert(X_FORWARDED_FOR, peer.clone());
    headers.insert(X_REAL_IP, peer);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(from.scheme));
    match authority {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// Joins every line of `name` and `entry` into one line, comma-separated, and returns it.
fn append(headers: &mut HeaderMap, name: &HeaderName, entry: &[u8]) -> Vec<u8> {
    let mut joined: Vec<u8> = Vec::new();
    for line in headers.get_all(name) {
        joined.extend_from_slice(line.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(entry);
    insert_bytes(headers, name.clone(), &joined);
    joined
}

/// Every piece comes from a header value or from text built here, so this always succeeds; an
/// impossible failure leaves the header out rather than panic.
fn insert_bytes(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    match HeaderValue::from_bytes(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// An RFC 7239 `Forwarded` element: `for=<ip>;proto=<scheme>[;host=<authority>]`, `text`
/// being `ip` as [`ip_value`] wrote it.
fn forwarded_element(
    ip: IpAddr,
    text: &HeaderValue,
    scheme: &str,
    authority: Option<&HeaderValue>,
) -> Vec<u8> {
    let mut element = Vec::with_capacity(64);
    element.extend_from_slice(b"for=");
    push_node(&mut element, ip, text);
    element.extend_from_slice(b";proto=");
    element.extend_from_slice(scheme.as_bytes());
    if let Some(host) = authority {
        element.extend_from_slice(b";host=");
        push_token_or_quoted(&mut element, host.as_bytes());
    }
    element
}

/// RFC 7239 §6: an IPv6 node is bracketed, and so (':' and '[' not being token characters)
/// quoted: `for="[2001:db8::1]"`. `text` is `ip` written once for every header that names it.
fn push_node(out: &mut Vec<u8>, ip: IpAddr, text: &HeaderValue) {
    if ip.is_ipv4() {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"]\"");
    }
}

/// `value` as an RFC 9110 token if it is one, else as a quoted string (a `host:port` is not).
fn push_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !value.is_empty() && value.iter().all(tchar) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
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

/// `ip` as a header value. IPv4 is written by hand: this runs on every forwarded request, and
/// the formatting machinery costs more than the rest of the forwarding work together.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut text = ArrayVec::<u8, 15>::new();
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
    HeaderValue::from_bytes(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
