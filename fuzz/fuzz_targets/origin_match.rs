//! The compiled policy's origin matching (exact origins in a hash map, `*` as a mask, wildcards
//! compared one by one or through the suffix index), checked against a naive reading of S3's
//! rule (spec §2): a pattern without `*` is the origin itself, byte for byte; `prefix*suffix` is
//! any origin that starts with `prefix` and ends with `suffix` without the two sharing a byte;
//! a lone `*` is every origin; more than one `*` is refused. The winner is the first rule, in
//! document order, that allows the method and has a matching pattern.
//!
//! The rules are built from pieces of real origins (`https://`, `foo`, `.com`, ...) so that
//! near-misses such as `https://barfoo.com` against `https://foo.com` come up all the time, from
//! the origins of the spec's vectors, and from families of numbered wildcards large enough for
//! the suffix index.

#![no_main]

use arbitrary::Arbitrary;
use corsgate::cors::document::{Located, RuleDoc};
use corsgate::cors::explain::{Verdict, verdicts};
use corsgate::cors::header::RequestedHeaders;
use corsgate::cors::policy::MAX_RULES;
use corsgate::cors::{CorsMethod, CorsRequest, Document, Policy, Resource};
use corsgate_fuzz::vectors;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const PIECES: &[&str] = &[
    "https://",
    "http://",
    "foo",
    "bar",
    "Foo",
    ".com",
    ".",
    "*",
    "a",
    "b",
    ":",
    "/",
    ":443",
    "example",
    "www.",
    "-",
    "null",
    "localhost",
    "*.",
    ".example.com",
];

#[derive(Arbitrary, Debug)]
enum Atom {
    Piece(u8),
    /// One character: a byte below 0x80 as itself, above as the Latin-1 letter (two bytes).
    Char(u8),
    /// In an origin only: this byte as it is, valid UTF-8 or not (header values are bytes).
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
struct Text(Vec<Atom>);

impl Text {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for atom in &self.0 {
            match *atom {
                Atom::Piece(i) => out.extend_from_slice(piece(i).as_bytes()),
                Atom::Char(c) => push_char(&mut out, c),
                Atom::Raw(b) => out.push(b),
            }
        }
        out
    }

    /// Patterns are document text, always UTF-8.
    fn string(&self) -> String {
        let mut out = Vec::new();
        for atom in &self.0 {
            match *atom {
                Atom::Piece(i) => out.extend_from_slice(piece(i).as_bytes()),
                Atom::Char(c) | Atom::Raw(c) => push_char(&mut out, c),
            }
        }
        String::from_utf8(out).expect("pieces and chars are UTF-8")
    }
}

fn piece(i: u8) -> &'static str {
    PIECES[usize::from(i) % PIECES.len()]
}

fn push_char(out: &mut Vec<u8>, c: u8) {
    let mut buf = [0; 4];
    out.extend_from_slice(char::from(c).encode_utf8(&mut buf).as_bytes());
}

#[derive(Arbitrary, Debug)]
enum PatternSpec {
    /// Whatever the pieces make: no `*`, one, or several.
    Text(Text),
    Wildcard {
        prefix: Text,
        suffix: Text,
    },
    Any,
    /// An origin (or origin pattern) of the spec's vectors.
    Vector(u8),
    /// `prefix*suffixN` (or `prefixN*suffix`) for N in 0..count: many wildcards of few suffix
    /// lengths, which is when the policy indexes them by suffix.
    Family {
        prefix: Text,
        suffix: Text,
        count: u8,
        number_in_prefix: bool,
    },
}

impl PatternSpec {
    fn expand(&self, out: &mut Vec<String>) {
        match self {
            PatternSpec::Text(t) => out.push(t.string()),
            PatternSpec::Wildcard { prefix, suffix } => {
                out.push(format!("{}*{}", prefix.string(), suffix.string()))
            }
            PatternSpec::Any => out.push("*".into()),
            PatternSpec::Vector(i) => {
                let origins = &vectors().origins;
                if !origins.is_empty() {
                    out.push(origins[usize::from(*i) % origins.len()].clone());
                }
            }
            PatternSpec::Family {
                prefix,
                suffix,
                count,
                number_in_prefix,
            } => {
                let (prefix, suffix) = (prefix.string(), suffix.string());
                for n in 0..count % 40 {
                    out.push(if *number_in_prefix {
                        format!("{prefix}{n}*{suffix}")
                    } else {
                        format!("{prefix}*{suffix}{n}")
                    });
                }
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RuleSpec {
    patterns: Vec<PatternSpec>,
    /// The rule's methods as a bitset over GET, PUT, POST, DELETE, HEAD (none: GET).
    methods: u8,
}

#[derive(Arbitrary, Debug)]
enum Edit {
    None,
    DropFirst,
    DropLast,
    /// Flips the ASCII case of the byte at this index (modulo the length).
    FlipCase(u8),
    Insert {
        at: u8,
        byte: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum OriginSpec {
    Text(Text),
    Vector(u8),
    /// One of the rules' patterns with its `*` replaced by `fill`, then edited: matches and
    /// near-misses.
    FromPattern {
        rule: u8,
        pattern: u8,
        fill: Text,
        edit: Edit,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<RuleSpec>,
    origin: OriginSpec,
    method: u8,
}

fuzz_target!(|input: Input| check(&input));

fn check(input: &Input) {
    let rules: Vec<(Vec<String>, Vec<CorsMethod>)> = input
        .rules
        .iter()
        .take(MAX_RULES + 1)
        .map(|r| {
            let mut patterns = Vec::new();
            for p in &r.patterns {
                p.expand(&mut patterns);
            }
            let methods: Vec<CorsMethod> = CorsMethod::ALL
                .into_iter()
                .enumerate()
                .filter(|(i, _)| r.methods & (1 << i) != 0)
                .map(|(_, m)| m)
                .collect();
            let methods = if methods.is_empty() {
                vec![CorsMethod::Get]
            } else {
                methods
            };
            (patterns, methods)
        })
        .collect();
    let doc = Document {
        rules: rules
            .iter()
            .map(|(patterns, methods)| RuleDoc {
                allowed_origins: patterns.iter().cloned().map(Located::new).collect(),
                allowed_methods: methods
                    .iter()
                    .map(|m| Located::new(m.as_str().to_string()))
                    .collect(),
                ..RuleDoc::default()
            })
            .collect(),
        ..Document::default()
    };
    let valid = !rules.is_empty()
        && rules.len() <= MAX_RULES
        && rules.iter().all(|(patterns, _)| {
            !patterns.is_empty() && patterns.iter().all(|p| p.matches('*').count() <= 1)
        });
    let policy = match Policy::compile(&doc) {
        Ok(policy) => policy,
        Err(e) => {
            assert!(!valid, "valid rules refused: {e}\n{rules:?}");
            return;
        }
    };
    assert!(valid, "invalid rules compiled: {rules:?}");

    let origin = origin_bytes(&input.origin, &rules);
    let method = CorsMethod::ALL[usize::from(input.method) % CorsMethod::ALL.len()];
    let expected = rules
        .iter()
        .position(|(patterns, methods)| {
            methods.contains(&method) && patterns.iter().any(|p| naive_match(p, &origin))
        })
        .map(|i| i + 1);
    let none = RequestedHeaders::default();
    let found = policy.find(&origin, method, &none).map(|r| r.index);
    assert_eq!(
        found,
        expected,
        "origin {:?}, method {method}, rules {rules:?}",
        String::from_utf8_lossy(&origin)
    );

    // The same through a request: the preflight, the actual request, and `corsgate explain`.
    let Ok(origin_value) = HeaderValue::from_bytes(&origin) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, origin_value.clone());
    headers.insert(
        ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_static(method.as_str()),
    );
    let options = Method::OPTIONS;
    let req = CorsRequest::new(&options, &headers, Resource::Object);
    match (policy.preflight(&req, &origin_value), expected) {
        (Ok(grant), Some(index)) => {
            assert_eq!(grant.rule.index, index);
            let any = rules[index - 1].0.iter().any(|p| p == "*");
            let echoed = if any {
                HeaderValue::from_static("*")
            } else {
                origin_value.clone()
            };
            assert_eq!(grant.allow_origin, echoed, "Access-Control-Allow-Origin");
        }
        (Err(_), None) => {}
        (got, expected) => panic!("preflight {got:?}, expected rule {expected:?}"),
    }
    assert_eq!(
        policy.actual(&req, &origin_value).map(|g| g.rule.index),
        expected,
        "actual request"
    );
    let explained = verdicts(&policy, &req).expect("origin and method are present and valid");
    let matched = explained
        .iter()
        .position(|v| *v == Verdict::Matched)
        .map(|i| i + 1);
    assert_eq!(matched, expected, "explain: {explained:?}");
}

fn origin_bytes(spec: &OriginSpec, rules: &[(Vec<String>, Vec<CorsMethod>)]) -> Vec<u8> {
    match spec {
        OriginSpec::Text(t) => t.bytes(),
        OriginSpec::Vector(i) => {
            let origins = &vectors().origins;
            if origins.is_empty() {
                return Vec::new();
            }
            origins[usize::from(*i) % origins.len()].as_bytes().to_vec()
        }
        OriginSpec::FromPattern {
            rule,
            pattern,
            fill,
            edit,
        } => {
            let patterns = &rules[usize::from(*rule) % rules.len()].0;
            let pattern = &patterns[usize::from(*pattern) % patterns.len()];
            let mut origin = pattern.replacen('*', &fill.string(), 1).into_bytes();
            match *edit {
                Edit::None => {}
                Edit::DropFirst => {
                    if !origin.is_empty() {
                        origin.remove(0);
                    }
                }
                Edit::DropLast => {
                    origin.pop();
                }
                Edit::FlipCase(at) => {
                    if !origin.is_empty() {
                        let at = usize::from(at) % origin.len();
                        let b = &mut origin[at];
                        *b = if b.is_ascii_uppercase() {
                            b.to_ascii_lowercase()
                        } else {
                            b.to_ascii_uppercase()
                        };
                    }
                }
                Edit::Insert { at, byte } => {
                    let at = usize::from(at) % (origin.len() + 1);
                    origin.insert(at, byte);
                }
            }
            origin
        }
    }
}

/// S3's single-`*` match, read literally. Origins compare byte for byte: ASCII case counts.
fn naive_match(pattern: &str, origin: &[u8]) -> bool {
    match pattern.split_once('*') {
        None => pattern.as_bytes() == origin,
        Some((prefix, suffix)) => origin
            .strip_prefix(prefix.as_bytes())
            .is_some_and(|rest| rest.ends_with(suffix.as_bytes())),
    }
}
