//! A draft of a route's rules as the editor sends it, judged by the CORS core: every problem S3's
//! `PutBucketCors` would refuse (with its S3 code, rule, field and position), the lints, the
//! document in both forms (so the form and the XML stay in sync through the server, never through
//! a second parser in the page), and what the draft changes for the origins the rules name.

use http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cors::lint::{Lint, LintKind, lint};
use crate::cors::{BucketCors, CorsMethod, CorsRequest, Document, Policy, Problem, ProblemKind};
use crate::cors::{Resource, RuleRef};

/// A rules document as the editor sends it: exactly one of S3 XML text, or the rules of the AWS
/// CLI's JSON form (`[{"AllowedOrigins": [...], "AllowedMethods": [...], ...}]`).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Draft {
    #[serde(default)]
    pub xml: Option<String>,
    #[serde(default)]
    pub rules: Option<Vec<Value>>,
}

/// Why a draft cannot even be looked at.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DraftError {
    #[error("the draft must hold either \"xml\" (S3 XML text) or \"rules\" (AWS CLI JSON rules)")]
    NeitherForm,
    #[error("the draft holds both \"xml\" and \"rules\"; send one")]
    BothForms,
}

impl Draft {
    /// The document's bytes, as the core reads them.
    pub fn bytes(&self) -> Result<Vec<u8>, DraftError> {
        match (&self.xml, &self.rules) {
            (Some(xml), None) => Ok(xml.clone().into_bytes()),
            (None, Some(rules)) => Ok(json!({ "CORSRules": rules }).to_string().into_bytes()),
            (None, None) => Err(DraftError::NeitherForm),
            (Some(_), Some(_)) => Err(DraftError::BothForms),
        }
    }

    /// The XML text the editor wrote, kept as written (its comments and layout) when the draft is
    /// written to an XML rules file.
    pub(crate) fn xml_text(&self) -> Option<&str> {
        self.xml.as_deref()
    }
}

/// The core's judgement of a document.
pub(crate) struct Judgement {
    /// The document as read, when it could be read (even with value problems).
    pub document: Option<Document>,
    /// The compiled rules, when the document is valid.
    pub policy: Option<Policy>,
    pub problems: Vec<Problem>,
    pub lints: Vec<Lint>,
}

impl Judgement {
    pub fn of(bytes: &[u8]) -> Judgement {
        let (document, policy, problems) = match Policy::parse_document(bytes) {
            Ok((document, policy)) => (Some(document), Some(policy), Vec::new()),
            Err(error) => (Document::read(bytes).0, None, error.problems),
        };
        // Lints skip what does not compile, so an invalid draft is linted too: a risky origin is
        // worth knowing about while another field is still wrong.
        let lints = document.as_ref().map(lint).unwrap_or_default();
        Judgement {
            document,
            policy,
            problems,
            lints,
        }
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.policy.is_some()
    }

    /// `valid`, `problems`, `lints`, and the document as `rules` and `xml` when it was read.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "valid": self.is_valid(),
            "problems": self.problems.iter().map(problem_json).collect::<Vec<_>>(),
            "lints": self.lints.iter().map(lint_json).collect::<Vec<_>>(),
            "rules": Value::Null,
            "xml": Value::Null,
        });
        if let Some(document) = &self.document {
            out["rules"] = rules_of(document);
            out["xml"] = Value::String(document.to_xml());
        }
        out
    }
}

/// A document's rules in the AWS CLI's JSON form.
pub(crate) fn rules_of(document: &Document) -> Value {
    serde_json::from_str::<Value>(&document.to_json())
        .ok()
        .and_then(|mut v| v.get_mut("CORSRules").map(Value::take))
        .unwrap_or_else(|| json!([]))
}

/// The document `GET /-/rules` shows (AWS CLI JSON), read back.
pub(crate) fn document_of(view_document: &Value) -> Option<Document> {
    if view_document.is_null() {
        return None;
    }
    Document::parse(view_document.to_string().as_bytes()).ok()
}

/// Lints of the document `GET /-/rules` shows.
pub(crate) fn lints_of(view_document: &Value) -> Value {
    let lints = document_of(view_document)
        .map(|d| lint(&d))
        .unwrap_or_default();
    Value::Array(lints.iter().map(lint_json).collect())
}

fn problem_json(problem: &Problem) -> Value {
    let (field, value) = problem_field(&problem.kind);
    json!({
        "code": problem.code().as_str(),
        "message": problem.kind.to_string(),
        "rule": problem.rule.as_ref().map(|r| r.index),
        "id": problem.rule.as_ref().and_then(|r| r.id.clone()),
        "field": field,
        "value": value,
        "line": problem.pos.map(|p| p.line),
        "col": problem.pos.map(|p| p.col),
    })
}

fn lint_json(lint: &Lint) -> Value {
    let (kind, field, value) = lint_field(&lint.kind);
    let RuleRef { index, id } = &lint.rule;
    json!({
        "kind": kind,
        "message": lint.kind.to_string(),
        "rule": index,
        "id": id,
        "field": field,
        "value": value,
        "line": lint.pos.map(|p| p.line),
        "col": lint.pos.map(|p| p.col),
    })
}

/// The field of a rule a problem is about (AWS CLI JSON names, as the editor's form uses), and
/// the offending value; no field for problems of the whole document or rule.
fn problem_field(kind: &ProblemKind) -> (Option<&'static str>, Option<&str>) {
    match kind {
        ProblemKind::MissingOrigin(_) => (Some("AllowedOrigins"), None),
        ProblemKind::OriginWildcards(o) => (Some("AllowedOrigins"), Some(o)),
        ProblemKind::MissingMethod(_) => (Some("AllowedMethods"), None),
        ProblemKind::UnsupportedMethod(m) => (Some("AllowedMethods"), Some(m)),
        ProblemKind::HeaderWildcards(h) => (Some("AllowedHeaders"), Some(h)),
        ProblemKind::BadExposeHeader(h) => (Some("ExposeHeaders"), Some(h)),
        ProblemKind::IdTooLong(_) => (Some("ID"), None),
        ProblemKind::BadMaxAge(v) => (Some("MaxAgeSeconds"), Some(v)),
        ProblemKind::DuplicateElement(element) => (json_name(element), None),
        _ => (None, None),
    }
}

fn json_name(element: &str) -> Option<&'static str> {
    Some(match element {
        "ID" => "ID",
        "AllowedOrigin" => "AllowedOrigins",
        "AllowedMethod" => "AllowedMethods",
        "AllowedHeader" => "AllowedHeaders",
        "ExposeHeader" => "ExposeHeaders",
        "MaxAgeSeconds" => "MaxAgeSeconds",
        _ => return None,
    })
}

/// A stable name for each lint, its field and its value.
fn lint_field(kind: &LintKind) -> (&'static str, Option<&'static str>, Option<String>) {
    let origin = Some("AllowedOrigins");
    match kind {
        LintKind::EchoedCatchAll(o) => ("echoed-catch-all", origin, Some(o.clone())),
        LintKind::NoDotBoundary(o) => ("no-dot-boundary", origin, Some(o.clone())),
        LintKind::PublicSuffix(o) => ("public-suffix", origin, Some(o.clone())),
        LintKind::NullOrigin => ("null-origin", origin, Some("null".into())),
        LintKind::InsecureOrigin(o) => ("insecure-origin", origin, Some(o.clone())),
        LintKind::Unreachable { .. } => ("unreachable", None, None),
        LintKind::WritesWithoutETag => ("writes-without-etag", Some("ExposeHeaders"), None),
        LintKind::MaxAgeAboveBrowserCap(s) => (
            "max-age-above-browser-cap",
            Some("MaxAgeSeconds"),
            Some(s.to_string()),
        ),
    }
}

/// At most this many origins are tried for [`impact`]: S3's most rules, with a few origins each.
const MAX_IMPACT_ORIGINS: usize = 500;

/// What replacing `live` by `draft` changes for a preflight from each origin the rules name, for
/// each method: the (origin, method) pairs newly allowed or newly denied, in document order.
/// A wildcard origin stands for one origin it matches.
pub fn impact(
    live: &BucketCors,
    live_doc: Option<&Document>,
    draft: &Policy,
    draft_doc: &Document,
) -> Vec<Value> {
    let mut origins: Vec<String> = Vec::new();
    for doc in [live_doc, Some(draft_doc)].into_iter().flatten() {
        for rule in &doc.rules {
            for origin in &rule.allowed_origins {
                let sample = sample_origin(&origin.value);
                if !origins.contains(&sample) && origins.len() < MAX_IMPACT_ORIGINS {
                    origins.push(sample);
                }
            }
        }
    }
    let draft = BucketCors::Enabled(draft.clone());
    let options = Method::OPTIONS;
    let mut changes = Vec::new();
    for origin in &origins {
        let Ok(origin_value) = HeaderValue::from_str(origin) else {
            continue;
        };
        for method in CorsMethod::ALL {
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, origin_value.clone());
            headers.insert(
                ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_static(method.as_str()),
            );
            let req = CorsRequest::new(&options, &headers, Resource::Object);
            let before = live.preflight(&req).is_ok();
            let after = draft.preflight(&req).is_ok();
            if before != after {
                changes.push(json!({
                    "origin": origin,
                    "method": method.as_str(),
                    "change": if after { "newly-allowed" } else { "newly-denied" },
                }));
            }
        }
    }
    changes
}

/// An origin a pattern matches: itself without a wildcard, else the wildcard filled in.
fn sample_origin(pattern: &str) -> String {
    match pattern {
        "*" => "https://any-site.example".to_string(),
        p => p.replacen('*', "sample", 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(draft: Value) -> Value {
        let draft: Draft = serde_json::from_value(draft).expect("a draft");
        Judgement::of(&draft.bytes().expect("one form")).to_json()
    }

    #[test]
    fn problems_name_their_code_rule_and_field() {
        let out = judged(json!({ "rules": [
            { "AllowedOrigins": ["https://a.example"], "AllowedMethods": ["get"] },
            { "ID": "two", "AllowedOrigins": ["http://*.*.example"], "AllowedMethods": ["GET"], "MaxAgeSeconds": "soon" },
        ]}));
        assert_eq!(out["valid"], false);
        let problems = out["problems"].as_array().expect("problems");
        let find = |field: &str| {
            problems
                .iter()
                .find(|p| p["field"] == field)
                .unwrap_or_else(|| panic!("a problem with {field}: {out}"))
        };
        let method = find("AllowedMethods");
        assert_eq!(method["code"], "InvalidRequest");
        assert_eq!(method["rule"], 1);
        assert_eq!(method["value"], "get");
        let origin = find("AllowedOrigins");
        assert_eq!(origin["rule"], 2);
        assert_eq!(origin["id"], "two");
        assert_eq!(find("MaxAgeSeconds")["code"], "MalformedXML");
        // The document was readable: both forms come back for the editor.
        assert_eq!(out["rules"][1]["ID"], "two");
        assert!(
            out["xml"]
                .as_str()
                .is_some_and(|x| x.contains("<AllowedMethod>get</AllowedMethod>"))
        );
    }

    #[test]
    fn xml_problems_carry_their_position_and_unreadable_xml_has_no_rules() {
        let out = judged(
            json!({ "xml": "<CORSConfiguration>\n<CORSRule>\n<AllowedOrigin>*</AllowedOrigin>\n<AllowedMethod>PATCH</AllowedMethod>\n</CORSRule>\n</CORSConfiguration>" }),
        );
        assert_eq!(out["problems"][0]["line"], 4);
        assert_eq!(out["problems"][0]["col"], 1);
        let broken = judged(json!({ "xml": "<CORSConfiguration><CORSRule>" }));
        assert_eq!(broken["valid"], false);
        assert!(broken["rules"].is_null());
        assert!(broken["problems"][0]["field"].is_null());
    }

    #[test]
    fn a_catch_all_origin_is_linted_on_its_field_even_while_the_rule_is_incomplete() {
        let out =
            judged(json!({ "rules": [{ "AllowedOrigins": ["https://*"], "AllowedMethods": [] }] }));
        assert_eq!(out["valid"], false);
        assert_eq!(out["lints"][0]["kind"], "echoed-catch-all");
        assert_eq!(out["lints"][0]["field"], "AllowedOrigins");
        assert_eq!(out["lints"][0]["value"], "https://*");
    }

    #[test]
    fn a_draft_holds_exactly_one_form() {
        let none: Draft = serde_json::from_value(json!({})).expect("a draft");
        assert!(matches!(none.bytes(), Err(DraftError::NeitherForm)));
        let both: Draft =
            serde_json::from_value(json!({ "xml": "", "rules": [] })).expect("a draft");
        assert!(matches!(both.bytes(), Err(DraftError::BothForms)));
    }

    #[test]
    fn impact_lists_the_origins_and_methods_whose_answer_changes() {
        let policy = |xml: &str| Policy::parse_document(xml.as_bytes()).expect("valid");
        let (live_doc, live) = policy(
            "<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>",
        );
        let (draft_doc, draft) = policy(
            "<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule><CORSRule><AllowedOrigin>https://*.example.org</AllowedOrigin><AllowedMethod>HEAD</AllowedMethod></CORSRule></CORSConfiguration>",
        );
        let changes = impact(
            &BucketCors::Enabled(live),
            Some(&live_doc),
            &draft,
            &draft_doc,
        );
        assert_eq!(
            changes,
            vec![
                json!({ "origin": "https://app.example.com", "method": "PUT", "change": "newly-denied" }),
                json!({ "origin": "https://sample.example.org", "method": "HEAD", "change": "newly-allowed" }),
            ]
        );
        let nothing = impact(&BucketCors::NotConfigured, None, &draft, &draft_doc);
        assert_eq!(nothing.len(), 2, "{nothing:?}");
    }
}
