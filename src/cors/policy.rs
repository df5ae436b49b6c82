//! A compiled, immutable CORS policy, and its evaluation (docs/cors-semantics.md#document-validation, #matching).
//!
//! Compiling validates the document exactly as S3's `PutBucketCors` does, reporting every problem
//! at once, and prepares everything a request needs: exact origins indexed in a hash map, wildcard
//! origins as prefix/suffix pairs, method sets as bitsets, header patterns lower-cased and every
//! response header value built once. Evaluation picks S3's winner, the first rule in document
//! order matching origin, method and every requested header, with rule sets as bitmasks (S3 allows
//! at most 100 rules, so one `u128` holds them all).

// Origins are hashed on every request: foldhash costs a fraction of SipHash on an origin's
// few dozen bytes (see benches/load/README.md, "Numbers behind the code"). The maps are built
// from the configuration only and requests merely look up, so an attacker choosing origins
// cannot fill a bucket; foldhash's per-process random seed is all the protection a lookup needs.
use foldhash::HashMap;

use http::{HeaderValue, Method, StatusCode};

use super::decision::{CorsRequest, Decision, Denial, DenialReason, Grant, Resource};
use super::document::{Document, Form, RuleDoc};
use super::echo::{Echo, LAST_ORIGIN};
use super::error::{ConfigError, Problem, ProblemKind, RuleRef};
use super::header::{HeaderPattern, RequestedHeaders};
use super::method::CorsMethod;
use super::origin::{OriginPattern, wildcard_matches};
use super::rule::Rule;

/// S3's limit on rules per configuration.
pub const MAX_RULES: usize = 100;
/// Longest `ID` S3 accepts.
pub(crate) const MAX_ID_CHARS: usize = 255;

type RuleMask = u128;
const _: () = assert!(MAX_RULES <= RuleMask::BITS as usize);

/// `prefix*suffix`, and the rule it belongs to.
#[derive(Clone, Debug)]
struct WildcardOrigin {
    prefix: Box<[u8]>,
    suffix: Box<[u8]>,
    rule: RuleMask,
}

/// A policy's wildcard origins: compared one by one when they are few, indexed otherwise.
#[derive(Clone, Debug)]
enum WildcardOrigins {
    Few(Vec<WildcardOrigin>),
    Indexed(Box<WildcardIndex>),
}

impl WildcardOrigins {
    fn new(wildcards: Vec<WildcardOrigin>) -> WildcardOrigins {
        match WildcardIndex::build(&wildcards) {
            Some(index) => WildcardOrigins::Indexed(Box::new(index)),
            None => WildcardOrigins::Few(wildcards),
        }
    }
}

fn linear_candidates(wildcards: &[WildcardOrigin], origin: &[u8]) -> RuleMask {
    let mut mask = 0;
    for w in wildcards {
        if mask & w.rule == 0 && wildcard_matches(&w.prefix, &w.suffix, origin) {
            mask |= w.rule;
        }
    }
    mask
}

/// Wildcard origins grouped by their suffix. An origin can only match `prefix*suffix` if it ends
/// with `suffix`, so one hash probe per distinct suffix length finds every candidate: 99
/// `https://*.tenantN.example` patterns cost two probes (two lengths) instead of 99 comparisons.
#[derive(Clone, Debug)]
struct WildcardIndex {
    /// Distinct suffix lengths, shortest first.
    lengths: Vec<usize>,
    by_suffix: HashMap<Box<[u8]>, Prefixes>,
}

/// The prefixes sharing one suffix, each with its rule.
type Prefixes = Vec<(Box<[u8]>, RuleMask)>;

/// Fewer wildcards than this are compared one by one: a few comparisons cost less than a probe.
const WILDCARD_INDEX_FROM: usize = 16;

impl WildcardIndex {
    /// An index, when it saves work: enough wildcards, and few suffix lengths among them.
    fn build(wildcards: &[WildcardOrigin]) -> Option<WildcardIndex> {
        let mut lengths: Vec<usize> = wildcards.iter().map(|w| w.suffix.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        if wildcards.len() < WILDCARD_INDEX_FROM || lengths.len() * 4 > wildcards.len() {
            return None;
        }
        let mut by_suffix: HashMap<Box<[u8]>, Prefixes> = HashMap::default();
        for w in wildcards {
            by_suffix
                .entry(w.suffix.clone())
                .or_default()
                .push((w.prefix.clone(), w.rule));
        }
        Some(WildcardIndex { lengths, by_suffix })
    }

    fn candidates(&self, origin: &[u8]) -> RuleMask {
        let mut mask = 0;
        for &len in &self.lengths {
            let Some(start) = origin.len().checked_sub(len) else {
                break;
            };
            if let Some(entries) = self.by_suffix.get(&origin[start..]) {
                for (prefix, rule) in entries {
                    // The prefix must end before the suffix starts (a wildcard may be empty).
                    if prefix.len() <= start && origin.starts_with(prefix) {
                        mask |= rule;
                    }
                }
            }
        }
        mask
    }
}

/// A validated, compiled configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    exact: HashMap<Box<[u8]>, RuleMask>,
    wildcards: WildcardOrigins,
    any_origin: RuleMask,
    by_method: [RuleMask; 5],
}

impl Policy {
    /// Parses, validates and compiles a document (XML or JSON).
    pub fn parse(bytes: &[u8]) -> Result<Policy, ConfigError> {
        Policy::parse_document(bytes).map(|(_, policy)| policy)
    }

    /// Like [`Policy::parse`], also returning the document as written (for lints and tools).
    /// Shape problems and value problems are reported together.
    pub fn parse_document(bytes: &[u8]) -> Result<(Document, Policy), ConfigError> {
        let (doc, mut problems) = Document::read(bytes);
        if let Some(doc) = doc {
            match Policy::compile(&doc) {
                Ok(policy) if problems.is_empty() => return Ok((doc, policy)),
                Ok(_) => {}
                Err(e) => {
                    let values: Vec<Problem> = (e.problems.into_iter())
                        .filter(|p| !p.restates(&problems))
                        .collect();
                    problems.extend(values);
                }
            }
        }
        problems.sort_by_key(|p| p.pos);
        Err(ConfigError { problems })
    }

    /// Validates and compiles a document, reporting every problem at once.
    pub fn compile(doc: &Document) -> Result<Policy, ConfigError> {
        let mut problems = Vec::new();
        if doc.rules.is_empty() {
            problems.push(Problem::new(ProblemKind::NoRules(doc.form)).at(doc.pos));
        }
        if doc.rules.len() > MAX_RULES {
            let pos = doc.rules[MAX_RULES].pos;
            problems.push(Problem::new(ProblemKind::TooManyRules(doc.rules.len())).at(pos));
        }
        let rules: Vec<Rule> = doc
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| compile_rule(i + 1, r, doc.form, &mut problems))
            .collect();
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.pos);
            return Err(ConfigError { problems });
        }
        Ok(Policy::index(rules))
    }

    fn index(rules: Vec<Rule>) -> Policy {
        let mut policy = Policy {
            exact: HashMap::default(),
            wildcards: WildcardOrigins::Few(Vec::new()),
            any_origin: 0,
            by_method: [0; 5],
            rules: Vec::new(),
        };
        let mut wildcards = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let bit: RuleMask = 1 << i;
            for origin in &rule.origins {
                match origin {
                    OriginPattern::Any => policy.any_origin |= bit,
                    OriginPattern::Exact(o) => {
                        *policy.exact.entry(o.as_bytes().into()).or_default() |= bit;
                    }
                    OriginPattern::Wildcard { prefix, suffix } => wildcards.push(WildcardOrigin {
                        prefix: prefix.as_bytes().into(),
                        suffix: suffix.as_bytes().into(),
                        rule: bit,
                    }),
                }
            }
            for m in &rule.methods {
                policy.by_method[m.index()] |= bit;
            }
        }
        policy.rules = rules;
        policy.wildcards = WildcardOrigins::new(wildcards);
        policy
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How many wildcard `AllowedOrigin`s an evaluation compares one by one (exact origins are
    /// one hash probe, `*` a mask, indexed wildcards a probe per suffix length): what makes
    /// evaluating this policy dear.
    pub(crate) fn wildcard_origins(&self) -> usize {
        match &self.wildcards {
            WildcardOrigins::Indexed(index) => index.lengths.len(),
            WildcardOrigins::Few(wildcards) => wildcards.len(),
        }
    }

    /// The rules whose origins match, as a bitmask.
    fn origin_candidates(&self, origin: &[u8]) -> RuleMask {
        let mut mask = self.any_origin;
        if !self.exact.is_empty()
            && let Some(m) = self.exact.get(origin)
        {
            mask |= m;
        }
        match &self.wildcards {
            WildcardOrigins::Indexed(index) => mask | index.candidates(origin),
            WildcardOrigins::Few(wildcards) => mask | linear_candidates(wildcards, origin),
        }
    }

    /// S3's winner: the first rule, in document order, that matches the origin, the method and
    /// every requested header.
    pub fn find(
        &self,
        origin: &[u8],
        method: CorsMethod,
        headers: &RequestedHeaders<'_>,
    ) -> Option<&Rule> {
        self.first_allowing(self.candidates(origin, method), headers)
    }

    /// The rules matching origin and method, as a bitmask.
    fn candidates(&self, origin: &[u8], method: CorsMethod) -> RuleMask {
        let by_method = self.by_method[method.index()];
        if by_method == 0 {
            return 0;
        }
        by_method & self.origin_candidates(origin)
    }

    /// The first of `candidates`, in document order, that allows every requested header.
    fn first_allowing(
        &self,
        mut candidates: RuleMask,
        headers: &RequestedHeaders<'_>,
    ) -> Option<&Rule> {
        while candidates != 0 {
            let rule = &self.rules[candidates.trailing_zeros() as usize];
            if headers.allowed_by(&rule.headers) {
                return Some(rule);
            }
            candidates &= candidates - 1;
        }
        None
    }

    /// Answers a preflight (docs/cors-semantics.md#preflight-checks, checks 4 and 5; `BucketCors` does 1 to 3).
    pub fn preflight<'p>(
        &'p self,
        req: &CorsRequest<'_>,
        origin: &HeaderValue,
    ) -> Result<Grant<'p>, Denial> {
        let Some(method) = req.acrm.and_then(|m| CorsMethod::parse(m.as_bytes())) else {
            let sent = req
                .acrm
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned());
            return Err(Denial {
                status: StatusCode::BAD_REQUEST,
                reason: DenialReason::InvalidMethod(sent),
                method: None,
                resource: None,
            });
        };
        let not_allowed = || Denial {
            status: StatusCode::FORBIDDEN,
            reason: DenialReason::NotAllowed,
            method: Some(method.as_str().into()),
            resource: Some(req.resource),
        };
        // Origin and method first: most refusals are decided there, before ACRH is read.
        let candidates = self.candidates(origin.as_bytes(), method);
        if candidates == 0 {
            return Err(not_allowed());
        }
        let headers = RequestedHeaders::parse(req.acrh.iter()).map_err(|_| not_allowed())?;
        let rule = self
            .first_allowing(candidates, &headers)
            .ok_or_else(not_allowed)?;
        Ok(grant(
            rule,
            origin,
            headers.allow_headers_value(req.echo),
            req.echo,
        ))
    }

    /// The CORS headers for any other request (docs/cors-semantics.md#actual-decoration): the method is ACRM when the request
    /// carries one, and ACRH is checked when present, exactly as for a preflight.
    pub fn actual<'p>(&'p self, req: &CorsRequest<'_>, origin: &HeaderValue) -> Option<Grant<'p>> {
        let method = match req.acrm {
            Some(acrm) => CorsMethod::parse(acrm.as_bytes())?,
            None => CorsMethod::parse(req.method.as_str().as_bytes())?,
        };
        let headers = RequestedHeaders::parse(req.acrh.iter()).ok()?;
        let rule = self.find(origin.as_bytes(), method, &headers)?;
        Some(grant(rule, origin, None, req.echo))
    }
}

#[inline]
fn grant<'p>(
    rule: &'p Rule,
    origin: &HeaderValue,
    allow_headers: Option<HeaderValue>,
    echo: Echo,
) -> Grant<'p> {
    let allow_origin = if rule.any_origin {
        HeaderValue::from_static("*")
    } else {
        echo.of(origin, &LAST_ORIGIN)
    };
    Grant {
        rule,
        allow_origin,
        allow_headers,
    }
}

/// What a bucket's CORS state is: rules, no configuration, or no bucket at all.
#[derive(Clone, Debug)]
pub enum BucketCors {
    Enabled(Policy),
    NotConfigured,
    NoSuchBucket,
}

impl BucketCors {
    pub fn policy(&self) -> Option<&Policy> {
        match self {
            BucketCors::Enabled(p) => Some(p),
            _ => None,
        }
    }

    pub fn evaluate<'p>(&'p self, req: &CorsRequest<'_>) -> Decision<'p> {
        if req.is_preflight() {
            Decision::Preflight(self.preflight(req))
        } else {
            Decision::Actual(self.actual(req))
        }
    }

    /// docs/cors-semantics.md#preflight-checks, in S3's order.
    pub fn preflight<'p>(&'p self, req: &CorsRequest<'_>) -> Result<Grant<'p>, Denial> {
        let Some(origin) = req.origin else {
            return Err(Denial {
                status: StatusCode::BAD_REQUEST,
                reason: DenialReason::MissingOrigin,
                method: None,
                resource: None,
            });
        };
        let forbidden = |reason| {
            let method = req.acrm.map_or_else(
                || Method::OPTIONS.to_string(),
                |m| String::from_utf8_lossy(m.as_bytes()).into_owned(),
            );
            Err(Denial {
                status: StatusCode::FORBIDDEN,
                reason,
                method: Some(method.into()),
                resource: Some(Resource::Bucket),
            })
        };
        match self {
            BucketCors::NoSuchBucket => forbidden(DenialReason::NoSuchBucket),
            BucketCors::NotConfigured => forbidden(DenialReason::CorsNotEnabled),
            BucketCors::Enabled(policy) => policy.preflight(req, origin),
        }
    }

    pub fn actual<'p>(&'p self, req: &CorsRequest<'_>) -> Option<Grant<'p>> {
        self.policy()?.actual(req, req.origin?)
    }
}

fn compile_rule(
    index: usize,
    doc: &RuleDoc,
    form: Form,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let id = doc.id.as_ref().map(|l| l.value.clone());
    let rule_ref = RuleRef {
        index,
        id: id.clone(),
    };
    let before = problems.len();
    let mut report = |kind: ProblemKind, pos| {
        problems.push(Problem::new(kind).in_rule(rule_ref.clone()).at(pos));
    };

    if let Some(id) = &doc.id {
        let chars = id.value.chars().count();
        if chars > MAX_ID_CHARS {
            report(ProblemKind::IdTooLong(chars), id.pos);
        }
    }
    if doc.allowed_origins.is_empty() {
        report(ProblemKind::MissingOrigin(form), doc.pos);
    }
    if doc.allowed_methods.is_empty() {
        report(ProblemKind::MissingMethod(form), doc.pos);
    }
    let mut origins = Vec::new();
    for o in &doc.allowed_origins {
        match OriginPattern::parse(&o.value) {
            Some(p) => origins.push(p),
            None => report(ProblemKind::OriginWildcards(o.value.clone()), o.pos),
        }
    }
    let mut methods = Vec::new();
    for m in &doc.allowed_methods {
        match CorsMethod::parse(m.value.as_bytes()) {
            Some(method) => methods.push(method),
            None => report(ProblemKind::UnsupportedMethod(m.value.clone()), m.pos),
        }
    }
    let mut headers = Vec::new();
    for h in &doc.allowed_headers {
        match HeaderPattern::parse(&h.value) {
            Some(p) => headers.push(p),
            None => report(ProblemKind::HeaderWildcards(h.value.clone()), h.pos),
        }
    }
    let max_age = doc.max_age_seconds.as_ref().and_then(|l| {
        let parsed = l
            .value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| v <= i32::MAX as u32);
        if parsed.is_none() {
            report(ProblemKind::BadMaxAge(l.value.clone()), l.pos);
        }
        parsed
    });
    let expose: Vec<String> = doc.expose_headers.iter().map(|l| l.value.clone()).collect();
    let expose_headers = if expose.is_empty() {
        None
    } else {
        let joined = HeaderValue::from_str(&expose.join(", "));
        if joined.is_err() {
            for l in &doc.expose_headers {
                if HeaderValue::from_str(&l.value).is_err() {
                    report(ProblemKind::BadExposeHeader(l.value.clone()), l.pos);
                }
            }
        }
        joined.ok()
    };
    if problems.len() > before {
        return None;
    }

    let allow_methods = join_header(methods.iter().map(|m| m.as_str()));
    Some(Rule {
        index,
        id,
        any_origin: origins.contains(&OriginPattern::Any),
        origins,
        method_set: methods.iter().copied().collect(),
        allow_methods,
        methods,
        headers,
        expose,
        expose_headers,
        max_age_value: max_age.map(HeaderValue::from),
        max_age,
    })
}

/// Joins method names (always header-safe) with `, `.
fn join_header<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let joined: Vec<&str> = items.collect();
    HeaderValue::from_str(&joined.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    const APP: &str = include_str!("../../config/cors-app.xml");

    /// A problem as (kind, rule index, (line, column)).
    type Found = (ProblemKind, Option<usize>, Option<(u32, u32)>);

    fn problems(xml: &str) -> Vec<Found> {
        match Policy::parse(xml.as_bytes()) {
            Ok(_) => vec![],
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| {
                    (
                        p.kind,
                        p.rule.map(|r| r.index),
                        p.pos.map(|p| (p.line, p.col)),
                    )
                })
                .collect(),
        }
    }

    fn rule(body: &str) -> String {
        format!("<CORSConfiguration>\n<CORSRule>\n{body}\n</CORSRule>\n</CORSConfiguration>")
    }

    #[test]
    fn each_validation_error_is_reported_with_code_rule_and_position() {
        use ProblemKind as K;
        let o = "<AllowedOrigin>*</AllowedOrigin>";
        let m = "<AllowedMethod>GET</AllowedMethod>";
        let long_id = "i".repeat(256);
        let cases: Vec<(String, Found)> = vec![
            (
                "<CORSConfiguration></CORSConfiguration>".into(),
                (K::NoRules(Form::Xml), None, Some((1, 1))),
            ),
            (
                rule(m),
                (K::MissingOrigin(Form::Xml), Some(1), Some((2, 1))),
            ),
            (
                rule(o),
                (K::MissingMethod(Form::Xml), Some(1), Some((2, 1))),
            ),
            (
                rule(&format!("{o}\n<AllowedMethod>get</AllowedMethod>")),
                (K::UnsupportedMethod("get".into()), Some(1), Some((4, 1))),
            ),
            (
                rule(&format!("<AllowedOrigin>http://*.*.com</AllowedOrigin>{m}")),
                (
                    K::OriginWildcards("http://*.*.com".into()),
                    Some(1),
                    Some((3, 1)),
                ),
            ),
            (
                rule(&format!("{o}{m}<AllowedHeader>x-*-*</AllowedHeader>")),
                (K::HeaderWildcards("x-*-*".into()), Some(1), Some((3, 67))),
            ),
            (
                rule(&format!("{o}{m}\n<MaxAgeSeconds>-1</MaxAgeSeconds>")),
                (K::BadMaxAge("-1".into()), Some(1), Some((4, 1))),
            ),
            (
                rule(&format!("{o}{m}\n<MaxAgeSeconds>ten</MaxAgeSeconds>")),
                (K::BadMaxAge("ten".into()), Some(1), Some((4, 1))),
            ),
            (
                rule(&format!("{o}{m}\n<ID>{long_id}</ID>")),
                (K::IdTooLong(256), Some(1), Some((4, 1))),
            ),
            (
                rule(&format!("{o}{m}\n<ExposeHeader>a\u{7f}b</ExposeHeader>")),
                (K::BadExposeHeader("a\u{7f}b".into()), Some(1), Some((4, 1))),
            ),
        ];
        for (xml, expected) in cases {
            assert_eq!(problems(&xml), vec![expected], "{xml}");
        }
        let many = format!(
            "<CORSConfiguration>{}</CORSConfiguration>",
            format!("<CORSRule>{o}{m}</CORSRule>").repeat(101)
        );
        assert!(matches!(problems(&many)[0].0, K::TooManyRules(101)));
        let huge = format!(
            "<CORSConfiguration>{}</CORSConfiguration>",
            " ".repeat(70_000)
        );
        assert!(matches!(problems(&huge)[0].0, K::TooLarge { .. }));
    }

    #[test]
    fn every_problem_is_reported_in_one_pass() {
        let xml = "<CORSConfiguration>\n<CORSRule><AllowedMethod>get</AllowedMethod></CORSRule>\n<CORSRule><ID>b</ID><AllowedOrigin>*.*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod></CORSRule>\n</CORSConfiguration>";
        let err = Policy::parse(xml.as_bytes()).expect_err("invalid");
        let codes: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(codes.len(), 4, "{codes:#?}");
        assert!(
            codes[0].starts_with("2:1: MalformedXML: CORSRule #1: the rule has no <AllowedOrigin>")
        );
        assert!(codes[3].contains("CORSRule #2 (ID \"b\")"), "{codes:#?}");
    }

    #[test]
    fn a_repeated_id_does_not_hide_the_rest_of_the_document() {
        let xml = "<CORSConfiguration>\n<CORSRule>\n<ID>a</ID>\n<ID>b</ID>\n<AllowedOrigin>http://*.*.com</AllowedOrigin>\n<AllowedMethod>get</AllowedMethod>\n</CORSRule>\n<CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule>\n</CORSConfiguration>";
        let found: Vec<(ProblemKind, Option<(u32, u32)>)> = problems(xml)
            .into_iter()
            .map(|(kind, _, pos)| (kind, pos))
            .collect();
        assert_eq!(
            found,
            [
                (ProblemKind::DuplicateElement("ID"), Some((4, 1))),
                (
                    ProblemKind::OriginWildcards("http://*.*.com".into()),
                    Some((5, 1))
                ),
                (ProblemKind::UnsupportedMethod("get".into()), Some((6, 1))),
                (ProblemKind::MissingOrigin(Form::Xml), Some((8, 1))),
            ]
        );
    }

    #[test]
    fn a_whole_document_problem_points_at_the_root_element() {
        let xml = "<?xml version=\"1.0\"?>\n<!-- no rules yet -->\n  <CORSConfiguration/>";
        assert_eq!(
            problems(xml),
            [(ProblemKind::NoRules(Form::Xml), None, Some((3, 3)))]
        );
    }

    #[test]
    fn json_problems_are_worded_in_json_terms_and_placed() {
        let json = "{\n  \"CORSRules\": [\n    {\"ID\": \"up\", \"AllowedOrigins\": [\"https://*.*.com\"]},\n    {\"AllowedOrigins\": \"*\", \"AllowedMethods\": [\"GET\"]}\n  ]\n}";
        let err = Policy::parse(json.as_bytes()).expect_err("invalid");
        let lines: Vec<String> = err.problems.iter().map(Problem::to_string).collect();
        assert_eq!(
            lines,
            [
                "3:5: MalformedXML: CORSRule #1 (ID \"up\"): the rule's \"AllowedMethods\" is missing or empty",
                "3:37: InvalidRequest: CORSRule #1 (ID \"up\"): AllowedOrigin \"https://*.*.com\" can not have more than one wildcard.",
                // One mistake, one line: not also "AllowedOrigins is missing".
                "4:24: MalformedXML: CORSRule #2: \"AllowedOrigins\" must be an array of strings, found a string",
            ]
        );
        let err = Policy::parse(b"{\"CORSRules\": []}").expect_err("no rules");
        assert_eq!(
            err.problems[0].to_string(),
            "1:2: MalformedXML: the configuration has no rule: \"CORSRules\" is missing or empty"
        );
        assert!(!err.to_string().contains('<'), "{err}");
    }

    #[test]
    fn empty_origin_is_accepted_and_matches_only_empty() {
        let policy = Policy::parse(
            rule("<AllowedOrigin></AllowedOrigin><AllowedMethod>GET</AllowedMethod>").as_bytes(),
        )
        .expect("S3 accepts it");
        let none = RequestedHeaders::default();
        assert!(
            policy
                .find(b"https://a.com", CorsMethod::Get, &none)
                .is_none()
        );
    }

    #[test]
    fn first_fully_matching_rule_wins() {
        let policy = Policy::parse(APP.as_bytes()).expect("valid");
        let h = [HeaderValue::from_static("x-custom-thing")];
        let headers = RequestedHeaders::parse(h.iter()).expect("valid");
        let none = RequestedHeaders::default();
        assert_eq!(
            policy
                .find(b"https://app.example.com", CorsMethod::Get, &none)
                .map(|r| r.index),
            Some(2)
        );
        assert_eq!(
            policy
                .find(b"https://app.example.com", CorsMethod::Put, &none)
                .map(|r| r.index),
            Some(1)
        );
        assert_eq!(
            policy
                .find(b"http://localhost:3000", CorsMethod::Put, &headers)
                .map(|r| r.index),
            Some(3)
        );
        assert_eq!(
            policy
                .find(b"https://app.example.com", CorsMethod::Put, &headers)
                .map(|r| r.index),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn the_wildcard_index_finds_what_comparing_one_by_one_finds(
            patterns in proptest::collection::vec(("[ab:/]{0,3}", "[ab.]{0,3}"), 16..40),
            origin in "[ab:/.]{0,8}",
        ) {
            let wildcards: Vec<WildcardOrigin> = patterns
                .iter()
                .enumerate()
                .map(|(i, (p, s))| WildcardOrigin {
                    prefix: p.as_bytes().into(),
                    suffix: s.as_bytes().into(),
                    rule: 1 << (i % 100),
                })
                .collect();
            // Few distinct lengths (0 to 3), so the index is built.
            let index = WildcardIndex::build(&wildcards).expect("index worth building");
            proptest::prop_assert_eq!(
                index.candidates(origin.as_bytes()),
                linear_candidates(&wildcards, origin.as_bytes())
            );
        }
    }

    #[test]
    fn actual_request_with_unknown_method_gets_nothing() {
        let policy = BucketCors::Enabled(Policy::parse(APP.as_bytes()).expect("valid"));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        let patch = Method::PATCH;
        let req = CorsRequest::new(&patch, &headers, Resource::Object);
        assert!(policy.actual(&req).is_none());
        let get = Method::GET;
        let req = CorsRequest::new(&get, &headers, Resource::Object);
        assert_eq!(policy.actual(&req).map(|g| g.rule.index), Some(2));
    }
}
