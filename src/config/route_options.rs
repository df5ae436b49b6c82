//! The `[[route]]` keys that go beyond S3's CORS: signing the requests forwarded to a private
//! bucket (`sign`), refusing cross-origin writes the rules do not grant (`enforce`), and the
//! response headers browsers read besides CORS (`timing_allow_origin`,
//! `cross_origin_resource_policy`), plus `index`.
//!
//! Values only: the keys `sign` names are read from the environment when the gateway starts,
//! never here, and never from a file.

use http::{HeaderValue, Method};
use serde::Deserialize;

use super::{RawSigning, SigningConfig, signing_config};

/// `sign = { ... }`: every forwarded request is signed with AWS Signature Version 4 for the
/// origin, after the client's own credentials are removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginSigning {
    /// The region and the names of the environment variables holding the keys.
    pub keys: SigningConfig,
    /// The SigV4 service name (`s3` for S3, Spaces and most S3-compatible stores).
    pub service: String,
    /// The only methods forwarded; any other is answered 403 `AccessDenied` by corsgate.
    pub methods: Vec<Method>,
}

/// What `sign` forwards when it names no `methods`: reading, never writing.
pub(crate) const DEFAULT_SIGNED_METHODS: [Method; 2] = [Method::GET, Method::HEAD];

impl OriginSigning {
    /// `serve --origin URL --sign-region REGION`: the AWS SDKs' variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), `GET` and `HEAD`.
    pub(crate) fn for_region(region: &str) -> Result<OriginSigning, String> {
        if !is_region(region) {
            return Err(format!("{region:?} is not a region name"));
        }
        Ok(OriginSigning {
            keys: SigningConfig {
                region: region.into(),
                explicit: true,
                ..SigningConfig::default()
            },
            service: "s3".into(),
            methods: DEFAULT_SIGNED_METHODS.to_vec(),
        })
    }
}

/// `enforce`: what happens to a cross-origin write no rule grants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Enforce {
    /// S3's own behaviour: every request is forwarded; CORS only decides the response headers.
    #[default]
    S3,
    /// A cross-origin request other than `GET`/`HEAD` is forwarded only if a rule grants its
    /// origin its method; otherwise corsgate answers 403 itself.
    Strict,
}

/// `cross_origin_resource_policy`: the `Cross-Origin-Resource-Policy` every forwarded answer
/// carries (the Fetch standard's cross-origin resource policy check), so pages under COEP may
/// embed the route's resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourcePolicy {
    CrossOrigin,
    SameSite,
    SameOrigin,
}

impl ResourcePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourcePolicy::CrossOrigin => "cross-origin",
            ResourcePolicy::SameSite => "same-site",
            ResourcePolicy::SameOrigin => "same-origin",
        }
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSign {
    region: Option<String>,
    service: Option<String>,
    access_key_env: Option<String>,
    secret_key_env: Option<String>,
    session_token_env: Option<String>,
    methods: Option<Vec<String>>,
}

/// `sign = { region, service, access_key_env, secret_key_env, session_token_env, methods }`.
pub(super) fn sign(
    raw: RawSign,
    key: &dyn Fn(&str) -> String,
    report: &mut impl FnMut(String, String),
) -> OriginSigning {
    let mut keys = signing_config(
        RawSigning {
            region: raw.region,
            access_key_env: raw.access_key_env,
            secret_key_env: raw.secret_key_env,
            session_token_env: raw.session_token_env,
        },
        &key("sign"),
        report,
    );
    // Signing with no keys would only produce anonymous requests a private bucket refuses: the
    // keys are required, whatever the variables are called.
    keys.explicit = true;
    let service = raw.service.unwrap_or_else(|| "s3".into());
    if !is_region(&service) {
        report(
            key("sign.service"),
            format!("{service:?} is not a service name (e.g. \"s3\")"),
        );
    }
    let methods = match raw.methods {
        None => DEFAULT_SIGNED_METHODS.to_vec(),
        Some(list) if list.is_empty() => {
            report(
                key("sign.methods"),
                "names no method (the default is [\"GET\", \"HEAD\"])".into(),
            );
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                signed_method(text)
                    .map_err(|m| report(key(&format!("sign.methods[{i}]")), m))
                    .ok()
            })
            .collect(),
    };
    OriginSigning {
        keys,
        service,
        methods,
    }
}

fn signed_method(text: &str) -> Result<Method, String> {
    if text == "OPTIONS" {
        return Err(
            "OPTIONS is a preflight, answered by corsgate and never forwarded: remove it".into(),
        );
    }
    let method = Method::from_bytes(text.as_bytes())
        .map_err(|_| format!("{text:?} is not an HTTP method"))?;
    // Methods are case-sensitive (RFC 9110 §9.1): `get` would be another method than GET.
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "{text:?}: methods are case-sensitive; write {:?}",
            text.to_ascii_uppercase()
        ));
    }
    Ok(method)
}

pub(super) fn enforce(text: &str, key: &str, report: &mut impl FnMut(String, String)) -> Enforce {
    match text {
        "s3" => Enforce::S3,
        "strict" => Enforce::Strict,
        other => {
            report(
                key.into(),
                format!(
                    "{other:?} is neither \"s3\" (forward every request, as S3 does) nor \
                     \"strict\" (refuse cross-origin writes no rule grants)"
                ),
            );
            Enforce::S3
        }
    }
}

pub(super) fn resource_policy(
    text: &str,
    key: &str,
    report: &mut impl FnMut(String, String),
) -> Option<ResourcePolicy> {
    let policy = [
        ResourcePolicy::CrossOrigin,
        ResourcePolicy::SameSite,
        ResourcePolicy::SameOrigin,
    ]
    .into_iter()
    .find(|p| p.as_str() == text);
    if policy.is_none() {
        report(
            key.into(),
            format!("{text:?} is not \"cross-origin\", \"same-site\" or \"same-origin\""),
        );
    }
    policy
}

/// `index = "index.html"`: one path segment, in the characters a URL path may hold as they are.
pub(super) fn index(text: String, key: &str, report: &mut impl FnMut(String, String)) -> String {
    let path_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b);
    if text.is_empty() || text == "." || text == ".." || !text.bytes().all(path_char) {
        report(
            key.into(),
            format!("{text:?} is not a file name (e.g. \"index.html\"; no '/', '?' or spaces)"),
        );
    }
    text
}

/// A region or service name: letters, digits and '-'.
fn is_region(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ParseError};
    use super::*;

    fn route(lines: &str) -> Result<super::super::RouteConfig, Vec<String>> {
        let text = format!("[[route]]\nhosts = [\"*\"]\norigin = \"http://o\"\n{lines}\n");
        match Config::parse(&text) {
            Ok(mut config) => Ok(config.routes.remove(0)),
            Err(ParseError::Invalid(problems)) => {
                Err(problems.iter().map(ToString::to_string).collect())
            }
            Err(err) => panic!("{lines}: {err}"),
        }
    }

    #[test]
    fn every_new_route_key_is_off_by_default_as_s3_is() {
        let r = route("").expect("valid");
        assert_eq!(r.sign, None);
        assert_eq!(r.enforce, Enforce::S3);
        assert!(!r.timing_allow_origin);
        assert_eq!(r.cross_origin_resource_policy, None);
        assert_eq!(r.index, None);
    }

    #[test]
    fn sign_reads_the_variable_names_and_defaults_to_s3_reads() {
        let r =
            route("sign = { region = \"nyc3\", access_key_env = \"K\", secret_key_env = \"S\" }")
                .expect("valid");
        let sign = r.sign.expect("signing");
        assert_eq!(sign.keys.region, "nyc3");
        assert_eq!(sign.keys.access_key_env, "K");
        assert_eq!(sign.keys.secret_key_env, "S");
        assert_eq!(sign.keys.session_token_env, "AWS_SESSION_TOKEN");
        assert!(sign.keys.explicit, "signing always needs its keys");
        assert_eq!(sign.service, "s3");
        assert_eq!(sign.methods, [Method::GET, Method::HEAD]);

        let r = route("sign = { methods = [\"GET\", \"HEAD\", \"PUT\"], service = \"s3\" }")
            .expect("valid");
        let sign = r.sign.expect("signing");
        assert_eq!(sign.keys.region, "us-east-1");
        assert_eq!(sign.keys.access_key_env, "AWS_ACCESS_KEY_ID");
        assert_eq!(sign.methods, [Method::GET, Method::HEAD, Method::PUT]);
    }

    #[test]
    fn bad_values_are_errors_naming_their_key() {
        let cases = [
            ("sign = { region = \"us east\" }", "route[1].sign.region"),
            ("sign = { service = \"s 3\" }", "route[1].sign.service"),
            ("sign = { methods = [] }", "route[1].sign.methods"),
            (
                "sign = { methods = [\"GET\", \"get\"] }",
                "route[1].sign.methods[1]",
            ),
            (
                "sign = { methods = [\"OPTIONS\"] }",
                "route[1].sign.methods[0]",
            ),
            ("sign = { methods = [\"G T\"] }", "route[1].sign.methods[0]"),
            (
                "sign = { access_key_env = \"A=B\" }",
                "route[1].sign.access_key_env",
            ),
            ("enforce = \"STRICT\"", "route[1].enforce"),
            (
                "cross_origin_resource_policy = \"cross\"",
                "route[1].cross_origin_resource_policy",
            ),
            ("index = \"a/index.html\"", "route[1].index"),
            ("index = \"\"", "route[1].index"),
        ];
        for (line, key) in cases {
            let problems = route(line).expect_err(line);
            assert!(
                problems.len() == 1 && problems[0].starts_with(&format!("{key}: ")),
                "{line}: {problems:?}"
            );
        }
        assert!(
            Config::parse(
                "[[route]]\nhosts=[\"*\"]\norigin=\"http://o\"\nsign = { secret = \"x\" }\n"
            )
            .expect_err("unknown key")
            .to_string()
            .contains("secret")
        );
    }

    #[test]
    fn strict_enforcement_and_the_extra_headers_are_read() {
        let r = route(
            "enforce = \"strict\"\ntiming_allow_origin = true\n\
             cross_origin_resource_policy = \"same-site\"\nindex = \"index.html\"",
        )
        .expect("valid");
        assert_eq!(r.enforce, Enforce::Strict);
        assert!(r.timing_allow_origin);
        assert_eq!(
            r.cross_origin_resource_policy,
            Some(ResourcePolicy::SameSite)
        );
        assert_eq!(r.index.as_deref(), Some("index.html"));
        for (text, policy) in [
            ("cross-origin", ResourcePolicy::CrossOrigin),
            ("same-origin", ResourcePolicy::SameOrigin),
        ] {
            let line = format!("cross_origin_resource_policy = \"{text}\"");
            let r = route(&line).expect("valid");
            assert_eq!(r.cross_origin_resource_policy, Some(policy));
            assert_eq!(policy.header_value(), text);
        }
    }

    #[test]
    fn the_command_line_region_signs_reads_with_the_sdk_variables() {
        let sign = OriginSigning::for_region("eu-west-3").expect("valid");
        assert_eq!(sign.keys.access_key_env, "AWS_ACCESS_KEY_ID");
        assert_eq!(sign.methods, DEFAULT_SIGNED_METHODS);
        assert!(OriginSigning::for_region("eu west").is_err());
    }
}
