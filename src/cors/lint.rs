//! Rules S3 accepts but that are risky (docs/cors-semantics.md#lints): reported as warnings, never changed.

use std::fmt;

use super::document::{Document, Located};
use super::error::{Pos, RuleRef};
use super::header::HeaderPattern;
use super::method::{CorsMethod, MethodSet};
use super::origin::OriginPattern;

/// Chromium caps `Access-Control-Max-Age` at 2 hours; Firefox at 24 hours, WebKit at 10 minutes.
pub(crate) const BROWSER_MAX_AGE_CAP: u32 = 7200;

/// Public suffixes under which anyone can own a name. Not the whole Public Suffix List: the
/// common hosting suffixes people put behind `*.` by mistake; any single label (`*.com`) counts too.
const SHARED_SUFFIXES: &[&str] = &[
    "github.io",
    "gitlab.io",
    "netlify.app",
    "vercel.app",
    "pages.dev",
    "workers.dev",
    "herokuapp.com",
    "web.app",
    "firebaseapp.com",
    "azurewebsites.net",
    "cloudfront.net",
    "amazonaws.com",
    "digitaloceanspaces.com",
    "ondigitalocean.app",
    "appspot.com",
    "blogspot.com",
    "co.uk",
    "com.au",
    "co.jp",
    "com.br",
    "co.in",
    "ngrok.io",
    "ngrok-free.app",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LintKind {
    /// `https://*`, `http*`, `*://*`…: any site, echoed with credentials allowed.
    EchoedCatchAll(String),
    /// `https://*example.com` also admits `https://evilexample.com`.
    NoDotBoundary(String),
    /// `https://*.com`, `https://*.github.io`: anyone can register a name there.
    PublicSuffix(String),
    NullOrigin,
    /// An `http://` origin other than localhost: its responses can be forged on the network.
    InsecureOrigin(String),
    /// An earlier rule matches everything this rule matches.
    Unreachable {
        shadowed_by: usize,
    },
    /// Browsers need `ETag` exposed to complete multipart uploads.
    WritesWithoutETag,
    MaxAgeAboveBrowserCap(u32),
}

impl LintKind {
    /// A stable name for the warning, printed where an error's S3 code goes. The `W-` prefix
    /// keeps it apart from S3's codes, which only errors carry.
    pub fn code(&self) -> &'static str {
        match self {
            LintKind::EchoedCatchAll(_) => "W-CREDENTIALED-WILDCARD",
            LintKind::NoDotBoundary(_) => "W-NO-DOT-BOUNDARY",
            LintKind::PublicSuffix(_) => "W-PUBLIC-SUFFIX",
            LintKind::NullOrigin => "W-NULL-ORIGIN",
            LintKind::InsecureOrigin(_) => "W-PLAIN-HTTP-ORIGIN",
            LintKind::Unreachable { .. } => "W-UNREACHABLE-RULE",
            LintKind::WritesWithoutETag => "W-ETAG-NOT-EXPOSED",
            LintKind::MaxAgeAboveBrowserCap(_) => "W-MAX-AGE-ABOVE-BROWSER-CAP",
        }
    }
}

impl fmt::Display for LintKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LintKind::EchoedCatchAll(o) => write!(
                f,
                "AllowedOrigin \"{o}\" admits every site, and S3 echoes the origin with Access-Control-Allow-Credentials: true"
            ),
            LintKind::NoDotBoundary(o) => write!(
                f,
                "AllowedOrigin \"{o}\" has no dot after its wildcard, so it also admits look-alike domains"
            ),
            LintKind::PublicSuffix(o) => write!(
                f,
                "AllowedOrigin \"{o}\" puts a wildcard over a public suffix: anyone can register a matching site"
            ),
            LintKind::NullOrigin => write!(
                f,
                "AllowedOrigin \"null\" admits sandboxed iframes and file:// pages of any site"
            ),
            LintKind::InsecureOrigin(o) => write!(
                f,
                "AllowedOrigin \"{o}\" is plain http: anyone on the network path can act as it"
            ),
            LintKind::Unreachable { shadowed_by } => write!(
                f,
                "this rule can never match: CORSRule #{shadowed_by} comes first and matches everything it does"
            ),
            LintKind::WritesWithoutETag => write!(
                f,
                "the rule allows PUT or POST but does not expose ETag; browser multipart uploads need it"
            ),
            LintKind::MaxAgeAboveBrowserCap(s) => write!(
                f,
                "MaxAgeSeconds {s} is above what browsers honour (Chromium caps at {BROWSER_MAX_AGE_CAP}, WebKit at 600)"
            ),
        }
    }
}

/// One warning, with where it applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    pub kind: LintKind,
    pub rule: RuleRef,
    pub pos: Option<Pos>,
}

/// `LINE:COL: W-CODE: warning: rule: message`: an error's shape (see `Problem`), with the
/// warning's code where the S3 code goes and the severity leading the message.
impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pos = self.pos.unwrap_or(Pos::START);
        let code = self.kind.code();
        write!(f, "{pos}: {code}: warning: {}: {}", self.rule, self.kind)
    }
}

/// Lints a document that is known to be valid (patterns that fail to compile are skipped).
pub fn lint(doc: &Document) -> Vec<Lint> {
    let mut out = Vec::new();
    for (i, rule) in doc.rules.iter().enumerate() {
        let rule_ref = RuleRef {
            index: i + 1,
            id: rule.id.as_ref().map(|l| l.value.clone()),
        };
        let mut warn = |kind, pos| {
            out.push(Lint {
                kind,
                rule: rule_ref.clone(),
                pos,
            })
        };
        for origin in &rule.allowed_origins {
            if let Some(kind) = origin_lint(&origin.value) {
                warn(kind, origin.pos);
            }
        }
        let methods: MethodSet = rule
            .allowed_methods
            .iter()
            .filter_map(|m| CorsMethod::parse(m.value.as_bytes()))
            .collect();
        let writes = methods.contains(CorsMethod::Put) || methods.contains(CorsMethod::Post);
        let exposes_etag = rule
            .expose_headers
            .iter()
            .any(|h| h.value.eq_ignore_ascii_case("etag"));
        if writes && !exposes_etag {
            warn(LintKind::WritesWithoutETag, rule.pos);
        }
        if let Some(max_age) = &rule.max_age_seconds
            && let Ok(secs) = max_age.value.trim().parse::<u32>()
            && secs > BROWSER_MAX_AGE_CAP
        {
            warn(LintKind::MaxAgeAboveBrowserCap(secs), max_age.pos);
        }
        if let Some(earlier) = (0..i).find(|&j| shadows(&doc.rules[j], rule)) {
            warn(
                LintKind::Unreachable {
                    shadowed_by: earlier + 1,
                },
                rule.pos,
            );
        }
    }
    out
}

fn origin_lint(origin: &str) -> Option<LintKind> {
    let owned = || origin.to_string();
    if origin == "null" {
        return Some(LintKind::NullOrigin);
    }
    if let Some(rest) = origin.strip_prefix("http://") {
        // An IPv6 host is bracketed and holds colons itself: only a colon after `]` starts a port.
        let host = match rest.find(']') {
            Some(end) if rest.starts_with('[') => &rest[..=end],
            _ => rest.split(':').next().unwrap_or_default(),
        };
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") && !host.ends_with(".localhost") {
            return Some(LintKind::InsecureOrigin(owned()));
        }
    }
    let (prefix, suffix) = origin.split_once('*')?;
    if prefix.is_empty() && suffix.is_empty() {
        // A lone `*` is S3's documented "any origin", answered with `*` and no credentials.
        return None;
    }
    // Nothing after the wildcard but a port or nothing at all: every host.
    let host_suffix = suffix.split(':').next().unwrap_or_default();
    if host_suffix.is_empty() {
        return Some(LintKind::EchoedCatchAll(owned()));
    }
    if !host_suffix.starts_with('.') {
        return Some(LintKind::NoDotBoundary(owned()));
    }
    let domain = &host_suffix[1..];
    if !domain.contains('.') || SHARED_SUFFIXES.contains(&domain) {
        return Some(LintKind::PublicSuffix(owned()));
    }
    None
}

/// Whether `earlier` matches every request `later` does, so `later` is dead.
fn shadows(earlier: &super::document::RuleDoc, later: &super::document::RuleDoc) -> bool {
    fn compiled<T>(values: &[Located<String>], parse: fn(&str) -> Option<T>) -> Option<Vec<T>> {
        values.iter().map(|l| parse(&l.value)).collect()
    }
    let methods = |r: &super::document::RuleDoc| -> MethodSet {
        r.allowed_methods
            .iter()
            .filter_map(|m| CorsMethod::parse(m.value.as_bytes()))
            .collect()
    };
    let (Some(eo), Some(lo), Some(eh), Some(lh)) = (
        compiled(&earlier.allowed_origins, OriginPattern::parse),
        compiled(&later.allowed_origins, OriginPattern::parse),
        compiled(&earlier.allowed_headers, HeaderPattern::parse),
        compiled(&later.allowed_headers, HeaderPattern::parse),
    ) else {
        return false;
    };
    !lo.is_empty()
        && lo.iter().all(|l| eo.iter().any(|e| e.covers(l)))
        && methods(later).is_subset(methods(earlier))
        && lh.iter().all(|l| eh.iter().any(|e| e.covers(l)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(xml: &str) -> Vec<LintKind> {
        let doc = Document::parse(xml.as_bytes()).expect("valid");
        lint(&doc).into_iter().map(|l| l.kind).collect()
    }

    fn origin(o: &str) -> Option<LintKind> {
        origin_lint(o)
    }

    #[test]
    fn risky_origins_are_flagged() {
        assert!(matches!(
            origin("https://*"),
            Some(LintKind::EchoedCatchAll(_))
        ));
        assert!(matches!(origin("http*"), Some(LintKind::EchoedCatchAll(_))));
        assert!(matches!(
            origin("https://*:8443"),
            Some(LintKind::EchoedCatchAll(_))
        ));
        assert!(matches!(
            origin("https://*example.com"),
            Some(LintKind::NoDotBoundary(_))
        ));
        assert!(matches!(
            origin("https://*.com"),
            Some(LintKind::PublicSuffix(_))
        ));
        assert!(matches!(
            origin("https://*.github.io"),
            Some(LintKind::PublicSuffix(_))
        ));
        assert_eq!(origin("null"), Some(LintKind::NullOrigin));
        assert!(matches!(
            origin("http://example.com"),
            Some(LintKind::InsecureOrigin(_))
        ));
        assert_eq!(origin("http://localhost:3000"), None);
        assert_eq!(origin("https://*.example.com"), None);
        assert_eq!(origin("*"), None);
    }

    #[test]
    fn ipv6_loopback_is_exempt_from_the_plain_http_lint() {
        assert_eq!(origin("http://[::1]"), None);
        assert_eq!(origin("http://[::1]:8080"), None);
        assert!(matches!(
            origin("http://[2001:db8::1]:8080"),
            Some(LintKind::InsecureOrigin(_))
        ));
        assert!(matches!(
            origin("http://[::1"),
            Some(LintKind::InsecureOrigin(_))
        ));
    }

    #[test]
    fn rule_level_lints() {
        let xml = "<CORSConfiguration>\
            <CORSRule><AllowedOrigin>https://a.example.com</AllowedOrigin><AllowedMethod>PUT</AllowedMethod><MaxAgeSeconds>86400</MaxAgeSeconds></CORSRule>\
            <CORSRule><AllowedOrigin>https://*.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedHeader>*</AllowedHeader></CORSRule>\
            <CORSRule><AllowedOrigin>https://b.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedHeader>x-a</AllowedHeader></CORSRule>\
            </CORSConfiguration>";
        assert_eq!(
            kinds(xml),
            vec![
                LintKind::WritesWithoutETag,
                LintKind::MaxAgeAboveBrowserCap(86400),
                LintKind::Unreachable { shadowed_by: 2 },
            ]
        );
    }
}
